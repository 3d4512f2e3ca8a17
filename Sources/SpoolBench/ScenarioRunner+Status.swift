import Foundation

extension ScenarioRunner {
    /// Scenario 2: status GETs of a job whose child spins a CPU core for the whole measurement.
    func measureStatus(on subject: BenchSubject) async throws -> ScenarioResult {
        try await withServer(.status, subject) { client, server, _ in
            let busy = try await client.submit(type: "busy", inputJSON: #"{"seconds":600}"#)
            _ = try await client.poll(busy.id, until: ["running"], within: .seconds(30))
            let path = "/v1/jobs/\(busy.id)"
            _ = try await LoadGenerator.run(total: counts.statusWarmup, clients: counts.statusClients) { _ in
                try await client.getUnparsed(path)
            }
            let children = ProcessStats.descendants(of: server.pid)
            let jobCPUBefore = children.compactMap { ProcessStats.cpuSeconds(of: $0.pid) }.reduce(0, +)
            let load = try await LoadGenerator.run(total: counts.statusGets, clients: counts.statusClients) { _ in
                try await client.getUnparsed(path)
            }
            let jobCPUAfter = children.compactMap { ProcessStats.cpuSeconds(of: $0.pid) }.reduce(0, +)
            let after = try await client.job(busy.id)
            guard after.state == "running" else {
                throw BenchError("the busy job was \(after.state) (\(after.reason ?? "no reason")) after the GETs; they did not all overlap a running job")
            }
            let latency = load.summary
            var result = ScenarioResult()
            result[.statusP50] = latency.p50
            result[.statusP99] = latency.p99
            result[.statusJobCPU] = (jobCPUAfter - jobCPUBefore) / load.wallSeconds * 100
            result.notes.append("\(subject.title): \(latency.count.grouped) GETs in \(load.wallSeconds.fixed(2)) s "
                + "(\(Int(load.requestsPerSecond).grouped) /s), max \(latency.max.fixed(1)) ms")
            return result
        }
    }
}
