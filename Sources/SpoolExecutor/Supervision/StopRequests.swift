import SpoolCore
import Synchronization

/// A job's stop requests (cancel, shutdown, quarantine), read from the moment the executor has
/// the job: work before the job reaches its process — a warm worker still setting up — can end
/// on the first one (`unlessStopped`), and all of them go on, in order, to the attempt's watch
/// once it runs (`forwarded`).
final class StopRequests: Sendable {
    /// Every request, for the attempt's watch.
    let forwarded: AsyncStream<StopReason>

    private struct State {
        var first: StopReason?
        var onStop: (@Sendable (StopReason) -> Void)?
    }

    /// Shared with the reader task (a `Mutex` cannot be captured on its own).
    private final class Shared: Sendable {
        let state = Mutex(State())
    }

    private let shared = Shared()
    private let reader: Task<Void, Never>

    init(_ stops: AsyncStream<StopReason>) {
        let (forwarded, sink) = AsyncStream<StopReason>.makeStream()
        self.forwarded = forwarded
        let shared = self.shared
        // unstructured: it reads the scheduler's stream for as long as the attempt lasts, beside
        // whatever the executor awaits; `finish` ends it.
        reader = Task {   // unstructured: see above
            for await reason in stops {
                sink.yield(reason)
                let onStop = shared.state.withLock { state -> (@Sendable (StopReason) -> Void)? in
                    guard state.first == nil else { return nil }
                    state.first = reason
                    return state.onStop.take()
                }
                onStop?(reason)
            }
            sink.finish()
        }
    }

    /// The attempt is over: the requests are read no more.
    func finish() { reader.cancel() }

    /// A stop request has come.
    var isStopped: Bool { shared.state.withLock { $0.first != nil } }

    enum Outcome<Value: Sendable>: Sendable {
        case done(Value)
        case stopped(StopReason)
    }

    /// `operation`'s value, or the first stop request if it comes first (at once if one came
    /// already). A stopped operation goes on, unawaited: it must be harmless on its own (a worker
    /// setup in flight goes on for the slot's next job, which waits for it; one not begun yet
    /// begins no more: `isStopped`).
    func unlessStopped<Value: Sendable>(_ operation: @escaping @Sendable () async -> Value) async -> Outcome<Value> {
        await withCheckedContinuation { (continuation: CheckedContinuation<Outcome<Value>, Never>) in
            let pending = Mutex<CheckedContinuation<Outcome<Value>, Never>?>(continuation)
            let answer: @Sendable (Outcome<Value>) -> Void = { outcome in pending.withLock { $0.take() }?.resume(returning: outcome) }
            let stopped = shared.state.withLock { state -> StopReason? in
                if let first = state.first { return first }
                state.onStop = { answer(.stopped($0)) }
                return nil
            }
            if let stopped { return answer(.stopped(stopped)) }
            // unstructured: it may outlive this wait (see above).
            let shared = self.shared
            Task {   // unstructured: see above
                let value = await operation()
                shared.state.withLock { $0.onStop = nil }
                answer(.done(value))
            }
        }
    }
}
