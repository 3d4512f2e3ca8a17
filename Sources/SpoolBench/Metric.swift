import Foundation

/// One reported number. Latencies are milliseconds; memory is MB (10^6 bytes, from VmRSS).
enum Metric: String, Sendable, CaseIterable {
    case submitRate, submitP50, submitP99, submitServerCPU
    case relaxedSubmitRate, relaxedSubmitP50, relaxedSubmitP99
    case statusP50, statusP99, statusJobCPU
    case gapMedian, gapP90, gapMax, gapCycle, gapStandaloneCycle, gapEndToStart, gapStandaloneEndToStart, gapJobRunTime, gapServerReported
    case roundTripP50, roundTripP99
    case rssIdle, rssQueued, submitP99Empty, submitP99Deep, submitP99Growth, fillRate
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
        case .roundTripP50: return "Submit → succeeded p50"
        case .roundTripP99: return "Submit → succeeded p99"
        case .rssIdle: return "Server RSS idle"
        case .rssQueued: return "Server RSS with \(counts.queued.grouped) queued"
        case .submitP99Empty: return "Submit p99, empty queue (\(counts.probeSubmits.grouped) submits)"
        case .submitP99Deep: return "Submit p99, \(counts.queued.grouped) queued (\(counts.probeSubmits.grouped) submits)"
        case .submitP99Growth: return "Submit p99 deep ÷ empty"
        case .fillRate: return "Submits/s while filling the queue"
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
        case .submitRate, .relaxedSubmitRate, .fillRate, .workerJobsPerSecond, .processJobsPerSecond: return "/s"
        case .submitServerCPU: return "µs"
        case .statusJobCPU: return "% of a core"
        case .rssIdle, .rssQueued: return "MB"
        case .submitP99Growth, .workerSpeedup: return "×"
        default: return "ms"
        }
    }

    var higherIsBetter: Bool {
        switch self {
        case .submitRate, .relaxedSubmitRate, .fillRate, .statusJobCPU, .workerJobsPerSecond, .processJobsPerSecond, .workerSpeedup:
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

/// A stated performance target. Targets are fixed here and never adjusted to fit a result.
struct Goal: Sendable {
    let metric: Metric
    let bound: Double
    let atLeast: Bool
    let text: String

    static let all: [Goal] = [
        Goal(metric: .submitRate, bound: 5_000, atLeast: true, text: "≥ 5,000 durable submits/s"),
        Goal(metric: .statusP99, bound: 3, atLeast: false, text: "status p99 ≤ 3 ms while a job runs"),
        Goal(metric: .gapMedian, bound: 1, atLeast: false, text: "dispatch gap median ≤ 1 ms"),
        Goal(metric: .warmGapMedian, bound: 0.2, atLeast: false, text: "warm-worker dispatch gap median ≤ 0.2 ms"),
        Goal(metric: .rssQueued, bound: 35, atLeast: false, text: "RSS ≤ 35 MB with 100,000 queued"),
        Goal(metric: .submitP99Growth, bound: 1.5, atLeast: false, text: "submit p99 at 100,000 queued within 1.5× of empty"),
    ]

    static func goal(for metric: Metric) -> Goal? { all.first { $0.metric == metric } }

    func isMet(by value: Double) -> Bool { atLeast ? value >= bound : value <= bound }

    /// "PASS" / "MISS"; a value that was not measured is a MISS, never a pass.
    func verdict(_ value: Double?) -> String {
        guard let value, value.isFinite else { return "MISS (not measured)" }
        return isMet(by: value) ? "PASS" : "MISS"
    }
}
