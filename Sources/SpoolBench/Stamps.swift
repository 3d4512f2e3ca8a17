#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// One run of the stamp job (`Benchmarks/jobs/stamp.c`): CLOCK_MONOTONIC nanoseconds taken first
/// thing in `main` and last thing before `_exit`.
struct StampSpan: Sendable {
    let pid: Int
    let start: Int64
    let end: Int64
    /// The same instants on CLOCK_REALTIME, to line up with the server's timestamps (nil for
    /// the baseline's `stampfn` records).
    var startRealtime: Int64? = nil
    var endRealtime: Int64? = nil
}

/// One job as the bench worker (`Benchmarks/workers/noop_worker.py`) saw it: when the command
/// arrived and when it sent `succeeded`, CLOCK_MONOTONIC nanoseconds.
struct WorkerStamp: Sendable {
    let pid: Int
    let job: String
    let received: Int64
    let sent: Int64
    let receivedRealtime: Int64?
    let sentRealtime: Int64?
}

/// Gaps between consecutive jobs on one slot, from the jobs' own clocks.
struct JobSequence: Sendable {
    /// Per pair k → k+1: end of job k's work to start of job k+1's work, in ms.
    var gaps: [Double]
    /// Per pair: start of job k to start of job k+1, in ms (the slot's cycle time per job).
    var cycles: [Double]
    /// Per job: its own run time (start → end), in ms.
    var runTimes: [Double]
    /// Per pair: whether the process changed between k and k+1 (a worker was replaced).
    var processChanged: [Bool]

    init(spans: [(pid: Int, start: Int64, end: Int64)]) {
        let sorted = spans.sorted { $0.start < $1.start }
        let pairs = zip(sorted, sorted.dropFirst())
        gaps = pairs.map { Double($1.start - $0.end) / 1e6 }
        cycles = pairs.map { Double($1.start - $0.start) / 1e6 }
        processChanged = pairs.map { $0.pid != $1.pid }
        runTimes = sorted.map { Double($0.end - $0.start) / 1e6 }
    }

    var jobs: Int { runTimes.count }
}

enum StampFile {
    /// Reads `S pid mono real` / `E pid mono real` lines written by the stamp job.
    static func spans(at path: String) throws -> [StampSpan] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw BenchError("no stamp file at \(path): the stamp job never ran")
        }
        var starts: [Int: (Int64, Int64?)] = [:]
        var ends: [Int: (Int64, Int64?)] = [:]
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 3, let pid = Int(fields[1]), let mono = Int64(fields[2]) else {
                throw BenchError("malformed line in \(path): \(line)")
            }
            let real = fields.count >= 4 ? Int64(fields[3]) : nil
            switch fields[0] {
            case "S": starts[pid] = (mono, real)
            case "E": ends[pid] = (mono, real)
            default: throw BenchError("malformed line in \(path): \(line)")
            }
        }
        let incomplete = Set(starts.keys).symmetricDifference(ends.keys)
        guard incomplete.isEmpty else {
            throw BenchError("\(incomplete.count) stamp job(s) in \(path) have a start without an end or the reverse")
        }
        return starts.map { pid, start in
            let end = ends[pid]!
            return StampSpan(pid: pid, start: start.0, end: end.0, startRealtime: start.1, endRealtime: end.1)
        }.sorted { $0.start < $1.start }
    }

    /// Reads `pid job recv_mono sent_mono …` lines written by the bench worker.
    static func workerStamps(at path: String) throws -> [WorkerStamp] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw BenchError("no worker stamp file at \(path): the worker never ran a job")
        }
        return try text.split(separator: "\n").map { line in
            let fields = line.split(separator: " ")
            guard fields.count >= 4, let pid = Int(fields[0]), let received = Int64(fields[2]), let sent = Int64(fields[3]) else {
                throw BenchError("malformed line in \(path): \(line)")
            }
            return WorkerStamp(pid: pid, job: String(fields[1]), received: received, sent: sent,
                               receivedRealtime: fields.count >= 6 ? Int64(fields[4]) : nil,
                               sentRealtime: fields.count >= 6 ? Int64(fields[5]) : nil)
        }
    }

    /// Reads `pid start end` lines written by the baseline's `stampfn` jobs.
    static func functionStamps(at path: String) throws -> [StampSpan] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw BenchError("no stamp file at \(path): the baseline's stampfn flush did not run")
        }
        return try text.split(separator: "\n").map { line in
            let fields = line.split(separator: " ")
            guard fields.count >= 3, let pid = Int(fields[0]), let start = Int64(fields[1]), let end = Int64(fields[2]) else {
                throw BenchError("malformed line in \(path): \(line)")
            }
            return StampSpan(pid: pid, start: start, end: end)
        }
    }
}

/// The stamp job run back to back with no server in between: `posix_spawn` (vfork + exec, no
/// pipes, no session, no working directory change) and a blocking `waitpid`, on a thread of its
/// own. Its cycle is what one process per job costs at the least on this machine: exit, reap,
/// spawn, exec and the dynamic loader.
enum StandaloneLauncher {
    static func run(_ binary: String, arguments: [String], times: Int) async throws {
        try await onThread { try loop(binary, arguments: arguments, times: times) }
    }

    private static func loop(_ binary: String, arguments: [String], times: Int) throws {
        let argv: [UnsafeMutablePointer<CChar>?] = ([binary] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        for _ in 0..<times {
            var pid: pid_t = 0
            let spawned = argv.withUnsafeBufferPointer { buffer in
                posix_spawn(&pid, binary, nil, nil, buffer.baseAddress!, environ)
            }
            guard spawned == 0 else { throw BenchError("posix_spawn \(binary): \(String(cString: strerror(spawned)))") }
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 {
                guard errno == EINTR else { throw BenchError("waitpid: \(String(cString: strerror(errno)))") }
            }
            guard status == 0 else { throw BenchError("\(binary) exited with wait status \(status) when run standalone") }
        }
    }
}

/// Runs blocking work (waitpid, fdatasync) on a thread of its own, off the cooperative pool.
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
        let thread = Thread { continuation.resume(with: Result { try body() }) }
        thread.stackSize = 1 << 20
        thread.start()
    }
}

/// What one durable commit costs at the least on the scratch directory's file system: the
/// median of appending 4 KiB to a file and `fdatasync`-ing it (SQLite in WAL mode with
/// `synchronous=FULL` syncs the WAL once per commit). A server whose `full` mode costs less
/// than this per commit over its `normal` mode is not syncing its commits.
///
/// Measured twice: back to back, and after a pause as long as the polling scenario's sleep (the
/// machine idle meanwhile). On a virtual machine the second can cost many times the first: a
/// CPU that halted while idle wakes for the disk's answer. A submit that follows an idle moment
/// pays that sync, which the pool, writing nothing, does not.
enum SyncProbe {
    struct Cost: Sendable {
        /// Median of 100, one right after another.
        var backToBack: Double
        /// Median of 40, each after a `pause` of sleep.
        var afterPause: Double
    }

    static let pause: Duration = .milliseconds(5)

    static func measure(in directory: String) async -> Cost? {
        try? await onThread {
            let path = directory + "/fdatasync-probe"
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw BenchError("cannot create \(path)") }
            defer { close(fd); unlink(path) }
            let page = [UInt8](repeating: 0x5A, count: 4096)
            let clock = ContinuousClock()
            func syncs(_ times: Int, pause: Duration?) throws -> Double {
                var samples: [Double] = []
                for _ in 0..<times {
                    if let pause { usleep(useconds_t(pause.milliseconds * 1000)) }
                    guard page.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == 4096 else { throw BenchError("write failed") }
                    let start = clock.now
                    guard fdatasync(fd) == 0 else { throw BenchError("fdatasync failed") }
                    samples.append(start.duration(to: clock.now).milliseconds)
                }
                return LatencySummary.median(samples)
            }
            return Cost(backToBack: try syncs(100, pause: nil), afterPause: try syncs(40, pause: pause))
        }
    }
}
