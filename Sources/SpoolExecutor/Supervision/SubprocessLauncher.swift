import Foundation
import Glibc
import Logging
import SpoolCore
import Subprocess
import Synchronization
import SystemPackage

/// Starts real child processes with swift-subprocess, with every guarantee `ChildLauncher`
/// lists. One per server; the server's environment is read once.
public struct SubprocessLauncher: ChildLauncher {
    private let serverEnvironment: [String: String]
    private let logger: Logger

    public init(logger: Logger, serverEnvironment: [String: String] = ProcessInfo.processInfo.environment) {
        self.logger = logger
        self.serverEnvironment = serverEnvironment
    }

    public func launch(_ launch: ChildLaunch, events: ChildEvents) async throws(ExecutorError) -> any ChildProcess {
        // The channels exist before the child does, so nothing it writes is missed.
        let messages = try launch.messages.map { path throws(ExecutorError) in try MessageChannel(at: path, made: launch.messagesMade) }
        let commands: CommandChannel?
        do { commands = try launch.commands.map { path throws(ExecutorError) in try CommandChannel(at: path) } } catch {
            messages?.remove()
            throw error
        }
        let output: OutputPipe
        do { output = try OutputPipe(fences: launch.fencedOutput) } catch {
            messages?.remove()
            commands?.remove()
            throw error
        }
        var stdin: FileDescriptor?
        var gate: Gate?
        var argv = launch.argv
        if launch.gate {
            // The shell's stdin is the gate; it opens the job's stdin itself when it execs. A
            // socket pair: close-on-exec from birth (no `pipe2` here), so no process started
            // meanwhile, by anything, holds the server's end and keeps end-of-file away.
            var ends: [Int32] = [-1, -1]
            guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &ends) == 0 else {
                let code = errno   // before the clean-up's calls set it
                messages?.remove()
                commands?.remove()
                output.remove()
                throw ExecutorError("cannot make the gate (a socket pair)", errno: code)
            }
            stdin = FileDescriptor(rawValue: ends[0])
            gate = Gate(writer: ends[1])
            argv = ["/bin/sh", "-c", Gate.script, "spool-gate", launch.stdin ?? "/dev/null"] + argv
        } else if let path = launch.stdin {
            do { stdin = try FileDescriptor.open(FilePath(path), .readOnly, options: .closeOnExec) } catch {
                messages?.remove()
                commands?.remove()
                output.remove()
                throw ExecutorError("cannot open \(path) as the child's stdin", errno: (error as? Errno)?.rawValue ?? EIO)
            }
        }
        var environment: [Environment.Key: String] = [:]
        for (key, value) in ChildEnvironment.make(inheriting: serverEnvironment, adding: launch.environment,
                                                                   workingDirectory: launch.workingDirectory) {
            guard let name = Environment.Key(rawValue: key) else { continue }
            environment[name] = value
        }
        let configuration = Configuration(
            executable: argv[0].contains("/") ? .path(FilePath(argv[0])) : .name(argv[0]),
            arguments: Arguments(Array(argv.dropFirst())), environment: .custom(environment),
            workingDirectory: FilePath(launch.workingDirectory), platformOptions: Self.platformOptions(killGrace: launch.killGrace))
        return try await SubprocessChild.start(configuration, stdin: stdin, messages: messages, commands: commands, output: output,
                                               gate: gate, marker: launch.marker, killGrace: launch.killGrace, events: events, logger: logger)
    }

    static func platformOptions(killGrace: Duration) -> PlatformOptions {
        var options = PlatformOptions()
        // Its own session and process group (pgid == pid), so the whole tree is signalled as one.
        options.createSession = true
        // Applies only if the supervision itself is cancelled (the server is torn down).
        options.teardownSequence = [.send(signal: .terminate, toProcessGroup: true, allowedDurationToNextStep: killGrace)]
        return options
    }
}

/// A gated child's gate: the server's end of the socket pair that is the waiting shell's stdin. The shell
/// reads one line; on `go` it becomes the job's command (`exec`: the same pid, group and output
/// pipes) with the job's stdin file (its first argument) as stdin. End-of-file — the gate
/// closed unopened, or the server died and the kernel closed it — or anything else: exit 125,
/// having run nothing. No file, so no path two launches could share.
final class Gate: Sendable {
    static let script = #"read -r go && [ "$go" = go ] || exit 125; stdin=$1; shift; exec "$@" < "$stdin""#
    static let exitWithoutRunning: Int32 = 125

    private let writer: Mutex<Int32>

    init(writer: Int32) { self.writer = Mutex(writer) }

    /// Writes `go` and closes the gate (the line waits in the socket for the shell); false when it
    /// was closed already or the write failed.
    func open() -> Bool {
        writer.withLock { descriptor in
            guard descriptor >= 0 else { return false }
            defer {
                Glibc.close(descriptor)
                descriptor = -1
            }
            let line: [UInt8] = Array("go\n".utf8)
            return line.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) } == line.count
        }
    }

    /// Closes the gate unopened (the shell reads end-of-file and exits); a no-op once closed.
    func close() {
        writer.withLock { descriptor in
            if descriptor >= 0 { Glibc.close(descriptor) }
            descriptor = -1
        }
    }
}

/// One running child and the task that supervises it to its end.
final class SubprocessChild: ChildProcess {
    let pid: Int32
    private let supervision: Task<ChildExit, Never>
    private let commands: CommandChannel?
    private let output: OutputPipe
    private let gate: Gate?
    private let gone: Flag
    private let gateOpened: Flag
    private let stopping: GroupStop

    private init(pid: Int32, supervision: Task<ChildExit, Never>, commands: CommandChannel?, output: OutputPipe, gate: Gate?,
                 gone: Flag, gateOpened: Flag, stopping: GroupStop) {
        self.pid = pid
        self.supervision = supervision
        self.commands = commands
        self.output = output
        self.gate = gate
        self.gone = gone
        self.gateOpened = gateOpened
        self.stopping = stopping
    }

    // `gone` is shared with the supervision task, which sets it once the child is reaped;
    // `gateOpened` too, which reads it then.
    private final class Flag: Sendable { let value = Atomic<Bool>(false) }

    static func start(_ configuration: Configuration, stdin: FileDescriptor?, messages: MessageChannel?, commands: CommandChannel?,
                      output: OutputPipe, gate: Gate?, marker: String, killGrace: Duration, events: ChildEvents,
                      logger: Logger) async throws(ExecutorError) -> SubprocessChild {
        let flag = Flag()
        let gateOpened = Flag()
        let stopping = GroupStop()
        let spawnedAt = Mutex(ContinuousClock.now)
        let (spawns, spawned) = AsyncStream<Result<Int32, ExecutorError>>.makeStream()
        // unstructured: the supervision outlives this call (a warm worker lives across many jobs);
        // the child's `exit()` awaits it, and cancelling that wait tears the child down.
        let supervision = Task<ChildExit, Never> {
            // Each task says whether it is the drain's time limit (true) or a reader that ended.
            await withTaskGroup(of: Bool.self) { group in
                if let messages { group.addTask { await messages.read(events.message); return false } }
                group.addTask { await output.read(events.output); return false }
                let status = await run(configuration, stdin: stdin, output: output, spawned: spawned) {
                    spawnedAt.withLock { $0 = .now }
                }
                flag.value.store(true, ordering: .releasing)
                guard let (pid, status) = status else {
                    messages?.remove()
                    commands?.remove()
                    output.remove()
                    gate?.close()
                    group.cancelAll()
                    stopping.settle()
                    return .exited(-1)
                }
                LiveChildren.remove(pid)
                // A gated child whose gate never opened ran nothing but the waiting shell, which
                // starts nothing: no sweep (which would also find the job's marker on a process
                // that runs the job for real elsewhere, the look-ahead having been overtaken).
                let ranItsCommand = gate == nil || gateOpened.value.load(ordering: .acquiring)
                if ranItsCommand { events.exited() }
                // A stop under way (SIGTERM sent, SIGKILL not yet): the rest of the group keeps the
                // stop's grace — a wrapper shell dies at SIGTERM at once, its program may take the
                // grace to save its work (found by attacking the build: it was SIGKILLed with it).
                await stopping.graceForGroup(pid, killGrace: killGrace)
                // The leader is gone: leave nothing behind. Its group first (pgid == pid, and the id
                // cannot be reused while any member is alive), then whatever left the group.
                kill(-pid, SIGKILL)
                stopping.settle()
                // Our write end of the FIFO goes now, so its end-of-file (once every process that
                // had it open is dead) reaches the reader while the sweep below runs.
                messages?.closeWriter()
                output.closeWriter()
                let young = ContinuousClock.now < spawnedAt.withLock { $0 } + .seconds(1)
                // It led its own session: what is still in it is the job's, whatever its group or
                // environment. Unless a process has its pid again (reaped, the pid was free: the
                // number is someone else's now — found in review).
                let sessionKept = kill(pid, 0) != 0 && errno == ESRCH
                let escaped = ranItsCommand ? await OrphanReaper.killMarked(marker, bornAfter: young ? pid : nil, session: sessionKept ? pid : nil,
                                                                            ours: LiveChildren.contains) : []
                if !escaped.isEmpty {
                    logger.warning("killed processes a child left behind outside its process group",
                                   metadata: ["marker": "\(marker)", "pids": "\(escaped)"])
                }
                ChildSessions.report(.ended(pid))
                // Then the output and the messages: what is still in the pipes, to end-of-file (2 s at
                // most, in case something unkillable still holds one open).
                var reading = (messages == nil ? 1 : 2)
                group.addTask { try? await Task.sleep(for: .seconds(2)); return true }
                while reading > 0, let timeUp = await group.next(), !timeUp { reading -= 1 }
                group.cancelAll()
                messages?.remove()
                commands?.remove()
                output.remove()
                gate?.close()
                return status
            }
        }
        for await result in spawns {
            switch result {
            case .success(let pid):
                return SubprocessChild(pid: pid, supervision: supervision, commands: commands, output: output, gate: gate, gone: flag,
                                       gateOpened: gateOpened, stopping: stopping)
            case .failure(let error): _ = await supervision.value; throw error
            }
        }
        _ = await supervision.value
        throw ExecutorError("the child process could not be started")
    }

    /// Runs the process to its end; nil when it could not be spawned (reported on `spawned`).
    private static func run(_ configuration: Configuration, stdin: FileDescriptor?, output: OutputPipe,
                            spawned: AsyncStream<Result<Int32, ExecutorError>>.Continuation,
                            onSpawn: @escaping @Sendable () -> Void) async -> (Int32, ChildExit)? {
        let started = Atomic<Int32>(0)
        // The job's stdin (its input file) is ours to close, exactly once: once the child has it
        // (after the spawn), or when the spawn failed. swift-subprocess is told not to close it,
        // because on a failed spawn it closes a descriptor it was told to close, and closing it
        // here too closed whatever had reused the number in between (a client's socket: NIO
        // then crashed on EBADF).
        let stdinOpen = Atomic<Bool>(stdin != nil)
        @Sendable func closeStdin() {
            if stdinOpen.exchange(false, ordering: .acquiringAndReleasing) { try? stdin?.close() }
        }
        defer { closeStdin() }
        func spawnedNow(_ pid: Int32) {
            LiveChildren.insert(pid)
            ChildSessions.report(.began(pid))
            closeStdin()
            onSpawn()
            started.store(pid, ordering: .releasing)
            spawned.yield(.success(pid))
            spawned.finish()
        }
        func run<Input: InputProtocol>(_ input: Input) async throws -> TerminationStatus {
            // One pipe of the launcher's for stdout and stderr (so their lines keep their order),
            // read by the supervision task. The same descriptor for both: `.combinedWithOutput`
            // would duplicate it, and a copy made from a descriptor not closed after the spawn is
            // never closed (a leak per child, and end-of-file never comes).
            let pipe = FileDescriptor(rawValue: output.childEnd)
            return try await Subprocess.run(configuration, input: input, output: .fileDescriptor(pipe, closeAfterSpawningProcess: false),
                                            error: .fileDescriptor(pipe, closeAfterSpawningProcess: false)) { execution in
                spawnedNow(execution.processIdentifier.value)
            }.terminationStatus
        }
        var busy = Duration.zero
        while true {
            do {
                let status = if let stdin { try await run(.fileDescriptor(stdin, closeAfterSpawningProcess: false)) } else { try await run(.none) }
                return switch status {
                case .exited(let code): (started.load(ordering: .acquiring), .exited(code))
                case .signaled(let signal): (started.load(ordering: .acquiring), .signaled(signal))
                }
            } catch {
                let pid = started.load(ordering: .acquiring)
                if pid == 0, busy < Self.busyPatience, (error as? SubprocessError)?.underlyingError == Errno(rawValue: ETXTBSY) {
                    // Its executable is open for writing somewhere: a deploy copying a new version
                    // over it, or a child forked (by anything in this process) while the file was
                    // written, which holds the descriptor until its own exec. Tried again shortly,
                    // unless the start was given up meanwhile (its caller cancelled).
                    let pause = Duration.milliseconds(busy < .milliseconds(100) ? 5 : 50)
                    if (try? await Task.sleep(for: pause)) != nil {
                        busy += pause
                        continue
                    }
                }
                if pid == 0 {
                    // The system error behind it tells the server's own shortage (EAGAIN, EMFILE) from the job's fault.
                    let code = ((error as? SubprocessError)?.underlyingError).map { $0.rawValue } ?? 0
                    spawned.yield(.failure(ExecutorError("\(error)", code: code)))
                    spawned.finish()
                    return nil
                }
                return (pid, .exited(-1))
            }
        }
    }

    /// How long a start whose executable is busy (`ETXTBSY`: open for writing) is tried again.
    static let busyPatience = Duration.seconds(2)

    func signal(_ signal: Int32) {
        // Also after the leader is gone, while its group has a stop's grace (`GroupStop`).
        guard stopping.takes(signal) else { return }
        kill(-pid, signal)
    }

    func send(_ line: String) async -> Bool {
        guard let commands, !gone.value.load(ordering: .acquiring) else { return false }
        return await commands.send(line)
    }

    func sendNow(_ line: String) -> Bool {
        guard let commands, !gone.value.load(ordering: .acquiring) else { return false }
        return commands.writeWhole(line)
    }

    func unreadCommandBytes() -> Int { commands?.unreadBytes() ?? 0 }

    func fenceOutput() -> [UInt8]? {
        // Also once the child is gone: until the launcher closes its write ends the marker
        // still goes in behind the last output, which is read to end-of-file.
        output.fence()
    }

    func openGate() -> Bool {
        guard let gate, !gone.value.load(ordering: .acquiring),
              gateOpened.value.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else { return false }
        if gate.open() { return true }
        // Not written (the shell is gone): it ran nothing, and its end is a gated shell's.
        gateOpened.value.store(false, ordering: .releasing)
        return false
    }

    func exit() async -> ChildExit {
        await withTaskCancellationHandler {
            await supervision.value
        } onCancel: {
            supervision.cancel()
        }
    }

    func residentMegabytes() async -> Double? {
        let group = pid
        return try? await BlockingIO.run { ProcessTree.residentMegabytes(of: ProcessTree.members(ofGroup: group)) }
    }

    func gpuMegabytes() async -> Double? {
        let group = pid
        guard let members = try? await BlockingIO.run({ ProcessTree.members(ofGroup: group) }) else { return nil }
        // No process of it on a GPU is 0 MiB, not no reading (found by attacking the build: a worker
        // that touched CUDA only later had no baseline, and its growth was never checked).
        guard let memory = await GPUProbe.processMemory() else { return nil }
        return members.compactMap { memory[$0] }.reduce(0, +)
    }
}

/// The sessions of the children this process starts (each leads its own), as they begin and
/// once each has ended and its leftovers were swept: for the server's guard, which kills them
/// by session when the server dies — a job that rewrites its process title (Perl's `$0`,
/// `setproctitle`) wipes the environment the reaper's scan finds it by (found by attacking the build).
public enum ChildSessions {
    public enum Change: Sendable { case began(Int32), ended(Int32) }

    private static let observer = Mutex<(@Sendable (Change) -> Void)?>(nil)

    /// Sets the one observer (the server's guard).
    public static func observe(_ body: @escaping @Sendable (Change) -> Void) { observer.withLock { $0 = body } }

    static func report(_ change: Change) { observer.withLock { $0 }?(change) }
}

/// The children this server's launcher started and has not reaped yet. The sweep after a job
/// passes over them: none of them descends from another child (each is the server's own), and
/// each has a supervision of its own that leaves nothing behind.
enum LiveChildren {
    private static let pids = Mutex<Set<Int32>>([])

    static func insert(_ pid: Int32) { _ = pids.withLock { $0.insert(pid) } }
    static func remove(_ pid: Int32) { _ = pids.withLock { $0.remove(pid) } }
    @Sendable static func contains(_ pid: Int32) -> Bool { pids.withLock { $0.contains(pid) } }
}
