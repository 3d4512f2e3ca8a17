// One file for the actor (about 510 lines): its lifecycle driver, a job's run and what the
// worker says (output, its fences, messages) share the actor's private state — the child, the
// job in flight, the fence, the command backlog — and each is a step of the one machine. The
// decisions are elsewhere and pure: `WorkerLifecycle`, `WorkerPolicy`, `OutputFence`.
import Glibc
import Logging
import SpoolCore

/// One warm worker: a long-lived child process that sets up once (loads its model) and then
/// runs jobs one at a time over the protocol in docs/worker-protocol.md.
///
/// Its life is a `WorkerLifecycle` — a pure state machine — and this actor only carries out
/// what the machine decides: it feeds it the child's messages and exit, the pool's calls and a
/// clock tick, and performs the actions it returns (write a command, signal the group, hand a
/// job's end over). The child runs in a task this worker owns (`lifetime`); no call ever waits
/// on that task from inside it, so stopping can never wait on itself.
public actor Worker {
    public struct StartFailure: Error, CustomStringConvertible, Sendable {
        public var description: String
        /// The server, not the type, was short of file descriptors or processes (`ExecutorError.serverShort`):
        /// not a failure of the type's setup.
        public var serverShort = false
        public init(description: String) { self.description = description }

        /// `reason`; when `cause` says the server was short (`ExecutorError.serverShort`), said so first and marked.
        init(_ reason: String, cause: ExecutorError?) {
            guard let cause, cause.serverShort else {
                description = reason
                return
            }
            description = "the server is short of \(cause.shortOf): \(reason)"
            serverShort = true
        }
    }

    /// Everything a worker needs besides its type.
    public struct Settings: Sendable {
        public var dataDirectory: String
        public var killGrace: Duration
        public var logLimitBytes: Int
        public var launcher: any ChildLauncher
        public var clock: SpoolClock
        public var logger: Logger

        public init(dataDirectory: String, killGrace: Duration, logLimitBytes: Int, launcher: any ChildLauncher,
                    clock: SpoolClock, logger: Logger) {
            self.dataDirectory = dataDirectory
            self.killGrace = killGrace
            self.logLimitBytes = logLimitBytes
            self.launcher = launcher
            self.clock = clock
            self.logger = logger
        }
    }

    public nonisolated let id: String
    public nonisolated let type: String
    let policy: WorkerPolicy
    private let launch: ChildLaunch
    private let directory: String
    private let settings: Settings
    private let gpu: Bool
    nonisolated let slot: SlotID

    private var lifecycle: WorkerLifecycle
    private var child: (any ChildProcess)?
    private var lifetime: Task<Void, Never>?
    private var workerLog: LogSink?
    /// Commands for the worker that could not be written at once, written in order by one task
    /// of `live`; `backlog` counts those not written yet.
    private var commands: AsyncStream<String>.Continuation?
    private var backlog = 0
    /// When the job command went to the worker, until it is seen read (`checkCommandRead`).
    private var jobSentAt: Moment?
    /// Commands sent after the current job's (a cancel): while there are none, a byte left
    /// unread is the job's own command.
    private var commandsAfterJob = 0
    /// A command could not be written (`commandLost`).
    private var commandUndelivered = false
    public private(set) var usage = WorkerUsage()
    private var ticks = 0
    /// The post-setup GPU memory reading is still to be taken.
    private var needsBaseline = false
    /// A GPU memory reading is under way (beside the ticks; one at a time).
    private var readingGPU = false
    /// The GPU reading under way, if any (cancelled once the worker has exited).
    private var gpuReading: Task<Void, Never>?
    private var hasEnded = false
    /// Lines read before the launch was reported (a fast worker says `ready` at once): handled
    /// right after the spawn, in order.
    private var early: [[UInt8]]? = []

    private var startResult: Result<Void, StartFailure>?
    /// Why the worker's process could not be started, if it could not.
    private var spawnError: ExecutorError?
    private var startWaiters: [CheckedContinuation<Void, Never>] = []
    private var exitWaiters: [CheckedContinuation<Void, Never>] = []

    /// The job in flight: where its output goes, and how it ended once it has.
    private struct Current {
        var assignment: Assignment
        var sink: LogSink
        /// What goes to the job's observer (progress, output), in order, by one task of its own
        /// (`ObserverDeliveries`).
        var deliveries: ObserverDeliveries
        var reported: AttemptEnd?
        var end: AttemptEnd?
        /// A progress fraction outside 0…1 was noted in the job's log (once a run).
        var rangeNoted = false
        var waiter: CheckedContinuation<AttemptEnd, Never>?
    }
    private var current: Current?
    /// Markers written into the worker's output when it said a job ended, oldest first: the job's
    /// end is handled once its marker is read (`waiting`), or given up after `fenceLimit`. A
    /// marker given up still comes through later, and is taken out of the output then.
    private struct Fence {
        var job: JobID
        var finder: OutputFence
        var since: Moment
        var waiting = true
    }
    private var fences: [Fence] = []

    public init(id: String, type: JobType, policy: WorkerPolicy, slot: SlotSpec, settings: Settings) throws {
        self.id = id
        self.type = type.name
        self.policy = policy
        self.settings = settings
        directory = settings.dataDirectory + "/workers/" + id
        let plan = try WorkerLaunchPlan(type: type, policy: policy, slot: slot, workerID: id, directory: directory)
        launch = ChildLaunch(argv: plan.argv, environment: plan.environment, workingDirectory: plan.workingDirectory,
                             messages: directory + "/messages", commands: directory + "/commands",
                             marker: "SPOOL_MESSAGES=" + directory + "/messages", killGrace: settings.killGrace, fencedOutput: true)
        gpu = slot.gpu != nil
        self.slot = slot.id
        lifecycle = WorkerLifecycle(timing: .init(policy: policy, killGrace: settings.killGrace), now: settings.clock.now())
    }

    public var phase: WorkerLifecycle.Phase { lifecycle.phase }
    public var jobsRun: Int { lifecycle.jobsRun }
    public var processID: Int32? { child?.pid }
    /// Started, taking jobs, and not asked to go.
    public var isAlive: Bool { lifecycle.isAlive }

    // MARK: - Lifecycle

    /// Spawns the worker and waits for `ready` (at most the setup timeout).
    public func start() async throws(StartFailure) {
        let directory = self.directory
        do {
            try await BlockingIO.run {
                for path in [String(directory[..<directory.lastIndex(of: "/")!]), directory]
                where mkdir(path, 0o755) != 0 && errno != EEXIST {
                    throw ExecutorError("cannot create \(path): \(String(cString: strerror(errno)))")
                }
            }
            workerLog = try LogSink(path: directory + "/worker.log", limit: 50 << 20)
        } catch {
            _ = lifecycle.handle(.spawnFailed("\(error)"), at: settings.clock.now())
            throw StartFailure("cannot prepare the worker directory: \(error)", cause: error as? ExecutorError)
        }
        lifetime = Task { await self.live() }   // unstructured: the process outlives this call; stop()/kill() end it and wait for it
        if startResult == nil { await withCheckedContinuation { startWaiters.append($0) } }
        if case .failure(let failure) = startResult! { throw failure }
    }

    /// Asks the worker to exit (the shutdown command, then SIGTERM, then SIGKILL) and returns
    /// once its process is gone.
    public func stop(because reason: String) async {
        handle(.stop(reason))
        await waitForExit()
    }

    /// Stops the worker now (SIGTERM, then SIGKILL) and returns once its process is gone.
    public func kill(because reason: String) async {
        handle(.kill(reason))
        await waitForExit()
    }

    /// Returns once the worker's process is gone (at once if it never started).
    public func exited() async { await waitForExit() }

    private func waitForExit() async {
        guard lifecycle.phase != .exited else { return }
        await withCheckedContinuation { exitWaiters.append($0) }
    }

    private func live() async {
        let events = ChildEvents(output: { bytes in await self.output(bytes) }, message: { line in await self.received(line) })
        let (lines, commands) = AsyncStream<String>.makeStream()
        self.commands = commands
        let child: any ChildProcess
        do { child = try await settings.launcher.launch(launch, events: events) } catch {
            spawnError = error
            handle(.spawnFailed(error.description))
            return
        }
        self.child = child
        settings.logger.info("worker started", metadata: ["worker": "\(id)", "type": "\(type)", "pid": "\(child.pid)"])
        handle(.spawned)
        for line in early ?? [] { await received(line) }
        early = nil
        let exit = await withTaskGroup(of: ChildExit?.self) { group in
            group.addTask { await child.exit() }
            group.addTask { await self.tickUntilCancelled(); return nil }
            group.addTask {
                // A write waits only while the worker's pipe is full; the lifecycle has moved on
                // meanwhile, and a worker that never reads is killed by its deadlines.
                for await line in lines {
                    if await !child.send(line) { await self.commandLost() }
                    await self.backlogWritten()
                }
                return nil
            }
            var exit: ChildExit?
            while exit == nil, let next = await group.next() { exit = next }
            group.cancelAll()
            return exit!
        }
        // A GPU reading still under way (an `nvidia-smi` that hangs) goes with the worker, killed
        // now, not left to its time limit (found by attacking the build: it outlived the server).
        gpuReading?.cancel()
        await gpuReading?.value
        // Its output was read to the end before `exit()` returned (unless that ran out of time).
        giveUpFences(because: "the worker is gone")
        for var fence in fences { workerLog?.write(fence.finder.release()) }
        fences = []
        handle(.exited(exit.description))
    }

    /// Checks the lifecycle's deadlines on the clock (every 500 ms, or half a heartbeat), and
    /// reads the worker's memory every 500 ms (its GPU memory every 2 s, off this loop).
    private func tickUntilCancelled() async {
        let tick = min(.milliseconds(500), Duration.seconds(policy.heartbeatSeconds) / 2)
        while !Task.isCancelled {
            do { try await settings.clock.sleep(for: tick) } catch { return }
            await sampleUsage()
            checkCommandRead()
            if let since = fences.first(where: \.waiting)?.since, settings.clock.now() - since >= Self.fenceLimit {
                giveUpFences(because: "it was not read within \(Self.fenceLimit.readable)")
            }
            handle(.tick)
        }
    }

    // MARK: - The machine

    private func handle(_ event: WorkerLifecycle.Event) {
        let actions = lifecycle.handle(event, at: settings.clock.now())
        for action in actions { perform(action) }
        if lifecycle.phase == .exited { ended(event) }
    }

    private func perform(_ action: WorkerLifecycle.Action) {
        switch action {
        case .dispatch(let job):
            guard let assignment = current?.assignment, assignment.job == job else { return }
            send(.job(id: job, input: assignment.input, inputFile: assignment.paths.input, outputDirectory: assignment.paths.outputs,
                      attempt: assignment.attempt, timeoutSeconds: assignment.timeoutSeconds, array: assignment.array))
            jobSentAt = settings.clock.now()
            commandsAfterJob = 0
        case .send(let command):
            send(command)
            commandsAfterJob += 1
        case .signal(let signal):
            child?.signal(signal == .kill ? SIGKILL : SIGTERM)
        case .started:
            settle(.success(()))
            needsBaseline = true   // the post-setup memory reading, on the next tick
        case .startFailed(let reason):
            settle(.failure(StartFailure(reason, cause: spawnError)))
        case .jobCompleted(let job):
            guard current?.assignment.job == job, let reported = current?.reported else { return }
            finishJob(reported)
        case .jobLost(let job, let status):
            guard current?.assignment.job == job else { return }
            // Gone before it read its job's command: the job never reached it, and goes back
            // unrun, its attempt unused; the pool counts it as a failed setup (found by attacking
            // the build: a worker that died just after `ready` failed each job sent to it as
            // worker_lost, and so, one fresh worker after another, the whole queue). Only while
            // nothing was sent after the job's command: a cancel left unread by a worker that
            // took its job and hung (a timeout) says nothing of the job's (found in review: such
            // a job came back unrun, for ever).
            if commandsAfterJob == 0, backlog > 0 || (child?.unreadCommandBytes() ?? 0) > 0 {
                finishJob(.returned("the worker ended before it read its job (\(status))"))
            } else {
                finishJob(.workerLost(status))
            }
        case .jobRefused(let job, let reason):
            if current?.assignment.job == job { finishJob(.returned(reason)) }
        case .note(let text):
            (current?.sink ?? workerLog)?.note(text)
            settings.logger.info("worker: \(text)", metadata: ["worker": "\(id)"])
        }
    }

    /// Writes the command now when nothing is waiting to be written before it (a hand-off to the
    /// writer task is a thread wake-up on every job's dispatch path); a command the pipe cannot
    /// take at once goes to the writer task, and so does every one after it until it is written.
    private func send(_ command: WorkerCommand) {
        guard let commands else { return }
        let line = command.line
        if backlog == 0, let child, child.sendNow(line) { return }
        backlog += 1
        commands.yield(line)
    }

    private func backlogWritten() { backlog -= 1 }

    /// A job command still unread after three heartbeat intervals (the time a silent worker is
    /// given) will not be read: the worker closed its end of `SPOOL_COMMANDS`, or never reads
    /// it, while it goes on beating its heart. It is replaced now, its job lost with it (found by
    /// attacking the build: such a job read running, never delivered, until its timeout).
    private func checkCommandRead() {
        if commandUndelivered {
            commandUndelivered = false
            if lifecycle.phase != .exited, child != nil {
                handle(.kill("it could not be sent its command: it no longer reads SPOOL_COMMANDS"))
                return
            }
        }
        guard let sent = jobSentAt, let child else { return }
        if backlog == 0, child.unreadCommandBytes() == 0 {
            jobSentAt = nil
            return
        }
        let limit = Duration.seconds(policy.heartbeatSeconds * 3)
        guard settings.clock.now() - sent >= limit else { return }
        jobSentAt = nil
        handle(.kill("it did not read its job command within \(limit.readable): it no longer reads SPOOL_COMMANDS"))
    }

    /// A command could not be written (the worker closed its end of `SPOOL_COMMANDS`, or left
    /// its pipe full for 10 s): a worker that cannot be told anything is replaced now, its job
    /// lost with it (found by attacking the build: a worker that closed its commands but went
    /// on beating its heart held its job, never sent, until the job's timeout).
    private func commandLost() {
        // Acted on at the next tick: a write also fails once the worker has exited, and its exit,
        // handled by then, is the better reason (found in review).
        commandUndelivered = true
    }

    private func settle(_ result: Result<Void, StartFailure>) {
        guard startResult == nil else { return }
        startResult = result
        for waiter in startWaiters { waiter.resume() }
        startWaiters = []
    }

    /// The process is gone: whoever waits for that goes on.
    private func ended(_ event: WorkerLifecycle.Event) {
        guard !hasEnded else { return }
        hasEnded = true
        commands?.finish()
        settle(.failure(StartFailure(description: "the worker ended during setup")))
        for waiter in exitWaiters { waiter.resume() }
        exitWaiters = []
        if case .exited(let status) = event {
            workerLog?.note("worker ended: \(status)")
            settings.logger.info("worker ended", metadata: ["worker": "\(id)", "status": "\(status)"])
        }
        let log = workerLog
        workerLog = nil
        Task { await log?.close() }   // unstructured: a flush that must not delay the exit bookkeeping
    }

    // MARK: - Jobs

    public struct Assignment: Sendable {
        public var job: JobID
        public var input: JSONValue
        public var paths: JobPaths
        public var attempt: Int
        /// The job's `max_attempts`: its log keeps that many runs' worth of output and two more.
        public var maxAttempts: Int
        public var timeoutSeconds: Double
        /// For a task of a job array: its array and index.
        public var array: ArrayMembership?
        public init(job: JobID, input: JSONValue, paths: JobPaths, attempt: Int, maxAttempts: Int = 1, timeoutSeconds: Double,
                    array: ArrayMembership? = nil) {
            self.job = job
            self.input = input
            self.paths = paths
            self.attempt = attempt
            self.maxAttempts = maxAttempts
            self.timeoutSeconds = timeoutSeconds
            self.array = array
        }
    }

    /// Runs one job on the ready worker. Cancel and timeout ask the worker to drop the job,
    /// then kill the worker after the kill grace.
    public func run(_ assignment: Assignment, stops: AsyncStream<StopReason>, observer: ExecutionObserver) async -> ExecutionResult {
        guard lifecycle.isReady else { return ExecutionResult(.returned(message: "the worker was not ready")) }
        let sink: LogSink
        do {
            var reused = JobFiles.takeReady(assignment.paths)?.reused
            if reused == nil {
                reused = try await JobFiles.make(assignment.paths, input: assignment.input, slot: slot, messages: false)
            }
            if reused == true {   // a retry, or a run handed back: an earlier run's directory
                let paths = assignment.paths, attempt = assignment.attempt, logLimit = settings.logLimitBytes, maxAttempts = assignment.maxAttempts
                do { try await BlockingIO.run { try JobFiles.beginLaterAttempt(paths, attempt: attempt, logLimit: logLimit, maxAttempts: maxAttempts) } } catch {
                    // Outputs that cannot be emptied (the job made one undeletable) fail the start,
                    // as in process mode: handed back, the job would come straight back (found in review).
                    return .preparing(failedWith: error) { .spawnFailed(message: $0) }
                }
            }
            sink = try LogSink(path: assignment.paths.log, limit: settings.logLimitBytes)
        } catch {
            return .preparing(failedWith: error) { .returned(message: $0) }
        }
        let deliveries = ObserverDeliveries(observer)
        current = Current(assignment: assignment, sink: sink, deliveries: deliveries)
        handle(.assign(assignment.job))
        await observer.started(child?.pid ?? 0)
        let job = assignment.job
        let grace = settings.killGrace
        let stopping = AttemptWatch.Stopping(
            how: "asking the worker to drop it, killing the worker in \(grace.readable) if it does not",
            ask: { _ in await self.handle(.cancel(job)) },
            force: { await self.handle(.kill("the worker did not give the job up in time")) })
        let (end, reason) = await AttemptWatch.run(timeout: .seconds(assignment.timeoutSeconds), killGrace: grace, clock: settings.clock,
                                                   stops: stops, note: sink.note, stopping: stopping,
                                                   until: { await self.jobEnd() })
        current = nil
        await deliveries.finish()   // everything it said reaches the scheduler before its end does
        let loss = await sink.close()
        // A fresh memory reading for the recycling decision, when a limit asks for one: it reads
        // /proc for the worker's process group, on the dispatch path of every job.
        if policy.maxRSSMegabytes != nil, let rss = await child?.residentMegabytes() { usage.rssMegabytes = rss }
        let result: JSONValue? = if case .workerSucceeded(let result) = end { result } else { nil }
        return ExecutionResult(JobOutcome(end, stoppedFor: reason), result: result, logLoss: loss?.sentence)
    }

    private func jobEnd() async -> AttemptEnd {
        if let end = current?.end { return end }
        return await withCheckedContinuation { current?.waiter = $0 }
    }

    private func finishJob(_ end: AttemptEnd) {
        guard current != nil, current?.end == nil else { return }
        current?.end = end
        current?.waiter?.resume(returning: end)
        current?.waiter = nil
    }

    /// Why the worker should be replaced now, after a job ended with `outcome`.
    /// Why its memory, as last read, is past a limit of its policy (nil when it is not): a
    /// reading that comes while it waits for a job counts before the next one.
    public func usageLimitReason() -> String? { policy.limitReason(usage: usage) }

    public func recycleReason(after outcome: JobOutcome) -> String? {
        if !isAlive { return "it is no longer running" }
        return policy.recycleReason(after: outcome, jobsRun: jobsRun, usage: usage)
    }

    // MARK: - What the worker says

    private func output(_ bytes: [UInt8]) async {
        var rest = bytes
        while let first = fences.first {
            let (before, after) = fences[0].finder.scan(rest)
            // Before a marker given up: the late output of a job that has ended, no job's now.
            if first.waiting { jobOutput(before) } else { workerLog?.write(before) }
            guard let after else { return }
            fences.removeFirst()
            if first.waiting { handle(.jobEnded(first.job)) }
            rest = after
        }
        jobOutput(rest)
    }

    /// Bytes the worker wrote: the job's in flight until its end, or the worker's own log's.
    private func jobOutput(_ bytes: [UInt8]) {
        guard !bytes.isEmpty else { return }
        if let current, current.end == nil {
            current.sink.write(bytes)
            current.deliveries.output(bytes)
        } else {
            workerLog?.write(bytes)
        }
    }

    /// How long a job's end waits for its output to be read: a fence normally comes through in
    /// microseconds (the server's own write into a pipe it reads).
    static let fenceLimit: Duration = .seconds(1)

    /// The worker said `job` ended. Its stdout and its messages are two pipes, read apart: the end
    /// is handled once what it wrote before is read and in the job's log (a fence in its output).
    private func endAfterOutput(_ job: JobID) {
        guard let marker = child?.fenceOutput() else {
            handle(.jobEnded(job))
            return
        }
        fences.append(Fence(job: job, finder: OutputFence(marker: marker), since: settings.clock.now()))
    }

    /// Ends the jobs still waiting for their fences (the limit passed, or the worker is gone).
    private func giveUpFences(because reason: String) {
        for index in fences.indices where fences[index].waiting {
            fences[index].waiting = false
            current?.sink.note("the job's end did not wait for the rest of its output: \(reason)")
            handle(.jobEnded(fences[index].job))
        }
    }

    private func received(_ line: [UInt8]) async {
        if early != nil, child == nil {
            early?.append(line)
            return
        }
        handle(.heard)
        let message: WorkerMessage
        var rangeNote: String?
        do { message = try WorkerMessage(line: line) { rangeNote = $0 } } catch {
            (current?.sink ?? workerLog)?.note("ignored a message on $SPOOL_MESSAGES: \(error): \(JobMessage.quoted(line))")
            return
        }
        let job = current?.assignment.job
        switch message {
        case .ready(let info):
            if let info { workerLog?.note("worker ready: \(info.canonicalText)") }
            handle(.ready)
        case .heartbeat, .unknown:
            return
        case .progress(let id, _, _) where id == job?.rawValue && current?.reported != nil,
             .log(let id, _) where id == job?.rawValue && current?.reported != nil,
             .output(let id, _) where id == job?.rawValue && current?.reported != nil:
            // After its end (while its output is read to the fence): no job's (found by attacking
            // the build: late progress and log lines changed the finished job).
            workerLog?.note("ignored a message sent after the job's end: \(JobMessage.quoted(line))")
        case .progress(let id, let progress, _) where id == job?.rawValue:
            if let rangeNote, current?.rangeNoted == false {
                current?.rangeNoted = true
                current?.sink.note(rangeNote + "; noted once a run")
            }
            current?.deliveries.message(.progress(progress))
        case .log(let id, let text) where id == job?.rawValue:
            let bytes = Array((text + "\n").utf8)
            current?.sink.write(bytes)
            current?.deliveries.output(bytes)
        case .output(let id, let name) where id == job?.rawValue:
            current?.sink.note("output: \(name)")
        case .succeeded(let id, _) where id == job?.rawValue && current?.reported != nil,
             .failed(let id, _) where id == job?.rawValue && current?.reported != nil:
            current?.sink.note("ignored a second end for the job: \(JobMessage.quoted(line))")
        case .succeeded(let id, let result) where id == job?.rawValue:
            current?.reported = .workerSucceeded(result: result)
            endAfterOutput(job!)
        case .failed(let id, let error) where id == job?.rawValue:
            current?.reported = .workerFailed(error)
            endAfterOutput(job!)
        default:
            workerLog?.note("ignored a message about a job that is not running: \(JobMessage.quoted(line))")
        }
    }

    private func sampleUsage() async {
        guard let child, lifecycle.phase != .exited else { return }
        ticks += 1
        if let rss = await child.residentMegabytes() { usage.rssMegabytes = rss }
        // A GPU reading (`nvidia-smi`) can take seconds: it runs beside the ticks, which keep
        // the worker's deadlines meanwhile; one at a time.
        guard gpu, needsBaseline || ticks % 4 == 0, !readingGPU else { return }
        let baseline = needsBaseline
        needsBaseline = false
        readingGPU = true
        // Lands in `usage` whenever it ends.
        gpuReading = Task { self.gpuRead(await child.gpuMegabytes(), baseline: baseline) }   // unstructured: bounded by the probe's timeout; cancelled once the worker has exited
    }

    /// A GPU memory reading came back (nil: none could be taken): the worker's usage, or its baseline.
    private func gpuRead(_ vram: Double?, baseline: Bool) {
        readingGPU = false
        guard let vram else {
            // No reading (nvidia-smi failed or took too long): the baseline is read at a later tick.
            if baseline { needsBaseline = true }
            return
        }
        usage.vramMegabytes = vram
        if baseline { usage.vramBaselineMegabytes = vram }
    }
}
