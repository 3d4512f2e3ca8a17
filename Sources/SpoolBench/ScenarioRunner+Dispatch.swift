import Foundation
import SpoolCore

extension ScenarioRunner {
    /// Scenario 3: `gapJobs` runs of the stamp job (`Benchmarks/jobs/stamp.c`), queued behind a
    /// `hold` job so the slot runs them back to back. Each run stamps CLOCK_MONOTONIC first thing
    /// in `main` and last thing before `_exit`, so the gap comes from the jobs' own clocks, not
    /// from the server's `started_at`/`finished_at` (Spool writes job k's `finished_at` and job
    /// k+1's `started_at` from one clock reading, which always reads 0).
    ///
    /// A fresh process per job costs an exit, a reap, a spawn and an exec whoever launches it; the
    /// same binary run back to back by the harness (`StandaloneLauncher`: posix_spawn + waitpid,
    /// nothing else) measures that floor in the same run. The dispatch gap is the server's
    /// addition to it: median slot cycle (first stamp k → first stamp k+1) − median standalone
    /// cycle. The baseline runs the same binary with `subprocess.run` in its pool worker.
    func measureDispatchGap(on subject: BenchSubject) async throws -> ScenarioResult {
        let stamp = try assets.requireStamp()
        return try await withServer(.dispatchGap, subject) { client, _, directory in
            let total = counts.gapJobs
            let ms = BenchCounts.jobMilliseconds
            func input(_ file: String) -> String { #"{"file":"\#(file)","ms":\#(ms)}"# }

            // The floor: the same binary, back to back, no server (page cache and loader warmed
            // first), once before and once after the server's batch; the quieter of the two counts.
            func standaloneRun(_ name: String) async throws -> JobSequence {
                let file = directory + "/stamps-standalone-\(name).txt"
                try await StandaloneLauncher.run(stamp, arguments: [file, String(ms)], times: total)
                return JobSequence(spans: try StampFile.spans(at: file).map { ($0.pid, $0.start, $0.end) })
            }
            try await StandaloneLauncher.run(stamp, arguments: [directory + "/stamps-standalone-warmup.txt", "0"], times: 10)
            let before = try await standaloneRun("before")

            // Through the server.
            try await warmUp(client, type: "stamp", inputJSON: input(directory + "/stamps-warmup.txt"), count: 3)
            let file = directory + "/stamps.txt"
            let (ids, warning) = try await queueBehindHold(client, type: "stamp", inputJSON: input(file), total: total, subject: subject)
            let jobs = try await drainAndFetch(client, ids, within: .seconds(300))
            let spans = try StampFile.spans(at: file)
            guard spans.count == total else { throw BenchError("\(spans.count) stamp runs recorded in \(file), expected \(total)") }
            let server = JobSequence(spans: spans.map { ($0.pid, $0.start, $0.end) })
            let after = try await standaloneRun("after")
            let standalone = LatencySummary.median(before.cycles) <= LatencySummary.median(after.cycles) ? before : after

            let floor = LatencySummary.median(standalone.cycles)
            let overheads = server.cycles.map { $0 - floor }.sorted()
            var result = ScenarioResult()
            result[.gapMedian] = LatencySummary.median(server.cycles) - floor
            result[.gapP90] = LatencySummary.percentile(0.90, ofSorted: overheads)
            result[.gapMax] = overheads.last
            result[.gapCycle] = LatencySummary.median(server.cycles)
            result[.gapStandaloneCycle] = floor
            result[.gapEndToStart] = LatencySummary.median(server.gaps)
            result[.gapStandaloneEndToStart] = LatencySummary.median(standalone.gaps)
            result[.gapJobRunTime] = LatencySummary.median(server.runTimes)
            let reported = try Self.serverReportedGaps(jobs)
            result[.gapServerReported] = reported.median
            result.notes.append("\(subject.title): \(server.cycles.count) gaps; slot cycle min \((server.cycles.min() ?? .nan).fixed(3)) ms, "
                + "standalone cycle min \((standalone.cycles.min() ?? .nan).fixed(3)) ms; job run time (the job's own stamps) "
                + "\(LatencySummary.median(server.runTimes).fixed(3)) ms in the server, \(LatencySummary.median(standalone.runTimes).fixed(3)) ms standalone; "
                + "server timestamps carry \(reported.digits) fractional digits, server-reported run time (started_at → finished_at) median "
                + "\(reported.runTime.fixed(3)) ms")
            result.notes.append("\(subject.title): standalone cycle median \(LatencySummary.median(before.cycles).fixed(3)) ms before the "
                + "server's batch, \(LatencySummary.median(after.cycles).fixed(3)) ms after (the lower one is the floor)")
            if let fastest = standalone.cycles.min(), floor > 1.5 * fastest {
                result.notes.append("**WARNING** \(subject.title): the standalone cycle median is \((floor / fastest).fixed(1))× its minimum: "
                    + "the floor was measured on a busy machine, so the dispatch gap (a difference) is unreliable")
            }
            if let split = Self.splitGap(jobs, ends: spans.map(\.endRealtime), starts: spans.map(\.startRealtime)) {
                result.notes.append("\(subject.title): where the raw end → start goes (CLOCK_REALTIME, medians): job k's last stamp → "
                    + "finished_at(k) \(split.toFinished.fixed(3)) ms (exit, reap, recording); started_at(k+1) → job k+1's first stamp "
                    + "\(split.fromStarted.fixed(3)) ms (\(subject == .spool ? "opening the gate of the process started ahead, its exec; a plain spawn when none was" : "spawn, exec"))")
            }
            if let warning { result.notes.append(warning) }
            return result
        }
    }

    /// Splits the time between consecutive jobs at the server's timestamps: job k's own end →
    /// finished_at(k), and started_at(k+1) → job k+1's own start (medians, ms). `ends` and
    /// `starts` are the jobs' CLOCK_REALTIME stamps in run order; `jobs` are sorted here by
    /// started_at, which on one slot is the same order.
    static func splitGap(_ jobs: [JobWire], ends: [Int64?], starts: [Int64?]) -> (toFinished: Double, fromStarted: Double)? {
        let ordered = jobs.compactMap { job -> (RFC3339Timestamp, RFC3339Timestamp)? in
            guard let start = job.startedAt.flatMap(RFC3339Timestamp.init), let end = job.finishedAt.flatMap(RFC3339Timestamp.init) else { return nil }
            return (start, end)
        }.sorted { $0.0 < $1.0 }
        guard ordered.count == ends.count, ordered.count == starts.count, ordered.count > 1 else { return nil }
        var toFinished: [Double] = [], fromStarted: [Double] = []
        for k in 0..<(ordered.count - 1) {
            if let end = ends[k] { toFinished.append(Double(ordered[k].1.epochNanoseconds - end) / 1e6) }
            if let start = starts[k + 1] { fromStarted.append(Double(start - ordered[k + 1].0.epochNanoseconds) / 1e6) }
        }
        guard !toFinished.isEmpty, !fromStarted.isEmpty else { return nil }
        return (LatencySummary.median(toFinished), LatencySummary.median(fromStarted))
    }

    /// finished_at(k) → started_at(k+1) from the job JSON (ordered by started_at): the figure the
    /// server's own bookkeeping shows, and its run times; with the fractional digits it carries.
    static func serverReportedGaps(_ jobs: [JobWire]) throws -> (median: Double, runTime: Double, digits: String) {
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
        return (LatencySummary.median(gaps), LatencySummary.median(spans.map { $0.start.milliseconds(to: $0.end) }),
                digits.sorted().map(String.init).joined(separator: "/"))
    }

    /// Scenarios 4 and 4b: one empty job at a time, submit → `succeeded` seen by the client, with
    /// `?wait=` or by polling every 5 ms. Like for like: Spool's warm worker against the pool's
    /// function; Spool's fresh-process `noop` is measured too (4 only, for information). Three
    /// untimed round trips first (connections, first spawn).
    func measureRoundTrip(on subject: BenchSubject, polling: Bool) async throws -> ScenarioResult {
        let scenario: Scenario = polling ? .roundTripPoll : .roundTrip
        let types = try warmTypes(for: scenario, subject)
        return try await withServer(scenario, subject, extraTypes: types) { client, _, _ in
            /// Each round trip, and its submit (POST → 201) alone.
            func roundTrips(_ type: String) async throws -> (whole: [Double], submits: [Double]) {
                let clock = ContinuousClock()
                var samples: [Double] = []
                var submits: [Double] = []
                for index in 0..<(counts.roundTrips + 3) {
                    let start = clock.now
                    let job = try await client.submit(type: type)
                    let submitted = clock.now
                    if job.state != "succeeded" {
                        _ = if polling {
                            try await client.poll(job.id, until: ["succeeded"], within: .seconds(60))
                        } else {
                            try await client.wait(for: job.id, toReach: ["succeeded"], within: .seconds(60))
                        }
                    }
                    if index >= 3 {
                        samples.append(start.duration(to: clock.now).milliseconds)
                        submits.append(start.duration(to: submitted).milliseconds)
                    }
                }
                return (samples, submits)
            }
            let (samples, submits) = try await roundTrips(subject == .spool ? "warm" : "noop")
            let latency = LatencySummary(milliseconds: samples)
            var result = ScenarioResult()
            result[polling ? .pollRoundTripP50 : .roundTripP50] = latency.p50
            result[polling ? .pollRoundTripP99 : .roundTripP99] = latency.p99
            result.notes.append("\(subject.title): \(latency.count) round trips, min \((samples.min() ?? .nan).fixed(2)) ms, max \(latency.max.fixed(2)) ms; "
                + "of which the submit (POST → 201) p50 \(LatencySummary.median(submits).fixed(3)) ms")
            if subject == .spool, polling, let sync = assets.sync {
                // Each submit here follows a 5-ms sleep: its commit's sync is one after a pause.
                result.notes.append("Spool: each submit follows a \(SyncProbe.pause.milliseconds.fixed(0))-ms sleep, and its commit's "
                    + "fdatasync is one after a pause: \(sync.afterPause.fixed(3)) ms on this disk (\(sync.backToBack.fixed(3)) ms back to back)")
            }
            if subject == .spool, !polling {
                let process = LatencySummary(milliseconds: try await roundTrips("noop").whole)
                result[.roundTripProcessP50] = process.p50
                result.notes.append("Spool: `noop` (a fresh `/bin/true` per job) p50 \(process.p50.fixed(3)) ms, p99 \(process.p99.fixed(3)) ms")
            }
            return result
        }
    }
}
