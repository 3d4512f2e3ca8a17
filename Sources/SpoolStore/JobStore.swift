import SpoolCore

/// Durable home of every job. The scheduler and the API speak only this protocol, so a new
/// backend (SQLite today, PostgreSQL next) plugs in without touching either. (This file, past
/// 400 lines, is the whole contract a store keeps: the protocols, their results and defaults.)
///
/// Every method is one atomic step: a job is never seen half-written, and each state change
/// checks the state it comes from (a stale or repeated call changes nothing).
public protocol JobStore: Sendable {
    /// Creates or migrates the schema. Called once before the server starts.
    func prepare() async throws

    /// Stores a new job durably before returning, with its queue `position` as of its commit:
    /// jobs ahead of it that other connections are still committing may not be counted yet
    /// (`job(_:)` always counts them). With an idempotency key that its owner already used,
    /// returns the original job (`.existing`) when the request matches it, and throws
    /// `StoreError.idempotencyConflict` when it does not (keys are per owner). With `dedup` and a
    /// `dedupHash`, returns (`.duplicate`) the newest job of the same owner and hash that is
    /// queued or running, or else succeeded within `dedup.succeededWithin` of the job's
    /// `createdAt`, storing only the request's idempotency key (a repeat answers that job as
    /// `.existing`, and the key goes with the job). Sets the job's
    /// `fairTag` (`FairShare`, from its `shareWeight`). Refuses it, storing nothing, with
    /// `StoreError.queueFull` when it would pass one of `limits`.
    func enqueue(_ job: Job, limits: QueueLimits) async throws -> EnqueueResult

    /// Stores the tasks of a job array (`Job.array` set on each) in one transaction: all of them,
    /// in order, or none (`StoreError.queueFull` when they would pass one of `limits`). Returns
    /// them as stored. The first task carries the array's Idempotency-Key, if it has one (the
    /// others' keys are dropped): it holds the key for the whole array, so a job submitted under
    /// it later is a conflict, and a key its owner's job already holds makes the array one
    /// (`StoreError.idempotencyConflict` with that job; nothing stored).
    func enqueueArray(_ tasks: [Job], limits: QueueLimits) async throws -> [Job]

    /// What the tasks of array `id` add up to; nil when it has none.
    func arraySummary(_ id: String) async throws -> ArraySummary?

    /// The fingerprint of the request that used `owner`'s Idempotency-Key `key` (a stored job's
    /// or array's, or one that joined a job through result reuse); nil while the key is free.
    /// What a repeat is compared with: the job read back does not keep all of its request.
    func requestFingerprint(owner: String?, key: String) async throws -> String?

    /// Array `id`'s tasks in index order, those after `index` (all with nil), at most `limit`.
    func arrayTasks(_ id: String, after index: Int64?, limit: Int) async throws -> [Job]

    /// A page of arrays, newest first (by their first task), each as `arraySummary` sums it up.
    func arrays(_ query: ArrayQuery) async throws -> ArrayPage

    /// The job with its current queue `position` filled in, or nil if there is no such job.
    func job(_ id: JobID) async throws -> Job?

    /// A page of jobs, newest first.
    func jobs(_ query: JobQuery) async throws -> JobPage

    /// How many jobs wait in the queue.
    func queuedCount() async throws -> Int

    /// How many of `owner`'s jobs wait in the queue.
    func queuedCount(owner: String) async throws -> Int

    /// How many queued jobs have at least this priority and may start by `dueBy`: those a new job
    /// of it would wait behind until then (a job delayed past `dueBy` cannot hold it up before).
    func queuedCount(priorityAtLeast priority: Int, dueBy: Timestamp) async throws -> Int

    /// How many queued jobs `job`, not stored yet, would wait behind until `dueBy`: those of
    /// higher priority, and those of its own before the fair-share tag its owner would give it
    /// (an idle tenant's job goes ahead of a busy tenant's backlog), leaving out any delayed past
    /// `dueBy`. The default counts every job of its priority or above (`queuedCount`).
    func queuedAhead(ofNew job: Job, dueBy: Timestamp) async throws -> Int

    /// Moves the first queued job (highest priority, then fair-share order, then oldest) that is
    /// due at `now` (`Job.isDue`), whose type is not in `excluding` and whose owner is below its
    /// token's `max_running` to `running` on `slot`, counting an attempt, and returns it; nil
    /// when there is none.
    func claimNext(for slot: SlotID, excluding: Set<String>, now: Timestamp) async throws -> Job?

    /// Ends the given attempt with its outcome. Writes from any other attempt are ignored
    /// (fencing), and the answer says so. With `claimNextFor`, also claims the slot's next job
    /// in the same transaction and returns it.
    func finish(_ id: JobID, attempt: Int, outcome: JobOutcome, result: JSONValue?, now: Timestamp,
                claimNextFor slot: SlotID?, excluding: Set<String>) async throws -> FinishResult

    /// Cancels a queued job at once, or flags a running one for its slot to stop; records who
    /// asked (`actor`: a token's name).
    func cancel(_ id: JobID, by actor: String?, now: Timestamp) async throws -> CancelResult

    /// Saves the latest progress of a running attempt.
    func reportProgress(_ id: JobID, attempt: Int, progress: JobProgress) async throws

    /// After a crash: every job still marked `running` goes back to the queue, or fails with
    /// reason `interrupted` once its attempts are used. Returns the jobs as they were found.
    func recoverInterrupted(now: Timestamp) async throws -> [Job]

    /// Cancels, with reason `deadline`, every queued job whose `startBy` is not after `now`;
    /// returns them as canceled.
    func expireDeadlines(now: Timestamp) async throws -> [Job]

    /// When the queue next needs a look without a submit: the earliest `notBefore` after `now`
    /// or `startBy` of a queued job; nil when no queued job has either.
    func nextTimer(after now: Timestamp) async throws -> Timestamp?

    /// Retention: deletes the jobs that ended (succeeded, failed or canceled) before `cutoff`,
    /// oldest end first, at most `limit` of them, with their events, webhook deliveries and
    /// stored files; returns their ids. A task of a job array goes only once every task of its
    /// array has ended before `cutoff`, and then with all of them (past `limit`, in the place of
    /// the first one taken): an array is never cut. A deleted job's idempotency key is free again.
    func deleteEnded(before cutoff: Timestamp, limit: Int) async throws -> [JobID]

    /// Deletes one ended job as `deleteEnded` does (its events, webhook deliveries and stored
    /// files with it). A queued or running job stays (`.notEnded`), and so does a task of a job
    /// array, which goes only with its whole array (`.arrayTask`).
    func delete(_ id: JobID) async throws -> DeleteResult

    /// Cancels every task of array `id` that has not finished (queued ones at once, running ones
    /// asked to stop); returns the tasks it canceled (now `canceled`) or asked to stop (still
    /// `running`: their slots must be told). The default cancels task by task; a store that can
    /// does it in one transaction (PostgreSQL) or a chunk of tasks per transaction, so that other
    /// writes go in between (SQLite: it has one writer). Such a store that fails part-way throws
    /// `ArrayCancelInterrupted` with what it did cancel.
    func cancelArray(_ id: String, by actor: String?, now: Timestamp) async throws -> [Job]

    /// The fail-fast arrays with a failed task and tasks not finished: left so by a crash between
    /// a task's failure and the cancel of the rest.
    func failFastArraysLeftOpen() async throws -> [String]

    /// The array cancels and deletes begun and not finished, by a store that does them a chunk
    /// at a time: under way, or cut short by a crash (finished at the next start). None for a
    /// store that does each in one transaction.
    func arrayOperations() async throws -> [ArrayOperation]

    /// Deletes job array `id` whole, once every task of it has ended: each task as `delete`
    /// deletes a job, in one transaction (SQLite: a chunk of tasks per transaction, the first
    /// task last; a failure part-way leaves the rest for another delete). With any task queued or
    /// running, nothing goes (`.notEnded`).
    func deleteArray(_ id: String) async throws -> ArrayDeleteResult

    /// Subscribes to changes of one job; register *before* reading it so no change is missed.
    func watch(_ id: JobID) -> JobWatch

    /// Events with an id above `after`, oldest first, of one job or of all — of one owner's
    /// jobs only, with `owner`.
    func events(after: Int64, job: JobID?, owner: String?, limit: Int) async throws -> [JobEvent]

    /// The events after `after` that can concern a webhook — those of jobs that have one — from
    /// at most `limit` log entries, and the id of the last entry looked at (the reader's next
    /// cursor). The default reads every event; a store that can filter in its query does.
    func webhookEvents(after: Int64, limit: Int) async throws -> (events: [JobEvent], through: Int64)

    /// Records an event that is not a state change (log lines, outputs), of a job still stored
    /// (one deleted meanwhile keeps none). With `attempt`, only
    /// while the job has not moved past that attempt: a late line of an attempt that was
    /// rescued (run again on another node, or back in the queue) or has ended is dropped, as its
    /// progress and its end are. An attempt whose claim has not committed yet (a local store
    /// starts a job before that) is not past: the job is still queued with the attempt before.
    func appendEvent(_ kind: JobEvent.Kind, job: JobID, attempt: Int?, data: JSONValue, now: Timestamp) async throws

    /// Wakes event readers when events are committed.
    var eventNotifier: EventNotifier { get }

    /// Why the store takes no new jobs now while it still records the ones it has (its disk
    /// full), in a sentence for `/healthz`; nil when it takes them. The default: never.
    func storageProblem() async -> String?
}

extension JobStore {
    public func storageProblem() async -> String? { nil }

    /// An event of the job, from no attempt in particular (recorded while the job is stored).
    public func appendEvent(_ kind: JobEvent.Kind, job: JobID, data: JSONValue, now: Timestamp) async throws {
        try await appendEvent(kind, job: job, attempt: nil, data: data, now: now)
    }

    public func enqueue(_ job: Job) async throws -> EnqueueResult { try await enqueue(job, limits: QueueLimits()) }

    public func arrayOperations() async throws -> [ArrayOperation] { [] }

    public func queuedAhead(ofNew job: Job, dueBy: Timestamp) async throws -> Int {
        try await queuedCount(priorityAtLeast: job.priority, dueBy: dueBy)
    }

    /// Task by task, a page at a time (the default of the requirement above).
    public func cancelArray(_ id: String, by actor: String?, now: Timestamp) async throws -> [Job] {
        var after: Int64?
        var affected: [Job] = []
        while true {
            let page = try await arrayTasks(id, after: after, limit: 500)
            for task in page where !task.state.isTerminal {
                switch try await cancel(task.id, by: actor, now: now) {
                case .canceled(let job), .stopping(let job): affected.append(job)
                case .alreadyFinished, .notFound: break
                }
            }
            guard page.count == 500, let last = page.last?.array?.index else { return affected }
            after = last
        }
    }

    public func cancel(_ id: JobID, now: Timestamp) async throws -> CancelResult { try await cancel(id, by: nil, now: now) }

    public func events(after: Int64, job: JobID?, limit: Int) async throws -> [JobEvent] {
        try await events(after: after, job: job, owner: nil, limit: limit)
    }

    public func webhookEvents(after: Int64, limit: Int) async throws -> (events: [JobEvent], through: Int64) {
        let events = try await events(after: after, job: nil, owner: nil, limit: limit)
        return (events, events.last?.id ?? after)
    }

    public func claimNext(for slot: SlotID, now: Timestamp) async throws -> Job? {
        try await claimNext(for: slot, excluding: [], now: now)
    }

    public func finish(_ id: JobID, attempt: Int, outcome: JobOutcome, now: Timestamp, claimNextFor slot: SlotID?) async throws -> FinishResult {
        try await finish(id, attempt: attempt, outcome: outcome, result: nil, now: now, claimNextFor: slot, excluding: [])
    }
}

/// What `delete` did.
public enum DeleteResult: Sendable {
    case deleted(Job)
    case notFound
    /// It is queued or running: cancel it first.
    case notEnded(Job)
    /// A task of a job array: it goes with its array.
    case arrayTask(Job)
}

/// What `deleteArray` did.
/// An array's cancel or delete that a store does a chunk at a time, begun and not finished.
public struct ArrayOperation: Sendable, Equatable {
    public enum Kind: String, Sendable { case cancel, delete }
    public var array: String
    public var kind: Kind
    /// Who asked for a cancel (its tasks' `canceled_by`).
    public var actor: String?

    public init(array: String, kind: Kind, actor: String?) {
        self.array = array
        self.kind = kind
        self.actor = actor
    }
}

/// A cancel of an array's tasks that failed after some of them were canceled (a store that
/// cancels an array a chunk at a time): those — the running ones among them are still the
/// caller's to stop — and the failure. Cancelling again finishes the rest.
public struct ArrayCancelInterrupted: Error, Sendable, CustomStringConvertible {
    public var canceled: [Job]
    public var cause: any Error

    public init(canceled: [Job], cause: any Error) {
        self.canceled = canceled
        self.cause = cause
    }

    public var description: String { "\(cause) (after \(canceled.count) of the array's tasks were canceled; cancel it again to finish)" }
}

public enum ArrayDeleteResult: Sendable, Equatable {
    /// Its tasks, in index order, gone with their events, webhook deliveries and stored files.
    case deleted([JobID])
    case notFound
    /// This many of its tasks are queued or running: cancel the array first.
    case notEnded(Int)
}

/// What `finish` did.
public struct FinishResult: Sendable {
    /// Whether the attempt's end was recorded: false when that attempt no longer held the job
    /// (it was rescued and requeued or run again by another node) — or when an earlier try of
    /// the same finish committed already, its answer lost.
    public var recorded: Bool
    /// The slot's next job, claimed in the same transaction.
    public var next: Job?

    public init(recorded: Bool, next: Job?) {
        self.recorded = recorded
        self.next = next
    }
}

public enum EnqueueResult: Sendable {
    case created(Job)
    /// An idempotent repeat: the job first stored under this key.
    case existing(Job)
    /// An identical request (result reuse): the queued or running job it joins, or the
    /// succeeded one it reuses.
    case duplicate(Job)

    public var job: Job {
        switch self { case .created(let job), .existing(let job), .duplicate(let job): job }
    }
}

public enum CancelResult: Sendable {
    /// It was queued and is now canceled.
    case canceled(Job)
    /// It is running; its slot has been asked to stop it.
    case stopping(Job)
    /// It had already finished; nothing changed.
    case alreadyFinished(Job)
    case notFound
}

public struct JobQuery: Sendable, Equatable {
    public var state: JobState?
    public var type: String?
    /// Only this owner's jobs (a tenant's view).
    public var owner: String?
    public var limit: Int
    /// Only jobs older than this cursor (an opaque sequence number from the previous page).
    public var before: Int64?
    /// Only the jobs that are not tasks of an array, or only one array's tasks; nil: all.
    public var array: ArrayScope?
    /// A page takes no further job once the inputs and results of those in it reach this many
    /// bytes (as stored); its first job always comes. 500 jobs of 1 MiB inputs made one page of
    /// hundreds of MB in the server's memory (found by attacking the build).
    public var maxBytes: Int

    /// `maxBytes`' default: a page of small jobs never reaches it.
    public static let defaultMaxBytes = 8 << 20

    public init(state: JobState? = nil, type: String? = nil, owner: String? = nil, limit: Int = 50, before: Int64? = nil,
                array: ArrayScope? = nil, maxBytes: Int = JobQuery.defaultMaxBytes) {
        self.state = state
        self.type = type
        self.owner = owner
        self.limit = limit
        self.before = before
        self.array = array
        self.maxBytes = maxBytes
    }
}

/// Fills a listing's page with the jobs a query reads, in order: `limit` at most, and none once
/// those taken hold `maxBytes` of inputs and results (`JobQuery.maxBytes`; the first always comes).
public struct PageBudget: Sendable {
    private let limit: Int
    private let maxBytes: Int
    private var taken = 0
    private var bytes = 0

    public init(_ query: JobQuery) {
        limit = query.limit
        maxBytes = query.maxBytes
    }

    /// Takes the next job, whose input and result hold `size` bytes; false once the page is full:
    /// then this job begins the next page.
    public mutating func take(size: Int) -> Bool {
        guard taken < limit, taken == 0 || bytes < maxBytes else { return false }
        taken += 1
        bytes += size
        return true
    }
}

/// Which jobs a listing takes, by their array.
public enum ArrayScope: Sendable, Equatable {
    /// Jobs submitted alone, not as a task of an array (`array=none` in the API).
    case alone
    /// The tasks of this array.
    case tasks(of: String)

    /// Whether `job` is in this scope.
    public func contains(_ job: Job) -> Bool {
        switch self {
        case .alone: job.array == nil
        case .tasks(let id): job.array?.id == id
        }
    }
}

public struct ArrayQuery: Sendable, Equatable {
    /// Only arrays of this type.
    public var type: String?
    /// Only this owner's arrays (a tenant's view).
    public var owner: String?
    public var limit: Int
    /// Only arrays older than this cursor (from the previous page).
    public var before: Int64?

    public init(type: String? = nil, owner: String? = nil, limit: Int = 20, before: Int64? = nil) {
        self.type = type
        self.owner = owner
        self.limit = limit
        self.before = before
    }
}

public struct ArrayPage: Sendable {
    public var arrays: [ArraySummary]
    /// Pass as `before` to get the next (older) page; nil on the last page. (The sequence number
    /// of the last array's first task.)
    public var nextCursor: Int64?
    public init(arrays: [ArraySummary], nextCursor: Int64?) {
        self.arrays = arrays
        self.nextCursor = nextCursor
    }
}

/// Limits a submit must stay within (backpressure): the whole queue's, and its owner's.
public struct QueueLimits: Sendable, Equatable {
    /// Most jobs queued in all (the server's `max_queued`).
    public var total: Int?
    /// Most jobs its owner may have queued (the token's `max_queued`).
    public var owner: Int?

    public init(total: Int? = nil, owner: Int? = nil) {
        self.total = total
        self.owner = owner
    }
}

public struct JobPage: Sendable {
    public var jobs: [Job]
    /// Pass as `before` to get the next (older) page; nil on the last page.
    public var nextCursor: Int64?
    public init(jobs: [Job], nextCursor: Int64?) {
        self.jobs = jobs
        self.nextCursor = nextCursor
    }
}

/// An error crossing the store boundary. Drivers translate their database's errors into it.
public struct StoreError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public static let idempotencyConflict = Code(rawValue: "idempotency_conflict")
        /// A submit would pass a `QueueLimits` limit: nothing was stored.
        public static let queueFull = Code(rawValue: "queue_full")
        /// A name (a token's) that is already taken.
        public static let conflict = Code(rawValue: "conflict")
        /// The disk is full or read-only: nothing was written.
        public static let storageUnavailable = Code(rawValue: "storage_unavailable")
        public static let corrupt = Code(rawValue: "corrupt")
        public static let other = Code(rawValue: "other")
        public var description: String { rawValue }
    }

    public var code: Code
    public var message: String
    /// For `idempotencyConflict`: the job already stored under the key.
    public var existing: Job?
    /// For `queueFull`: which limit (`max_queued` of the server, or of the token).
    public var limit: QueueLimit?

    public enum QueueLimit: String, Sendable { case server = "max_queued", owner = "token max_queued" }

    public init(_ code: Code, _ message: String, existing: Job? = nil, limit: QueueLimit? = nil) {
        self.code = code
        self.message = message
        self.existing = existing
        self.limit = limit
    }

    public static func queueFull(_ limit: QueueLimit, _ value: Int) -> StoreError {
        StoreError(.queueFull, limit == .server
            ? "the queue is full (max_queued \(value)); try again once jobs have run"
            : "this token has \(value) jobs queued, its max_queued; try again once some have run", limit: limit)
    }

    public var description: String { message }
}

/// A store capability: the API tokens (only digests of their secrets) and the key that signs
/// dashboard sessions, shared by every node of a shared store.
public protocol TokenStore: Sendable {
    /// Stores a new token; `StoreError.conflict` when its name is taken.
    func createToken(_ token: TokenRecord) async throws
    func tokens() async throws -> [TokenRecord]
    /// Removes the named token; false when there is none.
    func revokeToken(named name: String) async throws -> Bool
    /// Whether a token was ever created here, revoked since or not (`createToken` leaves a mark):
    /// `auth: auto` asks for tokens from the first one on, and revoking the last one does not
    /// open the server to anyone again.
    func tokensWereCreated() async throws -> Bool
    /// The 32-byte key that signs session cookies: made once, then the same for every node.
    func sessionKey() async throws -> [UInt8]
    /// Ends every dashboard session of the token with public id `id` started before `now` (a
    /// log out: `TokenRecord.sessionsSince`); false when there is no such token.
    func endSessions(ofToken id: String, at now: Timestamp) async throws -> Bool
}

/// A store capability: each token's submit rate, counted where every node sees it (a shared
/// store), so a token's `rate` holds for the cluster, not per node. A token bucket: it holds up
/// to one second's worth (at least one submit) and refills at `rate` per second, on the store's
/// clock.
public protocol SubmitRateStore: Sendable {
    /// Takes one submit from `owner`'s bucket; nil when taken, else how many seconds until the
    /// bucket holds one (nothing is taken then).
    func takeSubmit(owner: String, rate: Double) async throws -> Double?
}
