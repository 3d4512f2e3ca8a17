import NIOCore
import NIOPosix
import Subprocess

/// Runs blocking file-system work (mkdir, small writes, /proc scans, removing a job's tree) on
/// a thread pool of its own, never on an event loop or the cooperative pool's threads.
///
/// Not NIO's shared pool: that one has a thread per core (two on a small machine), so two slow
/// calls — a job's tree of thousands of levels being deleted, a /proc scan waiting on processes
/// mid-exec — held every job start (each makes its directory here) until they were done.
public enum BlockingIO {
    /// At least eight threads: blocking calls wait on the disk, not on the CPU.
    static let pool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: max(8, 2 * System.coreCount))
        pool.start()
        return pool
    }()

    public static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await pool.runIfActive(body)
    }

    /// Makes every thread pool the server's blocking work goes through — this one, the stop's
    /// looker, NIO's shared one (file reads, gzip) — with all its threads, now, at the start. Each
    /// is made on its first use, and a pool that cannot make a thread stops the process: found by
    /// attacking the build, a job that used up its user's processes (a `make -j`, under `ulimit -u`
    /// or a cgroup's `pids.max`) made the server's first log read crash it, and its jobs with it.
    public static func startPools() async {
        _ = try? await pool.runIfActive {}
        await GroupStop.startLooker()
        _ = try? await NIOThreadPool.singleton.runIfActive {}
        // swift-subprocess's threads (the one that waits on children, the one that reads their
        // pipes) are made on its first spawn, and a failure then stays for good (found in review):
        // one spawn now, its output read.
        _ = try? await Subprocess.run(.path("/bin/sh"), arguments: ["-c", ":"], output: .string(limit: 16), error: .discarded)
    }
}
