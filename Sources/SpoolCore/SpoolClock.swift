import Glibc

/// A point on the server's monotonic clock: time since the clock was made. Deadlines,
/// timeouts and "how long has this run" are `Moment`s; what the store records is a
/// `Timestamp` from the wall clock.
public struct Moment: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var sinceStart: Duration

    public init(sinceStart: Duration) { self.sinceStart = sinceStart }

    public static let zero = Moment(sinceStart: .zero)

    public static func < (lhs: Moment, rhs: Moment) -> Bool { lhs.sinceStart < rhs.sinceStart }
    public static func + (lhs: Moment, rhs: Duration) -> Moment { Moment(sinceStart: lhs.sinceStart + rhs) }
    public static func - (lhs: Moment, rhs: Duration) -> Moment { Moment(sinceStart: lhs.sinceStart - rhs) }
    public static func - (lhs: Moment, rhs: Moment) -> Duration { lhs.sinceStart - rhs.sinceStart }

    public var description: String { "t+\(sinceStart)" }
}

/// Where the server reads time: a monotonic clock for deadlines, timeouts and intervals, and a
/// wall clock for the timestamps it records. Everything that decides by time takes one, so
/// tests move a manual clock instead of sleeping (`SpoolClock(manual, wall: …)`).
public struct SpoolClock: Sendable {
    private let elapsed: @Sendable () -> Duration
    private let sleeper: @Sendable (Duration) async throws -> Void
    private let wallClock: @Sendable () -> Timestamp

    /// Reads `clock` (any `Clock<Duration>`: `ContinuousClock`, a test's manual clock) and `wall`.
    public init<C: Clock<Duration>>(_ clock: C, wall: @escaping @Sendable () -> Timestamp) {
        let origin = clock.now
        elapsed = { origin.duration(to: clock.now) }
        sleeper = { duration in try await clock.sleep(until: clock.now.advanced(by: duration), tolerance: nil) }
        wallClock = wall
    }

    /// The real clocks: `ContinuousClock` and the time of day.
    public static let system = SpoolClock(ContinuousClock(), wall: WallClock.now)

    public func now() -> Moment { Moment(sinceStart: elapsed()) }

    /// The time of day, for what is recorded.
    public func wall() -> Timestamp { wallClock() }

    /// Sleeps on the clock; throws `CancellationError` when the task is cancelled.
    public func sleep(for duration: Duration) async throws { try await sleeper(duration) }

    public func sleep(until moment: Moment) async throws {
        try await sleep(for: max(.zero, moment - now()))
    }
}

/// The real time of day, for the timestamps stores record.
public enum WallClock {
    public static func now() -> Timestamp {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Timestamp(microseconds: Int64(spec.tv_sec) * 1_000_000 + Int64(spec.tv_nsec) / 1_000)
    }
}
