/// Why the server stops a running attempt.
public enum StopReason: Sendable, Equatable {
    case timeout
    case cancel
    case shutdown
    /// Its slot was quarantined (its GPU reads unhealthy): the job goes back to the queue.
    case quarantine
}

/// How an attempt's process or warm worker ended, before any stop request is taken into account.
public enum AttemptEnd: Sendable, Equatable {
    case exited(code: Int32)
    case signaled(signal: Int32)
    case spawnFailed(String)
    case workerSucceeded(result: JSONValue?)
    case workerFailed(String)
    case workerLost(String)
    /// The attempt never really started (its worker could not be set up).
    case returned(String)
}

/// How one attempt ended. A failed job is data, never a thrown error.
public enum JobOutcome: Sendable, Equatable {
    case succeeded
    case exited(code: Int32)
    case signaled(signal: Int32)
    case timedOut
    case canceled
    /// The server stopped the process to shut down; the job goes back to the queue.
    case stoppedForShutdown
    case spawnFailed(message: String)
    /// A warm worker answered `failed` for the job.
    case reportedFailure(message: String)
    /// The warm worker died or hung mid-job. Requeued while attempts remain.
    case workerLost(message: String)
    /// The job goes back to the queue without using an attempt: it never really started (its
    /// worker could not be set up, its slot was quarantined before it ran: it keeps its start
    /// deadline), or it ran (`ran`) and the server took it back, through no fault of its own (its
    /// slot was quarantined while it ran, or its failure quarantined the slot: its start met the
    /// deadline).
    case returned(message: String, ran: Bool = false)

    /// True for outcomes that hand the attempt back: the job did not get a fair run.
    public var givesAttemptBack: Bool {
        switch self {
        case .stoppedForShutdown, .returned: true
        default: false
        }
    }

    /// For an outcome that hands the attempt back: why, when the job had run (its run is listed
    /// among its attempts, not counted); nil when it never started.
    public var handedBackAfterRunning: String? {
        switch self {
        case .stoppedForShutdown: "the server shut down while it ran; it runs again"
        case .returned(let message, ran: true): message
        default: nil
        }
    }

    /// The state the job moves to after this outcome (before retry rules; see `Job.record`).
    public var resultingState: JobState {
        switch self {
        case .succeeded: .succeeded
        case .exited, .signaled, .timedOut, .spawnFailed, .reportedFailure, .workerLost: .failed
        case .canceled: .canceled
        case .stoppedForShutdown, .returned: .queued
        }
    }

    public var reason: FailureReason? {
        switch self {
        case .succeeded, .stoppedForShutdown, .returned: nil
        case .reportedFailure: .error
        case .workerLost: .workerLost
        case .exited: .exitCode
        case .signaled: .signal
        case .timedOut: .timeout
        case .canceled: .canceled
        case .spawnFailed: .spawnFailed
        }
    }

    public var exitCode: Int32? { if case .exited(let code) = self { code } else if case .succeeded = self { 0 } else { nil } }
    public var signal: Int32? { if case .signaled(let signal) = self { signal } else { nil } }

    /// A sentence for the job's `error` field (storable: see `String.storable`).
    public func errorMessage(timeout: Double?) -> String? {
        sentence(timeout: timeout)?.storable
    }

    private func sentence(timeout: Double?) -> String? {
        switch self {
        case .succeeded, .stoppedForShutdown, .returned: nil
        case .reportedFailure(let message): message
        case .workerLost(let message): "the worker running the job was lost: \(message)"
        case .exited(let code): "the process exited with status \(code)"
        case .signaled(let signal): "the process was killed by signal \(signal)"
        case .timedOut: "the job ran past its timeout of \(timeout.map(Self.seconds) ?? "?") and was stopped"
        case .canceled: "the job was canceled"
        case .spawnFailed(let message): "the command could not be started: \(message)"
        }
    }

    private static func seconds(_ value: Double) -> String {
        value == value.rounded() ? "\(Int(value)) s" : "\(value) s"
    }
}

extension JobOutcome {
    /// The one mapping from how an attempt ended, and why it was stopped (if it was), to its
    /// outcome — in both modes. A stop decides the outcome whatever the exit status (a process
    /// may exit 0 from its SIGTERM handler), except when a warm worker reported the job
    /// succeeded: its result is real. A job that never started (spawn failure, no worker) says
    /// so whatever the stop.
    public init(_ end: AttemptEnd, stoppedFor reason: StopReason?) {
        switch end {
        case .workerSucceeded: self = .succeeded; return
        case .spawnFailed(let message): self = .spawnFailed(message: message); return
        case .returned(let message): self = .returned(message: message); return   // (it never ran)
        default: break
        }
        switch reason {
        case .timeout?: self = .timedOut; return
        case .cancel?: self = .canceled; return
        case .shutdown?: self = .stoppedForShutdown; return
        case .quarantine?: self = .returned(message: "its slot was quarantined while it ran", ran: true); return
        case nil: break
        }
        switch end {
        case .exited(0): self = .succeeded
        case .exited(let code): self = .exited(code: code)
        case .signaled(let signal): self = .signaled(signal: signal)
        case .workerFailed(let message): self = .reportedFailure(message: message)
        case .workerLost(let message): self = .workerLost(message: message)
        case .workerSucceeded, .spawnFailed, .returned: fatalError("handled above")
        }
    }
}
