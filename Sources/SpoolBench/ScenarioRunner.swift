import AsyncHTTPClient
import Foundation
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

    func run(_ scenario: Scenario, on subject: BenchSubject) async throws -> ScenarioResult {
        switch scenario {
        case .submit: return try await measureSubmit(on: subject, relaxed: false)
        case .submitRelaxed: return try await measureSubmit(on: subject, relaxed: true)
        case .status: return try await measureStatus(on: subject)
        case .dispatchGap: return try await measureDispatchGap(on: subject)
        case .roundTrip: return try await measureRoundTrip(on: subject)
        case .memory: return try await measureMemory(on: subject)
        }
    }

    /// Starts a fresh server (own directory, own data dir, port 0) for the length of `body`.
    func withServer<R: Sendable>(
        _ scenario: Scenario, _ subject: BenchSubject, spoolArguments: [String] = [],
        body: (JobClient, RunningServer) async throws -> R
    ) async throws -> R {
        let directory = runDirectory + "/\(scenario.rawValue)-\(subject.rawValue)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let launch: ServerLaunch
        switch subject {
        case .spool:
            launch = try SpoolServer.launch(binary: options.spoolBinary, in: directory, python: python, extraArguments: spoolArguments)
        case .baseline:
            guard let baseline else { throw BenchError("the baseline is not available") }
            launch = baseline.launch(in: directory)
        }
        let value = try await ServerProcess.with(launch, http: http) { server in
            try await body(JobClient(http: http, baseURL: server.baseURL), server)
        }
        // The job database is only kept when something failed; logs and config always stay.
        try? FileManager.default.removeItem(atPath: directory + "/data")
        return value
    }

    /// Occupies the single slot with a `hold` (sleep) job and returns once it is running.
    @discardableResult
    func occupySlot(_ client: JobClient, seconds: Int) async throws -> JobDocument {
        let holder = try await client.submit(type: "hold", inputJSON: #"{"seconds":\#(seconds)}"#)
        return try await client.poll(holder.id, until: ["running"], within: .seconds(30))
    }

    /// `total` submits of `body` from the configured number of clients.
    func submitLoad(_ client: JobClient, total: Int, body: ByteBuffer) async throws -> LoadResult {
        try await LoadGenerator.run(total: total, clients: counts.submitClients) { _ in
            try await client.submitUnparsed(body)
        }
    }
}
