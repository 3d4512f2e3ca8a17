import ArgumentParser
import Foundation
import Logging
import SpoolApp

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the server: HTTP API, durable queue and the slots that run jobs.",
        discussion: """
            Settings come from --config FILE (JSON), then SPOOL_* environment variables (SPOOL_PORT, SPOOL_DATA_DIR, …),
            then these flags; later sources win. The built-in `render` job type is always there.
            """
    )

    @Option(name: .long, help: "A JSON config file (settings and job_types).") var config: String?
    @Option(name: .long, help: "Address to listen on (default 127.0.0.1).") var host: String?
    @Option(name: .long, help: "Port to listen on; 0 picks a free one (default 8080).") var port: Int?
    @Option(name: .customLong("data-dir"), help: "Where the job database, logs and outputs live (default ./spool-data).") var dataDir: String?
    @Option(name: .long, help: "Number of slots when no GPU is used (default 1).") var slots: Int?
    @Option(name: .long, help: "GPUs to use: auto (one slot per GPU nvidia-smi lists), none, or a list like 0,2.") var gpus: String?
    @Option(name: .customLong("kill-grace"), help: "Seconds between SIGTERM and SIGKILL when a job is stopped (default 10).") var killGrace: Double?
    @Option(name: .customLong("shutdown-grace"), help: "Seconds running jobs may finish after SIGTERM before they are requeued (default 30).") var shutdownGrace: Double?
    @Option(name: .customLong("sqlite-synchronous"), help: "full (an accepted job survives power loss; default) or normal (survives a crash).") var synchronous: String?
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical (default info).") var logLevel: String = "info"
    @Option(name: .customLong("log-format"), help: "text (default) or json (one object per line, for log shippers).") var logFormat: String = "text"

    func run() async throws {
        guard let level = Logger.Level(rawValue: logLevel) else { fail("--log-level must be one of trace, debug, info, notice, warning, error, critical") }
        var settings = ServerConfiguration()
        do {
            if let config { try settings.load(file: config) }
            try settings.load(environment: ProcessInfo.processInfo.environment)
            let flags: [(String, String?)] = [
                ("host", host), ("port", port.map(String.init)), ("data_dir", dataDir), ("slots", slots.map(String.init)),
                ("gpus", gpus), ("kill_grace_s", killGrace.map { "\($0)" }), ("shutdown_grace_s", shutdownGrace.map { "\($0)" }),
                ("sqlite_synchronous", synchronous),
            ]
            for case let (key, text?) in flags {
                let flag = "--" + key.replacingOccurrences(of: "_s", with: "").replacingOccurrences(of: "_", with: "-")
                try settings.apply(text: text, to: key, from: flag)
            }
        } catch {
            fail("\(error)")
        }
        guard logFormat == "text" || logFormat == "json" else { fail("--log-format must be text or json") }
        let json = logFormat == "json"
        LoggingSystem.bootstrap { label in
            if json {
                var handler = JSONLogHandler(label: label)
                handler.logLevel = level
                return handler
            }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "spool")
        do {
            try await SpoolServer.run(settings, executable: Self.executablePath(), logger: logger) { url in
                FileHandle.standardOutput.write(Data("spool: listening on \(url)\n".utf8))
            }
        } catch let error as ConfigurationError {
            fail(error.description)
        } catch {
            fail("\(error)")
        }
    }

    /// The running binary, so the built-in `render` type can re-execute it.
    static func executablePath() -> String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }
}

/// One line on stderr, exit 1: how every command reports an error.
func fail(_ message: String, code: Int32 = 1) -> Never {
    FileHandle.standardError.write(Data("spool: \(message)\n".utf8))
    exit(code)
}
