import AsyncHTTPClient
import Foundation
import SpoolExecutor

/// `spool bench`: runs every scenario against a fresh Spool server and, when FastAPI and uvicorn
/// are importable, against the FastAPI baseline, then renders a Markdown report. Each scenario
/// runs on Spool and then on the baseline, so slow drift on the machine affects both alike.
/// A scenario that fails is reported as such and the run goes on.
public enum Benchmark {
    /// Runs every scenario against Spool and the baseline; returns a Markdown report (tables, the
    /// exact command, machine info). Prints progress lines to stderr as it goes.
    public static func run(_ options: BenchOptions) async throws -> String {
        let counts = options.quick ? BenchCounts.quick : .full
        guard FileManager.default.isExecutableFile(atPath: options.spoolBinary) else {
            throw BenchError("no executable spool binary at \(options.spoolBinary) (build it with `swift build -c release --product spool`)")
        }
        let machine = MachineInfo.collect()
        let runDirectory = options.workDir + "/run-" + machine.date.replacingOccurrences(of: ":", with: "")
        try FileManager.default.createDirectory(atPath: runDirectory, withIntermediateDirectories: true)
        progress("spool bench: \(options.quick ? "quick" : "full") run, scratch in \(runDirectory)")

        let probe = await BaselineServer.probe(options)
        if let reason = probe.skipReason {
            progress("spool bench: BASELINE SKIPPED: \(reason)")
        } else if let server = probe.server {
            progress("spool bench: baseline \(server.description), app \(server.appPath)")
        }

        var assets = await BenchAssets.prepare(options, into: runDirectory)
        assets.sync = await SyncProbe.measure(in: runDirectory)
        if let problem = assets.stampProblem { progress("spool bench: STAMP JOB UNAVAILABLE: \(problem)") }
        if let problem = assets.workerProblem { progress("spool bench: BENCH WORKER UNAVAILABLE: \(problem)") }

        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: counts.submitClients)
        configuration.httpVersion = .http1Only
        let http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
        let runner = ScenarioRunner(
            options: options, counts: counts, http: http, baseline: probe.server,
            python: probe.pythonExecutable ?? "/usr/bin/python3", runDirectory: runDirectory, assets: assets)

        let loadAtStart = ProcessStats.loadAverage
        let clock = ContinuousClock()
        let started = clock.now
        var results = BenchResults()
        // SPOOL_BENCH_ONLY=dispatchGap,warmGap runs only those scenarios (for working on the harness;
        // the report then shows the others as not measured).
        let only = ProcessInfo.processInfo.environment["SPOOL_BENCH_ONLY"].map { Set($0.split(separator: ",").map(String.init)) }
        for scenario in Scenario.allCases where only?.contains(scenario.rawValue) ?? true {
            for subject in scenario.subjects where subject == .spool || probe.server != nil {
                if Task.isCancelled { break }
                progress("[\(scenario.rawValue)] \(subject.rawValue): starting")
                let background = BackgroundLoad.start()
                do {
                    var result = try await runner.run(scenario, on: subject)
                    if let (note, busy) = background.finish(subject) {
                        result.notes.append(note)
                        result.disturbed = busy
                    }
                    results.record(result, scenario: scenario, subject: subject)
                    let summary = scenario.metrics.compactMap { metric in
                        result[metric].map { "\(metric.label(counts)) \(metric.format($0))" }
                    }
                    progress("[\(scenario.rawValue)] \(subject.rawValue): " + summary.joined(separator: "; "))
                } catch {
                    results.errors[scenario, default: []].append("\(subject.title): \(error)")
                    progress("[\(scenario.rawValue)] \(subject.rawValue): FAILED: \(error)")
                }
            }
        }
        try? await http.shutdown()
        try Task.checkCancellation()
        results.checkSync(fdatasync: assets.sync?.backToBack)

        let report = BenchReport(
            options: options, counts: counts, machine: machine, command: MachineInfo.command,
            probe: probe, assets: assets, results: results, elapsed: started.duration(to: clock.now), runDirectory: runDirectory,
            loadAverages: (loadAtStart, ProcessStats.loadAverage))
        for line in report.goalLines() { progress(line) }
        return report.markdown()
    }
}

/// Everything measured in one run.
struct BenchResults: Sendable {
    var values: [BenchSubject: [Metric: Double]] = [:]
    var notes: [Scenario: [String]] = [:]
    var errors: [Scenario: [String]] = [:]
    /// Metrics measured while other processes took a noticeable share of the CPU.
    var disturbed: [BenchSubject: Set<Metric>] = [:]

    mutating func record(_ result: ScenarioResult, scenario: Scenario, subject: BenchSubject) {
        values[subject, default: [:]].merge(result.values) { _, new in new }
        if result.disturbed { disturbed[subject, default: []].formUnion(result.values.keys) }
        notes[scenario, default: []] += result.notes
    }

    func value(_ metric: Metric, _ subject: BenchSubject) -> Double? { values[subject]?[metric] }

    /// 6 vs 6b, for the record. The two are expected to match: a warm worker is sent its next job
    /// before the commit that records the previous one's end (and the next one's claim), so that
    /// commit's fdatasync overlaps the job instead of sitting in the gap. The gap therefore cannot
    /// show whether the commits are synced (this note used to warn that they were probably not,
    /// whenever the difference was small, which it always is); the writer's `synchronous` setting
    /// is checked by the store's tests (`theWriterUsesTheConfiguredSynchronousMode`).
    mutating func checkSync(fdatasync: Double?) {
        guard let full = value(.warmGapMedian, .spool), let normal = value(.warmGapRelaxedMedian, .spool) else { return }
        var note = "Spool: full − normal gap median = \((full - normal).fixed(3)) ms"
        if let fdatasync { note += "; one fdatasync of 4 KiB in the scratch directory costs \(fdatasync.fixed(3)) ms (median)" }
        note += ". The two match by design: the worker gets its next job before the previous end's commit, whose sync "
            + "overlaps the job (the writer's synchronous setting is checked by the store's tests, not here)"
        notes[.warmGapRelaxed, default: []].append(note)
    }
}

/// A progress line on stderr (the report itself is the return value).
func progress(_ line: String) {
    StandardStreams.error((line + "\n"))
}

/// CPU used on the machine by anything other than this benchmark (the load generator, the
/// servers under test and their jobs) while one scenario ran: machine busy time minus this
/// process tree's. Other builds or tests running at the same time show up here.
struct BackgroundLoad {
    let machine: Double?
    let own: Double?
    let started = ContinuousClock.now

    static func start() -> BackgroundLoad {
        BackgroundLoad(machine: ProcessStats.machineBusySeconds, own: ProcessStats.ownTreeCPUSeconds)
    }

    /// "Background CPU: …" for the scenario's notes, and whether it is above 15 % of a core.
    func finish(_ subject: BenchSubject) -> (String, Bool)? {
        guard let machine, let own, let machineNow = ProcessStats.machineBusySeconds,
              let ownNow = ProcessStats.ownTreeCPUSeconds else { return nil }
        let seconds = started.duration(to: .now).milliseconds / 1000
        guard seconds > 0 else { return nil }
        let share = max(0, (machineNow - machine) - (ownNow - own)) / seconds * 100
        let text = "\(subject.title): CPU used by other processes on the machine during this scenario: \(share.fixed(0)) % of one core"
        return share > 15 ? ("**WARNING** " + text + " (the machine was not quiet; figures are affected)", true) : (text, false)
    }
}
