import Foundation
import Glibc
import Logging
import SpoolExecutor
import Synchronization

/// The server's end of its guard (`spool guard`, see `ServerGuard`): started once the data
/// directory is locked, sharing that lock, reading what the server sends on a socket only the
/// server holds the other end of. Started again when it exits while the server runs (after a
/// pause that doubles up to a minute while it keeps exiting at once).
///
/// `posix_spawn` directly, not swift-subprocess: the guard must inherit the lock's descriptor
/// (fd 3), and it is waited for by a thread of its own for as long as the server runs.
final class GuardProcess: Sendable {
    private struct State {
        var socket: Int32 = -1
        var finished = false
        /// When the server's jobs must be gone (with a shared store): sent again to a new guard.
        var deadline: ContinuousClock.Instant?
        var heartbeat: Task<Void, Never>?
        /// The children's sessions now, each with how many children under that pid have not
        /// ended (a new one may take a pid before the old one's end is told): sent again to a new guard.
        var sessions: [Int32: Int] = [:]
    }

    /// Spawns, sends and the clean stop take it in turn: a guard started while the server stops
    /// is told to stop as well (found in review).
    private let state = Mutex(State())
    /// Before the next guard is started, when this one exits.
    private let pause = Mutex(Duration.seconds(1))
    private let arguments: [String]
    /// The server's own copy of the lock's descriptor, for every guard it starts (the lock's
    /// descriptor itself is closed as `run` returns).
    private let lockDescriptor: Int32
    private let logger: Logger

    /// `arguments` after the executable: `guard --data-dir … --server-pid …` and the log's settings.
    init(dataDirectory: String, lockDescriptor: Int32, logArguments: [String], logger: Logger) {
        arguments = ["spool", "guard", "--data-dir", dataDirectory, "--server-pid", "\(getpid())"] + logArguments
        // Above the descriptors the guard gets, so that moving it to fd 3 (dup2) clears its close-on-exec.
        self.lockDescriptor = fcntl(lockDescriptor, F_DUPFD_CLOEXEC, 10)
        self.logger = logger
    }

    /// Starts the guard (and keeps one running). A server whose guard cannot start runs without
    /// one, and says so: its jobs then outlive a crash until its next start, as the reaper finds them.
    func start() {
        do {
            guard let pid = try spawn() else { return }
            logger.debug("guard started", metadata: ["guard_pid": "\(pid)"])
        } catch {
            logger.error("could not start the guard process; a crash of this server would leave its jobs running until its next start",
                         metadata: ["error": "\(error)"])
        }
    }

    /// Tells the guard of each child's session as it begins and once it has ended (`ChildSessions`).
    func followSessions() {
        ChildSessions.observe { [weak self] change in
            guard let self else { return }
            state.withLock { state in
                switch change {
                case .began(let pid):
                    state.sessions[pid, default: 0] += 1
                    send("\(ServerGuard.Message.session) \(pid)\n", in: &state)
                case .ended(let pid):
                    if let count = state.sessions[pid] { state.sessions[pid] = count > 1 ? count - 1 : nil }
                    send("\(ServerGuard.Message.ended) \(pid)\n", in: &state)
                }
            }
        }
    }

    /// Tells the guard that the server's jobs must be gone within `limit`, unless told again,
    /// and, from the first time on, that the server is alive, four times a second: the guard acts
    /// on the deadline only once it has heard nothing for a second (`ServerGuard`), so a server
    /// that can still stop its jobs itself is left to do so.
    func killAfter(_ limit: Duration) {
        let deadline = ContinuousClock.now.advanced(by: limit)
        state.withLock { state in
            state.deadline = deadline
            send(Self.killAfterLine(deadline), in: &state)
            if state.heartbeat == nil, !state.finished {
                state.heartbeat = Task { [weak self] in   // unstructured: for the server's life; cancelled by finish()
                    while (try? await Task.sleep(for: .milliseconds(250))) != nil, let self {
                        self.state.withLock { self.send("\(ServerGuard.Message.alive)\n", in: &$0) }
                    }
                }
            }
        }
    }

    private static func killAfterLine(_ deadline: ContinuousClock.Instant) -> String {
        let left = max(.zero, ContinuousClock.now.duration(to: deadline))
        return "\(ServerGuard.Message.killAfter) \(left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000)\n"
    }

    /// A clean stop: the guard exits without looking for jobs, and is not started again.
    func finish() {
        state.withLock { state in
            send("\(ServerGuard.Message.stop)\n", in: &state)
            state.finished = true
            state.heartbeat?.cancel()
            if state.socket >= 0 { close(state.socket) }
            state.socket = -1
            close(lockDescriptor)
        }
    }

    /// Never blocks, never raises SIGPIPE: a guard that is not reading loses the line.
    private func send(_ line: String, in state: inout State) {
        guard state.socket >= 0 else { return }
        _ = Array(line.utf8).withUnsafeBytes { Glibc.send(state.socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
    }

    struct SpawnError: Error, CustomStringConvertible {
        var call: String
        var code: Int32
        var description: String { "\(call): \(String(cString: strerror(code)))" }
    }

    /// A new guard (nil once the server has stopped cleanly), told the deadline the last one had.
    private func spawn() throws -> pid_t? {
        try state.withLock { state -> pid_t? in
            guard !state.finished else { return nil }
            guard lockDescriptor >= 0 else { throw SpawnError(call: "fcntl", code: EBADF) }
            var ends: [Int32] = [-1, -1]
            guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &ends) == 0 else {
                throw SpawnError(call: "socketpair", code: errno)
            }
            // Above the descriptors the guard gets (see `lockDescriptor`).
            let input = fcntl(ends[1], F_DUPFD_CLOEXEC, 10)
            close(ends[1])
            defer { if input >= 0 { close(input) } }
            guard input >= 0 else {
                close(ends[0])
                throw SpawnError(call: "fcntl", code: errno)
            }
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            // Nothing else: a descriptor the server holds without close-on-exec (one it inherited,
            // say) would stay open as long as the guard.
            for descriptor in Self.inheritable() { posix_spawn_file_actions_addclose(&actions, descriptor) }
            posix_spawn_file_actions_adddup2(&actions, input, 0)
            if fcntl(2, F_GETFD) >= 0 {
                posix_spawn_file_actions_adddup2(&actions, 2, 1)
            } else {   // no stderr to log to
                posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
                posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
            }
            posix_spawn_file_actions_adddup2(&actions, lockDescriptor, 3)
            var attributes = posix_spawnattr_t()
            posix_spawnattr_init(&attributes)
            defer { posix_spawnattr_destroy(&attributes) }
            // A group of its own: what is sent to the server's group (Ctrl-C) is not for the guard.
            posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK))
            posix_spawnattr_setpgroup(&attributes, 0)
            var noSignals = sigset_t()
            sigemptyset(&noSignals)
            posix_spawnattr_setsigmask(&attributes, &noSignals)
            let argv = arguments.map { strdup($0) } + [nil]
            defer { argv.forEach { free($0) } }
            var pid: pid_t = 0
            // The running binary, even when the file it came from was replaced since.
            let code = posix_spawn(&pid, "/proc/self/exe", &actions, &attributes, argv, environ)
            guard code == 0 else {
                close(ends[0])
                throw SpawnError(call: "posix_spawn", code: code)
            }
            if state.socket >= 0 { close(state.socket) }
            state.socket = ends[0]
            if let deadline = state.deadline { send(Self.killAfterLine(deadline), in: &state) }
            for (session, count) in state.sessions {
                for _ in 0..<count { send("\(ServerGuard.Message.session) \(session)\n", in: &state) }
            }
            let started = ContinuousClock.now
            Thread.detachNewThread { [self, pid] in
                var status: Int32 = 0
                while waitpid(pid, &status, 0) < 0, errno == EINTR {}
                exited(pid, status: status, after: ContinuousClock.now - started)
            }
            return pid
        }
    }

    /// This process's descriptors above stderr that an exec would keep open.
    static func inheritable() -> [Int32] {
        ProcessTree.numberedEntries(of: "/proc/self/fd").filter { descriptor in
            let flags = fcntl(descriptor, F_GETFD)
            return descriptor > 2 && flags >= 0 && flags & FD_CLOEXEC == 0
        }
    }

    /// The guard exited: unless the server stops, another is started, after a pause that doubles
    /// while they exit within a minute.
    private func exited(_ pid: pid_t, status: Int32, after lifetime: Duration) {
        guard !state.withLock({ $0.finished }) else { return }
        let wait = pause.withLock { pause -> Duration in
            if lifetime > .seconds(60) { pause = .seconds(1) }
            let wait = pause
            pause = min(pause * 2, .seconds(60))
            return wait
        }
        let how = status & 0x7f == 0 ? "exited with status \((status >> 8) & 0xff)" : "was killed by signal \(status & 0x7f)"
        logger.error("the guard process \(how); starting another", metadata: ["guard_pid": "\(pid)", "in": "\(wait)"])
        // On the thread that waited for the guard: its own, nothing else runs on it.
        Thread.sleep(forTimeInterval: Double(wait.components.seconds) + Double(wait.components.attoseconds) / 1e18)
        start()
    }
}
