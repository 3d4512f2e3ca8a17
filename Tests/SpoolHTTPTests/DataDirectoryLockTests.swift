import Foundation
import Glibc
@testable import SpoolApp
import SpoolTestSupport
import Testing

/// The data directory's lock, as a start meets it after a crash.
struct DataDirectoryLockTests {
    /// A guard that was stopped (SIGSTOP) when its server died stays stopped under a subreaper
    /// (tini, `docker run --init`): the kernel wakes a stopped, orphaned group only when its new
    /// parent is in another session. A start found it holding the lock, waited 30 s and then
    /// named the dead server (found by attacking the build). It now wakes it and goes on. Here
    /// the guard is a Perl process that holds the lock, is stopped, and lets go once it runs
    /// again; the lock file names a server that is gone.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/perl")))
    func aStartWakesAStoppedGuardThatHoldsTheLock() async throws {
        let scratch = try ScratchDirectory("spool-lock")
        let script = #"use Fcntl ":flock"; open(F, ">>", "$ARGV[2]/spool.lock") or die; flock(F, LOCK_EX) or die; "#
            + #"truncate(F, 0); syswrite(F, "2147483646\n"); open(R, ">", "$ARGV[2]/ready"); close R; "#
            + #"select(undef, undef, undef, 0.02) until -e "$ARGV[2]/release";"#
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/usr/bin/perl")
        holder.arguments = ["-e", script, "guard", "--data-dir", scratch.path]
        try holder.run()
        defer { if holder.isRunning { kill(holder.processIdentifier, SIGKILL) } }
        while access(scratch.path + "/ready", F_OK) != 0 { try await Task.sleep(for: .milliseconds(10)) }
        kill(holder.processIdentifier, SIGSTOP)
        while DataDirectoryLock.guards(of: scratch.path).first?.stopped != true { try await Task.sleep(for: .milliseconds(5)) }
        // It lets go as soon as it runs again: only a start that wakes it gets the lock.
        FileManager.default.createFile(atPath: scratch.path + "/release", contents: nil)
        #expect(DataDirectoryLock.guards(of: scratch.path).map(\.pid) == [holder.processIdentifier])
        let said = Locked<[String]>([])
        let started = ContinuousClock.now
        let lock = try await DataDirectoryLock(directory: scratch.path) { line in said.withLock { $0.append(line) } }
        lock.release()
        #expect(ContinuousClock.now - started < .seconds(20), "woken, it let go: no wait for the whole patience")
        #expect(said.withLock { $0 }.count == 1)
    }

    /// A second start on a directory a live server holds names that server, not the server's own
    /// guard (found by attacking the build: it said "the guard (pid G) of a spool server that is
    /// gone", of a server that was running, and pointed the operator at the guard). Here the
    /// server is a Perl process that holds the lock and names itself in it; its guard, another
    /// that only carries a guard's arguments.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/perl")))
    func aStartOnADirectoryInUseNamesTheLiveServer() async throws {
        let scratch = try ScratchDirectory("spool-lock-live")
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/perl")
        server.arguments = ["-e", #"use Fcntl ":flock"; open(F, ">>", "$ARGV[0]/spool.lock") or die; flock(F, LOCK_EX) or die; "#
                                + #"truncate(F, 0); syswrite(F, "$$\n"); open(R, ">", "$ARGV[0]/ready"); close R; sleep 600;"#, scratch.path]
        try server.run()
        defer { if server.isRunning { kill(server.processIdentifier, SIGKILL) } }
        let guardian = Process()
        guardian.executableURL = URL(fileURLWithPath: "/usr/bin/perl")
        guardian.arguments = ["-e", "sleep 600", "guard", "--data-dir", scratch.path]
        try guardian.run()
        defer { if guardian.isRunning { kill(guardian.processIdentifier, SIGKILL) } }
        let deadline = ContinuousClock.now + .seconds(30)
        while access(scratch.path + "/ready", F_OK) != 0 || DataDirectoryLock.guards(of: scratch.path).isEmpty {
            try #require(ContinuousClock.now < deadline, "the stand-in server and guard to start")
            try await Task.sleep(for: .milliseconds(10))
        }
        await #expect(throws: ConfigurationError("another spool server (pid \(server.processIdentifier)) is using the data directory \(scratch.path); "
                                                 + "stop it or pass another --data-dir")) {
            _ = try await DataDirectoryLock(directory: scratch.path)
        }
    }
}

/// A value behind a lock, for a closure that must be Sendable.
final class Locked<Value: Sendable>: @unchecked Sendable {
    private var value: Value
    private let lock = NSLock()
    init(_ value: Value) { self.value = value }
    func withLock<T>(_ body: (inout Value) -> T) -> T { lock.lock(); defer { lock.unlock() }; return body(&value) }
}
