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
                let cpu = CPUPerRequest(before: cpuBefore, after: cpuAfter, requests: counts.submits)
                if !relaxed { result[.submitServerCPU] = cpu.total }
                let generatorShare = ((ownAfter ?? 0) - (ownBefore ?? 0)) / load.wallSeconds * 100
                result.notes.append("\(subject.title): server CPU per submit \(cpu.user.fixed(0)) µs user + \(cpu.system.fixed(0)) µs system; "
                    + "the server used \(cpu.coreShare(over: load.wallSeconds).fixed(0)) % of a core, the load generator \(generatorShare.fixed(0)) %")
            }
            if (38...48).contains(latency.p50) {
                result.notes.append("\(subject.title): WARNING p50 near 40 ms is the signature of Nagle + delayed ACK (TCP_NODELAY off on the server)")
            }
            result.notes.append("\(subject.title): \(latency.count.grouped) submits in \(load.wallSeconds.fixed(2)) s, "
                + "max latency \(latency.max.fixed(1)) ms; queue depth afterwards \(queued?.grouped ?? "unknown")")
            return result
        }
    }

    /// Scenario 1d: the submits of scenario 1 to `spool bench-floor-server`, Hummingbird with
    /// nothing of Spool's on it, on the same machine and load: the part of a submit's CPU and
    /// latency that is the HTTP framework's, below which no work of Spool's could take it.
    func measureHTTPFloor() async throws -> ScenarioResult {
        let directory = scenarioDirectory(.httpFloor, .spool)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let launch = ServerLaunch(label: "bench-floor-server", executable: options.spoolBinary, arguments: ["bench-floor-server", "--port", "0"],
                                  workingDirectory: directory, logPath: directory + "/server.log")
        return try await ServerProcess.with(launch, http: http) { server in
            let client = JobClient(http: http, baseURL: server.baseURL)
            let body = JobClient.submitBody(type: "noop")
            _ = try await submitLoad(client, total: counts.submitWarmup, body: body)
            let cpuBefore = server.cpuTimes
            let load = try await submitLoad(client, total: counts.submits, body: body)
            let cpuAfter = server.cpuTimes
            var result = ScenarioResult()
            result[.floorSubmitRate] = load.requestsPerSecond
            result[.floorSubmitP99] = load.summary.p99
            if let cpuBefore, let cpuAfter {
                let cpu = CPUPerRequest(before: cpuBefore, after: cpuAfter, requests: counts.submits)
                result[.floorSubmitCPU] = cpu.total
                result.notes.append("Bare Hummingbird: server CPU per POST \(cpu.user.fixed(0)) µs user + \(cpu.system.fixed(0)) µs system; "
                    + "it used \(cpu.coreShare(over: load.wallSeconds).fixed(0)) % of a core; p50 \(load.summary.p50.fixed(3)) ms")
            }
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

/// A server's CPU time per request over a load, from its user and system times before and after.
struct CPUPerRequest {
    /// Microseconds per request.
    let user: Double, system: Double
    private let seconds: Double

    init(before: (user: Double, system: Double), after: (user: Double, system: Double), requests: Int) {
        seconds = after.user + after.system - before.user - before.system
        user = (after.user - before.user) * 1e6 / Double(requests)
        system = (after.system - before.system) * 1e6 / Double(requests)
    }

    var total: Double { user + system }

    /// The share of one core the server used over `wallSeconds`, in percent.
    func coreShare(over wallSeconds: Double) -> Double { seconds / wallSeconds * 100 }
}
