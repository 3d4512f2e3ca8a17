import SpoolCore

/// How the scheduler runs jobs. Defaults are what `spool serve` uses.
public struct SchedulerConfiguration: Sendable {
    public var slots: [SlotSpec]
    public var dataDirectory: String
    /// How long running jobs may go on after SIGTERM reaches the server before they are
    /// stopped and requeued.
    public var shutdownGrace: Duration = .seconds(30)
    /// Progress is saved at most this often per job (the latest value is always kept).
    public var progressInterval: Duration = .milliseconds(250)
    /// Back-off before retrying after the store failed (full disk, I/O error).
    public var storeRetryDelay: Duration = .seconds(1)
    /// While the data directory is full (a job's files could not be made): how long slots wait
    /// before they try a job again.
    public var dataDirectoryRetryDelay: Duration = .seconds(5)
    /// With a shared store: the most bytes of a job's log and outputs kept in the store for
    /// other nodes to serve (the log first, then outputs by name until the budget is spent).
    public var sharedFileLimitBytes: Int = 64 << 20

    /// With a store only this server writes (`LocalJobStore`): a slot starts its next job —
    /// looked up, and its files made, while the current one runs — and commits the claim while
    /// it starts, instead of waiting for the commit's fsync first. Off: claim, then start.
    public var startBeforeCommit = true

    /// With `startBeforeCommit`: how long the claim of a job started on an idle slot waits before
    /// it commits on its own. A job that ends by then commits its claim and its end in one
    /// transaction — one fsync, and one change seen by waiting clients, instead of two. Its
    /// `running` state shows this much later; a crash in between leaves it queued, as before any
    /// claim commits. A job with a start deadline (`start_within_s`, `start_by`) claims at once.
    /// Zero: the claim commits as the job starts.
    public var claimDelay: Duration = .milliseconds(2)

    /// Failed attempts in a row that quarantine a GPU slot (0: never; see `SlotQuarantine`).
    public var quarantineAfterFailures = 3

    public init(slots: [SlotSpec], dataDirectory: String) {
        self.slots = slots
        self.dataDirectory = dataDirectory
    }
}
