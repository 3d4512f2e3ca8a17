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
        let capacity = max(1, rate)
        return buckets.withLock { buckets in
            var bucket = buckets[name] ?? Bucket(tokens: capacity, at: seconds)
            bucket.tokens = min(capacity, bucket.tokens + (seconds - bucket.at) * rate)
            bucket.at = seconds
            defer { buckets[name] = bucket }
            guard bucket.tokens >= 1 else { return (1 - bucket.tokens) / rate }
            bucket.tokens -= 1
            return nil
        }
    }
}

/// Where a token's submits are counted against its `rate`: in the shared store when there is one
/// (`SubmitRateStore`: every node takes from the same bucket, so the rate holds for the cluster),
/// else in this process.
struct SubmitRates: Sendable {
    let local = RateLimiter()
    let shared: (any SubmitRateStore)?

    init(store: any JobStore) {
        shared = store as? any SubmitRateStore
    }

    /// Takes one submit from `name`'s bucket; nil when taken, else the seconds until one is there.
    func take(_ name: String, rate: Double) async throws -> Double? {
        if let shared { return try await shared.takeSubmit(owner: name, rate: rate) }
        return local.take(name, rate: rate, now: WallClock.now().secondsSince1970)
    }
}
