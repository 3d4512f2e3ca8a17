import SpoolCore
import Synchronization

/// Tells event readers (SSE streams, the webhook deliverer) that events past a given id
/// exist, and keeps the newest ones in memory so that many readers of the same events (500
/// dashboards) do not each query the database. Stores call `published` after committing;
/// readers wait for more than what they have seen, then take `recent(after:)` — which answers
/// only when it holds an unbroken run of ids, so a reader never skips an event — or fall back
/// to the store. A reader that falls behind loses nothing.
public final class EventNotifier: Sendable {
    public static let memoryCapacity = 4096

    private struct State {
        var ring: [JobEvent] = []
        var latest: Int64 = 0
        var waiters: [Int: (after: Int64, continuation: AsyncStream<Void>.Continuation)] = [:]
        /// Set for good by `stopWaiting()` (the server is shutting down): waits return at once.
        var stopped = false
        var next = 0
    }

    private let state = Mutex(State())

    public init() {}

    public var latest: Int64 { state.withLock { $0.latest } }

    /// Committed events, in any order (concurrent commits may publish out of order).
    public func published(_ events: [JobEvent]) {
        guard let newest = events.map(\.id).max() else { return }
        state.withLock { state in
            for event in events {
                if let last = state.ring.last, last.id > event.id {
                    let index = state.ring.firstIndex { $0.id > event.id } ?? state.ring.endIndex
                    state.ring.insert(event, at: index)
                } else {
                    state.ring.append(event)
                }
            }
            if state.ring.count > Self.memoryCapacity { state.ring.removeFirst(state.ring.count - Self.memoryCapacity) }
        }
        published(upTo: newest)
    }

    /// Events after `after` from memory, or nil when memory cannot prove it has all of them
    /// (then read the store).
    public func recent(after: Int64, job: JobID?, owner: String? = nil, limit: Int) -> [JobEvent]? {
        state.withLock { state in
            if after >= state.latest { return [] }
            guard let first = state.ring.first, first.id <= after + 1 else { return nil }
            var expected = after + 1
            var found: [JobEvent] = []
            let start = state.ring.firstIndex { $0.id > after } ?? state.ring.endIndex
            for event in state.ring[start...] {
                guard event.id == expected else { return nil }
                expected += 1
                if (job == nil || event.job == job) && (owner == nil || event.owner == owner) {
                    found.append(event)
                    if found.count == limit { break }
                }
            }
            return found.count == limit || expected > state.latest ? found : nil
        }
    }

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

    /// Wakes every waiter and makes every later wait return at once (false): the server is
    /// shutting down. A stream that checked for shutdown just before it began to wait would
    /// otherwise sleep through `wakeAll()` until its next keep-alive.
    public func stopWaiting() {
        state.withLock { $0.stopped = true }
        wakeAll()
    }

    /// Returns true once an event with an id above `after` exists, false after `timeout` (at
    /// once after `stopWaiting()`).
    public func wait(after: Int64, timeout: Duration) async -> Bool {
        let (stream, continuation) = AsyncStream<Void>.makeStream()
        let already = state.withLock { state -> Bool? in
            if state.latest > after { return true }
            if state.stopped { return false }
            state.next += 1
            state.waiters[state.next] = (after, continuation)
            return nil
        }
        if let already { return already }
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
