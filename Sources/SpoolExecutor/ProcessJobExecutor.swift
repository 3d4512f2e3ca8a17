import Glibc
import Logging
import SpoolCore
import Synchronization

/// Runs each job as a fresh child process (the default mode).
///
/// The child gets the job's argv (its type's command with `{input.KEY}` filled in), the job
/// variables, its input as stdin and in `input.json`, a message FIFO, and leads its own
/// process group. Its output goes to the job's capped log. A timeout, cancel or shutdown
/// sends SIGTERM to the group, then SIGKILL after the kill grace; once the child has exited,
/// nothing it started is left running (see `ChildLauncher`).
public struct ProcessJobExecutor: JobExecutor {
    public struct Configuration: Sendable {
        public var dataDirectory: String
        public var killGrace: Duration = .seconds(10)
        public var logLimitBytes: Int = 10 << 20

        public init(dataDirectory: String) { self.dataDirectory = dataDirectory }
    }

    private let catalog: JobCatalog
    private let configuration: Configuration
    private let launcher: any ChildLauncher
    private let clock: SpoolClock

    public init(catalog: JobCatalog, configuration: Configuration, launcher: any ChildLauncher, clock: SpoolClock = .system) {
        self.catalog = catalog
        self.configuration = configuration
        self.launcher = launcher
        self.clock = clock
    }

    public func prepare(_ job: Job) async {
        await JobFiles.prepareAhead(JobPaths(dataDirectory: configuration.dataDirectory, job: job.id), input: job.input, messages: true)
    }

    public func run(_ job: Job, on slot: SlotSpec, stops: AsyncStream<StopReason>, observer: ExecutionObserver) async -> ExecutionResult {
        guard let type = catalog[job.type] else {
            return ExecutionResult(.spawnFailed(message: "this server has no job type \"\(job.type)\" (was it removed from the configuration?)"))
        }
        let paths = JobPaths(dataDirectory: configuration.dataDirectory, job: job.id)
        let plan: LaunchPlan
        do { plan = try LaunchPlan(job: job, type: type, slot: slot, paths: paths) } catch {
            return ExecutionResult(.spawnFailed(message: error.description))
        }
        let log: LogSink
        let prepared = JobFiles.takeReady(paths)
        do {
            if prepared == nil { try await JobFiles.make(paths, input: job.input) }
            log = try LogSink(path: paths.log, limit: configuration.logLimitBytes)
        } catch {
            return ExecutionResult(.spawnFailed(message: "\(error)"))
        }
        let launch = ChildLaunch(argv: plan.argv, environment: plan.environment, workingDirectory: plan.workingDirectory,
                                 stdin: paths.input, messages: paths.messages, messagesMade: prepared?.messages ?? false,
                                 marker: "SPOOL_JOB_ID=\(job.id)", killGrace: configuration.killGrace)
        let events = ChildEvents(output: { bytes in
            log.write(bytes)
            await observer.output(bytes)
        }, message: { line in
            do { await observer.message(try JobMessage(line: line)) } catch { log.note("ignored a message on $SPOOL_MESSAGES: \(error)") }
        })
        let child: any ChildProcess
        do { child = try await launcher.launch(launch, events: events) } catch {
            await log.close()
            return ExecutionResult(.spawnFailed(message: error.description))
        }
        await observer.started(child.pid)
        let grace = configuration.killGrace
        let stopping = AttemptWatch.Stopping(
            how: "sending SIGTERM to its process group, SIGKILL in \(grace.readable)",
            ask: { _ in child.signal(SIGTERM) },
            force: { child.signal(SIGKILL) })
        let (end, reason) = await AttemptWatch.run(timeout: .seconds(job.timeoutSeconds), killGrace: grace, clock: clock, stops: stops,
                                                   note: log.note, stopping: stopping, until: { await child.exit().attemptEnd })
        await log.close()
        return ExecutionResult(JobOutcome(end, stoppedFor: reason))
    }
}

/// The files a job starts with, in either mode.
///
/// Creating a file is the dearest thing on a job's start path: 0.35–0.5 ms per file, directory
/// or FIFO on this project's build machines (their ext4; reopening an existing file costs 4 µs).
/// So `prepareAhead` makes all of them while the slot's current job still runs: the directory,
/// the outputs folder, `input.json`, an empty log, and in process mode the message FIFO.
enum JobFiles {
    /// What `prepareAhead` made for a job.
    struct Prepared: Sendable {
        /// The message FIFO is there, fresh (process mode).
        var messages: Bool
    }

    /// Job directories made by `prepareAhead` and not yet taken by a start.
    private static let ready = Mutex([String: Prepared]())

    /// The job's files, ahead of its start: the start then finds them there (`takeReady`). A
    /// failure is left for the start to find and report.
    static func prepareAhead(_ paths: JobPaths, input: JSONValue, messages: Bool = false) async {
        guard (try? await make(paths, input: input, messages: messages)) != nil else { return }
        ready.withLock { ready in
            // A job looked at but never started (canceled, or overtaken) leaves its name here: bounded.
            if ready.count >= 256 { ready.removeAll() }
            ready[paths.directory] = Prepared(messages: messages)
        }
    }

    /// What `prepareAhead` made for this job, once (a second call says nil). Synchronous: an
    /// async call leaves the caller's actor and comes back, two thread hand-offs on every start.
    static func takeReady(_ paths: JobPaths) -> Prepared? {
        ready.withLock { $0.removeValue(forKey: paths.directory) }
    }

    /// The job's files (on the blocking pool), for a start that found none ready (`takeReady`).
    static func make(_ paths: JobPaths, input: JSONValue) async throws {
        try await make(paths, input: input, messages: false)
    }

    private static func make(_ paths: JobPaths, input: JSONValue, messages: Bool) async throws {
        let bytes = Array(input.canonicalText.utf8)
        try await BlockingIO.run {
            for directory in [paths.directory, paths.outputs] where mkdir(directory, 0o755) != 0 && errno != EEXIST {
                throw ExecutorError("cannot create \(directory): \(String(cString: strerror(errno)))")
            }
            // The log, empty (an earlier attempt's lines stay: the log appends).
            let log = open(paths.log, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
            guard log >= 0 else { throw ExecutorError("cannot create \(paths.log): \(String(cString: strerror(errno)))") }
            close(log)
            if messages { try MessageChannel.makeFIFO(at: paths.messages) }
            let descriptor = open(paths.input, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard descriptor >= 0 else { throw ExecutorError("cannot write \(paths.input): \(String(cString: strerror(errno)))") }
            defer { close(descriptor) }
            let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
            guard written == bytes.count else { throw ExecutorError("cannot write \(paths.input): short write") }
        }
    }
}
