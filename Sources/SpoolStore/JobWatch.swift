import SpoolCore
import Synchronization

/// Wakes waiters (`GET /v1/jobs/{id}?wait=`) when a job changes. Stores call `publish`
/// after a change commits; a waiter subscribes before it reads, then waits.
public final class JobChangeNotifier: Sendable {
    private struct Waiters {
        var nextToken = 0
        var byJob: [JobID: [Int: AsyncStream<Void>.Continuation]] = [:]
    }

    private let waiters = Mutex(Waiters())

    public init() {}

    public func watch(_ id: JobID) -> JobWatch {
        let (stream, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let token = waiters.withLock { state in
            state.nextToken += 1
            state.byJob[id, default: [:]][state.nextToken] = continuation
            return state.nextToken
        }
        continuation.onTermination = { [weak self] _ in
            self?.waiters.withLock { state in
                state.byJob[id]?[token] = nil
                if state.byJob[id]?.isEmpty == true { state.byJob[id] = nil }
            }
        }
        return JobWatch(stream: stream, continuation: continuation)
    }

    public func publish(_ id: JobID) {
        let targets = waiters.withLock { state in state.byJob[id].map { Array($0.values) } ?? [] }
        for continuation in targets { continuation.yield() }
    }

    public func publish(_ ids: some Sequence<JobID>) {
        for id in ids { publish(id) }
    }
}

/// One subscription to a job's changes. Ends (and unregisters) when it is deinitialised.
public final class JobWatch: Sendable {
    private let stream: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation

    init(stream: AsyncStream<Void>, continuation: AsyncStream<Void>.Continuation) {
        self.stream = stream
        self.continuation = continuation
    }

    deinit { continuation.finish() }

    /// Returns true when the job changed within `timeout`, false when the time ran out.
    public func next(timeout: Duration) async -> Bool {
        let stream = self.stream
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                for await _ in stream { return true }
                return false
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            let changed = await group.next() ?? false
            group.cancelAll()
            return changed
        }
    }
}
