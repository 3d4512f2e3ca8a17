import SpoolCore
import SpoolStore
import Synchronization

/// Each token's submit rate (its `rate`, submits per second): a token bucket holding up to one
/// second's worth, in this process (one node's store). Decisions are pure and take the time, so
/// they are tested directly. A shared store counts them itself (`SubmitRates`).
public final class RateLimiter: Sendable {
    struct Bucket {
        var tokens: Double
        var at: Double
    }

    private let buckets = Mutex<[String: Bucket]>([:])

    public init() {}

    /// Takes one submit from `name`'s bucket (`rate` per second); when it is empty, answers how
    /// many seconds until it holds one.
    public func take(_ name: String, rate: Double, now seconds: Double) -> Double? {
        bucket(name, rate: rate, now: seconds, taking: true)
    }

    /// What `take` would answer, taking nothing.
    public func peek(_ name: String, rate: Double, now seconds: Double) -> Double? {
        bucket(name, rate: rate, now: seconds, taking: false)
    }

    private func bucket(_ name: String, rate: Double, now seconds: Double, taking: Bool) -> Double? {
        let capacity = max(1, rate)
        return buckets.withLock { buckets in
            var bucket = buckets[name] ?? Bucket(tokens: capacity, at: seconds)
            bucket.tokens = min(capacity, bucket.tokens + max(0, seconds - bucket.at) * rate)
            bucket.at = max(bucket.at, seconds)
            defer { buckets[name] = bucket }
            guard bucket.tokens >= 1 else { return (1 - bucket.tokens) / rate }
            if taking { bucket.tokens -= 1 }
            return nil
        }
    }
}

/// Where a token's submits are counted against its `rate`: in the shared store when there is one
/// (`SubmitRateStore`: every node takes from the same bucket, so the rate holds for the cluster),
/// else in this process. This process's buckets refill on the monotonic clock: on the time of
/// day, a clock set back by an hour refilled nothing for an hour, and a token at its rate was
/// refused all that time.
struct SubmitRates: Sendable {
    let local = RateLimiter()
    let shared: (any SubmitRateStore)?
    let clock: SpoolClock

    init(store: any JobStore, clock: SpoolClock = .system) {
        self.init(shared: store as? any SubmitRateStore, clock: clock)
    }

    init(shared: (any SubmitRateStore)?, clock: SpoolClock = .system) {
        self.shared = shared
        self.clock = clock
    }

    /// Takes one submit from `name`'s bucket; nil when taken, else the seconds until one is there.
    func take(_ name: String, rate: Double) async throws -> Double? {
        let now = clock.now().sinceStart.inSeconds
        guard let shared else { return local.take(name, rate: rate, now: now) }
        // The local bucket counts this node's submits that the shared one let through: when they
        // alone have emptied it, the cluster's is empty too, and a client retrying in a loop
        // costs the database nothing.
        if let wait = local.peek(name, rate: rate, now: now) { return wait }
        let wait = try await shared.takeSubmit(owner: name, rate: rate)
        if wait == nil { _ = local.take(name, rate: rate, now: now) }
        return wait
    }
}
