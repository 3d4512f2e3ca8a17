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

    /// The state the job moves to after this outcome.
    public var resultingState: JobState {
        switch self {
        case .succeeded: .succeeded
        case .exited, .signaled, .timedOut, .spawnFailed: .failed
        case .canceled: .canceled
        case .stoppedForShutdown: .queued
        }
    }

    public var reason: FailureReason? {
        switch self {
        case .succeeded, .stoppedForShutdown: nil
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
        case .succeeded, .stoppedForShutdown: nil
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
