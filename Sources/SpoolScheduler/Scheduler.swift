// The scheduler's loop and every handler that changes slot occupancy stay in one actor and one
// file (about 1,300 lines: a third the start-before-commit handover of a local store, a tenth the
// queue's timer, and the fencing of attempts a shared store's node lost or ended late): the board's invariant is easiest to check when each move is in sight of the
// others, and the handover's and the timer's state (looked-up jobs, uncommitted starts, voided
// attempts, the armed time) is private to the actor. Execution, workers, the store and the GPU
// quarantine (Scheduler+Quarantine.swift) live elsewhere.
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
/// With a store only this server writes (`LocalJobStore`, the embedded SQLite file) a slot does
/// not wait for that transaction's fsync: while a job runs, the slot looks up its next job and
/// makes its files; when the job ends, the next one starts at once and the transaction —
/// outcome and a claim conditional on the job still being queued — commits meanwhile. A job
/// canceled in between is stopped as soon as the commit says so; its attempt records nothing.
/// A job's end is handled only after its own claim committed, or with it: a job started on an
/// idle slot (nothing else to commit) keeps its claim back for `claimDelay`, and one that ends
/// by then commits its claim and its end in one transaction. A crash in between leaves the
/// job queued and its process to the orphan reaper of the next start.
///
/// Graceful shutdown: the admission gate closes (submits get 503), idle slots close, running
/// jobs get `shutdownGrace` to finish; then they are stopped (SIGTERM → SIGKILL) and go back
/// to the queue without using up an attempt. `run` returns when every slot is empty.
///
/// One file on purpose: the event loop, dispatch, finishing and shutdown share the actor's
/// state (slots, running attempts, stops), and each reads as a step of the one loop. The pure
/// decisions already live elsewhere (`SlotBoard`, `QueueEstimate`, `RunTimeModel`, `WorkerLifecycle`).
public actor Scheduler: Service {
    enum Event: Sendable {
        case wake
        case finished(Job, SlotID, ExecutionResult)
        /// The store's answer to recording a finished job: the slot's next job, or an error;
        /// with the count of `jobEnqueued` calls before the claim read the queue.
        /// `sent`: when the write (with its claim) went out, where a claimed job's lease may start.
        case recorded(Job, SlotID, ExecutionResult, Result<FinishResult, any Error>, submissions: Int, excluded: Set<String>, sent: Moment)
        case shutdown
        case shutdownGraceOver
        /// Local store: a commit of an attempt's end and/or of a started job's claim came back
        /// (which claims held).
        case committed(Ending?, Started?, Result<HandOverCommit, any Error>)
        /// Local store: an attempt's claim has waited `claimDelay` for its end; it commits now.
        case claimDue(Attempt)
        /// Local store: a busy slot's look-ahead came back (the `lookup`-th for that slot).
        case lookedUp(SlotID, lookup: Int, LookAhead)
        /// Something in the queue is due by this time (a delayed job may start, a deadline passes).
        case arm(Timestamp)
        /// The armed time came (the armed generation): expire deadlines, fill slots, arm the next.
        case timer(Int)
    }

    /// What a busy slot's look-ahead found.
    enum LookAhead: Sendable {
        /// The job the slot starts next.
        case job(Upcoming)
        /// Nothing the slot may take, as of this many `jobEnqueued` calls.
        case empty(submissions: Int)
        /// No answer: the store failed, or the queue's head is claimed in the store.
        case unknown
    }

    /// An attempt that ended, with the record the store makes of it.
    struct Ending: Sendable {
        var job: Job
        var slot: SlotID
        var result: ExecutionResult
        var record: FinishedAttempt
        /// Its own claim, when that waited for the end (`claimDelay`): both commit together.
        var claimed: Job?
    }

    struct Started: Sendable {
        var job: Job
        var slot: SlotID
    }

    /// A busy slot's next job, looked up while the slot's current job runs.
    struct Upcoming: Sendable {
        var job: Job
        /// `jobEnqueued` calls before the look-up: a later submit may go ahead of it.
        var submissions: Int
    }

    /// A job running on a slot here.
    struct Running: Sendable {
        var type: String
        var input: JSONValue
        /// Its tenant (for the start estimate of the tenant's next job under its `max_running`).
        var owner: String?
        /// Where it runs (its busy time is counted to it).
        var slot: SlotID
        var since: Moment
        /// When its claim went out: where its lease may have begun (`since` is when it was accepted here).
        var claimSent: Moment
        /// The latest progress it reported (0…1), for the ETA of the jobs behind it.
        var progress: Double?
    }

    /// One attempt of a job. A job rescued by another node after an outage may be claimed here
    /// again while its earlier attempt is still being stopped: the two are kept apart.
    struct Attempt: Hashable, Sendable {
        var job: JobID
        var number: Int
        init(_ job: Job) { (self.job, number) = (job.id, job.attempts) }
        /// Attempt `number` of `job`, as the store's leases name it.
        init(_ job: JobID, number: Int) { (self.job, self.number) = (job, number) }
    }

    /// The store failing claims or records, in a row.
    struct StoreTrouble: Sendable {
        var since: Moment
        var failures: Int
        var error: String
        /// The latest failure (submits' trouble ends a while after it: `submitProblem`).
        var last: Moment? = nil
    }

    let store: any JobStore
    let executor: any JobExecutor
    let catalog: JobCatalog
    private let configuration: SchedulerConfiguration
    let clock: SpoolClock
    let logger: Logger
    public nonisolated let gate: AdmissionGate
    let slotSpecs: [SlotID: SlotSpec]
    /// With a shared store: keeps each finished job's files there, for every node to serve.
    private let sharedFiles: SharedFileUploader?

    private(set) var board: SlotBoard
    /// GPU slots out of service (see `Scheduler+Quarantine.swift`): they claim nothing.
    var quarantine: SlotQuarantine {
        didSet {
            let closed = quarantine.quarantinedSlots.count
            everySlotQuarantined.store(closed > 0 && closed == configuration.slots.count, ordering: .releasing)
        }
    }
    let everySlotQuarantined = Atomic<Bool>(false)
    /// Every slot of this node is quarantined: no job starts here (`/healthz`, a queued job's waiting reason).
    public nonisolated var allSlotsQuarantined: Bool { everySlotQuarantined.load(ordering: .acquiring) }
    /// Where the quarantine is kept across restarts (GPU slots only); what the file holds (nil:
    /// not known, after a write failed); whether the kept list was restored (`quarantineRestored`,
    /// its task); the version of the latest write.
    let quarantineFile: QuarantineFile?
    var quarantineKept: [SlotQuarantine.Saved]?
    var quarantineLoaded = false
    var quarantineRestore: Task<Void, Never>?
    var quarantineVersion = 0
    private var stops: [Attempt: AsyncStream<StopReason>.Continuation] = [:]
    /// Tasks waiting for an attempt to end (a later attempt of the same job on this node).
    private var endWaiters: [Attempt: [CheckedContinuation<Void, Never>]] = [:]
    /// Attempts stopped because the job is no longer theirs (rescued): their output is dropped,
    /// not logged as the job's.
    private var fenced: Set<Attempt> = []
    /// Stop requests that arrived before their job's process was registered (or, with a shared
    /// store, for jobs other nodes run: those are dropped after a minute).
    private var earlyStops = EarlyStops()
    private var progressSaved: [Attempt: Moment] = [:]
    private var progressUnsaved: [Attempt: JobProgress] = [:]
    /// What each running job's output may still put in `log` events.
    private var logBudgets: [Attempt: LogEventBudget] = [:]
    private var shuttingDown = false
    /// What start estimates are made of, kept apart from the actor so that a submit or a status
    /// read gets its estimate without waiting for the scheduler between two dispatch steps.
    private struct EstimateBook: Sendable {
        var runTimes = QueueEstimate.RunTimes()
        /// Run times learned from inputs, per type (the median is the fallback).
        var runModel = RunTimeModel()
        var running: [Attempt: Running] = [:]
        /// When each running job's own work began: its process started, or its warm worker took
        /// it — after the worker's setup, which is not the job's run time (found by attacking the
        /// build: a 3-s model load counted into the run time learned for the type and into the
        /// elapsed time of the job's ETA).
        var working: [Attempt: Moment] = [:]
        /// Up to when each running job's time was counted into its slot's busy seconds.
        var busyCounted: [Attempt: Moment] = [:]

        /// A running job as an estimate sees it at `now`. A job whose warm worker is still setting
        /// up has not begun its own work.
        mutating func estimating(_ attempt: Attempt, _ job: Running, at now: Moment) -> QueueEstimate.Running {
            QueueEstimate.Running(type: job.type, elapsed: working[attempt].map { (now - $0).inSeconds } ?? 0, progress: job.progress,
                                  expected: runModel.predict(type: job.type, input: job.input)?.seconds)
        }
    }

    private nonisolated let book = Mutex(EstimateBook())
    private nonisolated let slotCount: Int
    private var running: [Attempt: Running] = [:] {
        didSet {
            book.withLock { [running] book in
                book.running = running
                book.working = book.working.filter { running[$0.key] != nil }
                book.busyCounted = book.busyCounted.filter { running[$0.key] != nil }
            }
        }
    }
    private var storeTrouble: StoreTrouble?
    /// Submits the store could not take (storage unavailable), in a row: the scheduler may have
    /// nothing to write while every submit fails (a full disk on an idle server).
    let submitTrouble = Mutex<StoreTrouble?>(nil)
    /// Why this node's lease renewals fail, while they do (a shared store: `ClusterCoordinator`).
    let renewalTrouble = Mutex<String?>(nil)
    /// Set while the data directory is full: a job's files could not be made, so it went back
    /// to the queue, and slots claim nothing until `retryAt` (each try would only hand it back).
    /// `short`: the server is short of file descriptors, processes or memory, not of room
    /// (`ExecutionResult.serverShort`); the same pause, another name.
    private var dataDirectoryUnusable: (since: Moment, retryAt: Moment, error: String, short: Bool)?
    /// Whether slots hold off claiming (the data directory is full).
    private var claimsPaused: Bool { dataDirectoryUnusable.map { clock.now() < $0.retryAt } ?? false }
    /// A loop tries the full data directory every `dataDirectoryRetryDelay` until it has room.
    private var probingDataDirectory = false

    /// Set with a local store (and `startBeforeCommit`): slots start jobs before claims commit.
    private let local: (any LocalJobStore)?
    private var upcoming: [SlotID: Upcoming] = [:]
    /// Busy slots whose look-ahead found nothing to start (as of `submissions`): their job's end
    /// commits without looking at the queue first.
    private var emptyAhead: [SlotID: Int] = [:]
    /// Idle slots whose look at the queue found nothing they may start: the next job submitted
    /// alone starts there without another look (`submittedAlone`).
    private var emptyIdle: [SlotID: EmptyQueue] = [:]
    /// Slots starting the job submitted alone into a queue they found empty: as of this many
    /// submissions, there is nothing behind it, and their look-ahead need not read the queue.
    private var aloneInQueue: [SlotID: Int] = [:]
    /// When a wake-up is set for the types backing off on some slot (`wakeWhenTypesReturn`).
    private var typesReturnAt: Moment?
    /// Attempts whose end the store has failed to record since then (retried; given up during a
    /// shutdown with a shared store only after a lease).
    private var recordFailingSince: [Attempt: Moment] = [:]
    /// The latest look-up asked for each slot (older answers are dropped).
    private var lookups: [SlotID: Int] = [:]
    /// The jobs started since each slot's look-ahead in flight looked: the job it found may be
    /// one of them, and have ended already (then nothing marks it as taken).
    private var startedDuringLookAhead: [SlotID: Set<JobID>] = [:]
    /// Attempts started before their claim committed, and the ends that wait for those commits.
    private var uncommitted: Set<Attempt> = []
    private var endsAwaitingCommit: [Attempt: (Job, SlotID, ExecutionResult)] = [:]
    /// Attempts asked to stop for a cancel while they ran (or started).
    private var canceledWhileRunning: Set<Attempt> = []
    /// Attempts that ended within `claimDelay` having reported progress: their claim commits
    /// first (the store takes progress only for a job it holds as running), then the progress, then the end.
    private var progressFirst: Set<Attempt> = []
    /// Attempts started on an idle slot whose claim waits (`claimDelay`) to commit with their end.
    private var deferredClaims: [Attempt: Started] = [:]
    /// Attempts whose claim did not hold: stopped at once; their end records nothing.
    private var voided: Set<Attempt> = []
    /// Attempts stopped because this node lost their lease: their ends are left unrecorded.
    private var leaseLost: Set<Attempt> = []
    /// Jobs that ran here and whose end was left unrecorded on purpose (a lost lease, a stop cut
    /// off from the store), with when: the cluster's rescue decides them, so this node neither
    /// renews nor gives back their claims (`knownJobs`). Kept an hour, long past any rescue.
    private var leftForRescue: [JobID: Moment] = [:]
    private var commitsInFlight = 0
    /// `jobEnqueued` calls, and where the newest of those jobs stand in the queue.
    private nonisolated let submissions = Mutex(SubmissionLog())
    /// When the queue's timer fires next (`arm`), and its generation (older fires are stale).
    private var timerAt: Timestamp?
    private var timerGeneration = 0

    private nonisolated let events: AsyncStream<Event>
    private nonisolated let eventSink: AsyncStream<Event>.Continuation
    private nonisolated let wakePending = Atomic<Bool>(false)
    /// The graceful shutdown was asked for: the `.shutdown` event may still wait behind others
    /// (a submit's wake-up), which must not start jobs meanwhile.
    private nonisolated let shutdownRequested = Atomic<Bool>(false)

    public init(store: any JobStore, executor: any JobExecutor, catalog: JobCatalog, configuration: SchedulerConfiguration,
                clock: SpoolClock = .system, gate: AdmissionGate = AdmissionGate(), logger: Logger) {
        self.store = store
        self.executor = executor
        self.catalog = catalog
        self.configuration = configuration
        self.clock = clock
        self.gate = gate
        self.logger = logger
        slotSpecs = Dictionary(uniqueKeysWithValues: configuration.slots.map { ($0.id, $0) })
        board = SlotBoard(slots: configuration.slots.map(\.id))
        quarantine = SlotQuarantine(slots: configuration.slots, failureLimit: configuration.quarantineAfterFailures)
        quarantineFile = configuration.slots.contains { $0.gpu != nil } ? QuarantineFile(dataDirectory: configuration.dataDirectory) : nil
        slotCount = configuration.slots.count
        sharedFiles = (store as? any SharedJobStore).map {
            SharedFileUploader(store: $0, dataDirectory: configuration.dataDirectory, limitBytes: configuration.sharedFileLimitBytes, logger: logger)
        }
        (events, eventSink) = AsyncStream<Event>.makeStream()
        local = configuration.startBeforeCommit ? store as? any LocalJobStore : nil
    }

    /// A job was stored that is not due at once (`run_at`, `delay_s`) or has a deadline: look
    /// at the queue again at `time` (`Job.nextTimer`). Cheap and non-blocking.
    public nonisolated func jobEnqueued(dueBy time: Timestamp?) { enqueued(nil, dueBy: time, job: nil) }

    /// Something in the queue is due at `time` (another node's delayed job or deadline, read
    /// from a shared store): the queue's timer fires by then. Nothing else is woken.
    public nonisolated func queueTimerDue(at time: Timestamp) { eventSink.yield(.arm(time)) }

    /// A job was stored: start it now if a slot is free. Cheap and non-blocking; repeated
    /// calls before the loop runs collapse into one wake-up.
    public nonisolated func jobEnqueued() { enqueued(nil, dueBy: nil, job: nil) }

    /// A job was stored, queued (a submit): as `jobEnqueued(dueBy:)`, and a slot's next job,
    /// looked up ahead, stays its next unless this one goes before it; an idle slot that found
    /// the queue empty starts it without looking again, if it came alone (`submittedAlone`).
    public nonisolated func jobEnqueued(_ job: Job) {
        enqueued(SubmissionLog.Entry(priority: job.priority, fairTag: job.fairTag), dueBy: job.nextTimer, job: job)
    }

    private nonisolated func enqueued(_ entry: SubmissionLog.Entry?, dueBy time: Timestamp?, job: Job?) {
        if let time { eventSink.yield(.arm(time)) }
        submissions.withLock { $0.add(entry, job: job) }
        wakeSlots()
    }

    /// A slot-filling pass is asked for and has not begun (for tests).
    nonisolated var wakeQueued: Bool { wakePending.load(ordering: .acquiring) }

    /// Runs the slot-filling pass soon (once, however often it is asked before it runs).
    private nonisolated func wakeSlots() {
        if !wakePending.exchange(true, ordering: .acquiringAndReleasing) { eventSink.yield(.wake) }
    }

    /// Asks the slot running `job` to stop it (SIGTERM, then SIGKILL after the grace period).
    public func stop(_ job: JobID, because reason: StopReason) {
        for (slot, next) in upcoming where next.job.id == job { upcoming[slot] = nil }
        let attempts = stops.filter { $0.key.job == job }
        if !attempts.isEmpty {
            for (attempt, continuation) in attempts {
                if reason == .cancel { canceledWhileRunning.insert(attempt) }
                continuation.yield(reason)
            }
            return
        }
        earlyStops.record(job, reason, at: clock.now())
    }

    /// Asks one attempt of `job` to stop, if it runs here (not a newer one of the same job).
    public func stop(_ job: JobID, attempt: Int, because reason: StopReason) {
        let attempt = Attempt(job, number: attempt)
        guard let stop = stops[attempt] else { return }
        if reason == .cancel { canceledWhileRunning.insert(attempt) }
        stop.yield(reason)
    }

    /// Stops an attempt the store no longer gives this node (the job was rescued: it runs
    /// elsewhere, or here again as a newer attempt that goes on); its output is no longer
    /// logged as the job's.
    public func fence(_ job: JobID, attempt: Int) {
        let attempt = Attempt(job, number: attempt)
        guard let stop = stops[attempt] else { return }
        fenced.insert(attempt)
        stop.yield(.shutdown)
    }

    /// Stops an attempt whose lease this node could not renew for a lease (its database out of
    /// reach, or too slow): other nodes may rescue the job from now on, so its end is not
    /// recorded here — the store keeps it running under this attempt until the rescue requeues
    /// it (or fails it as node_lost), and the next claim gives it a new attempt number. Recorded
    /// as a stop for shutdown, it gave its attempt back and this node could claim it again under
    /// the same number, which the fence then took for the stopped attempt (found by attacking
    /// the build: the copy ran unrenewed and unstopped beside the rescue's for 30 s).
    public func fenceForLostLease(_ job: JobID, attempt: Int) {
        let attempt = Attempt(job, number: attempt)
        guard let stop = stops[attempt] else { return }
        leaseLost.insert(attempt)
        fenced.insert(attempt)
        stop.yield(.shutdown)
    }

    /// The jobs running here that were accepted before `moment` — or, `byClaim`, whose claims
    /// went out before it (where their leases may have begun) — with their attempts. A job whose
    /// process ended (no stop channel) is left out while its outcome is recorded: the store may
    /// already hold it as finished, and lease renewal must not take that for a rescue.
    public func runningAttempts(startedBefore moment: Moment, byClaim: Bool = false) -> [JobID: Int] {
        Self.newest(running.filter { (byClaim ? $0.value.claimSent : $0.value.since) < moment && stops[$0.key] != nil }.keys)
    }

    /// The attempts this node holds: running, or ended with their outcome still being recorded.
    /// Lease renewal extends exactly these.
    public func heldAttempts() -> [JobID: Int] { Self.newest(running.keys) }

    /// The jobs this node knows the store holds for it: running here, their end being recorded,
    /// or left for the cluster's rescue. Any other job the store holds for this node is a claim
    /// whose answer never arrived (`SharedJobStore.settleUnansweredClaims`).
    public func knownJobs() -> Set<JobID> {
        let now = clock.now()
        leftForRescue = leftForRescue.filter { now - $0.value < .seconds(3600) }
        return Set(running.keys.map(\.job)).union(leftForRescue.keys)
    }

    /// Each job's newest attempt among `attempts` (an older one here is fenced off already).
    private static func newest(_ attempts: some Sequence<Attempt>) -> [JobID: Int] {
        Dictionary(attempts.map { ($0.job, $0.number) }, uniquingKeysWith: max)
    }

    /// Whether this node runs (or is starting) `job`.
    public func runs(_ job: JobID) -> Bool { stops.keys.contains { $0.job == job } }

    /// Whether `slot`'s look-ahead found nothing to start (for tests: its job's end then commits
    /// without a look at the queue first).
    func lookAheadFoundNothing(for slot: SlotID) -> Bool { emptyAhead[slot] != nil }

    /// The job `slot`'s look-ahead found to start next (for tests).
    func upcomingJob(for slot: SlotID) -> JobID? { upcoming[slot]?.job.id }

    /// When a job queued at `position` is likely to start (nil until run times are known), and,
    /// given its `input`, how long it should run.
    public nonisolated func estimate(position: Int, type: String, input: JSONValue? = nil) -> QueueEstimate? {
        let now = clock.now()
        return book.withLock { book in
            let jobs = book.running.map { attempt, job in book.estimating(attempt, job, at: now) }
            let run = input.flatMap { book.runModel.predict(type: type, input: $0) }
            return QueueEstimate.estimate(position: position, type: type, slots: slotCount, running: jobs, runTimes: book.runTimes, run: run)
        }
    }

    /// In how many seconds `owner`, which runs `cap` jobs or more here (its token's
    /// `max_running`), should be running one fewer: by its running jobs' expected remaining time,
    /// as for the slots in `estimate`. nil when it runs fewer. A job whose run time nothing has
    /// taught yet counts as ending now, so this never says later than it knows. With a shared
    /// store it counts this node's jobs only.
    public nonisolated func capFreesIn(owner: String, cap: Int) -> Double? {
        let now = clock.now()
        return book.withLock { book in
            let own = book.running.filter { $0.value.owner == owner }
            guard cap > 0, own.count >= cap else { return nil }
            let remaining = own.map { attempt, job -> Double in
                let running = book.estimating(attempt, job, at: now)
                guard let typical = book.runTimes.median(of: job.type) ?? running.expected else { return 0 }
                return running.remaining(typical: typical)
            }.sorted()
            return remaining[own.count - cap]
        }
    }

    /// How long a job of `type` (with `input`) should run: learned from its input, else the
    /// type's recent median; nil before any has finished.
    public nonisolated func typicalRun(type: String, input: JSONValue?) -> Double? {
        book.withLock { book in
            input.flatMap { book.runModel.predict(type: type, input: $0)?.seconds } ?? book.runTimes.median(of: type)
        }
    }

    /// Counts the time the running jobs have held their slots since it was last counted into
    /// `spool_slot_busy_seconds_total` (called as the metrics are read: found by attacking the
    /// build, a slot busy with one long job read 0 until the job ended, then its whole run at once).
    public nonisolated func countBusyTime() {
        let busy = book.withLock { book -> [(SlotID, Double)] in
            let now = clock.now()   // inside: two scrapes never count one moment twice
            let busy = book.running.map { attempt, job in (attempt, job.slot, (now - (book.busyCounted[attempt] ?? job.since)).inSeconds) }
            for (attempt, _, _) in busy { book.busyCounted[attempt] = now }
            return busy.map { ($0.1, $0.2) }
        }
        for (slot, seconds) in busy where seconds > 0 { SchedulerMetrics.busy(slot, seconds: seconds) }
    }

    /// The job's own work began (no hop onto the actor: the attempt's task calls it as it starts).
    private nonisolated func working(_ attempt: Attempt) {
        let now = clock.now()
        book.withLock { $0.working[attempt] = now }
    }

    /// Seeds the run-time book from jobs that finished before this server started.
    public func learn(from finished: [Job]) {
        for job in finished.reversed() where job.state == .succeeded {
            if let started = job.startedAt, let finished = job.finishedAt {
                let seconds = finished.secondsSince1970 - started.secondsSince1970
                book.withLock { book in
                    book.runTimes.record(seconds, type: job.type)
                    book.runModel.record(type: job.type, input: job.input, seconds: seconds)
                }
            }
        }
    }

    /// Each slot with the job it runs.
    public func occupancy() -> [(SlotSpec, JobID?)] {
        board.slots.map { (slotSpecs[$0]!, board.job(on: $0)) }
    }

    /// The warm workers and their health, per slot.
    public func workerStatus() async -> [SlotID: SlotWorkers] { await executor.workerStatus() }

    /// Why jobs cannot start, while the data directory is full or cannot be written (their files cannot be made).
    public func dataDirectoryProblem() -> String? {
        guard let full = dataDirectoryUnusable else { return nil }
        let seconds = Int((clock.now() - full.since).inSeconds.rounded())
        if full.short { return "jobs have been unable to start for \(seconds) s; they wait in the queue until they can (\(full.error))" }
        return "the data directory has been unusable for \(seconds) s; jobs wait in the queue until it takes their files (\(full.error))"
    }

    /// After an attempt's end: a job handed back because the data directory is full pauses the
    /// slots' claims for `dataDirectoryRetryDelay`, then the data directory is tried (a small
    /// file written) and the slots look again; a job that ran, or a try that found room, says
    /// there is room again (so the health check clears even with nothing left to run).
    private func noteDataDirectory(after result: ExecutionResult, in group: inout DiscardingTaskGroup) {
        guard result.dataDirectoryUnusable || result.serverShort else {
            switch result.outcome {
            case .returned, .spawnFailed, .canceled, .stoppedForShutdown: return   // it may not have got as far as its files
            default: dataDirectoryHasRoom()
            }
            return
        }
        let now = clock.now(), delay = configuration.dataDirectoryRetryDelay
        let error = if case .returned(let message, _) = result.outcome { message } else { "\(result.outcome)" }
        if dataDirectoryUnusable == nil {
            logger.error(result.serverShort ? "the server is short of file descriptors, processes or memory: jobs go back to the queue (their attempts unused) and wait"
                                            : "the data directory cannot take jobs' files: jobs go back to the queue (their attempts unused) and wait",
                         metadata: ["error": "\(error)", "retry_every_s": "\(delay.inSeconds)"])
        }
        dataDirectoryUnusable = (since: dataDirectoryUnusable?.since ?? now, retryAt: now + delay, error: error, short: result.serverShort)
        guard !probingDataDirectory else { return }
        // One probe loop while it lasts, whether or not jobs keep coming back: with the queue
        // emptied meanwhile, nothing else would ever find the room again.
        probingDataDirectory = true
        let directory = configuration.dataDirectory
        group.addTask { [weak self, clock] in
            while true {
                do { try await clock.sleep(for: delay) } catch { return }
                let room = (try? await BlockingIO.run({ JobDirectories.haveRoom(in: directory) })) == true
                guard let self, await self.probedDataDirectory(room: room) else { return }
            }
        }
    }

    /// A probe's answer: room clears the problem. A shortage of the server's own is not room on a
    /// disk: it clears once a job runs, or when no start has been handed back for a whole retry
    /// delay past the pause (found in review: it cleared itself and came back every 5 s; and with
    /// nothing left to start it would have stayed for good). Whether to probe again (still full).
    private func probedDataDirectory(room: Bool) -> Bool {
        if let state = dataDirectoryUnusable, state.short {
            if clock.now() >= state.retryAt + configuration.dataDirectoryRetryDelay { dataDirectoryHasRoom() }
        } else if room {
            dataDirectoryHasRoom()
        }
        jobEnqueued()   // the slots look again either way
        probingDataDirectory = dataDirectoryUnusable != nil
        return probingDataDirectory
    }

    private func dataDirectoryHasRoom() {
        guard let full = dataDirectoryUnusable else { return }
        dataDirectoryUnusable = nil
        logger.notice(full.short ? "jobs can start again" : "the data directory takes jobs' files again: jobs start", metadata: ["unusable_for_s": "\(Int((clock.now() - full.since).inSeconds))"])
    }

    /// Why the store is failing this scheduler, when it has failed three times in a row: the
    /// server is degraded (a damaged or full disk, an unreachable database) and says so.
    public func storeProblem() -> String? {
        guard let trouble = storeTrouble, trouble.failures >= 3 else { return nil }
        let seconds = Int((clock.now() - trouble.since).inSeconds.rounded())
        return "the job store has failed \(trouble.failures) times in a row for \(seconds) s: \(trouble.error)"
    }

    /// The most files an `outputs` event lists (the outputs listing has the rest).
    static let outputsEventLimit = 1000

    public func run() async throws {
        // Every slot family from the start, not from the first job or quarantine (found by attacking
        // the build: dashboards and absent() alerts saw no data meanwhile).
        SchedulerMetrics.busySlots(0, of: board.slots.count)
        await quarantineRestored()
        SchedulerMetrics.quarantined(quarantine.entries.count)
        // The first look at the queue's timers (jobs delayed or deadlined before a restart) wakes the slots too.
        eventSink.yield(.timer(timerGeneration))
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                for await event in events {
                    // A shutdown goes before what came ahead of it (found by attacking the build: a
                    // SIGTERM just after start started the queued jobs the first look found).
                    if !shuttingDown, shutdownRequested.load(ordering: .acquiring) { await handle(.shutdown, in: &group) }
                    await handle(event, in: &group)
                    if shuttingDown && board.isQuiescent && commitsInFlight == 0 { break }
                }
                group.cancelAll()
            }
        } onGracefulShutdown: { [eventSink] in
            self.shutdownRequested.store(true, ordering: .releasing)
            eventSink.yield(.shutdown)
        }
        await executor.shutdown()
        logger.info("scheduler stopped")
    }

    private func handle(_ event: Event, in group: inout DiscardingTaskGroup) async {
        switch event {
        case .wake:
            wakePending.store(false, ordering: .releasing)
            await fillIdleSlots(in: &group)
        case .finished(let job, let slot, var result):
            // A start that failed after a cancel was asked for (tried again while its executable
            // was busy, say): the job never ran, and the user's cancel stands — for the store and
            // for this scheduler's own counts and fail-fast alike (found by attacking the build:
            // canceled with 202, it ended failed, spawn_failed).
            // The same for one handed back unrun (its type gone from the configuration, its slot
            // quarantined): the cancel stands, not a requeue with the cancel pending (found in review).
            noteDataDirectory(after: result, in: &group)   // with what the attempt met (a full disk's message)
            switch result.outcome {
            case .spawnFailed, .returned: if canceledWhileRunning.contains(Attempt(job)) { result.outcome = .canceled }
            default: break
            }
            if let loss = result.logLoss { logger.warning("a job's log is missing output", metadata: ["job": "\(job.id)", "detail": "\(loss)"]) }
            await ended(job, on: slot, with: result, in: &group)
        case .recorded(let job, let slot, let result, let answer, let asOf, let excluded, let sent):
            await recorded(job, on: slot, with: result, answer: answer, submissions: asOf, excluded: excluded, sent: sent, in: &group)
        case .shutdown:
            guard !shuttingDown else { return }
            shuttingDown = true
            gate.close()
            board.closeIdle()
            group.addTask { [executor] in await executor.close() }
            let running = board.runningJobs.count
            logger.info("shutting down: no new jobs; \(running) running job(s) get \(configuration.shutdownGrace) to finish")
            let grace = configuration.shutdownGrace
            group.addTask { [eventSink, clock] in
                do { try await clock.sleep(for: grace) } catch { return }
                eventSink.yield(.shutdownGraceOver)
            }
        case .shutdownGraceOver:
            for job in board.runningJobs.values { stop(job, because: .shutdown) }
        case .committed(let ending, let started, let answer):
            await committed(ending, started, answer, in: &group)
        case .claimDue(let attempt):
            if let local, let claim = deferredClaims.removeValue(forKey: attempt) { commit(nil, claim, local, in: &group) }
        case .lookedUp(let slot, let lookup, let found):
            guard lookups[slot] == lookup else { return }
            let startedMeanwhile = startedDuringLookAhead.removeValue(forKey: slot) ?? []
            guard board.job(on: slot) != nil else { return }
            switch found {
            case .job(let next) where startedMeanwhile.contains(next.job.id):
                lookAhead(for: slot, in: &group)   // it started elsewhere meanwhile (and may have ended): look again
            case .job(let next) where !reserved.contains(next.job.id): upcoming[slot] = next
            case .empty(let asOf): emptyAhead[slot] = asOf
            case .job, .unknown: break
            }
        case .arm(let time):
            arm(at: time, in: &group)
        case .timer(let generation):
            guard generation == timerGeneration, !shuttingDown else { return }
            timerAt = nil
            await timerFired(in: &group)
        }
    }

    // MARK: - Timers: delayed starts, retries' back-off, deadlines

    /// Makes the queue's timer fire at `time` unless it fires earlier already.
    private func arm(at time: Timestamp, in group: inout DiscardingTaskGroup) {
        guard !shuttingDown, timerAt.map({ time < $0 }) ?? true else { return }
        timerAt = time
        timerGeneration += 1
        let generation = timerGeneration
        group.addTask { [eventSink, clock] in
            let wait = max(0, time.secondsSince1970 - clock.wall().secondsSince1970)
            do { try await clock.sleep(for: .microseconds(Int64((wait * 1_000_000).rounded(.up)))) } catch { return }
            eventSink.yield(.timer(generation))
        }
    }

    /// Cancels the queued jobs whose deadline passed, starts what became due, and arms the
    /// timer for the next time something is due.
    private func timerFired(in group: inout DiscardingTaskGroup) async {
        let now = clock.wall()
        do {
            let expired = try await store.expireDeadlines(now: now)
            for job in expired {
                logger.info("job canceled: its deadline passed before it could start",
                            metadata: ["job": "\(job.id)", "type": "\(job.type)", "start_by": "\(job.startBy.map(\.description) ?? "?")"])
            }
            SchedulerMetrics.expired(expired.count)
            SchedulerMetrics.ended(expired)
            await fillIdleSlots(in: &group)
            // Not sooner than 10 ms: a deadline another node's transaction holds back is not spun on;
            // and a quarter of a second for one already past here that the store did not expire
            // (a node whose clock runs ahead of the database's: found in review, it spun at 100 Hz).
            if let next = try await store.nextTimer(after: now) {
                arm(at: max(next, now.adding(seconds: next <= now ? 0.25 : 0.01)), in: &group)
            }
        } catch {
            storeFailed(error)
            logger.error("could not read the queue's timers; retrying", metadata: ["error": "\(error)"])
            arm(at: now.adding(seconds: configuration.storeRetryDelay.inSeconds), in: &group)
        }
    }

    private func fillIdleSlots(in group: inout DiscardingTaskGroup) async {
        guard !shuttingDown, !claimsPaused else { return }
        // The types excluded on the slots that found nothing to start, in common: a slot that
        // excludes at least those would find nothing either (a type backing off on one slot is
        // still another's to take). After a store failure, no slot asks again in this pass.
        var foundNothingExcluding: Set<String>?
        var refused: [SlotID: Set<String>] = [:]   // by the slots that found nothing
        var storeFailing = false
        for slot in board.beginClaims(except: slotsClosedToJobs) {
            var claimed: Job?
            let empty = emptyIdle.removeValue(forKey: slot)
            let excluded = executor.excludedTypes(for: slot)
            var answered = storeFailing || foundNothingExcluding.map { $0.isSubset(of: excluded) } == true
            if answered, !storeFailing { refused[slot] = excluded }
            if !answered, let local, storeTrouble == nil {
                if let empty, let job = submittedAlone(since: empty, for: slot) {
                    aloneInQueue[slot] = empty.submissions + 1
                    start(job, on: slot, after: nil, local, in: &group)
                    continue
                }
                switch await lookUp(for: slot, local, in: &group) {
                case .job(let job)?:
                    start(job, on: slot, after: nil, local, in: &group)
                    continue
                case PeekedJob.none?:
                    foundNothingExcluding = foundNothingExcluding?.intersection(excluded) ?? excluded
                    refused[slot] = excluded
                    answered = true
                case nil:
                    storeFailing = true
                    answered = true
                case .claimInStore?:
                    break
                }
            }
            let sent = clock.now()
            if !answered {
                do {
                    claimed = if let local {
                        try await local.claimNext(for: slot, excluding: excluded, skipping: runningJobs, now: clock.wall())
                    } else {
                        try await store.claimNext(for: slot, excluding: excluded, now: clock.wall())
                    }
                    storeTrouble = nil
                    if claimed == nil {
                        foundNothingExcluding = foundNothingExcluding?.intersection(excluded) ?? excluded
                        refused[slot] = excluded
                    }
                } catch {
                    storeFailed(error)
                    logger.error("could not claim a job; retrying", metadata: ["error": "\(error)"])
                    retryWake(in: &group)
                    storeFailing = true
                }
            }
            accept(claimed, on: slot, claimedSince: sent, in: &group)
        }
        // A slot found nothing while it refused some types (a worker type backing off there): it
        // looks again once they may be tried, whether or not anything else happens by then.
        if let excluded = foundNothingExcluding, !excluded.isEmpty { await wakeWhenTypesReturn(refused: refused, in: &group) }
        // With a shared store, a slot that found nothing to start may still see jobs that are not
        // due yet that another node stored (its submit wakes every node, but only that node knows
        // when the job is due): the timer goes to the earliest, rather than the next 2-s poll. A
        // local store's timers are all armed here already (its submits, its retries, its start).
        if foundNothingExcluding != nil, storeTrouble == nil, local == nil, store is any SharedJobStore,
           let next = try? await store.nextTimer(after: clock.wall()) {
            // One already past here waits a quarter of a second, as in `timerFired`.
            let now = clock.wall()
            arm(at: next <= now ? now.adding(seconds: 0.25) : next, in: &group)
        }
    }

    /// An attempt's end, to be recorded once its own claim has committed (`committed` hands it
    /// back here then).
    private func ended(_ job: Job, on slot: SlotID, with result: ExecutionResult, in group: inout DiscardingTaskGroup) async {
        // Its claim waited for its end: the two commit together. Unless it reported progress,
        // which the store takes only once the claim has committed: the claim goes first.
        if let local, let claim = deferredClaims.removeValue(forKey: Attempt(job)) {
            guard progressUnsaved[Attempt(job)] != nil else {
                await finishLocally(job, on: slot, with: result, local, claimed: claim.job, in: &group)
                return
            }
            progressFirst.insert(Attempt(job))
            commit(nil, claim, local, in: &group)
            endsAwaitingCommit[Attempt(job)] = (job, slot, result)
            return
        }
        // Started before its claim committed: its end is handled once the claim is.
        if uncommitted.contains(Attempt(job)) {
            endsAwaitingCommit[Attempt(job)] = (job, slot, result)
            return
        }
        if let local {
            await finishLocally(job, on: slot, with: result, local, in: &group)
        } else {
            await finish(job, on: slot, with: result, in: &group)
        }
    }

    /// A job ended: its outcome is recorded (and the slot's next job claimed) off the loop, so
    /// slots that finish together share the store's round trip; `recorded` takes the answer.
    private func finish(_ job: Job, on slot: SlotID, with result: ExecutionResult, in group: inout DiscardingTaskGroup) async {
        await endAttempt(job)
        record(job, on: slot, with: result, in: &group)
    }

    /// An attempt's process (or worker job) ended: what the scheduler kept for it while it ran goes.
    private func endAttempt(_ job: Job) async {
        let attempt = Attempt(job)
        await flushProgress(of: job)
        stops.removeValue(forKey: attempt)?.finish()
        canceledWhileRunning.remove(attempt)
        fenced.remove(attempt)
        _ = earlyStops.take(job.id, at: clock.now())
        progressSaved[attempt] = nil
        for waiter in endWaiters.removeValue(forKey: attempt) ?? [] { waiter.resume() }
    }

    /// Records an attempt's end and claims the slot's next job in one transaction; the slot
    /// waits for the answer (`recorded`).
    private func record(_ job: Job, on slot: SlotID, with result: ExecutionResult, in group: inout DiscardingTaskGroup) {
        let claimFor = shuttingDown || closedToJobs(slot) || claimsPaused ? nil : slot
        let now = clock.wall()
        // With a local store, jobs other slots started before their claim committed (or were
        // stopped that way and still end) are never claimed here: two transactions, on this
        // rare path (a store failure, tenants' running caps).
        let skipping = runningJobs.subtracting([job.id])
        let asOf = submissions.withLock(\.count), excluding = executor.excludedTypes(for: slot), sent = clock.now()
        if leaseLost.remove(Attempt(job)) != nil, result.outcome.givesAttemptBack {
            // Left for the cluster's rescue (`fenceForLostLease`): nothing is written, nothing claimed.
            // An end of its own (a result, a failure) is recorded as any other: the store fences
            // it by attempt, and it uses the attempt up, so the job's next run is a new attempt.
            logger.warning("stopped a job whose lease this node could not renew; its end is left to the node that rescues it",
                           metadata: ["job": "\(job.id)", "attempt": "\(job.attempts)"])
            leftForRescue[job.id] = clock.now()
            eventSink.yield(.recorded(job, slot, result, .success(FinishResult(recorded: false, next: nil)), submissions: asOf,
                                      excluded: excluding, sent: sent))
            return
        }
        group.addTask { [store, local, eventSink] in
            let answer: Result<FinishResult, any Error>
            do {
                if let local {
                    _ = try await local.commit(finished: FinishedAttempt(job: job.id, attempt: job.attempts, outcome: result.outcome,
                                                                         result: result.result, now: now), started: nil)
                    let next = if let claimFor {
                        try await local.claimNext(for: claimFor, excluding: excluding, skipping: skipping, now: now)
                    } else {
                        nil as Job?
                    }
                    // A local store's attempts are never rescued: its end is recorded (or voided).
                    answer = .success(FinishResult(recorded: true, next: next))
                } else {
                    answer = .success(try await store.finish(job.id, attempt: job.attempts, outcome: result.outcome, result: result.result,
                                                             now: now, claimNextFor: claimFor, excluding: excluding))
                }
            } catch {
                answer = .failure(error)
            }
            eventSink.yield(.recorded(job, slot, result, answer, submissions: asOf, excluded: excluding, sent: sent))
        }
    }

    private func recorded(_ job: Job, on slot: SlotID, with result: ExecutionResult, answer: Result<FinishResult, any Error>,
                          submissions asOf: Int, excluded: Set<String>, sent: Moment, in group: inout DiscardingTaskGroup) async {
        let outcome = result.outcome
        let next: Job?
        let stale: Bool
        switch answer {
        case .success(let finished):
            next = finished.next
            stale = !finished.recorded && isStale(job)
            storeTrouble = nil
        case .failure(let error):
            storeFailed(error)
            let failingSince = recordFailingSince[Attempt(job)] ?? clock.now()
            recordFailingSince[Attempt(job)] = failingSince
            let shared = store as? any SharedJobStore
            if shuttingDown, clock.now() - failingSince >= shared?.leaseDuration ?? configuration.shutdownGrace {
                // Stopping, and the shared store out of reach for a lease (a passing failure is
                // retried, as at any time: the outcome is the job's, and its lease is renewed
                // meanwhile): the lease will lapse and another node will rescue the job (run it
                // again, or fail it as node_lost), so this node need not hold its exit for the database.
                // A local store refusing the end for a shutdown grace (its file removed, its disk
                // gone): the next start recovers the job, as after a crash (found by attacking the
                // build: SIGTERM never ended the server).
                if shared != nil {
                    logger.error("could not record a finished job while stopping; another node will rescue it once its lease lapses",
                                 metadata: ["job": "\(job.id)", "outcome": "\(outcome.resultingState)", "error": "\(error)"])
                    leftForRescue[job.id] = clock.now()
                } else {
                    logger.critical("could not record a finished job while stopping; the next start recovers it as interrupted",
                                    metadata: ["job": "\(job.id)", "outcome": "\(outcome.resultingState)", "error": "\(error)"])
                }
                recordFailingSince[Attempt(job)] = nil
                running[Attempt(job)] = nil
                logBudgets[Attempt(job)] = nil
                do { try board.finished(job.id, on: slot, closing: true) } catch {
                    logger.critical("slot bookkeeping refused a transition", metadata: ["error": "\(error)"])
                }
                return
            }
            // The outcome is not recorded yet: keep the slot busy and try again shortly.
            logger.error("could not record a finished job; retrying", metadata: ["job": "\(job.id)", "error": "\(error)"])
            let delay = configuration.storeRetryDelay
            group.addTask { [eventSink, clock] in
                do { try await clock.sleep(for: delay) } catch { return }
                eventSink.yield(.finished(job, slot, result))
            }
            return
        }
        recordFailingSince[Attempt(job)] = nil
        let state = stale ? staleEnded(job) : await afterRecorded(job, on: slot, with: result, in: &group)
        // Back in the queue at once (a lost worker, attempts left): a slot other than this one may take it.
        if state == .queued { jobEnqueued() }
        do {
            if next == nil { group.addTask { [executor] in await executor.slotIdle(slot) } }
            if shuttingDown && next == nil {
                try board.finished(job.id, on: slot, closing: true)
            } else {
                try board.finishedAndClaiming(job.id, on: slot)
                accept(next, on: slot, claimedSince: sent, in: &group)
                // The slot idles, and the wake-ups of jobs submitted since the claim read the
                // queue found it busy: the slot-filling pass looks again.
                if next == nil, submissions.withLock(\.count) != asOf { wakeSlots() }
                let refused = excluded.union(executor.excludedTypes(for: slot))   // by the claim, or since
                if next == nil, !refused.isEmpty { await wakeWhenTypesReturn(refused: [slot: refused], in: &group) }
                // The claim went out before the shutdown began: the job goes back to the queue
                // at once, without using an attempt.
                if shuttingDown, let next { stop(next.id, because: .shutdown) }
            }
        } catch {
            logger.critical("slot bookkeeping refused a transition", metadata: ["error": "\(error)"])
        }
    }

    // MARK: - Starting before the claim commits (local store)

    /// Jobs this server runs or is about to start: never looked up for another busy slot.
    private var reserved: Set<JobID> { runningJobs.union(upcomingJobs) }
    /// Jobs this server runs: never started on another slot. (A job a busy slot looked up to
    /// start next is an idle slot's to take: it would otherwise wait out the busy slot's job.)
    private var runningJobs: Set<JobID> { Set(running.keys.map(\.job)) }
    /// Jobs busy slots looked up to start next.
    private var upcomingJobs: Set<JobID> { Set(upcoming.values.map(\.job.id)) }

    /// What an idle slot's look at the queue found: nothing it may start, as of this many
    /// `jobEnqueued` calls. It passed over the jobs running here (one that ends is done, or
    /// back in the queue with a `jobEnqueued` call) and those other slots looked up to start
    /// next (`passedOver`: one that loses its slot is free again, with no call).
    struct EmptyQueue: Sendable {
        var submissions: Int
        var passedOver: Set<JobID>
        /// The types the slot refused then: one it takes again may have jobs queued.
        var excluded: Set<String>
    }

    /// The job submitted alone since `slot` found the queue empty (`emptyIdle`): it is the
    /// slot's next without another look, when nothing else can have come into the queue
    /// meanwhile — every other way in (a retry, a requeue, a recovery, an array, a store
    /// that failed) calls `jobEnqueued` without naming a job, and a delayed job coming due
    /// is the armed timer's — when the upcoming jobs that look passed over are still upcoming,
    /// when the slot refuses every type it refused then, and when the job is due and of a type
    /// the slot takes. Its claim is conditional, as after a look: a job canceled meanwhile is
    /// stopped and records nothing.
    private func submittedAlone(since empty: EmptyQueue, for slot: SlotID) -> Job? {
        let now = clock.wall(), excluded = executor.excludedTypes(for: slot)
        guard timerAt.map({ $0 > now }) ?? true, empty.passedOver.isSubset(of: upcomingJobs), empty.excluded.isSubset(of: excluded),
              let job = submissions.withLock({ $0.onlyJob(since: empty.submissions) }),
              job.state == .queued, job.isDue(at: now), !reserved.contains(job.id),
              !excluded.contains(job.type) else { return nil }
        return job
    }

    /// A job ended with a local store: the slot starts its next job (looked up while this one
    /// ran, or now) and the outcome and the claim commit together while it starts.
    /// `claimed`: the attempt's own claim, which waited for its end (`claimDelay`).
    private func finishLocally(_ job: Job, on slot: SlotID, with result: ExecutionResult, _ local: any LocalJobStore,
                               claimed: Job? = nil, in group: inout DiscardingTaskGroup) async {
        await endAttempt(job)
        // After a store failure, or with tenants' running caps, the store claims (and the slot waits).
        var next = PeekedJob.none
        // The look-ahead found the queue empty and nothing was submitted since: the end commits
        // now, and the slot-filling pass looks at the queue after it, off the end's path (for
        // what can come due without a submit: a delayed job, a type back in service).
        let emptyAsOf = emptyAhead.removeValue(forKey: slot)
        // The job looked up ahead: the slot's next, or free again.
        let ahead = upcoming.removeValue(forKey: slot)
        var lookAfter = false
        // What the slot's look refuses, at the latest: the types back in service by its answer
        // are looked at again.
        var refusing: Set<String> = []
        if storeTrouble != nil {
            next = .claimInStore
        } else if closedToJobs(slot) || claimsPaused {
            // Starts nothing.
        } else if !shuttingDown {
            if let ahead, !submissions.withLock({ $0.overtakes(ahead.job, since: ahead.submissions) }),
               ahead.job.isDue(at: clock.wall()),
               !executor.excludedTypes(for: slot).contains(ahead.job.type) {
                next = .job(ahead.job)
            } else if let emptyAsOf, emptyAsOf == submissions.withLock(\.count) {
                lookAfter = true
            } else {
                refusing = executor.excludedTypes(for: slot)
                next = await lookUp(for: slot, local, in: &group) ?? .claimInStore
            }
        }
        // A job looked up ahead and not started here: idle slots passed it over, and look again;
        // other slots' look-aheads it goes before are void (as after a submit of it).
        if let ahead, next.job?.id != ahead.job.id {
            enqueued(SubmissionLog.Entry(priority: ahead.job.priority, fairTag: ahead.job.fairTag), dueBy: nil, job: nil)
        }
        if case .claimInStore = next {
            guard claimed != nil else { return record(job, on: slot, with: result, in: &group) }
            // The end commits here with its claim (which only this path sends), and the
            // slot-filling pass claims through the store after it.
            next = .none
            lookAfter = true
        }
        let ending = Ending(job: job, slot: slot, result: result,
                            record: FinishedAttempt(job: job.id, attempt: job.attempts, outcome: result.outcome, result: result.result,
                                                    now: clock.wall()),
                            claimed: claimed)
        do {
            if case .job = next {
                try board.finishedAndClaiming(job.id, on: slot)
            } else {
                try board.finished(job.id, on: slot, closing: shuttingDown)
            }
        } catch {
            logger.critical("slot bookkeeping refused a transition", metadata: ["error": "\(error)"])
            return
        }
        if case .job(let upcoming) = next {
            start(upcoming, on: slot, after: ending, local, in: &group)
        } else {
            commit(ending, nil, local, in: &group)
            group.addTask { [executor] in await executor.slotIdle(slot) }
            if lookAfter { wakeSlots() }
            let refused = refusing.union(executor.excludedTypes(for: slot))   // or since, by a replacement that failed
            if !shuttingDown, !refused.isEmpty { await wakeWhenTypesReturn(refused: [slot: refused], in: &group) }
        }
    }

    /// The job `slot` should start now, from the store (nil when the store failed: a wake-up
    /// is due shortly). A job another slot took while this one waited for the answer is
    /// looked past. Nothing found, the slot idles: the next job submitted alone may start there
    /// without another look (`emptyIdle`).
    private func lookUp(for slot: SlotID, _ local: any LocalJobStore, in group: inout DiscardingTaskGroup) async -> PeekedJob? {
        while true {
            let peeked: PeekedJob
            let asOf = submissions.withLock(\.count), skipping = runningJobs, excluded = executor.excludedTypes(for: slot)
            do {
                peeked = try await local.peekNext(for: slot, excluding: excluded, skipping: skipping, now: clock.wall())
            } catch {
                storeFailed(error)
                logger.error("could not look at the queue; retrying", metadata: ["error": "\(error)"])
                retryWake(in: &group)
                return nil
            }
            if case .job(let job) = peeked, runningJobs.contains(job.id) { continue }
            // Only when the look passed over what it was given (nothing started or ended meanwhile).
            if peeked == .none, runningJobs == skipping {
                emptyIdle[slot] = EmptyQueue(submissions: asOf, passedOver: [], excluded: excluded)
            }
            return peeked
        }
    }

    /// Starts `job` on `slot` (claiming on the board) and commits its claim, with `ending` if
    /// the slot's previous attempt just ended, while it starts.
    private func start(_ job: Job, on slot: SlotID, after ending: Ending?, _ local: any LocalJobStore,
                       in group: inout DiscardingTaskGroup) {
        var started = job
        started.start(on: slot, at: ending?.record.now ?? clock.wall())
        let attempt = Attempt(started)
        uncommitted.insert(attempt)
        accept(started, on: slot, in: &group)
        let delay = configuration.claimDelay
        // A job with a start deadline claims at once: the deadline's expiry must not find it queued.
        guard ending == nil, delay > .zero, job.startBy == nil else { return commit(ending, Started(job: started, slot: slot), local, in: &group) }
        // Nothing else to commit now: the claim waits a moment for the job's end (`.finished`
        // takes it), else commits alone (`.claimDue`).
        deferredClaims[attempt] = Started(job: started, slot: slot)
        guard !Failpoints.isOn(Failpoints.holdClaimWithEnd) else { return }
        group.addTask { [eventSink, clock] in
            do { try await clock.sleep(for: delay) } catch { return }
            eventSink.yield(.claimDue(attempt))
        }
    }

    private func commit(_ ending: Ending?, _ started: Started?, _ local: any LocalJobStore, in group: inout DiscardingTaskGroup) {
        commitsInFlight += 1
        group.addTask { [eventSink] in
            let answer: Result<HandOverCommit, any Error>
            do {
                answer = .success(try await local.commit(claimed: ending?.claimed, finished: ending?.record, started: started?.job))
            } catch {
                answer = .failure(error)
            }
            eventSink.yield(.committed(ending, started, answer))
        }
    }

    private func committed(_ ending: Ending?, _ started: Started?, _ answer: Result<HandOverCommit, any Error>,
                           in group: inout DiscardingTaskGroup) async {
        commitsInFlight -= 1
        let recovering = storeTrouble != nil
        var held = false
        switch answer {
        case .success(let claims):
            held = claims.started
            storeTrouble = nil
            if let claimed = ending?.claimed {
                // Canceled before its claim and its end committed: the store saw neither.
                uncommitted.remove(Attempt(claimed))
                if !claims.claimed { voided.insert(Attempt(claimed)) }
            }
        case .failure(let error):
            storeFailed(error)
            logger.error("could not record a finished job or a claim; retrying", metadata: ["error": "\(error)"])
        }
        if let started {
            let attempt = Attempt(started.job)
            uncommitted.remove(attempt)
            let progressFirst = self.progressFirst.remove(attempt) != nil
            if !held, progressFirst, case .failure = answer, let local, let end = endsAwaitingCommit.removeValue(forKey: attempt) {
                // Its claim went ahead of its end for its progress, and the store failed: the claim
                // and the end go together instead, retried until recorded, as for any job that ended
                // within the delay (found in review: voided, it ran again). The progress is dropped.
                progressUnsaved[attempt] = nil
                await finishLocally(end.0, on: end.1, with: end.2, local, claimed: started.job, in: &group)
            } else if !held {
                // Canceled between the look-up and the commit (or the store failed): stop it;
                // the store never saw this attempt, so its end records nothing.
                voided.insert(attempt)
                stop(started.job.id, because: .cancel)
            }
        }
        if let ending, let local {
            let attempt = Attempt(ending.job)
            if case .failure(let error) = answer {
                let failingSince = recordFailingSince[attempt] ?? clock.now()
                recordFailingSince[attempt] = failingSince
                if shuttingDown, clock.now() - failingSince >= configuration.shutdownGrace {
                    // Stopping, and the store has refused the end for a shutdown grace (its file
                    // removed, a disk gone): the server exits rather than retry for ever (found by
                    // attacking the build: SIGTERM never ended it). The job reads running in the
                    // store; the next start recovers it, as after a crash.
                    logger.critical("could not record a finished job while stopping; the next start recovers it as interrupted",
                                    metadata: ["job": "\(ending.job.id)", "error": "\(error)"])
                    // (The slot was let go when the job ended, before this commit: nothing to tell the board.
                    // Noticed by attacking the build: a second critical line, "cannot finish … while closed".)
                    recordFailingSince[attempt] = nil
                    running[attempt] = nil
                    logBudgets[attempt] = nil
                    return
                }
                // The outcome waits for the store; the slot has moved on (its next job, if one
                // started, was stopped above, and claims now go through the store).
                let delay = configuration.storeRetryDelay
                commitsInFlight += 1
                group.addTask { [eventSink, clock] in
                    do { try await clock.sleep(for: delay) } catch { return }
                    let answer: Result<HandOverCommit, any Error>
                    do {
                        answer = .success(try await local.commit(claimed: ending.claimed, finished: ending.record, started: nil))
                    } catch {
                        answer = .failure(error)
                    }
                    eventSink.yield(.committed(ending, nil, answer))
                }
            } else {
                recordFailingSince[attempt] = nil
                let state = await afterRecorded(ending.job, on: ending.slot, with: ending.result, in: &group)
                // Claims went through the store while it failed, so slots may have idled since; or
                // the job went back to the queue (a lost worker, attempts left): look again.
                if recovering || state == .queued { jobEnqueued() }
            }
        }
        if let started, let end = endsAwaitingCommit.removeValue(forKey: Attempt(started.job)) {
            await ended(end.0, on: end.1, with: end.2, in: &group)   // noted (its data directory, its log) when it came
        } else if let started, held, progressUnsaved[Attempt(started.job)] != nil {
            progressSaved[Attempt(started.job)] = clock.now()
            await flushProgress(of: started.job)   // reported while the claim waited
        }
    }

    /// With a local store: looks up, while `slot`'s job runs, the job it starts next, and makes its files.
    private func lookAhead(for slot: SlotID, in group: inout DiscardingTaskGroup) {
        // Whatever an earlier look said for this slot is void, whether or not this one goes out.
        let lookup = (lookups[slot] ?? 0) + 1
        lookups[slot] = lookup
        startedDuringLookAhead[slot] = nil
        let alone = aloneInQueue.removeValue(forKey: slot)
        guard let local, !shuttingDown, storeTrouble == nil, !closedToJobs(slot), !claimsPaused else { return }
        upcoming[slot] = nil
        emptyAhead[slot] = nil
        // The job it runs came alone into a queue the slot found empty, and nothing came since:
        // the look would find nothing (what comes due meanwhile, the look after its end finds).
        let asOf = submissions.withLock(\.count)
        if let alone, alone == asOf {
            emptyAhead[slot] = asOf
            return
        }
        startedDuringLookAhead[slot] = []
        let skipping = reserved, spec = slotSpecs[slot]!
        group.addTask { [executor, eventSink, clock] in
            let peeked = try? await local.peekNext(for: slot, excluding: executor.excludedTypes(for: slot), skipping: skipping, now: clock.wall())
            guard case .job(let job)? = peeked else {
                eventSink.yield(.lookedUp(slot, lookup: lookup, peeked == PeekedJob.none ? .empty(submissions: asOf) : .unknown))
                return
            }
            await executor.prepare(job, on: spec)
            eventSink.yield(.lookedUp(slot, lookup: lookup, .job(Upcoming(job: job, submissions: asOf))))
        }
    }

    /// Whether an end of `job` the store did not record was a stale attempt's. Not recorded at its
    /// first try: yes, the job no longer was this attempt's (rescued after an outage). After
    /// failed tries the end may be its own, recorded by a commit whose answer was lost: taken so
    /// while the tries failed for less than a lease (no other node can have taken the job then).
    private func isStale(_ job: Job) -> Bool {
        guard let failingSince = recordFailingSince[Attempt(job)] else { return true }
        guard let lease = (store as? any SharedJobStore)?.leaseDuration else { return false }
        return clock.now() - failingSince >= lease
    }

    /// An attempt whose end the store did not record, because the job is no longer its: nothing
    /// of it is learned or reported (no run time, no outputs, no fail-fast); its slot goes on.
    private func staleEnded(_ job: Job) -> JobState? {
        logger.warning("a job's attempt ended after the job was rescued by another node; its end was not recorded",
                       metadata: ["job": "\(job.id)", "attempt": "\(job.attempts)"])
        running[Attempt(job)] = nil
        logBudgets[Attempt(job)] = nil
        SchedulerMetrics.busySlots(running.count, of: board.slots.count)
        return nil
    }

    /// Fail-fast arrays: each of `failed` (tasks that ended failed: here, or found so after a
    /// crash or a lost node) cancels the tasks of its array that have not finished, queued ones
    /// at once and running ones stopped, named `canceled_by: "fail_fast"`.
    public func failFast(after failed: [Job]) async {
        await failFast(arrays: failed.filter { $0.state == .failed && $0.array?.failFast == true }.compactMap { task in
            task.array.map { ($0.id, task.id.rawValue) }
        })
    }

    /// At start, and now and then on a shared store: the fail-fast arrays a crash left with a
    /// failed task and others not finished (it came between the failure and the cancel of the
    /// rest) are canceled now.
    public func failFastArraysLeftOpen() async {
        do {
            await failFast(arrays: try await store.failFastArraysLeftOpen().map { ($0, "a task whose node stopped before it canceled the rest") })
        } catch {
            logger.warning("could not look for fail-fast arrays left open", metadata: ["error": "\(error)"])
        }
    }

    /// At start, before the slots claim anything: the array cancels and deletes a crash cut short
    /// (a store that does them a chunk at a time) are finished now (found by attacking the build:
    /// a 10,000-task array whose cancel a kill -9 cut short read running, and ran the tasks left).
    public func finishArrayOperations() async {
        let left: [ArrayOperation]
        do { left = try await store.arrayOperations() } catch {
            logger.warning("could not look for array cancels and deletes left unfinished", metadata: ["error": "\(error)"])
            return
        }
        for operation in left {
            switch operation.kind {
            case .cancel:
                do {
                    let canceled = try await cancelArray(operation.array, by: operation.actor)
                    logger.info("finished an array's cancel that the last stop cut short", metadata: ["array": "\(operation.array)", "canceled": "\(canceled.count)"])
                } catch {
                    logger.warning("could not finish an array's cancel that the last stop cut short", metadata: ["array": "\(operation.array)", "error": "\(error)"])
                }
            case .delete:
                do {
                    let began = clock.wall()
                    guard case .deleted(let tasks) = try await store.deleteArray(operation.array) else { continue }
                    let dataDirectory = configuration.dataDirectory
                    _ = try? await BlockingIO.run { for task in tasks { JobDirectories.remove(task, in: dataDirectory) } }
                    // The tasks of the chunks deleted before the stop: their rows are gone, and their
                    // directories were to go once the last chunk had (found by attacking the build:
                    // they stayed for good with retention off). Any directory from before this start
                    // whose job is no longer stored goes now.
                    let old = (try? await BlockingIO.run { JobDirectories.changed(before: began, in: dataDirectory) }) ?? []
                    let strays = (try? await JobDirectories.removeUnstored(old, store: store, in: dataDirectory)) ?? 0
                    logger.info("finished an array's delete that the last stop cut short",
                                metadata: ["array": "\(operation.array)", "deleted": "\(tasks.count)", "directories_left_before": "\(strays)"])
                } catch {
                    logger.warning("could not finish an array's delete that the last stop cut short", metadata: ["array": "\(operation.array)", "error": "\(error)"])
                }
            }
        }
    }

    /// Cancels the tasks of array `id` that have not finished (through the store), stops those
    /// that run here, and counts the canceled ones as ended: the user's cancel, fail-fast, and one
    /// a crash cut short alike. A store that fails part-way (`ArrayCancelInterrupted`, rethrown):
    /// what it did cancel is stopped and counted all the same.
    public func cancelArray(_ id: String, by actor: String?) async throws -> [Job] {
        let canceled: [Job]
        do {
            canceled = try await store.cancelArray(id, by: actor, now: clock.wall())
        } catch let interrupted as ArrayCancelInterrupted {
            SchedulerMetrics.ended(interrupted.canceled)
            for job in interrupted.canceled { stop(job.id, because: .cancel) }
            throw interrupted
        }
        SchedulerMetrics.ended(canceled)
        for job in canceled { stop(job.id, because: .cancel) }
        return canceled
    }

    /// Cancels the rest of each array (`because`: the task that failed), once per array.
    private func failFast(arrays: [(id: String, because: String)]) async {
        var seen: Set<String> = []
        for (array, task) in arrays where seen.insert(array).inserted {
            do {
                let canceled = try await cancelArray(array, by: "fail_fast")
                logger.info("array task failed: canceled the rest (fail_fast)",
                            metadata: ["array": "\(array)", "task": "\(task)", "canceled": "\(canceled.count)"])
            } catch {
                logger.warning("could not cancel the rest of a fail-fast array", metadata: ["array": "\(array)", "error": "\(error)"])
            }
        }
    }

    /// An attempt's end is in the store: learn its run time, count it, and write its last log
    /// lines and its outputs as events (off the dispatch path).
    /// Returns the state the store left the job in (nil for a voided attempt, which recorded nothing).
    private func afterRecorded(_ job: Job, on slot: SlotID, with result: ExecutionResult, in group: inout DiscardingTaskGroup) async -> JobState? {
        let outcome = result.outcome
        if voided.remove(Attempt(job)) != nil {
            // Its claim never held: nothing of it was recorded, nothing is reported. If the job is
            // still queued (the store failed), it was looked past while this attempt ran: look again.
            running[Attempt(job)] = nil
            logBudgets[Attempt(job)] = nil
            jobEnqueued()
            return nil
        }
        // Handed back because its worker type is backing off on some slot: looked at again when it may retry.
        if case .returned = outcome { await wakeWhenTypesReturn(atOnceIfNone: true, in: &group) }
        // The job as the store left it (the same rules, a moment later): done, or back in the queue.
        var recorded = job
        recorded.record(outcome, at: clock.wall(), result: result.result)
        let retrying = recorded.state == .queued && job.retry?.retries(outcome, attempt: job.attempts) == true
        if retrying, let retryAt = recorded.notBefore {
            // Back to the queue until its back-off is over (the store worked out the same time from
            // the moment it recorded the end, a little before now).
            arm(at: retryAt, in: &group)
            SchedulerMetrics.retried(job, reason: outcome.reason)
        }
        // Handed back before it ran, it keeps its start deadline: the queue's timer keeps it too.
        if recorded.state == .queued, let deadline = recorded.startBy { arm(at: deadline, in: &group) }
        if recorded.state == .failed, job.array?.failFast == true {
            // A fail-fast array: its other tasks are canceled (off the dispatch path).
            let failed = recorded
            group.addTask { await self.failFast(after: [failed]) }
        }
        if retrying {
            logger.info("job attempt failed; retrying after its back-off",
                        metadata: ["job": "\(job.id)", "type": "\(job.type)", "attempt": "\(job.attempts)", "reason": "\(outcome.reason?.rawValue ?? "")",
                                   "retry_at": "\(recorded.notBefore.map(\.description) ?? "now")", "slot": "\(slot)"])
        } else if recorded.state == .queued {
            // Not an end (found by attacking the build: it read "job finished … state=queued").
            logger.info("job handed back to the queue", metadata: ["job": "\(job.id)", "type": "\(job.type)", "slot": "\(slot)",
                                                                   "why": "\(Self.handedBackBecause(outcome))"])
        } else {
            logger.info("job finished", metadata: ["job": "\(job.id)", "type": "\(job.type)", "state": "\(recorded.state)", "slot": "\(slot)"])
        }
        // Out of the book at once, with its entries: a scrape in between would otherwise count
        // its whole run again (found in review).
        let (working, counted) = book.withLock { book in
            book.running.removeValue(forKey: Attempt(job))
            return (book.working.removeValue(forKey: Attempt(job)), book.busyCounted.removeValue(forKey: Attempt(job)))
        }
        let ended = running.removeValue(forKey: Attempt(job))
        let ran = ended.map { (clock.now() - (working ?? $0.since)).inSeconds }
        // The slot was busy from the start, a warm worker's setup included, up to now.
        let busy = ended.map { (clock.now() - (counted ?? $0.since)).inSeconds }
        if let ran, let ended, outcome == .succeeded {
            book.withLock { book in
                book.runTimes.record(ran, type: job.type)
                book.runModel.record(type: job.type, input: ended.input, seconds: ran)
            }
        }
        SchedulerMetrics.finished(job, state: recorded.state, ran: ran, busy: busy, slot: slot)
        SchedulerMetrics.busySlots(running.count, of: board.slots.count)
        var budget = logBudgets.removeValue(forKey: Attempt(job)) ?? LogEventBudget()
        let lastLog = budget.events(at: clock.now(), interval: configuration.progressInterval, final: true)
        let paths = JobPaths(dataDirectory: configuration.dataDirectory, job: job.id)
        let now = clock.wall()
        let isFinal = recorded.state.isTerminal
        // Off the dispatch path: the last log lines and the list of outputs, as events.
        group.addTask { [store, logger, executor] in
            do {
                // From no attempt: the end was recorded as this attempt's, and a retry may run by now.
                for text in lastLog { try await Self.appendLog(text, of: job.id, attempt: nil, to: store, at: now) }
                guard isFinal else { return }   // an attempt that goes round again has no final outputs
                // Only a folder of the job's own, not one a link it left there points to.
                // At most `outputsEventLimit` files, and one more to know whether there are more.
                let limit = Self.outputsEventLimit
                // (The server short of descriptors to look: some of the files, not none.)
                let (found, leftOut) = (try? await BlockingIO.run {
                    JobFiles.holdsItsOwnOutputs(paths) ? try OutputFiles.listing(under: paths.outputs, limit: limit + 1) : ([], 0)
                }) ?? ([], 1)
                let files = found.prefix(limit)
                // No outputs: its directory may hold nothing worth keeping, and go to the slot as a
                // spare now, while the slot's next jobs start, not once the event below commits (that
                // write waits up to 20 ms for another to share a transaction with, and fails while
                // the store is in trouble; directories that came back late came back together, more
                // than a slot has room for).
                if files.isEmpty { await executor.ended(job.id, on: slot) }
                var data: [String: JSONValue] = [
                    "job": .string(job.id.rawValue),
                    "outputs": .array(files.map { .object(["name": .string($0.name), "size": .int($0.size),
                                                            "url": .string("/v1/jobs/\(job.id)/outputs/" + ($0.name.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? $0.name))]) }),
                ]
                // Some of the files, not all: said, as the outputs listing says it (found by attacking
                // the build: 1,000 of 1,005 read as all of them).
                if found.count > limit || leftOut > 0 { data["truncated"] = .bool(true) }
                try await store.appendEvent(.outputs, job: job.id, data: .object(data), now: now)
            } catch {
                logger.warning("could not record a job's final events", metadata: ["job": "\(job.id)", "error": "\(error)"])
            }
        }
        return recorded.state
    }

    private func storeFailed(_ error: any Error) {
        if storeTrouble == nil { storeTrouble = StoreTrouble(since: clock.now(), failures: 0, error: "") }
        storeTrouble!.failures += 1
        storeTrouble!.error = "\(error)"
    }

    /// Records the store's answer to a claim on the board and, if it is a job, starts it.
    /// `claimedSince`: when the claim went out (a shared store's lease starts at its commit, maybe
    /// well before its answer arrives: the fence of a node cut off counts from then).
    private func accept(_ job: Job?, on slot: SlotID, claimedSince: Moment? = nil, in group: inout DiscardingTaskGroup) {
        do {
            try board.claimed(job?.id, on: slot)
        } catch {
            logger.critical("slot bookkeeping refused a claim", metadata: ["error": "\(error)"])
            return
        }
        guard let job else { return }
        let attempt = Attempt(job)
        for slot in startedDuringLookAhead.keys { startedDuringLookAhead[slot]!.insert(job.id) }
        // Another slot's next (an idle slot took it): that slot looks again when its job ends.
        for (other, next) in upcoming where next.job.id == job.id { upcoming[other] = nil }
        // An earlier attempt of this job still here (it was rescued and came back): the store
        // gave the job to this attempt, so that one is stale and stopped, whether or not a lease
        // renewal noticed yet. This one starts once that one has ended, never beside it in its
        // directory.
        let earlier = stops.keys.filter { $0.job == job.id && $0.number < attempt.number }
        for previous in earlier {
            logger.warning("a job claimed again here while an earlier attempt still runs; stopping that attempt",
                           metadata: ["job": "\(job.id)", "attempt": "\(previous.number)", "claimed_attempt": "\(attempt.number)"])
            fence(previous.job, attempt: previous.number)
        }
        let accepted = clock.now()
        running[attempt] = Running(type: job.type, input: job.input, owner: job.owner, slot: slot, since: accepted, claimSent: claimedSince ?? accepted)
        // From when it was due: a delayed start or a retry's back-off is not time spent waiting
        // for a slot (found by attacking the build: a job delayed 3 s recorded a 3-s wait).
        let due = max(job.createdAt, job.notBefore ?? job.createdAt)
        SchedulerMetrics.claimed(job, waited: max(0, clock.wall().secondsSince1970 - due.secondsSince1970))
        SchedulerMetrics.busySlots(running.count, of: board.slots.count)
        let (stopRequests, continuation) = AsyncStream<StopReason>.makeStream()
        stops[attempt] = continuation
        let stopAtOnce: StopReason? = if let early = earlyStops.take(job.id, at: clock.now()) {
            early
        } else if job.cancelRequested {
            .cancel
        } else if closedToJobs(slot) {
            .quarantine   // claimed while its slot was being quarantined, or its GPU self-tested (found in review)
        } else {
            nil
        }
        if let stopAtOnce {
            // A cancel that came before the attempt counts as one handed to it (a start that then
            // fails ends the job canceled, as for a cancel while it runs).
            if stopAtOnce == .cancel { canceledWhileRunning.insert(attempt) }
            continuation.yield(stopAtOnce)
        }
        let observer = ExecutionObserver(started: { _ in self.working(attempt) },
                                         message: { message in await self.received(message, from: job) },
                                         output: { bytes in await self.received(output: bytes, from: job) })
        let spec = slotSpecs[slot]!
        // What the slot got ready for the job starts here and now when it can (the task's start
        // is a hand-off to another thread); the task then carries on from there. Not a job that
        // is to stop at once, or during a shutdown: its task starts it, and stops it, as before.
        if earlier.isEmpty, stopAtOnce == nil, !shuttingDown { _ = executor.startReady(job, on: spec, observer: observer) }
        group.addTask { [executor, eventSink, sharedFiles] in
            for previous in earlier { await self.waitForEnd(of: previous) }
            var result = await executor.run(job, on: spec, stops: stopRequests, observer: observer)
            // Only GPU slots are ever quarantined: a CPU slot's end skips the hop onto the actor.
            if spec.gpu != nil { result = await self.judged(result, of: job, on: slot) }
            await sharedFiles?.upload(job, outcome: result.outcome)
            eventSink.yield(.finished(job, slot, result))
            await executor.afterRun(on: slot)
        }
        // After the attempt's task, so that the start goes first when both wait for a thread.
        lookAhead(for: slot, in: &group)
    }

    /// Why an attempt was handed back, for the log (a returned attempt's message; it read empty).
    static func handedBackBecause(_ outcome: JobOutcome) -> String {
        switch outcome {
        case .returned(let message, _): message
        case .stoppedForShutdown: "the server is stopping"
        default: outcome.errorMessage(timeout: nil) ?? "\(outcome)"
        }
    }

    private func waitForEnd(of attempt: Attempt) async {
        guard stops[attempt] != nil else { return }
        await withCheckedContinuation { endWaiters[attempt, default: []].append($0) }
    }

    /// Wakes the slots when the executor's next backing-off type may be tried again: one
    /// wake-up for any number of asks before then (the pass it runs asks again for the types
    /// still backing off). `refused`: the types each slot that found nothing had excluded from
    /// its look; one taken again already (its back-off ended while the slot looked, so the next
    /// retry does not name it) wakes the slots now. `atOnceIfNone`: with no type backing off
    /// any more (a job handed back just as its type's back-off ended), now.
    private func wakeWhenTypesReturn(refused: [SlotID: Set<String>] = [:], atOnceIfNone: Bool = false,
                                     in group: inout DiscardingTaskGroup) async {
        let retry = await executor.nextRetry()
        // Read after the retry: a back-off that ended before that shows here.
        if refused.contains(where: { slot, types in !types.isSubset(of: executor.excludedTypes(for: slot)) }) {
            return jobEnqueued()
        }
        guard let retry else {
            if atOnceIfNone { jobEnqueued() }
            return
        }
        if let set = typesReturnAt, set > clock.now(), set <= retry { return }
        typesReturnAt = retry
        group.addTask { [weak self, clock] in
            do { try await clock.sleep(until: retry + .milliseconds(10)) } catch { return }
            self?.jobEnqueued()
        }
    }

    private func retryWake(in group: inout DiscardingTaskGroup) {
        let delay = configuration.storeRetryDelay
        group.addTask { [weak self, clock] in
            do { try await clock.sleep(for: delay) } catch { return }
            self?.jobEnqueued()
        }
    }

    // MARK: - Progress

    private func received(_ message: JobMessage, from job: Job) async {
        let attempt = Attempt(job)
        guard case .progress(let progress) = message, stops[attempt] != nil else { return }
        running[attempt]?.progress = progress.fraction
        // Its claim has not committed: the store still holds the job as queued and takes no
        // progress for it. Saved once the claim has (`committed`), or before its end.
        if uncommitted.contains(attempt) {
            progressUnsaved[attempt] = progress
            return
        }
        let now = clock.now()
        if let last = progressSaved[attempt], now - last < configuration.progressInterval {
            progressUnsaved[attempt] = progress
            return
        }
        progressSaved[attempt] = now
        progressUnsaved[attempt] = nil
        await save(progress, of: job)
    }

    /// Output becomes `log` events within the job's budget (64 KiB in all, bounded events, one
    /// batch per progress interval); the log file keeps everything up to `log_limit_bytes`.
    private func received(output bytes: [UInt8], from job: Job) async {
        let attempt = Attempt(job)
        guard stops[attempt] != nil, !fenced.contains(attempt) else { return }
        var budget = logBudgets[attempt] ?? LogEventBudget()
        budget.take(bytes)
        let texts = budget.events(at: clock.now(), interval: configuration.progressInterval)
        logBudgets[attempt] = budget
        do {
            // Fenced by the attempt in the store too: until this node hears that the job was
            // rescued (its next lease renewal), the lines would land in the job that runs elsewhere.
            for text in texts { try await Self.appendLog(text, of: job.id, attempt: job.attempts, to: store, at: clock.wall()) }
        } catch {
            logger.warning("could not record log lines", metadata: ["job": "\(job.id)", "error": "\(error)"])
        }
    }

    private static func appendLog(_ text: String, of job: JobID, attempt: Int?, to store: any JobStore, at now: Timestamp) async throws {
        try await store.appendEvent(.log, job: job, attempt: attempt, data: .object(["job": .string(job.rawValue), "text": .string(text)]), now: now)
    }

    private func flushProgress(of job: Job) async {
        if let progress = progressUnsaved.removeValue(forKey: Attempt(job)) { await save(progress, of: job) }
    }

    private func save(_ progress: JobProgress, of job: Job) async {
        do {
            try await store.reportProgress(job.id, attempt: job.attempts, progress: progress)
        } catch {
            logger.warning("could not save progress", metadata: ["job": "\(job.id)", "error": "\(error)"])
        }
    }
}
