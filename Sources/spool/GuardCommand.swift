import ArgumentParser
import Glibc
import Logging
import SpoolExecutor
import SpoolStore

/// `spool guard`: started by `spool serve` and `spool agent` beside themselves, never by hand. It
/// reads its server's messages on stdin and holds the data directory's lock on fd 3; when the
/// server is gone without a clean stop, it kills the job processes the server left running (see
/// `ServerGuard`).
struct GuardCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "guard",
        abstract: "Stop a dead server's jobs (started by the server itself).",
        shouldDisplay: false
    )

    @Option(name: .customLong("data-dir"), help: "The server's data directory.") var dataDir: String
    @Option(name: .customLong("server-pid"), help: "The server's pid (for the log).") var serverPID: Int32
    @Option(name: .customLong("log-level")) var logLevel: String = "info"
    @Option(name: .customLong("log-format")) var logFormat: String = "text"

    func run() async throws {
        // What reaches the server's process group (Ctrl-C in a terminal, a closed terminal) is the
        // server's to act on; the guard goes when the server does. Its log is the server's stderr,
        // which may be closed before it writes.
        for signal in [SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGQUIT, SIGTSTP, SIGTTIN, SIGTTOU] { Glibc.signal(signal, SIG_IGN) }
        // Only as a server starts it: stdin from the server, fd 3 the data directory's lock (run by
        // hand with stdin at its end, it would kill a running server's jobs at once).
        var held = stat(), lock = stat()
        guard fstat(3, &held) == 0, stat(dataDir + "/spool.lock", &lock) == 0, held.st_dev == lock.st_dev, held.st_ino == lock.st_ino else {
            throw ValidationError("spool guard is started by spool serve and spool agent, not by hand")
        }
        NodeOptions.bootstrapLogging(level: Logger.Level(rawValue: logLevel) ?? .info, json: logFormat == "json")
        // On this thread: the guard has nothing else to do.
        ServerGuard.watch(dataDirectory: dataDir, server: serverPID, logger: Logger(label: "spool.guard")) { [dataDir] in
            guard Failpoints.isOn(Failpoints.holdGuard) else { return }
            while access(dataDir + "/release-guard", F_OK) != 0 { usleep(20_000) }
        }
    }
}
