import AsyncHTTPClient
import Foundation
import SpoolCore
import NIOCore

/// Runs one scenario against one subject on a fresh server. The measurements themselves live in
/// the `ScenarioRunner+…` files, one per scenario.
struct ScenarioRunner: Sendable {
    let options: BenchOptions
    let counts: BenchCounts
    let http: HTTPClient
    let baseline: BaselineServer?
    /// The interpreter Spool's `busy` job type runs (a real path, not a pyenv shim).
    let python: String
    /// `workDir/run-<timestamp>`; each scenario × subject gets a subdirectory.
    let runDirectory: String
    /// The stamp job and the bench worker (see `BenchAssets`).
    let assets: BenchAssets

    func run(_ scenario: Scenario, on subject: BenchSubject) async throws -> ScenarioResult {
        switch scenario {
        case .submit: return try await measureSubmit(on: subject, relaxed: false)
        case .submitRelaxed: return try await measureSubmit(on: subject, relaxed: true)
        case .submitRunning: return try await measureSubmitWhileRunning(on: subject)
        case .httpFloor: return try await measureHTTPFloor()
        case .status: return try await measureStatus(on: subject)
        case .dispatchGap: return try await measureDispatchGap(on: subject)
        case .roundTrip: return try await measureRoundTrip(on: subject, polling: false)
        case .roundTripPoll: return try await measureRoundTrip(on: subject, polling: true)
        case .memory: return try await measureMemory(on: subject)
        case .warmGap: return try await measureWarmGap(on: subject, relaxed: false)
        case .warmGapRelaxed: return try await measureWarmGap(on: subject, relaxed: true)
        case .warmThroughput: return try await measureWarmThroughput(on: subject)
        case .workerRecycle: return try await measureWorkerRecycle(on: subject)
        }
    }

    /// Starts a fresh server (own directory, own data dir, port 0) for the length of `body`.
    /// `extraTypes` (a JSON object, see `SpoolServer.typesJSON`) adds job types to Spool's
    /// config; `variant` names the directory when one scenario starts several servers.
    func withServer<R: Sendable>(
        _ scenario: Scenario, _ subject: BenchSubject, spoolArguments: [String] = [], extraTypes: String = "{}",
        variant: String? = nil, body: (JobClient, RunningServer, String) async throws -> R
    ) async throws -> R {
        let directory = scenarioDirectory(scenario, subject, variant: variant)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let launch: ServerLaunch
        switch subject {
        case .spool:
            launch = try SpoolServer.launch(binary: options.spoolBinary, in: directory, python: python, stampBinary: assets.stampBinary,
                                            extraTypes: extraTypes, extraArguments: spoolArguments)
        case .baseline:
            guard let baseline else { throw BenchError("the baseline is not available") }
            launch = baseline.launch(in: directory, stampBinary: assets.stampBinary)
        }
        let value = try await ServerProcess.with(launch, http: http) { server in
            try await body(JobClient(http: http, baseURL: server.baseURL), server, directory)
        }
        // The job database is only kept when something failed; logs and config always stay.
        try? FileManager.default.removeItem(atPath: directory + "/data")
        return value
    }

    /// Where `withServer` keeps a scenario's config, logs and stamp files.
    func scenarioDirectory(_ scenario: Scenario, _ subject: BenchSubject, variant: String? = nil) -> String {
        runDirectory + "/\(scenario.rawValue)-\(subject.rawValue)" + (variant.map { "-" + $0 } ?? "")
    }

    /// Occupies the single slot with a `hold` (sleep) job and returns once it is running.
    @discardableResult
    func occupySlot(_ client: JobClient, seconds: Double) async throws -> JobWire {
        let holder = try await client.submit(type: "hold", inputJSON: #"{"seconds":\#(seconds)}"#)
        return try await client.poll(holder.id, until: ["running"], within: .seconds(30))
    }

    /// `total` submits of one job from the configured number of clients; the new jobs' ids.
    func submitBatch(_ client: JobClient, type: String, inputJSON: String = "{}", total: Int) async throws -> [String] {
        let clients = counts.submitClients
        return try await withThrowingTaskGroup(of: [String].self) { group in
            for first in 0..<min(clients, total) {
                group.addTask {
                    var ids: [String] = []
                    for _ in stride(from: first, to: total, by: clients) {
                        ids.append(try await client.submit(type: type, inputJSON: inputJSON).id)
                    }
                    return ids
                }
            }
            return try await group.reduce(into: [String]()) { $0 += $1 }
        }
    }

    /// Queues `total` jobs behind a `hold` job long enough to cover the submits, so that when the
    /// slot frees every job is waiting and the slot runs them back to back. Returns the ids and
    /// a warning if some job was not queued in time (its gap would include idle time).
    func queueBehindHold(_ client: JobClient, type: String, inputJSON: String = "{}", total: Int,
                         subject: BenchSubject) async throws -> (ids: [String], warning: String?) {
        let holder = try await occupySlot(client, seconds: 2 + Double(total) / 250)
        let ids = try await submitBatch(client, type: type, inputJSON: inputJSON, total: total)
        let queued = try await client.queuedCount()
        let holderAfter = try await client.job(holder.id)
        var warning: String?
        if queued < total || holderAfter.state != "running" {
            warning = "\(subject.title): WARNING only \(queued) of \(total) jobs were queued while the hold job was "
                + "\(holderAfter.state); some gaps may include idle time"
        }
        return (ids, warning)
    }

    /// Waits for the queue to empty by polling `GET /v1/queue` ten times a second (a long-poll per
    /// job would add server work to the measurement), then reads every job, which must have
    /// succeeded.
    func drainAndFetch(_ client: JobClient, _ ids: [String], within limit: Duration) async throws -> [JobWire] {
        let deadline = ContinuousClock.now + limit
        while try await client.queuedCount() > 0 {
            guard ContinuousClock.now < deadline else { throw BenchError("the queue did not empty within \(limit)") }
            try await Task.sleep(for: .milliseconds(100))
        }
        try await Task.sleep(for: .milliseconds(100))
        var jobs: [JobWire] = []
        jobs.reserveCapacity(ids.count)
        for id in ids { jobs.append(try await client.wait(for: id, toReach: ["succeeded"], within: limit)) }
        return jobs
    }

    /// Submits one job at a time and waits for each (warms up a worker, a cache, a binary).
    func warmUp(_ client: JobClient, type: String, inputJSON: String = "{}", count: Int) async throws {
        for _ in 0..<count {
            let job = try await client.submit(type: type, inputJSON: inputJSON)
            _ = try await client.wait(for: job.id, toReach: ["succeeded"], within: .seconds(120))
        }
    }

    /// `total` submits of `body` from the configured number of clients.
    func submitLoad(_ client: JobClient, total: Int, body: ByteBuffer) async throws -> LoadResult {
        try await LoadGenerator.run(total: total, clients: counts.submitClients) { _ in
            try await client.submitUnparsed(body)
        }
    }
}
