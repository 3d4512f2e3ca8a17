import SpoolCore
import Synchronization

/// The seam between the scheduler and whatever runs jobs. The scheduler hands an attempt to
/// `run` on a slot and gets its outcome back; it never spawns, signals or waits on a process
/// itself. Two implementations share one supervision core (`ChildLauncher`, `AttemptWatch`):
/// `ProcessJobExecutor` (a fresh process per job) and `WorkerPool` (a warm worker per slot);
/// `JobExecutors` routes each job to the one its type asks for. Tests drive the scheduler
/// with a scripted executor, and these executors with fake child processes.
public protocol JobExecutor: Sendable {
    /// Runs one attempt to its end and says how it ended. Never throws: an attempt that could
    /// not start is an outcome too. `stops` delivers cancel and shutdown requests; the timeout
    /// is the executor's to enforce.
    func run(_ job: Job, on slot: SlotSpec, stops: AsyncStream<StopReason>, observer: ExecutionObserver) async -> ExecutionResult
    /// Starts the job at once, where `run` would have nothing to wait for: what `prepare` got
    /// ready for it on `slot` is all there (process mode: its process behind the gate, its
    /// executable looked at lately). True when it started: the caller must then call `run` for
    /// this attempt on this slot, which carries on from there (supervises it, enforces its
    /// timeout, reports its end). False (the default) leaves the whole start to `run`.
    /// Synchronous: the scheduler calls it as it hands the slot over, which saves the hand-off to
    /// the attempt's task on the way to the job's first instruction.
    func startReady(_ job: Job, on slot: SlotSpec, observer: ExecutionObserver) -> Bool

    /// Gets a job ready to start on `slot` — its files (directory, outputs folder, input, log),
    /// and in process mode its process, behind a gate — while the slot's current job still runs,
    /// so that starting it costs less. Best effort: `run` makes whatever is missing; what was got
    /// ready for a job that starts elsewhere, or never, goes when the slot moves on (its next
    /// look-ahead, `slotIdle`, `shutdown`) — at most one job's per slot.
    func prepare(_ job: Job, on slot: SlotSpec) async

    /// The slot has nothing to start after its last job: whatever `prepare` got ready for it goes.
    func slotIdle(_ slot: SlotID) async

    /// The slot's next job is another executor's: what `prepare` got ready for it here goes
    /// (`slotIdle` without readying anything for an idle slot).
    func dropPrepared(on slot: SlotID) async

    /// After the slot's outcome was handed on: housekeeping that must not hold the outcome up
    /// (replacing a warm worker that reached a limit). The slot's next job may already wait.
    func afterRun(on slot: SlotID) async

    /// The job has ended for good on `slot` (its final state is recorded, its outputs listed, and
    /// it has none): its directory may become one of the slot's spares, if nothing in it is worth
    /// keeping (see `JobFiles.recycle`).
    func ended(_ job: JobID, on slot: SlotID) async

    /// Job types the slot must not take now (their worker is backing off or unhealthy).
    /// Synchronous: the scheduler asks at the end of every job, on the path to the next one's
    /// start, and an async call would leave its actor and come back.
    func excludedTypes(for slot: SlotID) -> Set<String>

    /// When an excluded type may next be tried on some slot.
    func nextRetry() async -> Moment?

    /// Why no slot can take a job of `type` now — every slot has it excluded after failed
    /// worker setups — or nil when some slot can. Synchronous: a queued job's view says it.
    func setupTrouble(for type: String) -> SetupTrouble?

    /// The warm workers and their health, per slot (for `/v1/queue` and `/healthz`).
    func workerStatus() async -> [SlotID: SlotWorkers]

    /// The server is shutting down (its running jobs have their grace): start or replace no
    /// warm worker from now on.
    func close() async

    /// The slot is quarantined (its GPU reads faulty): what it keeps loaded there goes (a warm
    /// worker, with its GPU memory, once the job it runs has ended), and nothing is started
    /// there until `slotReleased`. Returns at once.
    func slotQuarantined(_ slot: SlotID) async

    /// The slot is back in service.
    func slotReleased(_ slot: SlotID) async

    /// Stops everything still running (warm workers) for server shutdown.
    func shutdown() async
}

extension JobExecutor {
    public func startReady(_ job: Job, on slot: SlotSpec, observer: ExecutionObserver) -> Bool { false }
    public func afterRun(on slot: SlotID) async {}
    public func prepare(_ job: Job, on slot: SlotSpec) async {}
    public func slotIdle(_ slot: SlotID) async {}
    public func dropPrepared(on slot: SlotID) async {}
    public func ended(_ job: JobID, on slot: SlotID) async {}
    public func excludedTypes(for slot: SlotID) -> Set<String> { [] }
    public func nextRetry() async -> Moment? { nil }
    public func setupTrouble(for type: String) -> SetupTrouble? { nil }
    public func workerStatus() async -> [SlotID: SlotWorkers] { [:] }
    public func close() async {}
    public func slotQuarantined(_ slot: SlotID) async {}
    public func slotReleased(_ slot: SlotID) async {}
    public func shutdown() async {}
}

/// How an attempt ended, and what a warm worker returned for it.
public struct ExecutionResult: Sendable, Equatable {
    public var outcome: JobOutcome
    public var result: JSONValue?
    /// The job's files could not be made because the data directory is full or cannot be written: the outcome hands
    /// the job back (`.returned`), and the scheduler waits before it tries again.
    public var dataDirectoryUnusable: Bool
    /// Handed back as the server is short of file descriptors, processes or memory
    /// (`ExecutorError.serverShort`): its claims pause as for an unusable data directory.
    public var serverShort: Bool
    /// A sentence when some of the job's output could not be written to its log (a full disk):
    /// the scheduler says so in the server's log.
    public var logLoss: String?

    public init(_ outcome: JobOutcome, result: JSONValue? = nil, dataDirectoryUnusable: Bool = false, serverShort: Bool = false,
                logLoss: String? = nil) {
        self.outcome = outcome
        self.result = result
        self.dataDirectoryUnusable = dataDirectoryUnusable
        self.serverShort = serverShort
        self.logLoss = logLoss
    }

    /// The answer to a failure to make a job's files: a data directory full or not writable hands the job back
    /// (its attempt unused); anything else is `otherwise`.
    public static func preparing(failedWith error: any Error, otherwise: (String) -> JobOutcome) -> ExecutionResult {
        if let error = error as? ExecutorError, error.dataDirectoryUnusable {
            return ExecutionResult(.returned(message: "the data directory \(error.dataDirectoryFault): \(error)"), dataDirectoryUnusable: true)
        }
        if let error = error as? ExecutorError, error.serverShort {
            return ExecutionResult(.returned(message: "the server is short of \(error.shortOf): \(error)"), serverShort: true)
        }
        return ExecutionResult(otherwise("\(error)"))
    }
}

/// What a running job reports back while it runs.
public struct ExecutionObserver: Sendable {
    /// The job's process (or its worker) runs; a process's pid is also its process group.
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

/// A slot's warm worker (if any) and the health of the worker types it has tried.
public struct SlotWorkers: Sendable, Equatable {
    public var worker: WorkerStatus?
    public var health: [WorkerHealth]

    public init(worker: WorkerStatus?, health: [WorkerHealth]) {
        self.worker = worker
        self.health = health
    }
}

public struct WorkerStatus: Sendable, Equatable {
    public var id: String
    public var type: String
    public var phase: String
    public var pid: Int32?
    public var jobsRun: Int
    public var usage: WorkerUsage
}

/// A worker type's setup record on one slot: failures in a row, and when it may try again.
public struct WorkerHealth: Sendable, Equatable {
    public var type: String
    public var failures: Int
    public var unhealthy: Bool
    public var lastError: String
    public var retryAt: Moment
}

/// A worker type that no slot can set up now: on how many slots, the most failures in a row
/// there, the last error, and how soon a slot tries again.
public struct SetupTrouble: Sendable, Equatable {
    public var type: String
    public var slots: Int
    public var failures: Int
    public var lastError: String
    public var retryIn: Duration

    public init(type: String, slots: Int, failures: Int, lastError: String, retryIn: Duration) {
        self.type = type
        self.slots = slots
        self.failures = failures
        self.lastError = lastError
        self.retryIn = retryIn
    }

    /// What a queued job of the type says of its wait.
    public var sentence: String {
        let retry = max(1, Int(retryIn.inSeconds.rounded(.up)))
        return "no slot can start it now: worker type \"\(type)\" failed to set up \(failures) time\(failures == 1 ? "" : "s") in a row "
            + "(\(slots == 1 ? "on the only slot" : "on each of the \(slots) slots"); last: \(lastError)); the next try is in \(retry) s"
    }
}

/// Routes each job to the executor of its type's mode: a fresh process, or the slot's warm worker.
public struct JobExecutors: JobExecutor {
    public let processes: any JobExecutor
    public let workers: any JobExecutor
    private let catalog: JobCatalog
    /// Types of jobs handed to this server that its configuration lacks: left to the queue.
    private let unknownTypes = UnknownTypes()

    private final class UnknownTypes: Sendable {
        let names = Mutex<Set<String>>([])
    }

    public init(catalog: JobCatalog, processes: any JobExecutor, workers: any JobExecutor) {
        self.catalog = catalog
        self.processes = processes
        self.workers = workers
    }

    public func run(_ job: Job, on slot: SlotSpec, stops: AsyncStream<StopReason>, observer: ExecutionObserver) async -> ExecutionResult {
        guard let type = catalog[job.type] else {
            // A type dropped from the configuration (a typo, a rename in a deploy), with jobs of it
            // queued or running at the restart: they go back to the queue unrun, their attempts
            // unused, and no slot here takes them again (`excludedTypes`), until a start that has
            // the type (found by attacking the build: each failed for good, spawn_failed).
            unknownTypes.names.withLock { _ = $0.insert(job.type) }
            return ExecutionResult(.returned(message: "this server has no job type \"\(job.type)\" (was it removed from the configuration?)"))
        }
        let executor = type.workerPolicy == nil ? processes : workers
        return await executor.run(job, on: slot, stops: stops, observer: observer)
    }

    public func startReady(_ job: Job, on slot: SlotSpec, observer: ExecutionObserver) -> Bool {
        catalog[job.type]?.workerPolicy == nil && processes.startReady(job, on: slot, observer: observer)
    }

    public func afterRun(on slot: SlotID) async { await workers.afterRun(on: slot) }
    public func prepare(_ job: Job, on slot: SlotSpec) async {
        if catalog[job.type]?.workerPolicy == nil {
            await processes.prepare(job, on: slot)
        } else {
            await processes.dropPrepared(on: slot.id)   // a process the slot started ahead will not run next
            await workers.prepare(job, on: slot)
        }
    }
    public func slotIdle(_ slot: SlotID) async { await processes.slotIdle(slot) }
    /// Either mode's directory: the spares are the data directory's, for both.
    public func ended(_ job: JobID, on slot: SlotID) async { await processes.ended(job, on: slot) }
    public func excludedTypes(for slot: SlotID) -> Set<String> { workers.excludedTypes(for: slot).union(unknownTypes.names.withLock { $0 }) }
    public func nextRetry() async -> Moment? { await workers.nextRetry() }
    public func setupTrouble(for type: String) -> SetupTrouble? { workers.setupTrouble(for: type) }
    public func workerStatus() async -> [SlotID: SlotWorkers] { await workers.workerStatus() }
    public func close() async { await workers.close() }
    public func slotQuarantined(_ slot: SlotID) async { await workers.slotQuarantined(slot) }
    public func slotReleased(_ slot: SlotID) async { await workers.slotReleased(slot) }
    public func shutdown() async {
        await processes.shutdown()
        await workers.shutdown()
    }
}
