import Logging
import SpoolCore
import SpoolExecutor
import SpoolStore

/// The warm workers: at most one per slot, for one job type at a time.
///
/// A job of a worker-mode type runs on its slot's worker, started on first use. After each
/// job the pool decides (from the type's `WorkerPolicy`) whether the worker must be replaced;
/// if so the old one is stopped and a fresh one set up at once, while the next job waits in the
/// queue. A worker whose setup fails is retried with exponential back-off; after
/// `max_setup_failures` in a row the slot is *unhealthy* for that type. Meanwhile jobs of the
/// type are not claimed by the slot (they wait instead of failing) — `excludedTypes` tells
/// the scheduler which.
public actor WorkerPool {
    public struct SlotHealth: Sendable {
        public var type: String
        public var failures: Int
        public var unhealthy: Bool
        public var lastError: String
        public var retryAt: ContinuousClock.Instant
    }

    public struct WorkerStatus: Sendable {
        public var id: String
        public var type: String
        public var phase: String
        public var pid: Int32?
        public var jobsRun: Int
        public var usage: WorkerUsage
    }

    private let catalog: JobCatalog
    private let slots: [SlotID: SlotSpec]
    private let dataDirectory: String
    private let killGrace: Duration
    private let logger: Logger
    private var workers: [SlotID: WorkerProcess] = [:]
    /// Workers to be replaced, set aside when their last job ended: `replenish` stops them and
    /// sets up their successors, off the path that records the job's outcome.
    private var retiring: [SlotID: (worker: WorkerProcess, reason: String, type: JobType, policy: WorkerPolicy)] = [:]
    /// Slots whose worker is being (re)started; a job for such a slot waits for it.
    private var starting: [SlotID: [CheckedContinuation<Void, Never>]] = [:]
    private var health: [SlotID: [String: SlotHealth]] = [:]
    private var counter = 0
    /// Pauses between a worker's last job and its replacement being ready (for the benchmark).
    public private(set) var replacementPauses: [Duration] = []
    public private(set) var restarts: [String: Int] = [:]

    public init(catalog: JobCatalog, slots: [SlotSpec], dataDirectory: String, killGrace: Duration, logger: Logger) {
        self.catalog = catalog
        self.slots = Dictionary(uniqueKeysWithValues: slots.map { ($0.id, $0) })
        self.dataDirectory = dataDirectory
        self.killGrace = killGrace
        self.logger = logger
    }

    /// Types the slot must not claim now: their worker is backing off or unhealthy.
    public func excludedTypes(for slot: SlotID, now: ContinuousClock.Instant = .now) -> Set<String> {
        Set((health[slot] ?? [:]).values.filter { $0.retryAt > now }.map(\.type))
    }

    /// The earliest time an excluded type may be retried on any slot.
    public func nextRetry() -> ContinuousClock.Instant? {
        health.values.flatMap(\.values).map(\.retryAt).filter { $0 > .now }.min()
    }

    public func status() async -> [SlotID: (worker: WorkerStatus?, health: [SlotHealth])] {
        var result: [SlotID: (worker: WorkerStatus?, health: [SlotHealth])] = [:]
        for slot in slots.keys {
            var status: WorkerStatus?
            if let worker = workers[slot] {
                let phase = await worker.phase.rawValue, pid = await worker.processID
                let jobsRun = await worker.jobsRun, usage = await worker.usage
                status = WorkerStatus(id: worker.id, type: worker.type, phase: phase, pid: pid, jobsRun: jobsRun, usage: usage)
            }
            result[slot] = (status, Array((health[slot] ?? [:]).values).sorted { $0.type < $1.type })
        }
        return result
    }

    /// Runs a job on the slot's warm worker, starting or replacing the worker as needed.
    func run(_ job: Job, type: JobType, policy: WorkerPolicy, on slot: SlotID, stops: AsyncStream<StopReason>,
             observer: ExecutionObserver) async -> (JobOutcome, JSONValue?) {
        let worker: WorkerProcess
        switch await ready(for: type, policy: policy, on: slot) {
        case .success(let ready): worker = ready
        case .failure(let failure): return (.returned(message: failure.description), nil)
        }
        let paths = JobPaths(dataDirectory: dataDirectory, job: job.id)
        let assignment = WorkerProcess.Assignment(job: job.id, input: job.input, paths: paths, attempt: job.attempts,
                                                  timeoutSeconds: job.timeoutSeconds)
        let (outcome, result) = await worker.run(assignment, stops: stops, observer: observer)
        if let reason = await worker.recycleReason(after: outcome) {
            // Answer now; the scheduler calls `replenish` next, and the slot's next job waits
            // for the fresh worker instead of this job's outcome waiting for its setup.
            workers[slot] = nil
            retiring[slot] = (worker, reason, type, policy)
            starting[slot] = starting[slot] ?? []
        }
        return (outcome, result)
    }

    /// Replaces the worker set aside by the slot's last job, if any.
    func replenish(_ slot: SlotID) async {
        guard let (worker, reason, type, policy) = retiring.removeValue(forKey: slot) else { return }
        await replace(worker, on: slot, because: reason, type: type, policy: policy)
        for waiter in starting.removeValue(forKey: slot) ?? [] { waiter.resume() }
    }

    /// Stops every worker (server shutdown).
    public func stopAll() async {
        let all = Array(workers.values) + retiring.values.map(\.worker)
        workers = [:]
        retiring = [:]
        await withTaskGroup(of: Void.self) { group in
            for worker in all { group.addTask { await worker.stop() } }
        }
        for waiters in starting.values { for waiter in waiters { waiter.resume() } }
        starting = [:]
    }

    // MARK: -

    private func ready(for type: JobType, policy: WorkerPolicy, on slot: SlotID) async -> Result<WorkerProcess, WorkerProcess.StartFailure> {
        while starting[slot] != nil {
            await withCheckedContinuation { starting[slot, default: []].append($0) }
        }
        if let worker = workers[slot] {
            if worker.type == type.name, await worker.isAlive { return .success(worker) }
            // Another type holds the slot's worker (and its GPU memory), or it died: replace it.
            workers[slot] = nil
            await worker.stop()
        }
        return await start(type, policy: policy, on: slot)
    }

    private func start(_ type: JobType, policy: WorkerPolicy, on slot: SlotID) async -> Result<WorkerProcess, WorkerProcess.StartFailure> {
        counter += 1
        let id = "slot\(slot)-\(type.name)-\(counter)"
        do {
            let worker = try WorkerProcess(id: id, type: type, policy: policy, slot: slots[slot]!, dataDirectory: dataDirectory,
                                           killGrace: killGrace, logger: logger)
            try await worker.start()
            workers[slot] = worker
            health[slot]?[type.name] = nil
            return .success(worker)
        } catch {
            let failure = WorkerProcess.StartFailure(description: "worker setup failed: \(error)")
            recordSetupFailure(type: type.name, policy: policy, on: slot, error: failure.description)
            return .failure(failure)
        }
    }

    private func recordSetupFailure(type: String, policy: WorkerPolicy, on slot: SlotID, error: String) {
        var entry = health[slot]?[type] ?? SlotHealth(type: type, failures: 0, unhealthy: false, lastError: error, retryAt: .now)
        entry.failures += 1
        entry.lastError = error
        entry.unhealthy = entry.failures >= policy.maxSetupFailures
        let backoff = min(30.0, 0.5 * Double(1 << min(entry.failures, 8)))
        entry.retryAt = .now + .milliseconds(Int64(backoff * 1000))
        health[slot, default: [:]][type] = entry
        restarts["setup_failed", default: 0] += 1
        SchedulerMetrics.workerRestarted(because: "setup_failed", type: type)
        logger.error("worker setup failed", metadata: [
            "slot": "\(slot)", "type": "\(type)", "failures": "\(entry.failures)", "unhealthy": "\(entry.unhealthy)",
            "retry_in_s": "\(backoff)", "error": "\(error)",
        ])
    }

    /// Stops a worker and sets up its successor straight away, so the next job finds it ready.
    private func replace(_ worker: WorkerProcess, on slot: SlotID, because reason: String, type: JobType, policy: WorkerPolicy) async {
        let began = ContinuousClock.now
        logger.info("replacing worker", metadata: ["worker": "\(worker.id)", "reason": "\(reason)"])
        let category = reason.hasPrefix("its job") ? "job_failed" : reason.hasPrefix("it is no longer") ? "crashed" : "limit"
        restarts[category, default: 0] += 1
        SchedulerMetrics.workerRestarted(because: category, type: type.name)
        await worker.stop()
        if case .success = await start(type, policy: policy, on: slot) {
            replacementPauses.append(ContinuousClock.now - began)
        }
    }
}
