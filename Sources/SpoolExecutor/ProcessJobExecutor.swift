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
///
/// A slot's next job, looked up while the current one runs (`prepare`), gets its files and its
/// process ahead: the process waits behind a gate and becomes the job's command when the job
/// starts (`StartedAhead`).
public struct ProcessJobExecutor: JobExecutor {
    public struct Configuration: Sendable {
        public var dataDirectory: String
        public var killGrace: Duration = .seconds(10)
        public var logLimitBytes: Int = 10 << 20
        /// Start a slot's next job's process ahead, behind a gate (on by default).
        public var startAhead = true

        public init(dataDirectory: String) { self.dataDirectory = dataDirectory }
    }

    private let catalog: JobCatalog
    private let configuration: Configuration
    private let launcher: any ChildLauncher
    private let clock: SpoolClock
    let ahead = StartedAhead()
    /// How long a look at a started-ahead job's executable, made when its slot's previous process
    /// exited, stands for one at the start: the slot's next start normally follows within a
    /// millisecond or so; an older look (the slot ran another job first, the store was down) is
    /// made again.
    static let checkFreshFor: Duration = .milliseconds(250)

    public init(catalog: JobCatalog, configuration: Configuration, launcher: any ChildLauncher, clock: SpoolClock = .system) {
        self.catalog = catalog
        self.configuration = configuration
        self.launcher = launcher
        self.clock = clock
    }

    public func prepare(_ job: Job, on slot: SlotSpec) async {
        let paths = JobPaths(dataDirectory: configuration.dataDirectory, job: job.id)
        var next = job
        next.start(on: slot.id, at: job.createdAt)   // the attempt and slot its start will have
        // A later attempt's files are readied at its start (`JobFiles.beginLaterAttempt`): a retry is rare.
        guard next.attempts <= 1 else {
            await dropPrepared(on: slot.id)   // the slot's look-ahead at another job goes, as a new one would replace it
            return
        }
        let plan = configuration.startAhead ? catalog[job.type].flatMap { try? LaunchPlan(job: next, type: $0, slot: slot, paths: paths) } : nil
        let serverPath = getenv("PATH").map { String(cString: $0) }
        guard let (work, dropped) = ahead.begin(job.id, on: slot.id, attempt: next.attempts, { () async -> StartedAhead.Gated? in
            await JobFiles.prepareAhead(paths, input: job.input, slot: slot.id, messages: true)
            guard let plan,
                  let executable = try? await BlockingIO.run({ ExecutableLookup.find(plan.argv[0], path: plan.environment["PATH"] ?? serverPath) }),
                  let prepared = JobFiles.takeReady(paths),
                  !prepared.reused else { return nil }   // an earlier run's files: readied at its start
            let launch = launch(job.id, plan, paths: paths, messagesMade: prepared.messages, gate: true)
            guard let started = try? await start(launch, paths: paths, slot: slot.id).get() else { return nil }
            return StartedAhead.Gated(launch: launch, executable: executable, started: started)
        }) else { return }
        for drop in dropped { await drop.value }
        _ = await work.value
    }

    public func startReady(_ job: Job, on slot: SlotSpec, observer: ExecutionObserver) -> Bool {
        guard let type = catalog[job.type] else { return false }
        let paths = JobPaths(dataDirectory: configuration.dataDirectory, job: job.id)
        // The launch is worked out only for a look-ahead that is otherwise ready (most starts have none).
        let fits = { (gated: StartedAhead.Gated) -> Bool in
            guard let plan = try? LaunchPlan(job: job, type: type, slot: slot, paths: paths) else { return false }
            return gated.launch.argv == plan.argv && gated.launch.environment == plan.environment
                && gated.launch.workingDirectory == plan.workingDirectory
        }
        guard let entry = ahead.takeReady(job.id, on: slot.id, attempt: job.attempts, freshSince: clock.now() - Self.checkFreshFor, fits: fits),
              let started = entry.ready?.started else { return false }
        started.observer.bind(observer)
        let opened = started.child.openGate()
        ahead.taken(job.id, entry, opened: opened)
        return opened
    }

    public func run(_ job: Job, on slot: SlotSpec, stops: AsyncStream<StopReason>, observer: ExecutionObserver) async -> ExecutionResult {
        let (entry, dropping, begun) = ahead.starting(job.id)
        defer { ahead.ended(job.id) }
        if let begun {
            // `startReady` opened its gate, for this attempt on this slot (the scheduler's contract).
            if begun.attempt == job.attempts, begun.slot == slot.id { return await supervise(job, begun.started, stops: stops, observer: observer) }
            // Not this start's (never, by that contract): gone, and a plain start below.
            begun.started.child.signal(SIGKILL)
            _ = await begun.started.child.exit()
            await begun.started.log.close()
        }
        await dropping?.value   // a look-ahead of this job being dropped: gone before anything is made
        guard let type = catalog[job.type] else {
            if let entry { await StartedAhead.discard(entry) }
            return ExecutionResult(.spawnFailed(message: "this server has no job type \"\(job.type)\" (was it removed from the configuration?)"))
        }
        let paths = JobPaths(dataDirectory: configuration.dataDirectory, job: job.id)
        let plan: LaunchPlan
        do { plan = try LaunchPlan(job: job, type: type, slot: slot, paths: paths) } catch {
            if let entry { await StartedAhead.discard(entry) }
            return ExecutionResult(.spawnFailed(message: error.description))
        }
        if let entry {
            // Its look-ahead: used when it was for this slot, this attempt and this launch, and
            // the executable is still there (else the plain start reports it as a spawn failure).
            if entry.slot == slot.id, entry.attempt == job.attempts, let gated = await entry.work.value,
               gated.launch.argv == plan.argv, gated.launch.environment == plan.environment,
               gated.launch.workingDirectory == plan.workingDirectory,
               await Self.runnable(gated, checked: entry.checked.flatMap { clock.now() - $0.at < Self.checkFreshFor ? $0.runnable : nil }) {
                gated.started.observer.bind(observer)
                if gated.started.child.openGate() {
                    return await supervise(job, gated.started, stops: stops, observer: observer)
                }
            }
            await StartedAhead.discard(entry)   // overtaken, or gone: a plain start
        }
        var prepared = JobFiles.takeReady(paths)
        if prepared == nil {
            do { prepared = JobFiles.Prepared(messages: true, reused: try await JobFiles.make(paths, input: job.input, slot: slot.id, messages: true)) } catch {
                return .preparing(failedWith: error) { .spawnFailed(message: $0) }
            }
        }
        if prepared?.reused == true {   // a retry, or a run handed back: an earlier run's directory
            let logLimit = configuration.logLimitBytes
            do { try await BlockingIO.run { try JobFiles.beginLaterAttempt(paths, attempt: job.attempts, logLimit: logLimit, maxAttempts: job.maxAttempts) } } catch {
                return .preparing(failedWith: error) { .spawnFailed(message: $0) }
            }
        }
        switch await start(launch(job.id, plan, paths: paths, messagesMade: prepared?.messages ?? false, gate: false), paths: paths,
                           slot: slot.id, observer: observer) {
        case .success(let started): return await supervise(job, started, stops: stops, observer: observer)
        case .failure where Task.isCancelled:
            // The server is going down hard (its service group cancelled): not the job's fault.
            return ExecutionResult(.returned(message: "the server stopped before the job could start"))
        case .failure(let error): return .preparing(failedWith: error) { .spawnFailed(message: $0) }
        }
    }

    public func slotIdle(_ slot: SlotID) async {
        await dropPrepared(on: slot)
        await JobFiles.keepSpare(dataDirectory: configuration.dataDirectory, slot: slot)
    }

    public func dropPrepared(on slot: SlotID) async {
        for drop in ahead.drop(slot: slot) { await drop.value }
    }

    public func shutdown() async {
        for drop in ahead.drop() { await drop.value }
    }

    public func ended(_ job: JobID, on slot: SlotID) async {
        await JobFiles.recycle(JobPaths(dataDirectory: configuration.dataDirectory, job: job), slot: slot)
    }

    private func launch(_ job: JobID, _ plan: LaunchPlan, paths: JobPaths, messagesMade: Bool, gate: Bool) -> ChildLaunch {
        ChildLaunch(argv: plan.argv, environment: plan.environment, workingDirectory: plan.workingDirectory,
                    stdin: paths.input, messages: paths.messages, messagesMade: messagesMade, gate: gate,
                    // Its messages path: this data directory's attempt of the job alone (another node
                    // on this host may run a later attempt of the same job).
                    marker: "SPOOL_MESSAGES=" + paths.messages, killGrace: configuration.killGrace)
    }

    /// Whether a gated child's executable is still there to run: a stat and a read, off the
    /// cooperative pool.
    /// `checked`: the look at it already made (when the slot's previous process exited, lately).
    private static func runnable(_ gated: StartedAhead.Gated, checked: Task<Bool, Never>? = nil) async -> Bool {
        if let checked { return await checked.value }
        return (try? await BlockingIO.run({ ExecutableLookup.runnable(gated.executable) })) == true
    }

    /// Opens the job's log and starts its process on `slot`; its output and messages go to the
    /// log and to `observer` (bound later for a gated start). When it exits, the slot's
    /// look-ahead, if any, has its executable looked at.
    private func start(_ launch: ChildLaunch, paths: JobPaths, slot: SlotID,
                       observer: ExecutionObserver? = nil) async -> Result<StartedChild, ExecutorError> {
        let log: LogSink
        do { log = try LogSink(path: paths.log, limit: configuration.logLimitBytes) } catch { return .failure(error) }
        let binding = ObserverBinding(observer)
        let rangeNoted = Atomic<Bool>(false)
        let events = ChildEvents(output: { bytes in
            log.write(bytes)
            binding.current?.output(bytes)
        }, message: { line in
            do {
                let message = try JobMessage(line: line) { note in
                    if !rangeNoted.exchange(true, ordering: .relaxed) { log.note(note + "; noted once a run") }
                }
                binding.current?.message(message)
            } catch {
                log.note("ignored a message on $SPOOL_MESSAGES: \(error): \(JobMessage.quoted(line))")
            }
        }, exited: { [ahead, clock] in ahead.check(slot: slot, at: clock.now()) { await Self.runnable($0) } })
        do {
            let child = try await launcher.launch(launch, events: events)
            return .success(StartedChild(child: child, log: log, observer: binding))
        } catch {
            await log.close()
            return .failure(error)
        }
    }

    /// The attempt from its process's start to its end.
    private func supervise(_ job: Job, _ started: StartedChild, stops: AsyncStream<StopReason>,
                           observer: ExecutionObserver) async -> ExecutionResult {
        let (child, log) = (started.child, started.log)
        await observer.started(child.pid)
        let grace = configuration.killGrace
        let stopping = AttemptWatch.Stopping(
            how: "sending SIGTERM to its process group, SIGKILL in \(grace.readable)",
            ask: { _ in child.signal(SIGTERM) },
            force: { child.signal(SIGKILL) })
        let (end, reason) = await AttemptWatch.run(timeout: .seconds(job.timeoutSeconds), killGrace: grace, clock: clock, stops: stops,
                                                   note: log.note, stopping: stopping, until: { await child.exit().attemptEnd })
        await started.observer.current?.finish()   // everything it said reaches the scheduler before its end does
        let loss = await log.close()
        return ExecutionResult(JobOutcome(end, stoppedFor: reason), logLoss: loss?.sentence)
    }
}
