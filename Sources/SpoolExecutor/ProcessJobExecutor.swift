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
        await JobFiles.prepareAhead(JobPaths(dataDirectory: configuration.dataDirectory, job: job.id), input: job.input)
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
        do {
            try await JobFiles.prepare(paths, input: job.input)
            log = try LogSink(path: paths.log, limit: configuration.logLimitBytes)
        } catch {
            return ExecutionResult(.spawnFailed(message: "\(error)"))
        }
        let launch = ChildLaunch(argv: plan.argv, environment: plan.environment, workingDirectory: plan.workingDirectory,
                                 stdin: paths.input, messages: paths.messages, marker: "SPOOL_JOB_ID=\(job.id)",
                                 killGrace: configuration.killGrace)
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
enum JobFiles {
    /// Job directories made by `prepareAhead` and not yet used by `prepare`.
    private static let ready = Mutex(Set<String>())

    /// `prepare`, ahead of the start: the start then finds the files there. A failure is left
    /// for the start to find and report.
    static func prepareAhead(_ paths: JobPaths, input: JSONValue) async {
        guard (try? await make(paths, input: input)) != nil else { return }
        ready.withLock { ready in
            // A job looked at but never started (canceled, or overtaken) leaves its name here: bounded.
            if ready.count >= 256 { ready.removeAll() }
            ready.insert(paths.directory)
        }
    }

    /// The job's directory and outputs folder, and its input as `input.json` (on the blocking
    /// pool), unless `prepareAhead` made them.
    static func prepare(_ paths: JobPaths, input: JSONValue) async throws {
        if ready.withLock({ $0.remove(paths.directory) }) != nil { return }
        try await make(paths, input: input)
    }

    private static func make(_ paths: JobPaths, input: JSONValue) async throws {
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
        }
    }
}
