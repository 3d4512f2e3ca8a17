import Glibc
import Logging
import Metrics
import SpoolCore
import Synchronization

/// The warm workers: at most one per slot, for one job type at a time — the executor of
/// worker-mode types.
///
/// A job of a worker-mode type runs on its slot's worker, started on first use. After each
/// job the pool decides (from the type's `WorkerPolicy`) whether the worker must be replaced;
/// if so the old one is stopped and a fresh one set up at once (`afterRun`), while the next
/// job waits. A worker whose setup fails is retried with exponential back-off; after
/// `max_setup_failures` in a row the slot is *unhealthy* for that type (until it sets the type up,
/// or the type sets up on another slot and the slot's next try does not fail). Meanwhile jobs of the
/// type are not claimed by the slot (they wait instead of failing) — `excludedTypes` tells
/// the scheduler which. A worker that went away on its own (idle, crashed, hung) is replaced
/// when its slot next needs one.
public actor WorkerPool: JobExecutor {
    private let catalog: JobCatalog
    private let slots: [SlotID: SlotSpec]
    private let settings: Worker.Settings
    private var workers: [SlotID: Worker] = [:]
    /// Workers to be replaced, set aside when their last job ended: `afterRun` stops them and
    /// sets up their successors, off the path that records the job's outcome.
    private var retiring: [SlotID: (worker: Worker, reason: String, type: JobType, policy: WorkerPolicy)] = [:]
    /// Slots whose worker is being (re)started; a job for such a slot waits for it.
    private var starting: [SlotID: [CheckedContinuation<Void, Never>]] = [:]
    private var health: [SlotID: [String: WorkerHealth]] = [:] {
        // Mirrored for `excludedTypes`, which the scheduler asks at every job's end: answered
        // without a hop onto this actor (busy then with the ended job's `afterRun`).
        didSet { backoffs.withLock { $0 = health } }
    }
    private let backoffs = Mutex<[SlotID: [String: WorkerHealth]]>([:])
    private var counter = 0
    /// The directories of a slot's earlier workers kept (their logs), besides the one starting.
    public static let directoriesKept = 4
    /// Set by `close()`: the server is shutting down, and no worker is started or replaced.
    private var closed = false
    /// Workers being started now, not yet the slot's (`shutdown` stops them too).
    private var launching: [SlotID: Worker] = [:]
    /// Slots in quarantine (`slotQuarantined`): no worker is started or replaced there.
    private var quarantined: Set<SlotID> = []
    /// Slots running a job now.
    private var busy: Set<SlotID> = []
    /// Workers of quarantined slots, being stopped: a worker started on the slot once it is
    /// released waits for them to be gone, and so does `shutdown`.
    private var leaving: [Worker] = []
    /// Pauses between a worker's last job and its replacement being ready (for the benchmark).
    public private(set) var replacementPauses: [Duration] = []
    public private(set) var restarts: [String: Int] = [:]

    public init(catalog: JobCatalog, slots: [SlotSpec], settings: Worker.Settings) {
        self.catalog = catalog
        self.slots = Dictionary(uniqueKeysWithValues: slots.map { ($0.id, $0) })
        self.settings = settings
    }

    private nonisolated var clock: SpoolClock { settings.clock }

    public nonisolated func excludedTypes(for slot: SlotID) -> Set<String> {
        let now = clock.now()
        return backoffs.withLock { Set(($0[slot] ?? [:]).filter { $0.value.retryAt > now }.keys) }
    }

    public nonisolated func setupTrouble(for type: String) -> SetupTrouble? {
        let now = clock.now()
        return backoffs.withLock { health in
            var records: [WorkerHealth] = []
            for slot in slots.keys {
                guard let record = health[slot]?[type], record.retryAt > now else { return nil }   // this slot may take it
                records.append(record)
            }
            guard let worst = records.max(by: { $0.failures < $1.failures }) else { return nil }
            return SetupTrouble(type: type, slots: records.count, failures: worst.failures, lastError: worst.lastError,
                                retryIn: records.map { $0.retryAt - now }.min() ?? .zero)
        }
    }

    public func nextRetry() -> Moment? {
        let now = clock.now()
        return health.values.flatMap(\.values).map(\.retryAt).filter { $0 > now }.min()
    }

    public func workerStatus() async -> [SlotID: SlotWorkers] {
        var result: [SlotID: SlotWorkers] = [:]
        for slot in slots.keys {
            var status: WorkerStatus?
            if let worker = workers[slot], await worker.phase != .exited {
                status = WorkerStatus(id: worker.id, type: worker.type, phase: await worker.phase.rawValue, pid: await worker.processID,
                                      jobsRun: await worker.jobsRun, usage: await worker.usage)
            }
            result[slot] = SlotWorkers(worker: status, health: Array((health[slot] ?? [:]).values).sorted { $0.type < $1.type })
        }
        return result
    }

    public func prepare(_ job: Job, on slot: SlotSpec) async {
        await JobFiles.prepareAhead(JobPaths(dataDirectory: settings.dataDirectory, job: job.id), input: job.input, slot: slot.id)
    }

    /// Runs a job on the slot's warm worker, starting or replacing the worker as needed.
    public func run(_ job: Job, on slot: SlotSpec, stops: AsyncStream<StopReason>, observer: ExecutionObserver) async -> ExecutionResult {
        guard let type = catalog[job.type], let policy = type.workerPolicy else {
            return ExecutionResult(.spawnFailed(message: "this server has no worker-mode job type \"\(job.type)\""))
        }
        // Claimed as its slot was being quarantined: no worker is loaded there for it.
        guard !quarantined.contains(slot.id) else { return ExecutionResult(.returned(message: "its slot is quarantined")) }
        busy.insert(slot.id)
        defer { busy.remove(slot.id) }
        let worker: Worker
        var requests: StopRequests?
        defer { requests?.finish() }
        if let current = workers[slot.id], current.type == type.name, starting[slot.id] == nil, !closed, await current.isAlive,
           await current.usageLimitReason() == nil {
            worker = current
        } else {
            // The slot's worker must be set up first (a model loaded): a stop that comes
            // meanwhile ends the job then, unsent.
            let watching = StopRequests(stops)
            requests = watching
            switch await watching.unlessStopped({ await self.ready(for: type, policy: policy, on: slot.id) { !watching.isStopped } }) {
            case .done(.success(let ready)): worker = ready
            case .done(.failure(let failure)): return ExecutionResult(.returned(message: failure.description), serverShort: failure.serverShort)
            case .stopped(let reason): return ExecutionResult(Self.stoppedDuringSetup(reason))
            }
        }
        let paths = JobPaths(dataDirectory: settings.dataDirectory, job: job.id)
        let assignment = Worker.Assignment(job: job.id, input: job.input, paths: paths, attempt: job.attempts, maxAttempts: job.maxAttempts,
                                           timeoutSeconds: job.timeoutSeconds, array: job.array)
        let result = await worker.run(assignment, stops: requests?.forwarded ?? stops, observer: observer)
        if case .returned(let message, _) = result.outcome, await !worker.isAlive {
            // Ready, then gone before it took the job: a setup that failed after all, with its
            // back-off and, in a row, the slot's unhealthy mark — not a job lost (`Worker`). No
            // successor is set up now: the type's next job, after the back-off, sets one up.
            recordSetupFailure(type: type.name, policy: policy, on: slot.id, error: message)
            if workers[slot.id] === worker { workers[slot.id] = nil }
            return result
        } else if health[slot.id]?[type.name] != nil, await worker.jobsRun > 0 {
            // It ran a job: its setup held, and the failures in a row before it are over.
            health[slot.id]?[type.name] = nil
        }
        if let reason = await worker.recycleReason(after: result.outcome) {
            // Answer now; the scheduler calls `afterRun` next, and the slot's next job waits
            // for the fresh worker instead of this job's outcome waiting for its setup.
            if workers[slot.id] === worker { workers[slot.id] = nil }
            retiring[slot.id] = (worker, reason, type, policy)
            starting[slot.id] = starting[slot.id] ?? []
        }
        return result
    }

    /// A job stopped while its worker set up, unsent: a shutdown or a quarantine hands it back
    /// as one that never ran (found in review: it was listed among its attempts as a run taken
    /// back, and lost its start deadline); a cancel or its timeout ends it as for any job.
    static func stoppedDuringSetup(_ reason: StopReason) -> JobOutcome {
        switch reason {
        case .shutdown: .returned(message: "the server shut down while its worker set up")
        case .quarantine: .returned(message: "its slot was quarantined while its worker set up")
        case .cancel, .timeout: JobOutcome(.signaled(signal: SIGTERM), stoppedFor: reason)
        }
    }

    /// Replaces the worker set aside by the slot's last job, if any (only stops it once the
    /// pool is closed: a job stopped for the shutdown must not load a model again).
    public func afterRun(on slot: SlotID) async {
        if let (worker, reason, type, policy) = retiring.removeValue(forKey: slot) {
            if closed || quarantined.contains(slot) {
                await worker.stop(because: closed ? "the server is stopping" : "its slot is quarantined")
            } else {
                await replace(worker, on: slot, because: reason, type: type, policy: policy)
            }
            for waiter in starting.removeValue(forKey: slot) ?? [] { waiter.resume() }
        }
        if quarantined.contains(slot) { stopQuarantined(slot) }
    }

    public func slotQuarantined(_ slot: SlotID) async {
        quarantined.insert(slot)
        if !busy.contains(slot) { stopQuarantined(slot) }   // else once its job has ended (`afterRun`)
    }

    public func slotReleased(_ slot: SlotID) async { quarantined.remove(slot) }

    /// Stops the quarantined slot's worker, if it has one, without waiting for it.
    private func stopQuarantined(_ slot: SlotID) {
        guard let worker = workers.removeValue(forKey: slot) else { return }
        leaving.append(worker)
        Task {   // unstructured: bounded by the kill grace; `leaving` lets a later start and `shutdown` wait for it
            await worker.stop(because: "its slot is quarantined")
            self.left(worker)
        }
    }

    /// A worker stopped for its slot's quarantine is gone.
    private func left(_ worker: Worker) { leaving.removeAll { $0 === worker } }

    /// Jobs waiting for the slot's worker to be set up (for tests).
    func waitingForSetup(on slot: SlotID) -> Int { starting[slot]?.count ?? 0 }

    /// The server is shutting down: from now on no worker is started or replaced, and a job
    /// that would need one goes back to the queue.
    public func close() async { closed = true }

    /// Stops every worker (server shutdown).
    public func shutdown() async {
        closed = true
        let all = Array(workers.values) + retiring.values.map(\.worker) + launching.values + leaving
        workers = [:]
        retiring = [:]
        await withTaskGroup(of: Void.self) { group in
            for worker in all { group.addTask { await worker.stop(because: "the server is stopping") } }
        }
        for waiters in starting.values { for waiter in waiters { waiter.resume() } }
        starting = [:]
    }

    // MARK: -

    /// The slot's worker for `type`, started if need be. One setup at a time per slot: a job
    /// that finds one in flight (`starting`) waits for it, whether its own job still wants it or
    /// was stopped meanwhile (`wanted`), so a slot never loads two workers. A job that no longer
    /// wants one starts or stops nothing.
    private func ready(for type: JobType, policy: WorkerPolicy, on slot: SlotID,
                       wanted: @Sendable () -> Bool = { true }) async -> Result<Worker, Worker.StartFailure> {
        while true {
            while starting[slot] != nil {
                await withCheckedContinuation { starting[slot, default: []].append($0) }
            }
            guard wanted() else { return .failure(Worker.StartFailure(description: "its job was stopped")) }
            guard let worker = workers[slot] else { break }
            let alive = worker.type == type.name ? await worker.isAlive : false
            // Past a memory limit by a reading taken while it waited (found by attacking the
            // build: a worker over max_vram_mb between jobs ran one more before it was replaced).
            let overLimit = alive ? await worker.usageLimitReason() : nil
            guard starting[slot] == nil, workers[slot] === worker else { continue }   // changed meanwhile: look again
            if alive, overLimit == nil { return .success(worker) }
            // Another type holds the slot's worker (and its GPU memory), or it went away
            // (idle, crashed, hung), or it holds too much memory: make sure it is gone, then start a fresh one.
            starting[slot] = []
            workers[slot] = nil
            await worker.stop(because: overLimit ?? (worker.type == type.name ? "it is no longer running" : "its slot needs a \(type.name) worker"))
            return await setUp(type, policy: policy, on: slot)
        }
        starting[slot] = []
        return await setUp(type, policy: policy, on: slot)
    }

    /// Starts the slot's worker, the slot marked as setting up (`starting`), then lets the jobs
    /// that waited for it go on.
    private func setUp(_ type: JobType, policy: WorkerPolicy, on slot: SlotID) async -> Result<Worker, Worker.StartFailure> {
        let result = await start(type, policy: policy, on: slot)
        for waiter in starting.removeValue(forKey: slot) ?? [] { waiter.resume() }
        return result
    }

    private func start(_ type: JobType, policy: WorkerPolicy, on slot: SlotID) async -> Result<Worker, Worker.StartFailure> {
        let closing = Worker.StartFailure(description: "the server is shutting down")
        guard !closed else { return .failure(closing) }
        // A worker the slot's quarantine stopped holds the GPU until it is gone.
        for worker in leaving where worker.slot == slot { await worker.exited() }
        counter += 1
        let id = "slot\(slot)-\(type.name)-\(counter)"
        let directories = settings.dataDirectory + "/workers"
        _ = try? await BlockingIO.run { Self.prune(directories, slot: slot, keep: Self.directoriesKept) }
        guard !closed else { return .failure(closing) }   // `shutdown` ran meanwhile
        guard !quarantined.contains(slot) else { return .failure(Worker.StartFailure(description: "its slot is quarantined")) }
        var made: Worker?
        do {
            let worker = try Worker(id: id, type: type, policy: policy, slot: slots[slot]!, settings: settings)
            made = worker
            launching[slot] = worker
            try await worker.start()
            launching[slot] = nil
            guard !closed else {
                await worker.stop(because: "the server is stopping")
                return .failure(closing)
            }
            workers[slot] = worker
            // Quarantined while it set up: stopped now, not left loaded on the faulty GPU for the
            // whole quarantine (found by attacking the build: it held its memory through the self-tests).
            guard !quarantined.contains(slot) else {
                stopQuarantined(slot)
                return .failure(Worker.StartFailure(description: "its slot is quarantined"))
            }
            // Set up: its mark goes, but not the failures in a row — those end once it takes a
            // job (`run`), since a worker may die right after `ready`, before it reads one.
            health[slot]?[type.name]?.unhealthy = false
            // The type sets up again, so its fault was most likely its own, since fixed: other
            // slots' unhealthy marks for it go (their back-off and failure count stay, so their
            // own next try decides again, and one more failure marks them at once). Else a slot
            // that no job of the type needs again read unhealthy, and `/healthz` degraded, for good.
            // Their back-off ends now too, so they verify it at their next job of the type.
            for other in health.keys where other != slot && health[other]?[type.name]?.unhealthy == true {
                health[other]?[type.name]?.unhealthy = false
                health[other]?[type.name]?.retryAt = clock.now()
            }
            return .success(worker)
        } catch {
            // A setup that failed ends with its process gone (one stuck loading a model may
            // hold GPU memory until the SIGKILL a grace later): the slot stays `starting`
            // meanwhile, so no fresh worker starts beside it.
            if let made {
                await made.exited()
                if launching[slot] === made { launching[slot] = nil }
            }
            // Stopped by `shutdown` while it set up: not a failure of the type.
            if closed { return .failure(closing) }
            // The server short of descriptors or processes: not the type's fault either (found by
            // attacking the build: it counted, and marked the slot unhealthy for the type). The
            // job goes back, and the scheduler waits, as for a process job.
            if let failure = error as? Worker.StartFailure, failure.serverShort { return .failure(failure) }
            let failure = Worker.StartFailure(description: "worker setup failed: \(error)")
            recordSetupFailure(type: type.name, policy: policy, on: slot, error: failure.description)
            return .failure(failure)
        }
    }

    /// Removes the directories of `slot`'s earlier workers (this server's and earlier ones'),
    /// all but the `keep` newest (blocking). Called as the slot starts a worker, when none of
    /// its workers runs: the one it replaces has been stopped.
    static func prune(_ workers: String, slot: SlotID, keep: Int) {
        guard let handle = opendir(workers) else { return }
        var found: [(name: String, modified: Int)] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard name.hasPrefix("slot\(slot)-") else { continue }
            var status = stat()
            guard lstat(workers + "/" + name, &status) == 0, status.st_mode & S_IFMT == S_IFDIR else { continue }
            found.append((name, Int(status.st_mtim.tv_sec) * 1_000_000_000 + Int(status.st_mtim.tv_nsec)))
        }
        closedir(handle)
        for old in found.sorted(by: { $0.modified > $1.modified }).dropFirst(keep) { JobFiles.removeTree(workers + "/" + old.name) }
    }

    private func recordSetupFailure(type: String, policy: WorkerPolicy, on slot: SlotID, error: String) {
        let now = clock.now()
        var entry = health[slot]?[type] ?? WorkerHealth(type: type, failures: 0, unhealthy: false, lastError: error, retryAt: now)
        entry.failures += 1
        entry.lastError = error
        entry.unhealthy = entry.failures >= policy.maxSetupFailures
        let backoff = min(30.0, 0.5 * Double(1 << min(entry.failures, 8)))
        entry.retryAt = now + .seconds(backoff)
        health[slot, default: [:]][type] = entry
        restarted(because: "setup_failed", type: type)
        settings.logger.error("worker setup failed", metadata: [
            "slot": "\(slot)", "type": "\(type)", "failures": "\(entry.failures)", "unhealthy": "\(entry.unhealthy)",
            "retry_in_s": "\(backoff)", "error": "\(error)",
        ])
    }

    /// Stops a worker and sets up its successor straight away, so the next job finds it ready.
    private func replace(_ worker: Worker, on slot: SlotID, because reason: String, type: JobType, policy: WorkerPolicy) async {
        let began = clock.now()
        settings.logger.info("replacing worker", metadata: ["worker": "\(worker.id)", "reason": "\(reason)"])
        restarted(because: reason.hasPrefix("its job") ? "job_failed" : reason.hasPrefix("it is no longer") ? "crashed" : "limit", type: type.name)
        await worker.stop(because: "replaced: \(reason)")
        if case .success = await start(type, policy: policy, on: slot) {
            replacementPauses.append(clock.now() - began)
        }
    }

    private func restarted(because reason: String, type: String) {
        restarts[reason, default: 0] += 1
        Counter(label: "spool_worker_restarts_total", dimensions: [("reason", reason), ("type", type)]).increment()
    }
}
