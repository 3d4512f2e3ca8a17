import Glibc
import Logging

/// The guard's side of `spool guard`: a small process the server starts beside it, which stops
/// the server's jobs when the server can no longer stop them itself.
///
/// Each job leads its own session, so it outlives a server killed by `kill -9`, the OOM killer or
/// a crash: found by attacking the build, those jobs ran on (and held their GPU) until the
/// server's next start reaped them, and with a shared store another node rescued their jobs and
/// ran them a second time meanwhile. The guard reads what the server sends it on `input` (a
/// socket whose other end only the server holds) and, when that ends without a clean `stop`,
/// kills every job process and warm worker of the data directory (the same scan as the reaper
/// at a start, so a recycled pid is never taken for a job). A server with a shared store also
/// tells it, after each lease renewal, when its jobs must be gone (`kill-after MS`), and that it is
/// alive (`alive`, four times a second): a server silent past that point — frozen by `SIGSTOP`,
/// or starved — cannot stop its jobs before other nodes rescue them, so the guard does, and keeps
/// watching. A live server stops its own jobs when its renewals fail.
///
/// The guard inherits the data directory's lock (`flock` on one open file description): after the
/// server dies the next server cannot start until the guard has killed what it left.
public enum ServerGuard {
    /// What the server sends, one line each.
    public enum Message {
        /// A clean stop: nothing is left running; the guard exits without looking.
        public static let stop = "stop"
        /// `kill-after MS`: unless another comes first, the server's jobs must be gone in MS
        /// milliseconds — if by then the server has been silent for `silence` too.
        public static let killAfter = "kill-after"
        /// The server can still act (sent four times a second once a deadline is set).
        public static let alive = "alive"
        /// `session PID`: a child began, leading session PID (a job, a gated shell, a warm worker).
        public static let session = "session"
        /// `ended PID`: that child ended and what it left was swept.
        public static let ended = "ended"
    }

    /// How long a server that set a deadline must have been silent for its guard to act on it:
    /// one that can still stop its jobs itself does so (and a node whose store is down must
    /// give its warm workers their grace, not lose them at once).
    public static let silence: Duration = .seconds(1)

    /// Watches until the server stops cleanly or is gone (after killing what it left).
    /// `whenGone` runs first then (a crash test's hold). `lock`: the data directory's lock,
    /// which names the guard once the server is gone, for the next start to wait on.
    ///
    /// Blocking: it runs on a thread of its own (the guard's process has nothing else to do).
    public static func watch(dataDirectory: String, server: Int32, input: Int32 = STDIN_FILENO, lock: Int32 = 3,
                             silence: Duration = silence, logger: Logger, whenGone: () -> Void = {}) {
        let reader = LineReader(descriptor: input)
        var deadline: ContinuousClock.Instant?
        // Each child's session: how many children told of under that pid have not ended (an old
        // child's end may come after a new one took its pid: found in review), and the newest
        // leader's start time as read when it was told of it.
        var sessions: [Int32: (count: Int, started: UInt64?)] = [:]
        var heard = ContinuousClock.now
        while true {
            let wait = deadline.map { max(Duration.zero, ContinuousClock.now.duration(to: max($0, heard.advanced(by: silence)))) }
            let next = reader.next(within: wait)
            switch next {
            case .line(let line):
                heard = ContinuousClock.now
                if line == Message.stop { return }
                let fields = line.split(separator: " ")
                guard fields.count == 2 else { continue }
                if fields[0] == Message.killAfter, let milliseconds = Int64(fields[1]), milliseconds >= 0 {
                    deadline = ContinuousClock.now.advanced(by: .milliseconds(milliseconds))
                } else if fields[0] == Message.session, let pid = Int32(fields[1]), pid > 1 {
                    sessions[pid] = ((sessions[pid]?.count ?? 0) + 1, OrphanReaper.startTime(of: pid))
                } else if fields[0] == Message.ended, let pid = Int32(fields[1]), let known = sessions[pid] {
                    sessions[pid] = known.count > 1 ? (known.count - 1, known.started) : nil
                }
            case .timedOut:
                deadline = nil
                let killed = OrphanReaper.killJobsAndWorkers(of: dataDirectory, sessions: sessions.mapValues(\.started))
                if !killed.isEmpty {
                    logger.critical("the server has neither renewed its leases nor been heard from in time (frozen?); killed its job processes before other nodes rescue their jobs",
                                    metadata: ["server_pid": "\(server)", "pids": "\(killed)"])
                }
            case .end:
                let name = Array("guard \(getpid())\n".utf8)
                if ftruncate(lock, 0) == 0 { _ = name.withUnsafeBytes { pwrite(lock, $0.baseAddress, $0.count, 0) } }
                whenGone()
                let killed = OrphanReaper.killJobsAndWorkers(of: dataDirectory, sessions: sessions.mapValues(\.started))
                if !killed.isEmpty {
                    logger.critical("the server is gone without stopping its jobs (killed, or crashed); killed the job processes it left running",
                                    metadata: ["server_pid": "\(server)", "pids": "\(killed)"])
                }
                return
            }
        }
    }

    /// Lines read from a descriptor, each waited for up to a limit (blocking: one thread).
    final class LineReader: @unchecked Sendable {
        enum Next { case line(String), timedOut, end }

        private let descriptor: Int32
        private var pending: [UInt8] = []
        private var ended = false

        init(descriptor: Int32) { self.descriptor = descriptor }

        /// The next line; `timedOut` when none came within `limit` (nil: no limit); `end` once
        /// the other side is closed (or the descriptor fails).
        func next(within limit: Duration?) -> Next {
            let deadline = limit.map { ContinuousClock.now.advanced(by: $0) }
            while true {
                if let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: pending[..<newline], as: UTF8.self)
                    pending.removeSubrange(...newline)
                    return .line(line)
                }
                if ended { return .end }
                var timeout: Int32 = -1
                var up = false
                if let deadline {
                    // Time up: one look without waiting first, for what came while this thread
                    // did not run (a loaded machine, a guard stopped and woken): a server that
                    // spoke is not silent (found when a loaded test run's guard killed the jobs
                    // of a server heard from all along).
                    let left = ContinuousClock.now.duration(to: deadline)
                    up = left <= .zero
                    let (seconds, attoseconds) = max(left, .zero).components
                    timeout = Int32(clamping: seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)
                }
                var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
                let ready = poll(&poller, 1, timeout)
                if ready < 0 {
                    if errno == EINTR { continue }
                    ended = true
                    continue
                }
                if ready == 0 {
                    if up { return .timedOut }
                    continue   // woken early: the time left is looked at again
                }
                var buffer = [UInt8](repeating: 0, count: 512)
                let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
                if count < 0, errno == EINTR || errno == EAGAIN { continue }
                if count <= 0 { ended = true; continue }
                pending += buffer[0..<count]
                // A server sends short lines; a long run without a newline is not one of them.
                if pending.count > 4096 { pending.removeAll() }
            }
        }
    }
}
