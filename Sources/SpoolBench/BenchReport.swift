import Foundation

/// Renders one run as Markdown: the command and machine, the targets with PASS/MISS, then one
/// table per scenario with Spool, the baseline and their ratio, and the notes that qualify them.
struct BenchReport: Sendable {
    let options: BenchOptions
    let counts: BenchCounts
    let machine: MachineInfo
    let command: String
    let probe: BaselineServer.Probe
    let assets: BenchAssets
    let results: BenchResults
    let elapsed: Duration
    let runDirectory: String
    /// /proc/loadavg (1, 5, 15 min) before and after the run.
    let loadAverages: (start: String, end: String)

    func markdown() -> String {
        var out: [String] = []
        out.append("# Spool benchmark")
        out.append("")
        out.append("Command: `\(command)`")
        out.append("")
        out.append("- Date: \(machine.date); run took \((elapsed.milliseconds / 1000).fixed(0)) s; mode: "
            + (options.quick ? "**quick** (reduced counts: a smoke run, not a measurement of the targets)" : "full"))
        out.append("- Machine: nproc \(machine.processors), `uname -r` \(machine.kernel), \(machine.cpuModel), \(machine.memory) RAM; "
            + "load average \(loadAverages.start) before the run, \(loadAverages.end) after (the benchmark's own load included)")
        out.append("- Spool: `\(options.spoolBinary)` (\(binarySize)); scratch and server logs under `\(runDirectory)`; "
            + "fdatasync of a 4 KiB append there: " + (assets.sync.map {
                "\($0.backToBack.fixed(3)) ms back to back (median of 100), \($0.afterPause.fixed(3)) ms after a "
                    + "\(SyncProbe.pause.milliseconds.fixed(0))-ms pause (median of 40)"
            } ?? "not measured"))
        if let server = probe.server {
            out.append("- Baseline: `\(server.appPath)`: \(server.description), ProcessPoolExecutor(max_workers=1), in-memory, not durable")
        } else {
            out.append("- Baseline: **skipped**: \(probe.skipReason ?? "unavailable")")
        }
        out.append("- Stamp job: " + (assets.stampBinary.map { "`Benchmarks/jobs/stamp.c` built with \(assets.compiler ?? "cc") into `\($0)`" }
            ?? "**unavailable**: \(assets.stampProblem ?? "unknown")")
            + "; bench worker: " + (assets.workerScript.map { "`\($0)` run by `\(probe.pythonExecutable ?? "python3")`" }
            ?? "**unavailable**: \(assets.workerProblem ?? "unknown")"))
        out.append("- Load generator: this process (AsyncHTTPClient, keep-alive HTTP/1.1, closed loop) on the same "
            + "\(machine.processors) cores as the server; every figure, Spool's and the baseline's, includes that contention.")
        out.append("")
        out.append("## Targets")
        out.append("")
        out.append("| Target | Spool | Verdict | Baseline | Spool ÷ baseline |")
        out.append("|---|---|---|---|---|")
        for goal in Goal.all {
            let value = results.value(goal.metric, .spool)
            let baseline = results.value(goal.metric, .baseline)
            let busy = results.disturbed[.spool]?.contains(goal.metric) == true ? " (machine busy: see the scenario's notes)" : ""
            out.append("| \(goal.text) | \(goal.metric.format(value)) | **\(goal.verdict(value, baseline: baseline))**\(busy) | "
                + "\(goal.metric.format(baseline)) | \(ratio(value, baseline)) |")
        }
        if options.quick {
            out.append("")
            out.append("Quick run: \(counts.submits.grouped) submits and \(counts.queued.grouped) queued instead of "
                + "\(BenchCounts.full.submits.grouped) and \(BenchCounts.full.queued.grouped); only a full run measures the targets as stated.")
        }
        for scenario in Scenario.allCases {
            out.append("")
            out += section(scenario)
        }
        out.append("")
        out += method()
        return out.joined(separator: "\n") + "\n"
    }

    /// One line per target for the end of the progress output.
    func goalLines() -> [String] {
        Goal.all.map { goal in
            let value = results.value(goal.metric, .spool)
            let busy = results.disturbed[.spool]?.contains(goal.metric) == true ? " (machine busy)" : ""
            let verdict = goal.verdict(value, baseline: results.value(goal.metric, .baseline))
            return "\(verdict): \(goal.text): measured \(goal.metric.format(value))\(busy)"
        }
    }

    private func section(_ scenario: Scenario) -> [String] {
        var out = ["## \(scenario.title(counts))", ""]
        let withBaseline = scenario.subjects.contains(.baseline)
        if withBaseline {
            out.append("| Metric | Spool | Baseline | Spool ÷ baseline | Target |")
            out.append("|---|---|---|---|---|")
        } else {
            out.append("| Metric | Spool | Target |")
            out.append("|---|---|---|")
        }
        for metric in scenario.metrics {
            let spool = results.value(metric, .spool)
            let label = metric.label(counts) + (metric.higherIsBetter ? " ↑" : " ↓")
            let goals = Goal.goals(for: metric).map { "\($0.text): **\($0.verdict(spool, baseline: results.value(metric, .baseline)))**" }
            let target = goals.isEmpty ? "—" : goals.joined(separator: "; ")
            if withBaseline {
                let baseline = results.value(metric, .baseline)
                out.append("| \(label) | \(metric.format(spool)) | \(metric.format(baseline)) | \(ratio(spool, baseline)) | \(target) |")
            } else {
                out.append("| \(label) | \(metric.format(spool)) | \(target) |")
            }
        }
        let notes = (results.errors[scenario] ?? []).map { "**Error** \($0)" } + (results.notes[scenario] ?? [])
        if !notes.isEmpty { out.append("") }
        for note in notes {
            out.append("- " + note.replacingOccurrences(of: "\n", with: "\n  "))
        }
        return out
    }

    private func ratio(_ spool: Double?, _ baseline: Double?) -> String {
        guard let spool, let baseline, spool.isFinite, baseline.isFinite, baseline != 0 else { return "—" }
        return (spool / baseline).fixed(2) + "×"
    }

    private var binarySize: String {
        let attributes = try? FileManager.default.attributesOfItem(atPath: options.spoolBinary)
        let bytes = (attributes?[.size] as? NSNumber)?.doubleValue ?? 0
        return (bytes / 1e6).fixed(1) + " MB"
    }

    private func method() -> [String] {
        [
            "## Method",
            "",
            "- ↑ higher is better, ↓ lower is better; \"Spool ÷ baseline\" divides Spool's figure by the baseline's from this same run.",
            "- Every scenario starts a fresh server (own data dir, port 0, one slot) for each subject and stops it afterwards "
                + "(SIGTERM, then SIGKILL after 10 s, then SIGKILL for anything it left behind).",
            "- Latency is measured per request by the client with a monotonic clock, from sending to having read the whole "
                + "response. Percentiles are nearest-rank on the sorted samples; throughput is requests ÷ wall time of the batch.",
            "- Submits are `{\"type\":\"noop\",\"input\":{},\"priority\":0}`; the slot is held by a `hold` job (`/bin/sleep`, "
                + "Python `time.sleep` in the baseline), so the queue grows and no job competes for CPU. Spool answers 201 only "
                + "after the job is committed (SQLite, `synchronous=full` unless noted); the baseline only appends to a dict.",
            "- Submits while the jobs run (1c): the slot is free and every job runs at once — Spool's `warm` type (the bench "
                + "worker, one warm process) against the baseline's `noop` (a function in its pool worker): like for like, the jobs "
                + "themselves cost next to nothing.",
            "- Submit → done (4, 4b), one job at a time: Spool's `warm` job against the baseline's `noop`; 4 waits with "
                + "`GET /v1/jobs/{id}?wait=10` (Spool answers at the next state change), 4b polls with a plain GET every 5 ms.",
            "- Status GETs run while a `busy` job spins a core (a python3 child in Spool, the pool worker in the baseline), "
                + "leaving one core for the server and the load generator.",
            "- Dispatch gap (3): the job is `Benchmarks/jobs/stamp.c`, which appends CLOCK_MONOTONIC first thing in `main` and "
                + "last thing before `_exit`, and sleeps \(BenchCounts.jobMilliseconds) ms in between (a job's work: long enough for "
                + "the slot to look up and prepare its next job meanwhile, as with any real job; issue 12's harness ran 0.2 s jobs). "
                + "\(counts.gapJobs) runs are queued behind a `hold` job, so the slot runs them back to back. "
                + "Slot cycle = first stamp of job k → first stamp of job k+1. The same binary is also run \(counts.gapJobs) times back "
                + "to back by the harness before and after the server's batch (posix_spawn + waitpid on a thread, no pipes, no server; "
                + "the lower of the two medians counts): its cycle is the least one process per job costs on this machine (exit, "
                + "reap, spawn, exec, dynamic loader). Dispatch gap = median slot cycle − median "
                + "standalone cycle: what the server adds per job. The baseline runs the same binary with `subprocess.run` in its pool "
                + "worker. The servers' own finished_at(k) → started_at(k+1) is shown for comparison (Spool writes both from one "
                + "clock reading, so it reads 0).",
            "- Warm-worker gap (6, 6b): the job type runs `Benchmarks/workers/noop_worker.py` as a warm worker (protocol v2 by hand); "
                + "it stamps time.monotonic_ns() right after reading each `job` command and right before writing `succeeded`; "
                + "gap = received(k+1) − sent(k); each job sleeps \(BenchCounts.jobMilliseconds) ms in the worker (and in `stampfn`) before answering. "
                + "\(counts.warmJobs) jobs are queued behind a `hold` job after 5 warm-up jobs. "
                + "The baseline's counterpart is its pool worker: `stampfn` stamps function entry and return there.",
            "- Throughput (7): jobs ÷ (last finished_at − first started_at) of \(counts.throughputJobs.grouped) jobs queued behind a "
                + "`hold` job, from the server's job JSON.",
            "- Worker replacement (8): `max_jobs_per_worker` \(counts.maxJobsPerWorker); the worker records its pid with each job, "
                + "and the pause is the gap at the pairs where the pid changes. The setup is a `time.sleep` before `ready`, after "
                + "the Python interpreter has started (its start-up is part of every pause).",
            "- Background load: for each scenario the harness takes the machine's busy CPU time (/proc/stat) minus its own "
                + "process tree's (the load generator, the servers and their jobs, reaped) and reports the rest as CPU used by other "
                + "processes; above 15 % of one core the scenario is marked as measured on a busy machine.",
            "- RSS is VmRSS of the server process alone (not job children, not the baseline's pool worker), in MB = 10^6 bytes.",
            "- Targets are fixed in `Sources/SpoolBench/Metric.swift`; a target whose figure could not be measured is a MISS.",
        ]
    }
}
