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
    /// The job never really started (its worker could not be set up); it goes back to the
    /// queue without using an attempt.
    case returned(message: String)

    /// True for outcomes that hand the attempt back: the job did not get a fair run.
    public var givesAttemptBack: Bool {
        switch self {
        case .stoppedForShutdown, .returned: true
        default: false
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

    /// A sentence for the job's `error` field.
    public func errorMessage(timeout: Double?) -> String? {
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
