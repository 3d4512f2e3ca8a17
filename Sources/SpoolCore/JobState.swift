/// Where a job is in its life. `queued → running → succeeded | failed | canceled`;
/// a running job may also go back to `queued` (server restart or shutdown with attempts left).
public enum JobState: String, Sendable, Codable, CaseIterable {
    /// Waiting in the durable queue for a free slot.
    case queued
    /// Claimed by a slot; its process is (or was, until a crash) running.
    case running
    /// The process exited with status 0.
    case succeeded
    /// The attempt ended badly; `FailureReason` says how.
    case failed
    /// A client canceled it before it finished.
    case canceled

    /// True once nothing more will happen to the job.
    public var isTerminal: Bool {
        switch self {
        case .queued, .running: false
        case .succeeded, .failed, .canceled: true
        }
    }

    /// The transitions the model allows. Stores enforce them in their `WHERE` clauses;
    /// this is the one list they and the tests agree on.
    public func canMove(to next: JobState) -> Bool {
        switch (self, next) {
        case (.queued, .running), (.queued, .canceled): true
        case (.running, .succeeded), (.running, .failed), (.running, .canceled), (.running, .queued): true
        default: false
        }
    }
}

/// Why a job ended `failed` (or `canceled`): machine-readable, stable wire values.
public enum FailureReason: String, Sendable, Codable, CaseIterable {
    /// The process exited with a non-zero status (`exit_code` holds it).
    case exitCode = "exit_code"
    /// The process was killed by a signal it did not ask for (`signal` holds it).
    case signal
    /// The job ran past its `timeout_s` and was stopped.
    case timeout
    /// A client canceled the job.
    case canceled
    /// The server died while the job ran and its attempts were used up.
    case interrupted
    /// The command could not be started (missing executable, bad working directory…).
    case spawnFailed = "spawn_failed"
    /// A warm worker reported that the job failed (`error` holds its message).
    case error
    /// The warm worker running the job died or stopped answering, and no attempt was left.
    case workerLost = "worker_lost"
    /// With a shared store: the node running the job stopped renewing its lease (it died or
    /// lost the database), and no attempt was left.
    case nodeLost = "node_lost"
    /// The job was still queued when its `start_within_s` deadline passed, and was canceled.
    case deadline
}
