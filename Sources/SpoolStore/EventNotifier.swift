import SpoolCore
import Synchronization

/// Tells event readers (SSE streams, the webhook deliverer) that events past a given id
/// exist. Stores call `published(upTo:)` after committing events; readers wait for more than
/// what they have seen. A reader that falls behind loses nothing: it re-reads from the store.
public final class EventNotifier: Sendable {
    private struct State {
        var latest: Int64 = 0
        var waiters: [Int: (after: Int64, continuation: AsyncStream<Void>.Continuation)] = [:]
        var next = 0
    }

    private let state = Mutex(State())

    public init() {}

    public var latest: Int64 { state.withLock { $0.latest } }

    public func published(upTo id: Int64) {
        let ready = state.withLock { state -> [AsyncStream<Void>.Continuation] in
            state.latest = max(state.latest, id)
            let due = state.waiters.filter { $0.value.after < id }
            for key in due.keys { state.waiters[key] = nil }
            return due.values.map(\.continuation)
        }
        for continuation in ready { continuation.yield(); continuation.finish() }
    }

    /// Wakes every waiter without new events (shutdown): they return false and look again.
    public func wakeAll() {
        let all = state.withLock { state -> [AsyncStream<Void>.Continuation] in
            defer { state.waiters = [:] }
            return state.waiters.values.map(\.continuation)
        }
        for continuation in all { continuation.finish() }
    }

    /// Returns true once an event with an id above `after` exists, false after `timeout`.
    public func wait(after: Int64, timeout: Duration) async -> Bool {
        let (stream, continuation) = AsyncStream<Void>.makeStream()
        let already = state.withLock { state -> Bool in
            if state.latest > after { return true }
            state.next += 1
            state.waiters[state.next] = (after, continuation)
            return false
        }
        if already { return true }
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask { for await _ in stream { return true }; return false }
            group.addTask { try? await Task.sleep(for: timeout); return false }
            let result = await group.next()!
            group.cancelAll()
            continuation.finish()
            return result
        }
    }
}
