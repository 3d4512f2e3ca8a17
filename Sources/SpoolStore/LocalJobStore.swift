import SpoolCore

/// A store that only this server writes (the embedded SQLite file, the memory store). Its
/// scheduler can see the queue's head for itself, so a slot may start its next job first and
/// commit the claim while the job starts (`Scheduler`): the claim is conditional, so a job
/// canceled in between is not started twice, and a crash in between leaves the job queued —
/// its process is a leftover the next start kills (`OrphanReaper`) before running it again.
/// A shared store (PostgreSQL) has other nodes claiming: it always claims before a start.
public protocol LocalJobStore: JobStore {
    /// The job `claimNext` would claim for `slot` at `now`, without claiming it (never one of
    /// `skipping`).
    func peekNext(for slot: SlotID, excluding types: Set<String>, skipping: Set<JobID>, now: Timestamp) async throws -> PeekedJob

    /// `claimNext`, never claiming one of `skipping` (jobs this server is starting already).
    func claimNext(for slot: SlotID, excluding types: Set<String>, skipping: Set<JobID>, now: Timestamp) async throws -> Job?

    /// In one transaction, in this order: claims `claimed`, records `finished` (nothing when that
    /// attempt is not running), and claims `started`. A claim is of a job `peekNext` returned,
    /// after `Job.start(on:at:)`, and holds only while that job is still queued with one attempt
    /// fewer. `claimed` is an attempt that started and ended before its claim was committed: its
    /// claim rides with its end (`finished`), so a canceled job records neither.
    func commit(claimed: Job?, finished: FinishedAttempt?, started: Job?) async throws -> HandOverCommit
}

extension LocalJobStore {
    /// `commit(claimed:finished:started:)` without a claim riding with the end: whether `started`'s claim held.
    public func commit(finished: FinishedAttempt?, started: Job?) async throws -> Bool {
        try await commit(claimed: nil, finished: finished, started: started).started
    }
}

/// Which claims of a `commit(claimed:finished:started:)` held.
public struct HandOverCommit: Sendable, Equatable {
    public var claimed: Bool
    public var started: Bool

    public init(claimed: Bool, started: Bool) {
        self.claimed = claimed
        self.started = started
    }
}

/// What `peekNext` found.
public enum PeekedJob: Sendable, Equatable {
    case job(Job)
    /// Nothing is queued that the slot may take.
    case none
    /// The head depends on more than the queue (a tenant's `max_running` is set): claim in the
    /// store instead, where the running count is read in the claiming transaction.
    case claimInStore

    /// The job found, if any.
    public var job: Job? {
        if case .job(let job) = self { job } else { nil }
    }
}

/// An attempt's end, as `finish` records it.
public struct FinishedAttempt: Sendable {
    public var job: JobID
    public var attempt: Int
    public var outcome: JobOutcome
    public var result: JSONValue?
    public var now: Timestamp

    public init(job: JobID, attempt: Int, outcome: JobOutcome, result: JSONValue?, now: Timestamp) {
        self.job = job
        self.attempt = attempt
        self.outcome = outcome
        self.result = result
        self.now = now
    }
}
