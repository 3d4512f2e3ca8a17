import Foundation

/// Which server a measurement belongs to.
enum BenchSubject: String, Sendable, CaseIterable {
    /// The `spool` binary under test.
    case spool
    /// The FastAPI + asyncio.Queue + ProcessPoolExecutor baseline.
    case baseline

    var title: String { self == .spool ? "Spool" : "Baseline" }
}

/// The measured scenarios, in the order they run. Each one starts a fresh server per subject.
enum Scenario: String, Sendable, CaseIterable {
    /// 1. Durable submit throughput and latency, 8 keep-alive clients, slot held.
    case submit
    /// 1b. The same with `--sqlite-synchronous normal` (Spool only, for information).
    case submitRelaxed
    /// 1c. Submits while the jobs run (slot free; a warm worker for Spool, the pool's function for the baseline).
    case submitRunning
    /// 1d. The submits of 1 to a bare Hummingbird server (`spool bench-floor-server`): the HTTP framework's own cost.
    case httpFloor
    /// 2. Status GET latency while a CPU-bound job runs.
    case status
    /// 3. Gap between one job finishing and the next starting, from the jobs' own clocks.
    case dispatchGap
    /// 4. Submit → succeeded for an empty job, one at a time.
    case roundTrip
    /// 4b. The same, seen by polling every 5 ms.
    case roundTripPoll
    /// 5. RSS idle and with a deep queue; submit p99 at an empty and a deep queue.
    case memory
    /// 6. Dispatch gap with a warm worker, from the worker's own clock.
    case warmGap
    /// 6b. The same with `--sqlite-synchronous normal` (Spool only): how much of it is fsync.
    case warmGapRelaxed
    /// 7. Tiny jobs through a warm worker vs one fresh process per job.
    case warmThroughput
    /// 8. The pause when a warm worker is replaced (`max_jobs_per_worker`), Spool only.
    case workerRecycle

    var subjects: [BenchSubject] {
        switch self {
        case .submitRelaxed, .httpFloor, .warmGapRelaxed, .workerRecycle: return [.spool]
        default: return [.spool, .baseline]
        }
    }

    func title(_ counts: BenchCounts) -> String {
        switch self {
        case .submit:
            return "1. Durable submit: \(counts.submits.grouped) `noop` submits from \(counts.submitClients) keep-alive clients, slot held by a `hold` job"
        case .submitRunning:
            return "1c. Submits while the jobs run: \(counts.runningSubmits.grouped) submits of an empty job from \(counts.submitClients) keep-alive clients, the slot free (Spool: `warm`, a warm worker; baseline: `noop` in its pool)"
        case .httpFloor:
            return "1d. HTTP floor: \(counts.submits.grouped) of the same submits from \(counts.submitClients) keep-alive clients to `spool bench-floor-server`, "
                + "Hummingbird with nothing of Spool's (it reads the body and answers 201 with Spool's own answer for a `noop` job: no parsing, store or scheduler)"
        case .submitRelaxed:
            return "1b. Submit with `--sqlite-synchronous normal` (Spool only; informational, not durable across power loss)"
        case .status:
            return "2. Status `GET /v1/jobs/{id}`: \(counts.statusGets.grouped) GETs from \(counts.statusClients) clients while a CPU-bound `busy` job runs"
        case .dispatchGap:
            return "3. Dispatch gap, one process per job: \(counts.gapJobs) `stamp` jobs of \(BenchCounts.jobMilliseconds) ms queued at once on a 1-slot server, gap from the jobs' own clocks"
        case .roundTrip:
            return "4. Submit → done: \(counts.roundTrips) sequential empty jobs (POST, then `GET ?wait=` until succeeded; Spool: `warm`, baseline: `noop`)"
        case .roundTripPoll:
            return "4b. Submit → done by polling: \(counts.roundTrips) sequential empty jobs (POST, then a GET every 5 ms until succeeded)"
        case .memory:
            return "5. Memory and deep queue: \(counts.queued.grouped) queued jobs behind a held slot"
        case .warmGap:
            return "6. Dispatch gap, warm worker: \(counts.warmJobs.grouped) jobs of \(BenchCounts.jobMilliseconds) ms queued at once for one warm worker (`--sqlite-synchronous full`), gap from the worker's own clock"
        case .warmGapRelaxed:
            return "6b. The same with `--sqlite-synchronous normal` (Spool only; how much of the gap is fsync)"
        case .warmThroughput:
            return "7. Throughput: \(counts.throughputJobs.grouped) tiny jobs queued at once, warm worker vs a fresh process per job"
        case .workerRecycle:
            return "8. Worker replacement: `max_jobs_per_worker` \(counts.maxJobsPerWorker), pause where the worker's pid changes (Spool only)"
        }
    }

    var metrics: [Metric] {
        switch self {
        case .submit: return [.submitRate, .submitP50, .submitP99, .submitServerCPU]
        case .submitRelaxed: return [.relaxedSubmitRate, .relaxedSubmitP50, .relaxedSubmitP99]
        case .submitRunning: return [.runningSubmitRate, .runningSubmitP50, .runningSubmitP99]
        case .httpFloor: return [.floorSubmitRate, .floorSubmitP99, .floorSubmitCPU]
        case .status: return [.statusP50, .statusP99, .statusJobCPU]
        case .dispatchGap:
            return [.gapMedian, .gapP90, .gapMax, .gapCycle, .gapStandaloneCycle, .gapEndToStart, .gapStandaloneEndToStart,
                    .gapJobRunTime, .gapServerReported]
        case .roundTrip: return [.roundTripP50, .roundTripP99, .roundTripProcessP50]
        case .roundTripPoll: return [.pollRoundTripP50, .pollRoundTripP99]
        case .memory: return [.rssIdle, .rssQueued, .submitP99Empty, .submitP99Deep, .submitP99Growth, .fillRate, .statusDeepP50, .statusDeepP99]
        case .warmGap: return [.warmGapMedian, .warmGapP90, .warmGapMax, .warmJobTime, .warmServerReported]
        case .warmGapRelaxed: return [.warmGapRelaxedMedian, .warmGapRelaxedP90, .warmGapRelaxedMax]
        case .warmThroughput: return [.workerJobsPerSecond, .processJobsPerSecond, .workerSpeedup]
        case .workerRecycle:
            return [.recyclePauseMedian, .recyclePauseMax, .recycleSlowPauseMedian, .recycleSlowPauseMax, .recycleSteadyGap,
                    .recycleFinishDelay, .recycleSlowFinishDelay]
        }
    }
}

/// What one scenario measured on one subject.
struct ScenarioResult: Sendable {
    var values: [Metric: Double] = [:]
    /// Observations that qualify the numbers (queue depth seen, timestamp precision, …).
    var notes: [String] = []
    /// Other processes used a noticeable share of the CPU while this ran (see `BackgroundLoad`).
    var disturbed = false

    subscript(metric: Metric) -> Double? {
        get { values[metric] }
        set { values[metric] = newValue }
    }
}

extension Double {
    /// 3.14159.fixed(2) → "3.14".
    func fixed(_ decimals: Int) -> String { String(format: "%.\(decimals)f", self) }
}

extension Int {
    /// 20000 → "20,000".
    var grouped: String {
        let digits = String(abs(self))
        var out = ""
        for (index, character) in digits.enumerated() {
            if index > 0, (digits.count - index) % 3 == 0 { out.append(",") }
            out.append(character)
        }
        return self < 0 ? "-" + out : out
    }
}
