import ArgumentParser
import Foundation
import SpoolBench
import SpoolExecutor

struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure this build against the targets and a FastAPI baseline; prints a Markdown report.",
        discussion: "Build in release mode first: swift build -c release, then .build/release/spool bench --output Benchmarks/results-DATE.md (BENCHMARKS.md is the written summary)"
    )

    @Flag(help: "Smaller counts, for a smoke run of about a minute.") var quick = false
    @Option(help: "Write the report to this file as well as stdout.") var output: String?
    @Option(name: .customLong("work-dir"), help: "Scratch directory for servers' data (default: a new temp dir).") var workDir: String?
    @Option(help: "Python interpreter for the FastAPI baseline (and the cluster bench's warm worker).") var python = "python3"
    @Flag(help: "Measure the shared PostgreSQL store instead: claim/complete rate, pickup latency across nodes, rescue time.") var cluster = false
    @Flag(help: "Measure the job JSON codec: Spool's own serializer and parser against JSONEncoder/JSONDecoder.") var codec = false
    @Flag(help: "Measure how well run times (and so ETAs) are predicted on a mixed render workload: learned from the input vs the per-type median.") var eta = false
    @Flag(help: "Measure what tokens, tenants and fair share cost: submit/status p99 with auth on vs off, claim time with 1,000 tenants vs one.") var tenants = false
    @Option(help: "With --cluster or --tenants: the PostgreSQL server to use (default: a throwaway one from scripts/throwaway-postgres.sh).") var store: String?

    func run() async throws {
        // Ctrl-C or SIGTERM cancels the run instead of killing it outright, so that the servers,
        // agents and workers it started are stopped by pid on the way out, not left running.
        let work = Task { try await measure() }  // unstructured: cancelled from the signal handlers below
        let sources = [SIGINT, SIGTERM].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                StandardStreams.error("spool bench: stopping; cleaning up the processes it started\n")
                work.cancel()
            }
            source.resume()
            return source
        }
        defer { for source in sources { source.cancel() } }
        try await work.value
    }

    private func measure() async throws {
        // Absolute: each server runs in a directory of its own and reads its config from here.
        let directory = URL(fileURLWithPath: workDir ?? NSTemporaryDirectory() + "spool-bench-\(getpid())").standardizedFileURL.path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if cluster {
            let options = ClusterBenchmark.Options(spoolBinary: ServeCommand.executablePath(), workDir: directory, python: python,
                                                   store: store, quick: quick)
            let report = try await ClusterBenchmark.run(options)
            print(report)
            if let output { try report.write(toFile: output, atomically: true, encoding: .utf8) }
            return
        }
        let options = BenchOptions(spoolBinary: ServeCommand.executablePath(), workDir: directory, python: python, quick: quick)
        if codec {
            let report = try CodecBenchmark.run(quick: quick)
            print(report)
            if let output { try report.write(toFile: output, atomically: true, encoding: .utf8) }
            return
        }
        if eta {
            let report = try await EtaBenchmark.run(options)
            print(report)
            if let output { try report.write(toFile: output, atomically: true, encoding: .utf8) }
            return
        }
        if tenants {
            let report = try await TenantBenchmark.run(options, store: store)
            print(report)
            if let output { try report.write(toFile: output, atomically: true, encoding: .utf8) }
            return
        }
        let report = try await Benchmark.run(options)
        print(report)
        if let output { try report.write(toFile: output, atomically: true, encoding: .utf8) }
    }
}
