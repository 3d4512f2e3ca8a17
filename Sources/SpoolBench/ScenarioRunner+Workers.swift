import Foundation

extension ScenarioRunner {
    /// Scenario 6 (and 6b): `warmJobs` jobs queued behind a `hold` job for one warm worker that
    /// was started (and used) before. The bench worker (`Benchmarks/workers/noop_worker.py`)
    /// stamps when each job command arrives and when it sends `succeeded`;
    /// gap = received(k+1) − sent(k), all on the worker's CLOCK_MONOTONIC.
    ///
    /// The baseline's counterpart of a warm worker is its pool worker: `stampfn` jobs stamp
    /// function entry and return in it (gap = entry(k+1) − return(k)).
    /// Each measured job works `BenchCounts.jobMilliseconds` (the worker or the pool function sleeps).
    static let workInput = #"{"sleep_s":\#(Double(BenchCounts.jobMilliseconds) / 1000)}"#

    func measureWarmGap(on subject: BenchSubject, relaxed: Bool) async throws -> ScenarioResult {
        let scenario: Scenario = relaxed ? .warmGapRelaxed : .warmGap
        let total = counts.warmJobs
        var result = ScenarioResult()
        let gaps: [Double]
        switch subject {
        case .spool:
            let script = try assets.requireWorker()
            let stamps = scenarioDirectory(scenario, subject) + "/worker-stamps.txt"
            let types = try SpoolServer.typesJSON(["warm": SpoolServer.workerType(python: python, script: script, stamps: stamps)])
            let arguments = ["--sqlite-synchronous", relaxed ? "normal" : "full"]
            (gaps, result) = try await withServer(scenario, subject, spoolArguments: arguments, extraTypes: types) { client, _, _ in
                try await warmUp(client, type: "warm", count: 5)
                let (ids, warning) = try await queueBehindHold(client, type: "warm", inputJSON: Self.workInput, total: total, subject: subject)
                let jobs = try await drainAndFetch(client, ids, within: .seconds(300))
                let batch = Set(ids)
                let records = try StampFile.workerStamps(at: stamps).filter { batch.contains($0.job) }.sorted { $0.received < $1.received }
                guard records.count == total else { throw BenchError("\(records.count) worker stamps for the batch in \(stamps), expected \(total)") }
                let gaps = zip(records, records.dropFirst()).map { Double($1.received - $0.sent) / 1e6 }
                var result = ScenarioResult()
                result[relaxed ? .warmGapRelaxedMedian : .warmGapMedian] = LatencySummary.median(gaps)
                let pids = Set(records.map(\.pid))
                if !relaxed {
                    result[.warmJobTime] = LatencySummary.median(records.map { Double($0.sent - $0.received) / 1e6 })
                    result[.warmServerReported] = try Self.serverReportedGaps(jobs).median
                }
                let byID = Dictionary(uniqueKeysWithValues: records.map { ($0.job, $0) })
                let ordered = jobs.sorted { ($0.startedAt.flatMap(RFC3339Timestamp.init)?.epochNanoseconds ?? 0) < ($1.startedAt.flatMap(RFC3339Timestamp.init)?.epochNanoseconds ?? 0) }
                if let split = Self.splitGap(ordered, ends: ordered.map { byID[$0.id]?.sentRealtime }, starts: ordered.map { byID[$0.id]?.receivedRealtime }) {
                    result.notes.append("\(subject.title)\(relaxed ? " (normal)" : ""): where the gap goes (CLOCK_REALTIME, medians): worker sent "
                        + "succeeded(k) → finished_at(k) \(split.toFinished.fixed(3)) ms; started_at(k+1) → worker received job(k+1) "
                        + "\(split.fromStarted.fixed(3)) ms (the command write; the job's files were made ahead, the commit runs meanwhile)")
                }
                result.notes.append("\(subject.title)\(relaxed ? " (normal)" : ""): \(gaps.count) gaps, min \((gaps.min() ?? .nan).fixed(3)) ms, "
                    + "mean \((gaps.reduce(0, +) / Double(max(1, gaps.count))).fixed(3)) ms; \(pids.count) worker process(es) ran the batch")
                if let warning { result.notes.append(warning) }
                return (gaps, result)
            }
        case .baseline:
            let directory = scenarioDirectory(scenario, subject)
            (gaps, result) = try await withServer(scenario, subject) { client, _, _ in
                try await warmUp(client, type: "stampfn", count: 5)
                try await warmUp(client, type: "stampfn", inputJSON: #"{"flush":"\#(directory)/stamps-warmup.txt"}"#, count: 1)
                let (ids, warning) = try await queueBehindHold(client, type: "stampfn", inputJSON: Self.workInput, total: total, subject: subject)
                _ = try await drainAndFetch(client, ids, within: .seconds(300))
                let file = directory + "/stamps.txt"
                try await warmUp(client, type: "stampfn", inputJSON: #"{"flush":"\#(file)"}"#, count: 1)
                let spans = try StampFile.functionStamps(at: file)
                guard spans.count == total else { throw BenchError("\(spans.count) stampfn records in \(file), expected \(total)") }
                let sequence = JobSequence(spans: spans.map { ($0.pid, $0.start, $0.end) })
                var result = ScenarioResult()
                result[.warmGapMedian] = LatencySummary.median(sequence.gaps)
                result[.warmJobTime] = LatencySummary.median(sequence.runTimes)
                result.notes.append("\(subject.title): \(sequence.gaps.count) gaps between stampfn calls in the pool worker, "
                    + "min \((sequence.gaps.min() ?? .nan).fixed(3)) ms")
                if let warning { result.notes.append(warning) }
                return (sequence.gaps, result)
            }
        }
        let sorted = gaps.sorted()
        result[relaxed ? .warmGapRelaxedP90 : .warmGapP90] = LatencySummary.percentile(0.90, ofSorted: sorted)
        result[relaxed ? .warmGapRelaxedMax : .warmGapMax] = sorted.last
        return result
    }

    /// Scenario 7: `throughputJobs` tiny jobs queued behind a `hold` job, first through a warm
    /// worker, then as fresh `/bin/true` processes; jobs/s = jobs ÷ (last finished_at − first
    /// started_at) from the server's job JSON. The baseline runs `noop` (a function in its pool
    /// worker) and `noop_process` (`subprocess.run(["/bin/true"])` in the pool worker).
    func measureWarmThroughput(on subject: BenchSubject) async throws -> ScenarioResult {
        let total = counts.throughputJobs
        var types = "{}"
        if subject == .spool {
            let script = try assets.requireWorker()
            let stamps = scenarioDirectory(.warmThroughput, subject) + "/worker-stamps.txt"
            types = try SpoolServer.typesJSON(["warm": SpoolServer.workerType(python: python, script: script, stamps: stamps)])
        }
        let (warmType, processType) = subject == .spool ? ("warm", "noop") : ("noop", "noop_process")
        return try await withServer(.warmThroughput, subject, extraTypes: types) { client, _, _ in
            func rate(_ type: String) async throws -> (perSecond: Double, note: String?) {
                try await warmUp(client, type: type, count: 5)
                let (ids, warning) = try await queueBehindHold(client, type: type, total: total, subject: subject)
                let jobs = try await drainAndFetch(client, ids, within: .seconds(600))
                let starts = jobs.compactMap { $0.startedAt.flatMap(RFC3339Timestamp.init) }
                let ends = jobs.compactMap { $0.finishedAt.flatMap(RFC3339Timestamp.init) }
                guard starts.count == total, ends.count == total, let first = starts.min(), let last = ends.max() else {
                    throw BenchError("some \(type) jobs have no parseable started_at/finished_at")
                }
                let seconds = first.milliseconds(to: last) / 1000
                return (Double(total) / seconds, warning.map { "\($0) (\(type))" })
            }
            let warm = try await rate(warmType)
            let fresh = try await rate(processType)
            var result = ScenarioResult()
            result[.workerJobsPerSecond] = warm.perSecond
            result[.processJobsPerSecond] = fresh.perSecond
            result[.workerSpeedup] = warm.perSecond / fresh.perSecond
            result.notes.append("\(subject.title): `\(warmType)` \((1000 / warm.perSecond).fixed(3)) ms per job, "
                + "`\(processType)` \((1000 / fresh.perSecond).fixed(3)) ms per job (first started_at → last finished_at ÷ \(total.grouped))")
            result.notes += [warm.note, fresh.note].compactMap { $0 }
            return result
        }
    }

    /// Scenario 8: jobs through a worker type with `max_jobs_per_worker`, once with a worker whose
    /// setup sleeps 0 s and once with `slowSetupSeconds`; each on a fresh server. The pause at a
    /// replacement is the gap (sent succeeded(k) → received job(k+1), from the workers' stamps)
    /// where the pid changes. Also: how late the server records job k as finished at those points
    /// (finished_at(k) − the worker's realtime stamp of sending succeeded(k)).
    func measureWorkerRecycle(on subject: BenchSubject) async throws -> ScenarioResult {
        let script = try assets.requireWorker()
        var result = ScenarioResult()
        var steady: [Double] = []
        let runs: [(setup: Double, jobs: Int, median: Metric, max: Metric, finishDelay: Metric)] = [
            (0, counts.recycleJobs, .recyclePauseMedian, .recyclePauseMax, .recycleFinishDelay),
            (counts.slowSetupSeconds, counts.recycleSlowJobs, .recycleSlowPauseMedian, .recycleSlowPauseMax, .recycleSlowFinishDelay),
        ]
        for run in runs {
            let variant = "setup\(run.setup.fixed(1))"
            let stamps = scenarioDirectory(.workerRecycle, subject, variant: variant) + "/worker-stamps.txt"
            let type = SpoolServer.workerType(python: python, script: script, stamps: stamps, setupSeconds: run.setup,
                                              maxJobsPerWorker: counts.maxJobsPerWorker)
            let types = try SpoolServer.typesJSON(["recycled": type])
            let measured = try await withServer(.workerRecycle, subject, extraTypes: types, variant: variant) { client, _, _ in
                try await warmUp(client, type: "recycled", count: 1)
                let (ids, warning) = try await queueBehindHold(client, type: "recycled", total: run.jobs, subject: subject)
                let jobs = try await drainAndFetch(client, ids, within: .seconds(600))
                let batch = Set(ids)
                let lines = try String(contentsOfFile: stamps, encoding: .utf8).split(separator: "\n")
                var sentRealtime: [String: Int64] = [:]
                for line in lines {
                    let fields = line.split(separator: " ")
                    if fields.count >= 6, let real = Int64(fields[5]) { sentRealtime[String(fields[1])] = real }
                }
                let records = try StampFile.workerStamps(at: stamps).filter { batch.contains($0.job) }.sorted { $0.received < $1.received }
                guard records.count == run.jobs else { throw BenchError("\(records.count) worker stamps for the batch, expected \(run.jobs)") }
                var pauses: [Double] = [], others: [Double] = [], delays: [Double] = [], steadyDelays: [Double] = []
                let finished = Dictionary(uniqueKeysWithValues: jobs.map { ($0.id, $0.finishedAt.flatMap(RFC3339Timestamp.init)) })
                for (previous, next) in zip(records, records.dropFirst()) {
                    let gap = Double(next.received - previous.sent) / 1e6
                    var delay: Double?
                    if let end = finished[previous.job] ?? nil, let sent = sentRealtime[previous.job] {
                        delay = Double((end.seconds * 1_000_000_000 + end.nanoseconds) - sent) / 1e6
                    }
                    if previous.pid != next.pid {
                        pauses.append(gap)
                        if let delay { delays.append(delay) }
                    } else {
                        others.append(gap)
                        if let delay { steadyDelays.append(delay) }
                    }
                }
                return (pauses, others, delays, steadyDelays, Set(records.map(\.pid)).count, warning)
            }
            let (pauses, others, delays, steadyDelays, workers, warning) = measured
            steady += others
            result[run.median] = pauses.isEmpty ? nil : LatencySummary.median(pauses)
            result[run.max] = pauses.max()
            result[run.finishDelay] = delays.isEmpty ? nil : LatencySummary.median(delays)
            result.notes.append("Spool, setup \(run.setup.fixed(1)) s: \(run.jobs) jobs ran on \(workers) worker processes; "
                + "\(pauses.count) replacement points, pauses min \((pauses.min() ?? .nan).fixed(1)) ms; "
                + "gap where the pid stays: median \(LatencySummary.median(others).fixed(3)) ms; finished_at − worker's succeeded: "
                + "median \(LatencySummary.median(delays).fixed(1)) ms at replacement points, \(LatencySummary.median(steadyDelays).fixed(3)) ms elsewhere")
            if let warning { result.notes.append(warning) }
        }
        result[.recycleSteadyGap] = LatencySummary.median(steady)
        return result
    }
}
