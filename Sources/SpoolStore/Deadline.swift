import Synchronization

/// Runs `operation` and answers with its result, or throws `timeout` once `limit` has passed —
/// without waiting for the operation to end: one blocked on the network (a query already sent
/// ignores cancellation and waits for its answer as long as the link holds it) is cancelled
/// and left to finish on its own. Cancelling the caller answers it at once.
public func answerWithin<T: Sendable>(_ limit: Duration, orThrow timeout: any Error,
                                      _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
    let race = DeadlineRace<T>()
    defer { race.cancelTimer() }
    return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { continuation in
            race.wait(continuation)
            let work = Task {   // unstructured: the operation may outlive this call (see above); cancelled at the deadline
                do { race.answer(.success(try await operation())) } catch { race.answer(.failure(error)) }
            }
            let timer = Task {   // unstructured: the deadline; cancelled once the call has its answer
                guard (try? await Task.sleep(for: limit)) != nil else { return }
                race.answer(.failure(timeout))
                work.cancel()
            }
            race.started(work, timer)
        }
    } onCancel: {
        race.cancel()
    }
}

/// One `answerWithin` call: the operation and its timer race to answer the caller, once.
private final class DeadlineRace<T: Sendable>: Sendable {
    private let state = Mutex<(continuation: CheckedContinuation<T, any Error>?, work: Task<Void, Never>?,
                               timer: Task<Void, Never>?, cancelled: Bool)>((nil, nil, nil, false))

    func wait(_ continuation: CheckedContinuation<T, any Error>) { state.withLock { $0.continuation = continuation } }

    /// The first answer goes to the caller; later ones are dropped.
    func answer(_ result: Result<T, any Error>) {
        let continuation = state.withLock { state in
            defer { state.continuation = nil }
            return state.continuation
        }
        continuation?.resume(with: result)
    }

    func started(_ work: Task<Void, Never>, _ timer: Task<Void, Never>) {
        let cancelled = state.withLock { state in
            (state.work, state.timer) = (work, timer)
            return state.cancelled
        }
        if cancelled { cancel() }
    }

    /// The caller was cancelled: it hears so at once, and the operation (as far as it listens)
    /// and the timer are cancelled.
    func cancel() {
        let (work, timer) = state.withLock { state in
            state.cancelled = true
            return (state.work, state.timer)
        }
        answer(.failure(CancellationError()))
        work?.cancel()
        timer?.cancel()
    }

    func cancelTimer() { state.withLock { $0.timer }?.cancel() }
}
