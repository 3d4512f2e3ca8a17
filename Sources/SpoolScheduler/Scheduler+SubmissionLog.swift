import SpoolCore

extension Scheduler {
    /// The `jobEnqueued` calls so far, with where each of the newest jobs stands in the queue
    /// (nil where the caller did not say): a job looked up ahead stays the slot's next when none
    /// submitted since goes before it.
    struct SubmissionLog: Sendable {
        struct Entry: Sendable {
            var priority: Int
            var fairTag: Int64
        }
        static let kept = 64
        private(set) var count = 0
        private var newest: [Entry?] = []

        /// The newest call's job, when that call named it.
        private var newestJob: Job?

        mutating func add(_ entry: Entry?, job: Job? = nil) {
            count += 1
            newestJob = job
            newest.append(entry)
            if newest.count > Self.kept * 2 { newest.removeFirst(newest.count - Self.kept) }
        }

        /// The job of the one call after the first `asOf`, when there was one call since and it
        /// named its job.
        func onlyJob(since asOf: Int) -> Job? { count == asOf + 1 ? newestJob : nil }

        /// Whether a job submitted after the first `asOf` calls may go before `job`: one of
        /// higher priority, or of its priority with an earlier fair-share tag (or one the log
        /// does not know).
        func overtakes(_ job: Job, since asOf: Int) -> Bool {
            let since = count - asOf
            guard since > 0 else { return false }
            guard since <= newest.count else { return true }
            return newest.suffix(since).contains { entry in
                guard let entry else { return true }
                return entry.priority > job.priority || (entry.priority == job.priority && entry.fairTag < job.fairTag)
            }
        }
    }
}
