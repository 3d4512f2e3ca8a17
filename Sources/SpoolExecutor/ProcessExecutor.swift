import Glibc
import Logging
import SpoolCore
import Subprocess
import Synchronization
import SystemPackage

/// Why the server stops a running job.
public enum StopReason: Sendable, Equatable {
    case timeout
    case cancel
    case shutdown
}

/// Everything needed to run one attempt of a job as a child process.
public struct ExecutionSpec: Sendable {
    public var job: JobID
    public var plan: LaunchPlan
    public var paths: JobPaths
    public var input: JSONValue
    public var timeout: Duration
    /// Time between SIGTERM and SIGKILL when a job is stopped.
    public var killGrace: Duration
    public var logLimitBytes: Int

    public init(job: JobID, plan: LaunchPlan, paths: JobPaths, input: JSONValue, timeout: Duration,
                killGrace: Duration, logLimitBytes: Int) {
        self.job = job
        self.plan = plan
        self.paths = paths
        self.input = input
        self.timeout = timeout
        self.killGrace = killGrace
        self.logLimitBytes = logLimitBytes
    }
}

/// What a running job reports back while it runs.
public struct ExecutionObserver: Sendable {
    /// The process started; its pid is also its process group.
    public var started: @Sendable (Int32) async -> Void
    public var message: @Sendable (JobMessage) async -> Void
    /// Bytes the job wrote to stdout or stderr (already on their way to the log file).
    public var output: @Sendable ([UInt8]) async -> Void
    public init(started: @escaping @Sendable (Int32) async -> Void = { _ in },
                message: @escaping @Sendable (JobMessage) async -> Void = { _ in },
                output: @escaping @Sendable ([UInt8]) async -> Void = { _ in }) {
        self.started = started
        self.message = message
        self.output = output
    }
}

/// Runs jobs as child processes with swift-subprocess.
///
/// Each job leads its own session and process group (`setsid`), so the whole tree is
/// signalled as one: on timeout, cancel or shutdown it gets SIGTERM, then SIGKILL after the
/// grace period; and once the leader has exited, whatever is left in its group is killed, so
/// no grandchild outlives its job. stdin is the input file; stdout and stderr are drained
/// into the capped log; messages arrive on the FIFO.
public struct ProcessExecutor: Sendable {
    let logger: Logger

    public init(logger: Logger) { self.logger = logger }

    /// Creates the job's directory, input file, outputs folder and message FIFO.
    public func prepare(_ spec: ExecutionSpec) async throws {
        let paths = spec.paths
        try await JobFiles.prepare(paths, input: spec.input) { try MessageChannel.create(at: paths.messages) }
    }

    /// Runs the attempt to its end and says how it ended. Never throws: a job that cannot
    /// start is `.spawnFailed`. `stops` delivers timeout-independent stop requests.
    public func run(_ spec: ExecutionSpec, stops: AsyncStream<StopReason>, observer: ExecutionObserver) async -> JobOutcome {
        do {
            try await prepare(spec)
        } catch {
            return .spawnFailed(message: "\(error)")
        }
        let log: LogSink
        do { log = try LogSink(path: spec.paths.log, limit: spec.logLimitBytes) } catch { return .spawnFailed(message: error.description) }
        let inputDescriptor: FileDescriptor
        do { inputDescriptor = try FileDescriptor.open(FilePath(spec.paths.input), .readOnly, options: .closeOnExec) } catch {
            await log.close()
            return .spawnFailed(message: "cannot open the input file: \(error)")
        }

        let outcome = await supervise(spec, stdin: inputDescriptor, log: log, stops: stops, observer: observer)
        await log.close()
        let messages = spec.paths.messages
        _ = try? await BlockingIO.run { unlink(messages) }
        return outcome
    }

    private enum Event: Sendable {
        case exited(TerminationStatus)
        case failedToStart(String)
        case stop(StopReason)
        case noMoreStops
        case messagesClosed
        case escalated
    }

    private func supervise(_ spec: ExecutionSpec, stdin: FileDescriptor, log: LogSink,
                           stops: AsyncStream<StopReason>, observer: ExecutionObserver) async -> JobOutcome {
        let group = ProcessGroupBox()
        let argv = spec.plan.argv
        let executable: Executable = argv[0].contains("/") ? .path(FilePath(argv[0])) : .name(argv[0])
        var environmentUpdates: [Environment.Key: String?] = [:]
        for (key, value) in spec.plan.environment { environmentUpdates[Environment.Key(rawValue: key)!] = value }
        let environment = Environment.inherit.updating(environmentUpdates)
        var options = PlatformOptions()
        options.createSession = true
        // Applies only if this task itself is cancelled (the server is being torn down).
        options.teardownSequence = [.send(signal: .terminate, toProcessGroup: true, allowedDurationToNextStep: spec.killGrace)]
        let platformOptions = options
        let workingDirectory = FilePath(spec.plan.workingDirectory)
        let logger = self.logger

        return await withTaskGroup(of: Event.self) { tasks in
            tasks.addTask {
                do {
                    let result = try await Subprocess.run(
                        executable, arguments: Arguments(Array(argv.dropFirst())), environment: environment,
                        workingDirectory: workingDirectory, platformOptions: platformOptions,
                        input: .fileDescriptor(stdin, closeAfterSpawningProcess: true), output: .sequence, error: .sequence
                    ) { execution in
                        let pid = execution.processIdentifier.value
                        group.set(pid)
                        await observer.started(pid)
                        await withTaskGroup(of: Void.self) { drains in
                            drains.addTask { try? await Self.drain(execution.standardOutput, into: log, observer: observer) }
                            drains.addTask { try? await Self.drain(execution.standardError, into: log, observer: observer) }
                        }
                    }
                    return .exited(result.terminationStatus)
                } catch {
                    try? stdin.close()
                    return .failedToStart("\(error)")
                }
            }
            tasks.addTask {
                for await reason in stops { return .stop(reason) }
                return .noMoreStops
            }
            tasks.addTask {
                try? await Task.sleep(for: spec.timeout)
                return Task.isCancelled ? .noMoreStops : .stop(.timeout)
            }
            tasks.addTask {
                do {
                    try await MessageChannel.read(from: spec.paths.messages) { line in
                        let message: JobMessage
                        do { message = try JobMessage(line: line) } catch {
                            log.note("ignored a message on $SPOOL_MESSAGES: \(error)")
                            return
                        }
                        await observer.message(message)
                    }
                } catch {
                    if !Task.isCancelled {
                        logger.warning("job message channel failed", metadata: ["job": "\(spec.job)", "error": "\(error)"])
                    }
                }
                return .messagesClosed
            }

            var stopReason: StopReason?
            var outcome: JobOutcome = .spawnFailed(message: "the process ended without a status")
            loop: while let event = await tasks.next() {
                switch event {
                case .exited(let status):
                    outcome = Self.outcome(of: status, stoppedFor: stopReason)
                    break loop
                case .failedToStart(let message):
                    outcome = .spawnFailed(message: message)
                    break loop
                case .stop(let reason):
                    guard stopReason == nil else { continue }
                    stopReason = reason
                    log.note(Self.describe(reason, grace: spec.killGrace))
                    tasks.addTask {
                        // SIGTERM to the whole group, then SIGKILL once the grace period is up.
                        // A stop can arrive before the process is spawned: wait for its pid.
                        var pgid = group.value
                        while pgid == nil, !Task.isCancelled {
                            try? await Task.sleep(for: .milliseconds(2))
                            pgid = group.value
                        }
                        guard let pgid else { return .escalated }
                        kill(-pgid, SIGTERM)
                        try? await Task.sleep(for: spec.killGrace)
                        if !Task.isCancelled { kill(-pgid, SIGKILL) }
                        return .escalated
                    }
                case .noMoreStops, .messagesClosed, .escalated:
                    continue
                }
            }
            tasks.cancelAll()
            // The leader is gone; leave nothing of its group behind (pgid == pid, and the
            // id cannot be reused while any member of the group is alive).
            if let pgid = group.value { kill(-pgid, SIGKILL) }
            return outcome
        }
    }

    static func drain(_ output: SubprocessOutputSequence, into log: LogSink, observer: ExecutionObserver) async throws {
        for try await chunk in output {
            let bytes = chunk.withUnsafeBytes { Array($0) }
            log.write(bytes)
            await observer.output(bytes)
        }
    }

    static func outcome(of status: TerminationStatus, stoppedFor reason: StopReason?) -> JobOutcome {
        switch reason {
        case .timeout?: return .timedOut
        case .cancel?: return .canceled
        case .shutdown?: return .stoppedForShutdown
        case nil: break
        }
        switch status {
        case .exited(0): return .succeeded
        case .exited(let code): return .exited(code: code)
        case .signaled(let signal): return .signaled(signal: signal)
        }
    }

    static func describe(_ reason: StopReason, grace: Duration) -> String {
        let why = switch reason {
        case .timeout: "the job ran past its timeout"
        case .cancel: "the job was canceled"
        case .shutdown: "the server is shutting down"
        }
        return "\(why): sending SIGTERM to its process group, SIGKILL in \(grace.components.seconds) s"
    }
}

/// The running job's process group, shared between the task that spawned it and the ones that signal it.
final class ProcessGroupBox: Sendable {
    private let storage = Mutex<Int32?>(nil)
    var value: Int32? { storage.withLock { $0 } }
    func set(_ pid: Int32) { storage.withLock { $0 = pid } }
}

/// The files a job starts with, in either mode.
enum JobFiles {
    /// The job's directory and outputs folder, and its input as `input.json` (on the blocking pool).
    static func prepare(_ paths: JobPaths, input: JSONValue, also extra: @escaping @Sendable () throws -> Void = {}) async throws {
        let bytes = Array(input.canonicalText.utf8)
        try await BlockingIO.run {
            for directory in [paths.directory, paths.outputs] where mkdir(directory, 0o755) != 0 && errno != EEXIST {
                throw ExecutorError("cannot create \(directory): \(String(cString: strerror(errno)))")
            }
            let descriptor = open(paths.input, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard descriptor >= 0 else { throw ExecutorError("cannot write \(paths.input): \(String(cString: strerror(errno)))") }
            defer { close(descriptor) }
            let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
            guard written == bytes.count else { throw ExecutorError("cannot write \(paths.input): short write") }
            try extra()
        }
    }
}
