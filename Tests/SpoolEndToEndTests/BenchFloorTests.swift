import Foundation
import NIOCore
@testable import SpoolBench
import SpoolCore
import Testing

/// `spool bench-floor-server`, the bare Hummingbird server of `spool bench`'s HTTP floor
/// (scenario 1d): it starts the way the bench starts every server, and answers the bench's
/// submits as Spool does (201, a job document), so the floor's load is the submit load itself.
@Suite struct BenchFloorTests {
    @Test func theFloorServerAnswersTheBenchsSubmitsAsSpoolDoes() async throws {
        let directory = NSTemporaryDirectory() + "spool-floor-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let launch = ServerLaunch(label: "bench-floor-server", executable: ServerHarness.binary, arguments: ["bench-floor-server", "--port", "0"],
                                  workingDirectory: directory, logPath: directory + "/server.log")
        try await ServerProcess.with(launch, http: ServerHarness.http) { server in
            let client = JobClient(http: ServerHarness.http, baseURL: server.baseURL)
            let load = try await LoadGenerator.run(total: 40, clients: 4) { _ in
                try await client.submitUnparsed(JobClient.submitBody(type: "noop"))
            }
            #expect(load.summary.count == 40)
            let answer = try await client.submitUnparsed(JobClient.submitBody(type: "noop"))
            let job = try JSONDecoder().decode(JobWire.self, from: Data(answer.readableBytesView))
            #expect(job.state == "queued" && job.type == "noop")
            #expect(server.cpuTimes != nil, "the bench reads the floor server's CPU time")
        }
    }
}
