import AsyncHTTPClient
import Foundation
import SpoolCore

/// `spool bench --eta`: how well the queue predicts run times, on a mixed render workload.
///
/// Real renders of the built-in `render` type (its warm worker, one slot), of mixed sizes, one
/// after another; each job's run time is read from the server (`started_at` → `finished_at`).
/// Online, as the server sees them: before each job, the per-type median of the runs so far
/// (the window the queue keeps) and the input-learned model (`RunTimeModel`, which falls back to
/// that median until its fit earns its keep) each predict the job's run time; then the job's
/// real time is recorded. Reported: the median absolute percentage error of each, over the jobs
/// after the first ten.
public enum EtaBenchmark {
    public static func run(_ options: BenchOptions) async throws -> String {
        let jobs = options.quick ? 30 : 80
        let directory = options.workDir + "/eta"
        try FileManager.default.createDirectory(atPath: directory + "/data", withIntermediateDirectories: true)
        let launch = try SpoolServer.launch(binary: options.spoolBinary, in: directory, python: options.python, stampBinary: nil,
                                            extraTypes: "{}", extraArguments: [])
        let http = HTTPClient.shared
        var dice = SystemRandomNumberGenerator()
        let runs: [(input: JSONValue, seconds: Double)] = try await ServerProcess.with(launch, http: http) { server in
            let client = JobClient(http: http, baseURL: server.baseURL)
            var runs: [(JSONValue, Double)] = []
            // Warm the worker first (its first job pays its start).
            let warm = try await client.submit(type: "render", inputJSON: #"{"width":8,"height":8,"samples":1}"#)
            _ = try await client.wait(for: warm.id, toReach: ["succeeded"])
            for index in 0..<jobs {
                let width = Int.random(in: 16...320, using: &dice), height = Int.random(in: 12...240, using: &dice)
                let samples = Int.random(in: 1...24, using: &dice), seed = Int.random(in: 0...9999, using: &dice)
                let input = #"{"width":\#(width),"height":\#(height),"samples":\#(samples),"seed":\#(seed)}"#
                let job = try await client.submit(type: "render", inputJSON: input)
                let done = try await client.wait(for: job.id, toReach: ["succeeded"])
                guard let start = done.startedAt.flatMap(RFC3339Timestamp.init), let end = done.finishedAt.flatMap(RFC3339Timestamp.init) else {
                    throw BenchError("render \(done.id) has no start or end time")
                }
                runs.append((try JSONParser.parse(input.utf8), Double(end.epochNanoseconds - start.epochNanoseconds) / 1e9))
                if index % 20 == 19 { progress("eta: \(index + 1) of \(jobs) renders") }
            }
            return runs
        }

        var medianErrors: [Double] = [], modelErrors: [Double] = [], learned = 0
        var runTimes = QueueEstimate.RunTimes()
        var model = RunTimeModel()
        for (index, run) in runs.enumerated() {
            let median = runTimes.median(of: "render")
            let prediction = model.predict(type: "render", input: run.input)
            if index >= 10, let median {
                medianErrors.append(abs(median - run.seconds) / run.seconds)
                modelErrors.append(abs((prediction?.seconds ?? median) - run.seconds) / run.seconds)
                if prediction != nil { learned += 1 }
            }
            runTimes.record(run.seconds, type: "render")
            model.record(type: "render", input: run.input, seconds: run.seconds)
        }
        let shortest = runs.map(\.seconds).min() ?? 0, longest = runs.map(\.seconds).max() ?? 0
        var report = "## ETA: run times learned from the input, `spool bench --eta`\n\n"
        report += "- \(runs.count) renders of the built-in type, one slot, warm worker; width 16–320, height 12–240, samples 1–24, "
        report += "a random seed; run times \(String(format: "%.3f", shortest))–\(String(format: "%.3f", longest)) s. "
        report += "Predicted online before each job from the runs before it; errors over jobs 11–\(runs.count).\n\n"
        report += "| predictor | median absolute % error | 90th percentile |\n|---|---|---|\n"
        func row(_ name: String, _ errors: [Double]) -> String {
            let sorted = errors.sorted()
            let p90 = sorted.isEmpty ? .nan : sorted[min(sorted.count - 1, Int((0.9 * Double(sorted.count)).rounded(.up)) - 1)]
            return "| \(name) | \(String(format: "%.0f", LatencySummary.median(errors) * 100)) % | \(String(format: "%.0f", p90 * 100)) % |\n"
        }
        report += row("per-type median of the last 20 runs (before)", medianErrors)
        report += row("learned from the input (`RunTimeModel`; the median until its fit earns its keep)", modelErrors)
        report += "\nThe learned model answered for \(learned) of the \(modelErrors.count) predictions"
        if let last = runs.last, let prediction = model.predict(type: "render", input: last.input) {
            report += "; its last fit: \(prediction.method)"
        }
        report += ".\n"
        return report
    }
}
