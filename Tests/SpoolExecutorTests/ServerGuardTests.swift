import Foundation
import Glibc
import Logging
import SpoolCore
import SpoolTestSupport
import SpoolTesting
import Testing
@testable import SpoolExecutor

/// The guard's side of `spool guard`, in this process: what it reads on a real socket, and a real
/// `sleep` process marked as a job of its data directory, which it must kill or leave alone.
@Suite struct ServerGuardTests {
    /// A `sleep 60` whose environment marks it as a job of `dataDirectory` (as every job's is).
    static func job(in dataDirectory: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sleep")
        process.arguments = ["60"]
        process.environment = ["SPOOL_MESSAGES": dataDirectory + "/jobs/job_x/messages"]
        try process.run()
        // Its environment is there once its exec is done (on a loaded machine, a while after run()).
        let marker = Array("SPOOL_MESSAGES=".utf8)
        let deadline = ContinuousClock.now.advanced(by: .seconds(30))
        while ContinuousClock.now < deadline,
              !(OrphanReaper.readFile("/proc/\(process.processIdentifier)/environ") ?? []).split(separator: 0).contains(where: { $0.starts(with: marker) }) {
            usleep(5_000)
        }
        return process
    }

    /// The guard's watch on a thread of its own (it blocks), as in its process.
    static func watch(_ dataDirectory: String, input: Int32, lock: Int32, silence: Duration = ServerGuard.silence) -> Task<Void, Never> {
        let (ended, end) = AsyncStream<Void>.makeStream()
        Thread.detachNewThread {
            ServerGuard.watch(dataDirectory: dataDirectory, server: 1, input: input, lock: lock, silence: silence,
                              logger: Logger(label: "guard-test"))
            end.finish()
        }
        return Task { for await _ in ended {} }
    }

    /// What the server sent while the guard was not running (a loaded machine, a guard frozen
    /// and woken) is read before the guard calls the server silent: a wait whose time is up
    /// still takes a line already there (found when a loaded test run's guard killed the jobs of
    /// a server that had spoken all along).
    @Test func aLineAlreadyThereIsReadEvenWhenTheWaitIsUp() throws {
        var ends: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &ends) == 0)
        defer { close(ends[0]); close(ends[1]) }
        let reader = ServerGuard.LineReader(descriptor: ends[1])
        _ = Array("alive\n".utf8).withUnsafeBytes { Glibc.send(ends[0], $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard case .line(let line) = reader.next(within: .zero) else {
            Issue.record("the line sent before the wait was not read")
            return
        }
        #expect(line == "alive")
        guard case .timedOut = reader.next(within: .zero) else {
            Issue.record("nothing more was sent: the wait is up")
            return
        }
    }

    /// Past its deadline, a server that is still heard from (`alive`) keeps its jobs: it stops
    /// them itself, with their grace. Silent for a second past the deadline, it is frozen: the
    /// guard kills them, and keeps watching.
    @Test func theDeadlineCountsOnlyForAServerThatHasFallenSilent() async throws {
        let scratch = try ScratchDirectory("spool-guard", subdirectories: ["jobs"])
        let job = try Self.job(in: scratch.path)
        defer { if job.isRunning { kill(job.processIdentifier, SIGKILL) } }
        var ends: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &ends) == 0)
        let server = ends[0], input = ends[1]
        defer { close(server) }
        let lock = open(scratch.path + "/spool.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        defer { close(lock) }
        @Sendable @discardableResult func send(_ line: String) -> Bool {
            let bytes = Array((line + "\n").utf8)
            return bytes.withUnsafeBytes { Glibc.send(server, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == bytes.count
        }
        // Silence of 3 s here (1 s in the server): a loaded machine may stall the sender that long.
        let watching = Self.watch(scratch.path, input: input, lock: lock, silence: .seconds(3))
        // Heard from ten times a second (a thread of its own), for four seconds past the deadline:
        // the job lives. Looked at by that thread straight after its last word, not once this task
        // runs again: on a loaded machine that was more than the silence later, after the guard had
        // rightly killed the job of a server silent since (CI failed so, sends 0.11 s apart).
        let pid = job.processIdentifier
        let (longestGap, allSent, livedOn) = try await onOwnThread { () -> (Duration, Bool, Bool) in
            var (last, longest, sent) = (ContinuousClock.now, Duration.zero, send("kill-after 100"))
            for _ in 0..<40 {
                usleep(100_000)
                sent = send(ServerGuard.Message.alive) && sent
                (last, longest) = (ContinuousClock.now, max(longest, ContinuousClock.now - last))
            }
            return (longest, sent, OrphanReaper.isRunning(pid))
        }
        // Unless the sender itself went unscheduled for the whole silence (a full test run on two
        // cores has stalled threads that long), or its sends failed: then the server was silent,
        // and the kill was right.
        if longestGap < .seconds(3), allSent {
            #expect(livedOn, "a server still heard from keeps its jobs past the deadline (sends at most \(longestGap) apart)")
        }
        // Silent: killed 3 s after the last word.
        try await within(.seconds(30), "the guard to kill the silent server's job") {
            while job.isRunning { try await Task.sleep(for: .milliseconds(20)) }
        }
        // Still watching: a clean stop ends it.
        send(ServerGuard.Message.stop)
        try await within(.seconds(30), "the guard to stop") { await watching.value }
        close(input)
    }

    /// The server gone (the socket's end, no `stop`): the guard names itself in the lock file,
    /// kills the job and returns; after `stop`, nothing is killed.
    @Test func aServerGoneWithoutStoppingLeavesItsJobsToTheGuard() async throws {
        for clean in [true, false] {
            let scratch = try ScratchDirectory("spool-guard", subdirectories: ["jobs"])
            let job = try Self.job(in: scratch.path)
            defer { if job.isRunning { kill(job.processIdentifier, SIGKILL) } }
            var ends: [Int32] = [-1, -1]
            #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &ends) == 0)
            let lock = open(scratch.path + "/spool.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
            defer { close(lock) }
            if clean { _ = Array("stop\n".utf8).withUnsafeBytes { Glibc.send(ends[0], $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }
            close(ends[0])
            let input = ends[1]
            let watching = Self.watch(scratch.path, input: input, lock: lock)
            try await within(.seconds(30), "the guard to return") { await watching.value }
            close(input)
            try await Task.sleep(for: .milliseconds(100))
            #expect(job.isRunning == clean, clean ? "a clean stop kills nothing" : "the job is killed")
            let named = try String(contentsOfFile: scratch.path + "/spool.lock", encoding: .utf8)
            #expect(named == (clean ? "" : "guard \(getpid())\n"), "\(named)")
        }
    }
}
