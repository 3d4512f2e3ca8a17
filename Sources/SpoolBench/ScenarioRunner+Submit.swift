import Foundation

extension ScenarioRunner {
    /// Scenario 1 (and 1b): closed-loop `noop` submits while a `hold` job keeps the one slot busy,
    /// so every submit is a durable insert into a growing queue and nothing else competes.
    func measureSubmit(on subject: BenchSubject, relaxed: Bool) async throws -> ScenarioResult {
        let scenario: Scenario = relaxed ? .submitRelaxed : .submit
        let arguments = relaxed ? ["--sqlite-synchronous", "normal"] : []
        return try await withServer(scenario, subject, spoolArguments: arguments) { client, server, _ in
            try await occupySlot(client, seconds: 3600)
            let body = JobClient.submitBody(type: "noop")
            _ = try await submitLoad(client, total: counts.submitWarmup, body: body)
            let cpuBefore = server.cpuTimes
            let ownBefore = ProcessStats.cpuSeconds(of: getpid())
            let load = try await submitLoad(client, total: counts.submits, body: body)
            let ownAfter = ProcessStats.cpuSeconds(of: getpid())
            let cpuAfter = server.cpuTimes
            let queued = try? await client.queuedCount()

            let latency = load.summary
            var result = ScenarioResult()
            result[relaxed ? .relaxedSubmitRate : .submitRate] = load.requestsPerSecond
            result[relaxed ? .relaxedSubmitP50 : .submitP50] = latency.p50
            result[relaxed ? .relaxedSubmitP99 : .submitP99] = latency.p99
            if let cpuBefore, let cpuAfter {
                let perSubmit = 1e6 / Double(counts.submits)
                let user = (cpuAfter.user - cpuBefore.user) * perSubmit
                let system = (cpuAfter.system - cpuBefore.system) * perSubmit
                if !relaxed { result[.submitServerCPU] = user + system }
                let serverShare = (user + system) / perSubmit / load.wallSeconds * 100
                let generatorShare = ((ownAfter ?? 0) - (ownBefore ?? 0)) / load.wallSeconds * 100
                result.notes.append("\(subject.title): server CPU per submit \(user.fixed(0)) µs user + \(system.fixed(0)) µs system; "
                    + "the server used \(serverShare.fixed(0)) % of a core, the load generator \(generatorShare.fixed(0)) %")
            }
            if (38...48).contains(latency.p50) {
                result.notes.append("\(subject.title): WARNING p50 near 40 ms is the signature of Nagle + delayed ACK (TCP_NODELAY off on the server)")
            }
            result.notes.append("\(subject.title): \(latency.count.grouped) submits in \(load.wallSeconds.fixed(2)) s, "
                + "max latency \(latency.max.fixed(1)) ms; queue depth afterwards \(queued?.grouped ?? "unknown")")
            return result
        }
    }

    /// Scenario 1c: submits from the configured clients while the slot runs every job as it
    /// comes — Spool's warm worker, the pool's function — then waits for the queue to empty.
    func measureSubmitWhileRunning(on subject: BenchSubject) async throws -> ScenarioResult {
        let types = try warmTypes(for: .submitRunning, subject)
        return try await withServer(.submitRunning, subject, extraTypes: types) { client, server, _ in
            let type = subject == .spool ? "warm" : "noop"
            try await warmUp(client, type: type, count: 5)
            let body = JobClient.submitBody(type: type)
            let cpuBefore = server.cpuTimes
            let load = try await submitLoad(client, total: counts.runningSubmits, body: body)
            let cpuAfter = server.cpuTimes
            let queuedAtEnd = try? await client.queuedCount()
            let drainStart = ContinuousClock.now
            while try await client.queuedCount() > 0 {
                guard ContinuousClock.now - drainStart < .seconds(300) else { throw BenchError("the queue did not empty within 300 s") }
                try await Task.sleep(for: .milliseconds(50))
            }
            let latency = load.summary
            var result = ScenarioResult()
            result[.runningSubmitRate] = load.requestsPerSecond
            result[.runningSubmitP50] = latency.p50
            result[.runningSubmitP99] = latency.p99
            var note = "\(subject.title): \(latency.count.grouped) submits in \(load.wallSeconds.fixed(2)) s, max latency \(latency.max.fixed(1)) ms; "
                + "\(queuedAtEnd?.grouped ?? "unknown") still queued when the last submit was answered"
            if let cpuBefore, let cpuAfter {
                let perSubmit = (cpuAfter.user + cpuAfter.system - cpuBefore.user - cpuBefore.system) * 1e6 / Double(counts.runningSubmits)
                note += "; server CPU \(perSubmit.fixed(0)) µs per submit, running its job included"
            }
            result.notes.append(note)
            return result
        }
    }

    /// Spool's `warm` job type (the bench worker) for a scenario; the baseline needs none.
    func warmTypes(for scenario: Scenario, _ subject: BenchSubject) throws -> String {
        guard subject == .spool else { return "{}" }
        let stamps = scenarioDirectory(scenario, subject) + "/worker-stamps.txt"
        return try SpoolServer.typesJSON(["warm": SpoolServer.workerType(python: python, script: try assets.requireWorker(), stamps: stamps)])
    }
}
