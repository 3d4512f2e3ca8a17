import SpoolCore
import Synchronization

/// Each token's submit rate (its `rate`, submits per second): a token bucket holding up to one
/// second's worth, per node. Decisions are pure and take the time, so they are tested directly.
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
