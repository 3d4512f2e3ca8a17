import Foundation

extension ScenarioRunner {
    /// Scenario 3: `gapJobs` noop jobs are queued behind a 2-second `hold` job, so all of them wait
    /// when the slot frees; the gaps come from the servers' own timestamps (finished_at of job k to
    /// started_at of job k+1, ordered by started_at), not from the client's clock.
    func measureDispatchGap(on subject: BenchSubject) async throws -> ScenarioResult {
        try await withServer(.dispatchGap, subject) { client, _ in
            let holder = try await occupySlot(client, seconds: 2)
            let total = counts.gapJobs
            let clients = counts.submitClients
            let ids = try await withThrowingTaskGroup(of: [String].self) { group in
                for first in 0..<clients {
                    group.addTask {
                        var ids: [String] = []
                        for _ in stride(from: first, to: total, by: clients) { ids.append(try await client.submit(type: "noop").id) }
                        return ids
                    }
                }
                return try await group.reduce(into: [String]()) { $0 += $1 }
            }
            let queuedBehind = try await client.queuedCount()
            let holderAfterSubmits = try await client.job(holder.id)

            var jobs: [JobDocument] = []
            for id in ids { jobs.append(try await client.wait(for: id, toReach: ["succeeded"], within: .seconds(120))) }
            var spans: [(start: RFC3339Timestamp, end: RFC3339Timestamp)] = []
            var digits = Set<Int>()
            for job in jobs {
                guard let start = job.startedAt.flatMap(RFC3339Timestamp.init), let end = job.finishedAt.flatMap(RFC3339Timestamp.init) else {
                    throw BenchError("job \(job.id) has no parseable started_at/finished_at: \(job.startedAt ?? "null") / \(job.finishedAt ?? "null")")
                }
                spans.append((start, end))
                digits.formUnion([start.fractionDigits, end.fractionDigits])
            }
            spans.sort { $0.start < $1.start }
            let gaps = zip(spans, spans.dropFirst()).map { previous, next in previous.end.milliseconds(to: next.start) }
            let runTimes = spans.map { $0.start.milliseconds(to: $0.end) }

            var result = ScenarioResult()
            result[.gapMedian] = LatencySummary.median(gaps)
            result[.gapMax] = gaps.max()
            result[.gapRunTime] = LatencySummary.median(runTimes)
            if let first = spans.first, let last = spans.last {
                result[.gapCycle] = first.start.milliseconds(to: last.end) / Double(spans.count)
            }
            result.notes.append("\(subject.title): \(queuedBehind) of \(total) jobs were queued while the hold job was \(holderAfterSubmits.state); "
                + "\(gaps.count) gaps, min \((gaps.min() ?? .nan).fixed(3)) ms; "
                + "timestamps carry \(digits.sorted().map(String.init).joined(separator: "/")) fractional digits")
            if !gaps.isEmpty, gaps.allSatisfy({ $0 == 0 }) {
                result.notes.append("\(subject.title): every gap is exactly 0: finished_at(k) and started_at(k+1) are one clock reading "
                    + "(the finish and the next claim share a transaction), so this gap cannot show the time to start the next "
                    + "process; that time is inside the run time and the slot time per job")
            }
            if queuedBehind < total || holderAfterSubmits.state != "running" {
                result.notes.append("\(subject.title): WARNING not every job was queued when the slot freed; some gaps may include idle time")
            }
            return result
        }
    }

    /// Scenario 4: one `noop` at a time: POST, then `GET ?wait=` until it has succeeded. Three
    /// untimed round trips first (connections, first spawn).
    func measureRoundTrip(on subject: BenchSubject) async throws -> ScenarioResult {
        try await withServer(.roundTrip, subject) { client, _ in
            let clock = ContinuousClock()
            var samples: [Double] = []
            for index in 0..<(counts.roundTrips + 3) {
                let start = clock.now
                let job = try await client.submit(type: "noop")
                if job.state != "succeeded" {
                    _ = try await client.wait(for: job.id, toReach: ["succeeded"], within: .seconds(60))
                }
                if index >= 3 { samples.append(start.duration(to: clock.now).milliseconds) }
            }
            let latency = LatencySummary(milliseconds: samples)
            var result = ScenarioResult()
            result[.roundTripP50] = latency.p50
            result[.roundTripP99] = latency.p99
            result.notes.append("\(subject.title): \(latency.count) round trips, min \((samples.min() ?? .nan).fixed(2)) ms, max \(latency.max.fixed(2)) ms")
            return result
        }
    }
}
