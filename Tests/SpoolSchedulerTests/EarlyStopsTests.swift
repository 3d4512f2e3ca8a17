import SpoolCore
@testable import SpoolScheduler
import Testing

/// Stop requests kept for jobs whose process is not registered yet: an array's cancel sends one
/// per task at once, so n requests must cost O(n) — a sweep of the old ones only each time the
/// count doubles, not on every request past 64 (10,000 took seconds) — and a request older than
/// a minute goes at the next sweep.
@Suite struct EarlyStopsTests {
    @Test func tenThousandRequestsAtOnceAreAllKeptWithAFewSweeps() {
        var stops = Scheduler.EarlyStops()
        let jobs = (0..<10_000).map { _ in JobID.random() }
        for job in jobs { stops.record(job, .cancel, at: .zero) }
        #expect(stops.count == 10_000)
        // At 64, 128, … 8,192 requests: 8 sweeps (one per request past 64 was 9,936).
        #expect(stops.sweeps == 8)
        #expect(stops.take(jobs[0], at: .zero) == .cancel)
        #expect(stops.take(jobs[0], at: .zero) == nil, "taken once")
        #expect(stops.take(jobs[9_999], at: .zero) == .cancel)
    }

    /// Fewer than a sweep's worth are never swept; one older than a minute is still not applied.
    @Test func aRequestOlderThanAMinuteIsNotTakenEvenBeforeASweep() {
        var stops = Scheduler.EarlyStops()
        let job = JobID.random()
        stops.record(job, .cancel, at: .zero)
        #expect(stops.take(job, at: .zero + .seconds(61)) == nil)
        #expect(stops.count == 0, "and it is gone")
        stops.record(job, .cancel, at: .zero + .seconds(100))
        #expect(stops.take(job, at: .zero + .seconds(159)) == .cancel)
    }

    @Test func aRequestOlderThanAMinuteGoesAtTheNextSweep() {
        var stops = Scheduler.EarlyStops()
        let old = (0..<64).map { _ in JobID.random() }
        for job in old { stops.record(job, .cancel, at: .zero) }
        let recent = JobID.random()
        stops.record(recent, .timeout, at: .zero + .seconds(61))   // the 65th: the sweep comes first
        #expect(stops.sweeps == 1 && stops.count == 1)
        #expect(stops.take(old[0], at: .zero + .seconds(61)) == nil)
        #expect(stops.take(recent, at: .zero + .seconds(61)) == .timeout)
        // Still within the minute: kept through a sweep.
        for job in (0..<64).map({ _ in JobID.random() }) { stops.record(job, .cancel, at: .zero + .seconds(70)) }
        stops.record(recent, .cancel, at: .zero + .seconds(71))
        #expect(stops.count == 65 && stops.take(recent, at: .zero + .seconds(71)) == .cancel)
    }
}
