import Synchronization

/// Lets a test stop calls at a point of its choosing: `pass()` returns at once, unless the hold
/// is on (`hold()`); then it waits until `release()`.
public final class CallHold: Sendable {
    /// The calls waiting; nil while the hold is off.
    private let waiting = Mutex<[CheckedContinuation<Void, Never>]?>(nil)

    public init() {}

    /// Calls wait from now on.
    public func hold() { waiting.withLock { $0 = $0 ?? [] } }

    /// Lets the waiting calls go on, and later ones pass; returns how many were waiting.
    @discardableResult
    public func release() -> Int {
        let released = waiting.withLock { waiting in
            defer { waiting = nil }
            return waiting ?? []
        }
        for call in released { call.resume() }
        return released.count
    }

    /// How many calls wait.
    public var count: Int { waiting.withLock { $0?.count ?? 0 } }

    /// Returns at once while the hold is off; otherwise once it is released.
    public func pass() async {
        await withCheckedContinuation { continuation in
            let wait = waiting.withLock { waiting -> Bool in
                guard waiting != nil else { return false }
                waiting!.append(continuation)
                return true
            }
            if !wait { continuation.resume() }
        }
    }
}
