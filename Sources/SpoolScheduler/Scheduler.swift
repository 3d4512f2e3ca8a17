// The scheduler's loop and every handler that changes slot occupancy stay in one actor and one
// file (a little over 400 lines): the board's invariant is easiest to check when each move is in
// sight of the others. Execution, workers and the store live elsewhere.
import Foundation
import Logging
import ServiceLifecycle
import SpoolCore
import SpoolExecutor
import SpoolStore
import Synchronization

/// Runs queued jobs on the slots, one job per slot at a time.
///
/// Design: one loop (`run`) consumes events — "a job arrived", "a job finished", "shut
/// down" — and is the only code that claims jobs or changes slot occupancy. Occupancy is a
/// `SlotBoard`, the pure value that refuses to put a second job on a busy slot. Dispatch is
/// event-driven: a submit wakes the loop at once, and a finishing job records its outcome and
/// claims the slot's next job in one store transaction, so a busy slot goes straight from
/// one job to the next.
///
/// Graceful shutdown: the admission gate closes (submits get 503), idle slots close, running
/// jobs get `shutdownGrace` to finish; then they are stopped (SIGTERM → SIGKILL) and go back
/// to the queue without using up an attempt. `run` returns when every slot is empty.
public actor Scheduler: Service {
    enum Event: Sendable {
        case wake
        case finished(Job, SlotID, JobOutcome, JSONValue?)
        /// The store's answer to recording a finished job: the slot's next job, or an error.
        case recorded(Job, SlotID, JobOutcome, JSONValue?, Result<Job?, any Error>)
        case shutdown
        case shutdownGraceOver
    }

    private let store: any JobStore
    private let executor: ProcessExecutor
    private let catalog: JobCatalog
    private let configuration: SchedulerConfiguration
    private let logger: Logger
    public nonisolated let gate: AdmissionGate
    /// The warm workers of worker-mode job types.
    public nonisolated let workers: WorkerPool
    private let slotSpecs: [SlotID: SlotSpec]
    /// With a shared store: keeps each finished job's files there, for every node to serve.
    private let sharedFiles: SharedFileUploader?

    private var board: SlotBoard
    private var stops: [JobID: AsyncStream<StopReason>.Continuation] = [:]
    /// Stop requests that arrived before their job's process was registered (or, with a shared
    /// store, for jobs other nodes run: those are dropped after a minute).
    private var earlyStops: [JobID: (reason: StopReason, at: ContinuousClock.Instant)] = [:]
    private var progressSaved: [JobID: ContinuousClock.Instant] = [:]
    private var progressUnsaved: [JobID: JobProgress] = [:]
    /// Log text not yet sent as an event, and how much each job has sent (capped).
    private var logPending: [JobID: [UInt8]] = [:]
    private var logSent: [JobID: (bytes: Int, at: ContinuousClock.Instant)] = [:]
    static let logEventLimit = 64 << 10
    private var shuttingDown = false
    private var runTimes = QueueEstimate.RunTimes()
    /// Each running job's type, start, and attempt (its fencing token with a shared store).
    private var runningSince: [JobID: (type: String, since: ContinuousClock.Instant, attempt: Int)] = [:]

    private nonisolated let events: AsyncStream<Event>
    private nonisolated let eventSink: AsyncStream<Event>.Continuation
    private nonisolated let wakePending = Atomic<Bool>(false)

    public init(store: any JobStore, executor: ProcessExecutor, catalog: JobCatalog,
                configuration: SchedulerConfiguration, gate: AdmissionGate = AdmissionGate(), logger: Logger) {
        self.store = store
        self.executor = executor
        self.catalog = catalog
        self.configuration = configuration
        self.gate = gate
        self.logger = logger
        slotSpecs = Dictionary(uniqueKeysWithValues: configuration.slots.map { ($0.id, $0) })
        board = SlotBoard(slots: configuration.slots.map(\.id))
        sharedFiles = (store as? any SharedJobStore).map {
            SharedFileUploader(store: $0, dataDirectory: configuration.dataDirectory, limitBytes: configuration.sharedFileLimitBytes, logger: logger)
        }
        workers = WorkerPool(catalog: catalog, slots: configuration.slots, dataDirectory: configuration.dataDirectory,
                             killGrace: configuration.killGrace, logger: logger)
        (events, eventSink) = AsyncStream<Event>.makeStream()
    }

    /// A job was stored: start it now if a slot is free. Cheap and non-blocking; repeated
    /// calls before the loop runs collapse into one wake-up.
    public nonisolated func jobEnqueued() {
        if !wakePending.exchange(true, ordering: .acquiringAndReleasing) { eventSink.yield(.wake) }
    }

    /// Asks the slot running `job` to stop it (SIGTERM, then SIGKILL after the grace period).
    public func stop(_ job: JobID, because reason: StopReason) {
        if let continuation = stops[job] {
            continuation.yield(reason)
            return
        }
        let now = ContinuousClock.now
        if earlyStops.count >= 64 { earlyStops = earlyStops.filter { now - $0.value.at < .seconds(60) } }
        earlyStops[job] = (reason, now)
    }

    /// Stops every running job (this node lost its shared store for longer than its leases).
    public func stopAll(because reason: StopReason) {
        for continuation in stops.values { continuation.yield(reason) }
    }

    /// The jobs running here that started before `instant`, with their attempts. A job whose
    /// process ended (no stop channel) is left out while its outcome is recorded: the store may
    /// already hold it as finished, and lease renewal must not take that for a rescue.
    public func runningAttempts(startedBefore instant: ContinuousClock.Instant) -> [JobID: Int] {
        runningSince.filter { $0.value.since < instant && stops[$0.key] != nil }.mapValues(\.attempt)
    }

    /// The attempts this node holds: running, or ended with their outcome still being recorded.
    /// Lease renewal extends exactly these.
    public func heldAttempts() -> [JobID: Int] { runningSince.mapValues(\.attempt) }

    /// Whether this node runs (or is starting) `job`.
    public func runs(_ job: JobID) -> Bool { stops[job] != nil }

    /// When a job queued at `position` is likely to start (nil until run times are known).
    public func estimate(position: Int, type: String) -> QueueEstimate? {
        let now = ContinuousClock.now
        let running = runningSince.values.map { QueueEstimate.Running(type: $0.type, elapsed: (now - $0.since).seconds) }
        return QueueEstimate.estimate(position: position, type: type, slots: board.slots.count, running: running, runTimes: runTimes)
    }

    /// Seeds the run-time book from jobs that finished before this server started.
    public func learn(from finished: [Job]) {
        for job in finished.reversed() where job.state == .succeeded {
            if let started = job.startedAt, let finished = job.finishedAt {
                runTimes.record(finished.secondsSince1970 - started.secondsSince1970, type: job.type)
            }
        }
    }

    /// Each slot with the job it runs.
    public func occupancy() -> [(SlotSpec, JobID?)] {
        board.slots.map { (slotSpecs[$0]!, board.job(on: $0)) }
    }

    public func run() async throws {
        eventSink.yield(.wake)
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                for await event in events {
                    await handle(event, in: &group)
                    if shuttingDown && board.isQuiescent { break }
                }
                group.cancelAll()
            }
        } onGracefulShutdown: { [eventSink] in
            eventSink.yield(.shutdown)
        }
        await workers.stopAll()
        logger.info("scheduler stopped")
    }

    private func handle(_ event: Event, in group: inout DiscardingTaskGroup) async {
        switch event {
        case .wake:
            wakePending.store(false, ordering: .releasing)
            await fillIdleSlots(in: &group)
        case .finished(let job, let slot, let outcome, let result):
            await finish(job, on: slot, with: outcome, result: result, in: &group)
        case .recorded(let job, let slot, let outcome, let result, let answer):
            await recorded(job, on: slot, with: outcome, result: result, answer: answer, in: &group)
        case .shutdown:
            guard !shuttingDown else { return }
            shuttingDown = true
            gate.close()
            board.closeIdle()
            let running = board.runningJobs.count
            logger.info("shutting down: no new jobs; \(running) running job(s) get \(configuration.shutdownGrace) to finish")
            let grace = configuration.shutdownGrace
            group.addTask { [eventSink] in
                try? await Task.sleep(for: grace)
                eventSink.yield(.shutdownGraceOver)
            }
        case .shutdownGraceOver:
            for job in board.runningJobs.values { stop(job, because: .shutdown) }
        }
    }

    private func fillIdleSlots(in group: inout DiscardingTaskGroup) async {
        guard !shuttingDown else { return }
        var queueEmpty = false
        for slot in board.beginClaims() {
            var claimed: Job?
            if !queueEmpty {
                do {
                    claimed = try await store.claimNext(for: slot, excluding: await workers.excludedTypes(for: slot), now: WallClock.now())
                } catch {
                    logger.error("could not claim a job; retrying", metadata: ["error": "\(error)"])
                    retryWake(in: &group)
                    queueEmpty = true
                }
            }
            queueEmpty = queueEmpty || claimed == nil
            accept(claimed, on: slot, in: &group)
        }
    }

    /// A job ended: its outcome is recorded (and the slot's next job claimed) off the loop, so
    /// slots that finish together share the store's round trip; `recorded` takes the answer.
    private func finish(_ job: Job, on slot: SlotID, with outcome: JobOutcome, result: JSONValue?, in group: inout DiscardingTaskGroup) async {
        await flushProgress(of: job)
        stops[job.id]?.finish()
        stops[job.id] = nil
        earlyStops[job.id] = nil
        progressSaved[job.id] = nil
        let claimFor = shuttingDown ? nil : slot
        let excluding = await workers.excludedTypes(for: slot)
        group.addTask { [store, eventSink] in
            let answer: Result<Job?, any Error>
            do {
                answer = .success(try await store.finish(job.id, attempt: job.attempts, outcome: outcome, result: result, now: WallClock.now(),
                                                         claimNextFor: claimFor, excluding: excluding))
            } catch {
                answer = .failure(error)
            }
            eventSink.yield(.recorded(job, slot, outcome, result, answer))
        }
    }

    private func recorded(_ job: Job, on slot: SlotID, with outcome: JobOutcome, result: JSONValue?, answer: Result<Job?, any Error>,
                          in group: inout DiscardingTaskGroup) async {
        let next: Job?
        switch answer {
        case .success(let claimed):
            next = claimed
        case .failure(let error):
            if shuttingDown && store is any SharedJobStore {
                // Stopping, and the shared store is out of reach: the job's lease will lapse and
                // another node will rescue it (run it again, or fail it as node_lost), so this
                // node need not hold its exit for the database.
                logger.error("could not record a finished job while stopping; another node will rescue it once its lease lapses",
                             metadata: ["job": "\(job.id)", "outcome": "\(outcome.resultingState)", "error": "\(error)"])
                runningSince[job.id] = nil
                do { try board.finished(job.id, on: slot, closing: true) } catch {
                    logger.critical("slot bookkeeping refused a transition", metadata: ["error": "\(error)"])
                }
                return
            }
            // The outcome is not recorded yet: keep the slot busy and try again shortly.
            logger.error("could not record a finished job; retrying", metadata: ["job": "\(job.id)", "error": "\(error)"])
            let delay = configuration.storeRetryDelay
            group.addTask { [eventSink] in
                try? await Task.sleep(for: delay)
                eventSink.yield(.finished(job, slot, outcome, result))
            }
            return
        }
        if case .returned = outcome { await wakeAtNextRetry(in: &group) }
        logger.info("job finished", metadata: ["job": "\(job.id)", "type": "\(job.type)", "state": "\(outcome.resultingState)", "slot": "\(slot)"])
        let ran = runningSince.removeValue(forKey: job.id).map { (ContinuousClock.now - $0.since).seconds }
        if let ran, outcome == .succeeded { runTimes.record(ran, type: job.type) }
        SchedulerMetrics.finished(job, state: outcome.resultingState, ran: ran, slot: slot)
        SchedulerMetrics.busySlots(runningSince.count, of: board.slots.count)
        let pendingLog = logPending.removeValue(forKey: job.id)
        logSent[job.id] = nil
        let paths = JobPaths(dataDirectory: configuration.dataDirectory, job: job.id)
        // Off the dispatch path: the last log lines and the list of outputs, as events.
        group.addTask { [store, logger] in
            do {
                if let pendingLog, !pendingLog.isEmpty {
                    try await store.appendEvent(.log, job: job.id, data: .object(["job": .string(job.id.rawValue),
                        "text": .string(String(decoding: pendingLog, as: UTF8.self))]), now: WallClock.now())
                }
                guard outcome.resultingState.isTerminal else { return }
                let files = (try? await BlockingIO.run { OutputFiles.list(under: paths.outputs, limit: 1000) }) ?? []
                try await store.appendEvent(.outputs, job: job.id, data: .object([
                    "job": .string(job.id.rawValue),
                    "outputs": .array(files.map { .object(["name": .string($0.name), "size": .int($0.size),
                                                            "url": .string("/v1/jobs/\(job.id)/outputs/" + ($0.name.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? $0.name))]) }),
                ]), now: WallClock.now())
            } catch {
                logger.warning("could not record a job's final events", metadata: ["job": "\(job.id)", "error": "\(error)"])
            }
        }
        do {
            if shuttingDown && next == nil {
                try board.finished(job.id, on: slot, closing: true)
            } else {
                try board.finishedAndClaiming(job.id, on: slot)
                accept(next, on: slot, in: &group)
                // The claim went out before the shutdown began: the job goes back to the queue
                // at once, without using an attempt.
                if shuttingDown, let next { stop(next.id, because: .shutdown) }
            }
        } catch {
            logger.critical("slot bookkeeping refused a transition", metadata: ["error": "\(error)"])
        }
    }

    /// Records the store's answer to a claim on the board and, if it is a job, starts it.
    private func accept(_ job: Job?, on slot: SlotID, in group: inout DiscardingTaskGroup) {
        do {
            try board.claimed(job?.id, on: slot)
        } catch {
            logger.critical("slot bookkeeping refused a claim", metadata: ["error": "\(error)"])
            return
        }
        guard let job else { return }
        runningSince[job.id] = (job.type, .now, job.attempts)
        SchedulerMetrics.claimed(job, waited: max(0, WallClock.now().secondsSince1970 - job.createdAt.secondsSince1970))
        SchedulerMetrics.busySlots(runningSince.count, of: board.slots.count)
        let (stopRequests, continuation) = AsyncStream<StopReason>.makeStream()
        stops[job.id] = continuation
        if let early = earlyStops.removeValue(forKey: job.id) {
            continuation.yield(early.reason)
        } else if job.cancelRequested {
            continuation.yield(.cancel)
        }
        let observer = ExecutionObserver(message: { message in await self.received(message, from: job) },
                                         output: { bytes in await self.received(output: bytes, from: job) })
        if let type = catalog[job.type], let policy = type.workerPolicy {
            group.addTask { [workers, eventSink, sharedFiles] in
                let (outcome, result) = await workers.run(job, type: type, policy: policy, on: slot, stops: stopRequests, observer: observer)
                await sharedFiles?.upload(job, outcome: outcome)
                eventSink.yield(.finished(job, slot, outcome, result))
                await workers.replenish(slot)
            }
            return
        }
        let spec = specification(for: job, on: slot)
        group.addTask { [executor, eventSink, sharedFiles] in
            let outcome: JobOutcome
            switch spec {
            case .success(let spec):
                outcome = await executor.run(spec, stops: stopRequests, observer: observer)
            case .failure(let error):
                outcome = .spawnFailed(message: error.description)
            }
            await sharedFiles?.upload(job, outcome: outcome)
            eventSink.yield(.finished(job, slot, outcome, nil))
        }
    }

    private func specification(for job: Job, on slot: SlotID) -> Result<ExecutionSpec, ExecutorError> {
        guard let type = catalog[job.type] else {
            return .failure(ExecutorError("this server has no job type \"\(job.type)\" (was it removed from the configuration?)"))
        }
        let paths = JobPaths(dataDirectory: configuration.dataDirectory, job: job.id)
        do {
            let plan = try LaunchPlan(job: job, type: type, slot: slotSpecs[slot]!, paths: paths)
            return .success(ExecutionSpec(job: job.id, plan: plan, paths: paths, input: job.input,
                                          timeout: .milliseconds(Int64(job.timeoutSeconds * 1000)),
                                          killGrace: configuration.killGrace, logLimitBytes: configuration.logLimitBytes))
        } catch {
            return .failure(ExecutorError(error.description))
        }
    }

    /// A worker type is backing off on some slot: look at the queue again when it may retry.
    private func wakeAtNextRetry(in group: inout DiscardingTaskGroup) async {
        guard let retry = await workers.nextRetry() else { return }
        group.addTask { [weak self] in
            try? await Task.sleep(until: retry + .milliseconds(10), clock: .continuous)
            self?.jobEnqueued()
        }
    }

    private func retryWake(in group: inout DiscardingTaskGroup) {
        let delay = configuration.storeRetryDelay
        group.addTask { [weak self] in
            try? await Task.sleep(for: delay)
            self?.jobEnqueued()
        }
    }

    // MARK: - Progress

    private func received(_ message: JobMessage, from job: Job) async {
        guard case .progress(let progress) = message, stops[job.id] != nil else { return }
        let now = ContinuousClock.now
        if let last = progressSaved[job.id], now - last < configuration.progressInterval {
            progressUnsaved[job.id] = progress
            return
        }
        progressSaved[job.id] = now
        progressUnsaved[job.id] = nil
        await save(progress, of: job)
    }

    private func received(output bytes: [UInt8], from job: Job) async {
        guard stops[job.id] != nil else { return }
        var sent = logSent[job.id] ?? (0, ContinuousClock.now - .seconds(1))
        guard sent.bytes < Self.logEventLimit else { return }
        logPending[job.id, default: []] += bytes.prefix(Self.logEventLimit - sent.bytes)
        let now = ContinuousClock.now
        guard now - sent.at >= configuration.progressInterval, let text = logPending.removeValue(forKey: job.id) else { return }
        sent = (sent.bytes + text.count, now)
        logSent[job.id] = sent
        do {
            try await store.appendEvent(.log, job: job.id, data: .object(["job": .string(job.id.rawValue),
                "text": .string(String(decoding: text, as: UTF8.self))]), now: WallClock.now())
        } catch {
            logger.warning("could not record log lines", metadata: ["job": "\(job.id)", "error": "\(error)"])
        }
    }

    private func flushProgress(of job: Job) async {
        if let progress = progressUnsaved.removeValue(forKey: job.id) { await save(progress, of: job) }
    }

    private func save(_ progress: JobProgress, of job: Job) async {
        do {
            try await store.reportProgress(job.id, attempt: job.attempts, progress: progress)
        } catch {
            logger.warning("could not save progress", metadata: ["job": "\(job.id)", "error": "\(error)"])
        }
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
