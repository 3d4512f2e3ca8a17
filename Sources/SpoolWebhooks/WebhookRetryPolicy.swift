import SpoolCore
import SpoolStore

/// When to try a failed delivery again: exponential backoff with full jitter (the wait is
/// uniform in `0 ... min(cap, base × factor^(n-1))` after the n-th failure), so receivers
/// coming back from an outage are not hit by every sender at once. Pure: the random draw is
/// passed in.
public struct WebhookRetryPolicy: Sendable, Equatable {
    public var baseSeconds: Double = 1
    public var factor: Double = 2
    public var capSeconds: Double = 600
    public var maxAttempts = 12

    public init() {}

    /// The longest wait after the `attempt`-th failure (1-based).
    public func ceiling(afterAttempt attempt: Int) -> Double {
        var ceiling = baseSeconds
        for _ in 1..<max(attempt, 1) {
            ceiling *= factor
            if ceiling >= capSeconds { return capSeconds }
        }
        return min(ceiling, capSeconds)
    }

    /// The wait after the `attempt`-th failure for a draw `unit` in 0..<1.
    public func delay(afterAttempt attempt: Int, unit: Double) -> Double {
        ceiling(afterAttempt: attempt) * min(max(unit, 0), 1)
    }

    /// What follows attempt number `attempt` at `now`.
    public func next(afterAttempt attempt: Int, succeeded: Bool, now: Timestamp, unit: Double) -> WebhookDelivery.Next {
        if succeeded { return .delivered }
        if attempt >= maxAttempts { return .failed }
        return .retry(at: now.adding(seconds: delay(afterAttempt: attempt, unit: unit)))
    }
}
