import AsyncHTTPClient
import Foundation

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

        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: counts.submitClients)
        configuration.httpVersion = .http1Only
        let http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
        let runner = ScenarioRunner(
            options: options, counts: counts, http: http, baseline: probe.server,
            python: probe.pythonExecutable ?? "/usr/bin/python3", runDirectory: runDirectory)

        let loadAtStart = ProcessStats.loadAverage
        let clock = ContinuousClock()
        let started = clock.now
        var results = BenchResults()
        for scenario in Scenario.allCases {
            for subject in scenario.subjects where subject == .spool || probe.server != nil {
                if Task.isCancelled { break }
                progress("[\(scenario.rawValue)] \(subject.rawValue): starting")
                do {
                    let result = try await runner.run(scenario, on: subject)
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

        let report = BenchReport(
            options: options, counts: counts, machine: machine, command: MachineInfo.command,
            probe: probe, results: results, elapsed: started.duration(to: clock.now), runDirectory: runDirectory,
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

    mutating func record(_ result: ScenarioResult, scenario: Scenario, subject: BenchSubject) {
        values[subject, default: [:]].merge(result.values) { _, new in new }
        notes[scenario, default: []] += result.notes
    }

    func value(_ metric: Metric, _ subject: BenchSubject) -> Double? { values[subject]?[metric] }
}

/// A progress line on stderr (the report itself is the return value).
func progress(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}
