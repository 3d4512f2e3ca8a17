import SpoolCore

extension Scheduler {
    /// Stop requests that arrived before their job's process was registered (a cancel racing
    /// its start, or, with a shared store, jobs other nodes run): each is kept a minute. The old
    /// ones are swept out whenever the count doubles past what the last sweep left, so n
    /// requests cost O(n): a sweep on every request past 64 made an array's cancel of 10,000
    /// tasks spend seconds filtering the same entries again and again.
    struct EarlyStops: Sendable {
        static let kept: Duration = .seconds(60)
        private var entries: [JobID: (reason: StopReason, at: Moment)] = [:]
        private var sweepAt = 64
        /// How many sweeps have run (for tests).
        private(set) var sweeps = 0

        var count: Int { entries.count }

        mutating func record(_ job: JobID, _ reason: StopReason, at now: Moment) {
            if entries.count >= sweepAt {
                entries = entries.filter { now - $0.value.at < Self.kept }
                sweepAt = max(64, entries.count * 2)
                sweeps += 1
            }
            entries[job] = (reason, now)
        }

        /// The request for `job`, if one came less than a minute before `now`, taken out (an older
        /// one, not swept yet, is dropped: it was for another node's attempt).
        mutating func take(_ job: JobID, at now: Moment) -> StopReason? {
            guard let entry = entries.removeValue(forKey: job), now - entry.at < Self.kept else { return nil }
            return entry.reason
        }
    }
}
