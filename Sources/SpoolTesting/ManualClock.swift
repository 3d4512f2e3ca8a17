import Synchronization

/// A clock that moves only when a test says so. Tasks sleeping on it wake when `advance`
/// passes their deadline; a test waits for a sleeper to exist (`waitForSleeper`) before it
/// advances, so nothing depends on how fast the machine is.
///
/// (swift-clocks' `TestClock` would do; its current release needs swift-tools 6.4, newer than
/// this toolchain, so this is the small part of it the tests need.)
public final class ManualClock: Clock, Sendable {
    public struct Instant: InstantProtocol {
        public var offset: Duration
        public init(offset: Duration) { self.offset = offset }
        public func advanced(by duration: Duration) -> Instant { Instant(offset: offset + duration) }
        public func duration(to other: Instant) -> Duration { other.offset - offset }
        public static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.offset < rhs.offset }
    }

    private struct Sleeper {
        var deadline: Instant
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct Watcher {
        var id: UInt64
        var within: Duration
        var continuation: CheckedContinuation<Void, Never>
    }

    private struct State {
        var now = Instant(offset: .zero)
        var sleepers: [UInt64: Sleeper] = [:]
        var cancelled: Set<UInt64> = []
        var watchers: [Watcher] = []
        var nextID: UInt64 = 0

        /// Watchers satisfied by the current sleepers, removed.
        mutating func satisfiedWatchers() -> [Watcher] {
            let earliest = sleepers.values.map(\.deadline).min()
            var satisfied: [Watcher] = []
            watchers.removeAll { watcher in
                guard let earliest, now.duration(to: earliest) <= watcher.within else { return false }
                satisfied.append(watcher)
                return true
            }
            return satisfied
        }
    }

    private let state = Mutex(State())

    public init() {}

    public var now: Instant { state.withLock { $0.now } }
    public var minimumResolution: Duration { .zero }

    public func sleep(until deadline: Instant, tolerance: Duration? = nil) async throws {
        let id = state.withLock { state in
            state.nextID += 1
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                enum Start { case sleep([Watcher]), wake, cancel }
                let start: Start = state.withLock { state in
                    if state.cancelled.remove(id) != nil { return .cancel }
                    if deadline <= state.now { return .wake }
                    state.sleepers[id] = Sleeper(deadline: deadline, continuation: continuation)
                    return .sleep(state.satisfiedWatchers())
                }
                switch start {
                case .sleep(let watchers): for watcher in watchers { watcher.continuation.resume() }
                case .wake: continuation.resume()
                case .cancel: continuation.resume(throwing: CancellationError())
                }
            }
        } onCancel: {
            let sleeper: Sleeper? = state.withLock { state in
                if let sleeper = state.sleepers.removeValue(forKey: id) { return sleeper }
                state.cancelled.insert(id)
                return nil
            }
            sleeper?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Moves time forward and wakes every sleeper whose deadline has come, earliest first.
    public func advance(by duration: Duration) {
        let (due, satisfied): ([Sleeper], [Watcher]) = state.withLock { state in
            state.now = state.now.advanced(by: duration)
            let due = state.sleepers.filter { $0.value.deadline <= state.now }
            for id in due.keys { state.sleepers[id] = nil }
            return (due.values.sorted { $0.deadline < $1.deadline }, state.satisfiedWatchers())
        }
        for sleeper in due { sleeper.continuation.resume() }
        for watcher in satisfied { watcher.continuation.resume() }
    }

    /// How many tasks sleep on this clock now.
    public var sleepers: Int { state.withLock { $0.sleepers.count } }

    /// Returns once some task sleeps on this clock with a deadline at most `within` from now:
    /// then an `advance(by: within)` is sure to wake it. Returns early if the task is cancelled.
    public func waitForSleeper(within: Duration = .seconds(1_000_000)) async {
        let id = state.withLock { state in
            state.nextID += 1
            return state.nextID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let satisfied = state.withLock { state -> [Watcher] in
                    if state.cancelled.remove(id) != nil { return [Watcher(id: id, within: within, continuation: continuation)] }
                    state.watchers.append(Watcher(id: id, within: within, continuation: continuation))
                    return state.satisfiedWatchers()
                }
                for watcher in satisfied { watcher.continuation.resume() }
            }
        } onCancel: {
            let watcher: Watcher? = state.withLock { state in
                if let index = state.watchers.firstIndex(where: { $0.id == id }) { return state.watchers.remove(at: index) }
                state.cancelled.insert(id)
                return nil
            }
            watcher?.continuation.resume()
        }
    }

    /// Waits up to `patience` of real time for some task to sleep on this clock (due within
    /// `within`); true if one did.
    public func sleeperArrives(within: Duration = .seconds(1_000_000), patience: Duration) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask { await self.waitForSleeper(within: within); return !Task.isCancelled }
            group.addTask {
                try? await Task.sleep(for: patience)
                return false
            }
            let first = await group.next()!
            group.cancelAll()
            return first
        }
    }
}
