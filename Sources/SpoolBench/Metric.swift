import Foundation

/// One reported number. Latencies are milliseconds; memory is MB (10^6 bytes, from VmRSS).
enum Metric: String, Sendable, CaseIterable {
    case submitRate, submitP50, submitP99, submitServerCPU
    case relaxedSubmitRate, relaxedSubmitP50, relaxedSubmitP99
    case runningSubmitRate, runningSubmitP50, runningSubmitP99
    case floorSubmitRate, floorSubmitP99, floorSubmitCPU
    case statusP50, statusP99, statusJobCPU
    case gapMedian, gapP90, gapMax, gapCycle, gapStandaloneCycle, gapEndToStart, gapStandaloneEndToStart, gapJobRunTime, gapServerReported
    case roundTripP50, roundTripP99, roundTripProcessP50
    case pollRoundTripP50, pollRoundTripP99
    case rssIdle, rssQueued, submitP99Empty, submitP99Deep, submitP99Growth, fillRate, statusDeepP50, statusDeepP99
    case warmGapMedian, warmGapP90, warmGapMax, warmJobTime, warmServerReported
    case warmGapRelaxedMedian, warmGapRelaxedP90, warmGapRelaxedMax
    case workerJobsPerSecond, processJobsPerSecond, workerSpeedup
    case recyclePauseMedian, recyclePauseMax, recycleSlowPauseMedian, recycleSlowPauseMax, recycleSteadyGap
    case recycleFinishDelay, recycleSlowFinishDelay

    func label(_ counts: BenchCounts) -> String {
        switch self {
        case .submitRate, .relaxedSubmitRate: return "Submits/s"
        case .submitP50, .relaxedSubmitP50: return "Submit latency p50"
        case .submitP99, .relaxedSubmitP99: return "Submit latency p99"
        case .submitServerCPU: return "Server CPU per submit"
        case .runningSubmitRate: return "Submits/s while the jobs run"
        case .runningSubmitP50: return "Submit latency p50 while the jobs run"
        case .runningSubmitP99: return "Submit latency p99 while the jobs run"
        case .floorSubmitRate: return "Bare Hummingbird: POSTs/s"
        case .floorSubmitP99: return "Bare Hummingbird: POST latency p99"
        case .floorSubmitCPU: return "Bare Hummingbird: server CPU per POST"
        case .statusP50: return "GET latency p50"
        case .statusP99: return "GET latency p99"
        case .statusJobCPU: return "CPU used by the running job during the GETs"
        case .gapMedian: return "Dispatch gap median: slot cycle − standalone cycle (medians)"
        case .gapP90: return "Dispatch gap p90 (each cycle − standalone median)"
        case .gapMax: return "Dispatch gap max (each cycle − standalone median)"
        case .gapCycle: return "Slot cycle median: job k's first stamp → job k+1's first stamp"
        case .gapStandaloneCycle: return "Standalone cycle median: the same binary, posix_spawn + waitpid loop, no server"
        case .gapEndToStart: return "Raw end → start median: job k's last stamp → job k+1's first (exit, server, spawn, exec)"
        case .gapStandaloneEndToStart: return "Standalone end → start median (exit, reap, spawn, exec only)"
        case .gapJobRunTime: return "The job's own run time median (first → last stamp)"
        case .gapServerReported: return "Server-reported gap median: finished_at(k) → started_at(k+1)"
        case .roundTripP50: return "Submit → succeeded seen, `?wait=`, p50"
        case .roundTripP99: return "Submit → succeeded seen, `?wait=`, p99"
        case .roundTripProcessP50: return "The same for a fresh `/bin/true` process per job (`noop`), p50"
        case .pollRoundTripP50: return "Submit → succeeded seen, GET every 5 ms, p50"
        case .pollRoundTripP99: return "Submit → succeeded seen, GET every 5 ms, p99"
        case .rssIdle: return "Server RSS idle"
        case .rssQueued: return "Server RSS with \(counts.queued.grouped) queued"
        case .submitP99Empty: return "Submit p99, empty queue (\(counts.probeSubmits.grouped) submits)"
        case .submitP99Deep: return "Submit p99, \(counts.queued.grouped) queued (\(counts.probeSubmits.grouped) submits)"
        case .submitP99Growth: return "Submit p99 deep ÷ empty"
        case .fillRate: return "Submits/s while filling the queue"
        case .statusDeepP50: return "Status GET p50 of a job halfway down \(counts.queued.grouped) queued (\(counts.probeSubmits.grouped) GETs)"
        case .statusDeepP99: return "Status GET p99 of a job halfway down \(counts.queued.grouped) queued"
        case .warmGapMedian, .warmGapRelaxedMedian: return "Gap median: sent succeeded(k) → received job(k+1)"
        case .warmGapP90, .warmGapRelaxedP90: return "Gap p90"
        case .warmGapMax, .warmGapRelaxedMax: return "Gap max"
        case .warmJobTime: return "Job time in the worker median (received → sent succeeded)"
        case .warmServerReported: return "Server-reported gap median: finished_at(k) → started_at(k+1)"
        case .workerJobsPerSecond: return "Jobs/s, warm (Spool: warm worker; baseline: function in its pool worker)"
        case .processJobsPerSecond: return "Jobs/s, a fresh `/bin/true` process per job (baseline: subprocess.run in its pool worker)"
        case .workerSpeedup: return "Warm ÷ fresh-process jobs/s"
        case .recyclePauseMedian: return "Replacement pause median, setup 0 s (sent succeeded(k) → new pid received job(k+1))"
        case .recyclePauseMax: return "Replacement pause max, setup 0 s"
        case .recycleSlowPauseMedian: return "Replacement pause median, setup \(counts.slowSetupSeconds.fixed(1)) s"
        case .recycleSlowPauseMax: return "Replacement pause max, setup \(counts.slowSetupSeconds.fixed(1)) s"
        case .recycleSteadyGap: return "Gap median where the pid does not change (both runs)"
        case .recycleFinishDelay: return "Setup 0 s: finished_at(k) − worker's succeeded(k), median at replacement points"
        case .recycleSlowFinishDelay: return "Setup \(counts.slowSetupSeconds.fixed(1)) s: finished_at(k) − worker's succeeded(k), median at replacement points"
        }
    }

    var unit: String {
        switch self {
        case .submitRate, .relaxedSubmitRate, .runningSubmitRate, .floorSubmitRate, .fillRate, .workerJobsPerSecond, .processJobsPerSecond:
            return "/s"
        case .submitServerCPU, .floorSubmitCPU: return "µs"
        case .statusJobCPU: return "% of a core"
        case .rssIdle, .rssQueued: return "MB"
        case .submitP99Growth, .workerSpeedup: return "×"
        default: return "ms"
        }
    }

    var higherIsBetter: Bool {
        switch self {
        case .submitRate, .relaxedSubmitRate, .runningSubmitRate, .floorSubmitRate, .fillRate, .statusJobCPU, .workerJobsPerSecond,
             .processJobsPerSecond, .workerSpeedup:
            return true
        default: return false
        }
    }

    /// The value as shown in a table cell.
    func format(_ value: Double?) -> String {
        guard let value, value.isFinite else { return "—" }
        switch unit {
        case "/s": return Int(value.rounded()).grouped + " /s"
        case "ms": return String(format: value < 10 ? "%.3f ms" : "%.1f ms", value)
        case "µs": return String(format: "%.0f µs", value)
        case "MB": return String(format: "%.1f MB", value)
        case "×": return String(format: "%.2f×", value)
        default: return String(format: "%.0f", value) + " " + unit
        }
    }
}

/// A stated performance target: a fixed bound, or a bound relative to the baseline measured in
/// the same run. Targets are fixed here and never adjusted to fit a result.
struct Goal: Sendable {
    enum Bound: Sendable {
        case absolute(Double)
        /// This many times the baseline's figure from the same run.
        case baseline(Double)
    }

    let metric: Metric
    let bound: Bound
    let atLeast: Bool
    let text: String

    static let all: [Goal] = [
        // Issue 12: as fast as the process pool on every latency while staying durable.
        Goal(metric: .runningSubmitRate, bound: .baseline(1), atLeast: true, text: "submits/s while the jobs run ≥ 1.0× the pool's"),
        Goal(metric: .submitRate, bound: .absolute(5_000), atLeast: true, text: "≥ 5,000 durable submits/s (no job running)"),
        Goal(metric: .submitServerCPU, bound: .absolute(150), atLeast: false, text: "server CPU per submit ≤ 150 µs"),
        Goal(metric: .submitP99, bound: .baseline(1), atLeast: false, text: "submit p99 ≤ the pool's"),
        Goal(metric: .statusP99, bound: .baseline(1), atLeast: false, text: "status p99 while a CPU job runs ≤ the pool's"),
        Goal(metric: .warmGapMedian, bound: .baseline(1), atLeast: false, text: "dispatch gap median, warm worker ≤ the pool's"),
        Goal(metric: .gapMedian, bound: .absolute(1), atLeast: false, text: "dispatch gap median, process per job ≤ 1.0 ms"),
        Goal(metric: .roundTripP50, bound: .baseline(1), atLeast: false, text: "submit → done seen with `?wait=` ≤ the pool's"),
        Goal(metric: .pollRoundTripP50, bound: .baseline(1), atLeast: false, text: "submit → done seen by polling ≤ the pool's"),
        Goal(metric: .rssIdle, bound: .absolute(35), atLeast: false, text: "idle RSS ≤ 35 MB"),
        Goal(metric: .submitP99Growth, bound: .absolute(1.5), atLeast: false, text: "submit p99 at 100,000 queued ≤ 1.5× of empty"),
        // Earlier targets, kept.
        Goal(metric: .statusP99, bound: .absolute(3), atLeast: false, text: "status p99 ≤ 3 ms while a job runs"),
        Goal(metric: .warmGapMedian, bound: .absolute(0.2), atLeast: false, text: "warm-worker dispatch gap median ≤ 0.2 ms"),
        Goal(metric: .rssQueued, bound: .absolute(35), atLeast: false, text: "RSS ≤ 35 MB with 100,000 queued"),
    ]

    static func goals(for metric: Metric) -> [Goal] { all.filter { $0.metric == metric } }

    /// "PASS" / "MISS"; a value that was not measured (or a baseline that was not) is a MISS, never a pass.
    func verdict(_ value: Double?, baseline: Double?) -> String {
        guard let value, value.isFinite else { return "MISS (not measured)" }
        let limit: Double
        switch bound {
        case .absolute(let fixed): limit = fixed
        case .baseline(let factor):
            guard let baseline, baseline.isFinite else { return "MISS (no baseline in this run)" }
            limit = baseline * factor
        }
        return (atLeast ? value >= limit : value <= limit) ? "PASS" : "MISS"
    }
}
