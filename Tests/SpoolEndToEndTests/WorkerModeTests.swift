import Foundation
import SpoolCore
import SpoolTestSupport
import Testing

/// Warm workers through the real server: recycling, crashes, hangs, garbage, failed setup,
/// cancel and timeout. The fixture worker (Tests/Fixtures/worker.py) speaks the protocol by
/// hand and reports its own pid and RSS in each result, so the checks do not rely on the
/// server's word.
@Suite(.serialized) struct WorkerModeTests {
    static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/worker.py").path
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    func server(_ settings: [String: JSONValue] = [:], env: [String: String] = [:], timeout: Double = 60,
                attempts: Int = 1, extra: [String: JSONValue] = [:]) async throws -> ServerHarness {
        var type: [String: JSONValue] = [
            "command": .array([.string("/usr/bin/python3"), .string(Self.fixture)]), "mode": "worker",
            "timeout_s": .double(timeout), "max_attempts": .int(Int64(attempts)), "heartbeat_s": .double(0.5),
        ]
        type.merge(settings) { _, new in new }
        if !env.isEmpty { type["env"] = .object(env.mapValues(JSONValue.string)) }
        var config: [String: JSONValue] = ["kill_grace_s": 1, "job_types": .object(["work": .object(type)])]
        config.merge(extra) { _, new in new }
        let harness = try ServerHarness(config: .object(config))
        try await harness.start()
        return harness
    }

    func run(_ server: ServerHarness, _ input: [String: JSONValue], until states: Set<String> = ["succeeded", "failed", "canceled"]) async throws -> JSONValue {
        let reply = try await server.submit("work", .object(input))
        let id = try #require(reply.json["id"]?.stringValue, "\(String(decoding: reply.body, as: UTF8.self))")
        return try await server.waitFor(id, states, timeout: .seconds(60))
    }

    func pid(_ job: JSONValue) -> Int64? { job["result"]?["pid"]?.intValue }

    /// Another tenant sees a slot busy with a tenant's job as busy, nothing more: not the warm
    /// worker that runs it (its type, pid, jobs run, memory) either (found by attacking the
    /// build: README promises other tenants' work "only as a count and busy slots").
    @Test func anotherTenantSeesABusySlotsWorkerAsNothing() async throws {
        let server = try await server()
        defer { Task { await server.stop() } }
        let (alice, bob) = (try await server.createToken("alice"), try await server.createToken("bob"))
        try await withDeadline(.seconds(10), "the tokens to count") {
            while try await server.request(.GET, "/v1/queue").status != 401 { try await Task.sleep(for: .milliseconds(100)) }
        }
        let reply = try await server.submit("work", .object(["sleep": 30]), token: alice)
        let id = try #require(reply.json["id"]?.stringValue, "\(reply.json)")
        _ = try await server.waitFor(id, ["running"], timeout: .seconds(30), token: alice)
        // Its owner sees the worker (once it reports itself).
        try await poll(.seconds(20), "alice to see the worker") {
            try await server.request(.GET, "/v1/queue", headers: server.bearer(alice)).json["slots"]?.arrayValue?.first?["worker"]?["type"] == "work"
        }
        let theirs = try await server.request(.GET, "/v1/queue", headers: server.bearer(bob)).json["slots"]?.arrayValue?.first
        #expect(theirs?["state"] == "busy" && theirs?["job"] == .null && theirs?["worker"] == .null, "\(String(describing: theirs))")
        _ = try await server.request(.POST, "/v1/jobs/\(id)/cancel", headers: server.bearer(alice))
    }

    @Test func aWarmWorkerRunsManyJobsAndIsRecycledOnItsJobCount() async throws {
        let server = try await server(["max_jobs_per_worker": 5])
        defer { Task { await server.stop() } }
        var pids: [Int64] = []
        for _ in 0..<12 {
            let job = try await run(server, [:])
            #expect(job["state"] == "succeeded")
            pids.append(try #require(pid(job)))
        }
        #expect(Set(pids[0..<5]).count == 1, "the first five jobs share one warm process")
        #expect(Set(pids[5..<10]).count == 1)
        #expect(Set(pids).count == 3, "recycled after every 5 jobs: \(pids)")
        let log = try await server.request(.GET, "/v1/jobs/\(try await lastJobID(server))/logs")
        #expect(String(decoding: log.body, as: UTF8.self).contains("finished in pid"))
    }

    /// A command that fits a pipe write whole is written at once; a longer one (an input over
    /// PIPE_BUF) goes through the worker's writer task, and the commands after it wait their turn.
    @Test func longAndShortCommandsReachTheWorkerWholeAndInOrder() async throws {
        let server = try await server()
        defer { Task { await server.stop() } }
        for size in [10, 40_000, 3, 70_000, 0, 5] {
            let job = try await run(server, ["blob": .string(String(repeating: "x", count: size))])
            #expect(job["state"] == "succeeded" && job["result"]?["blob"] == .int(Int64(size)), "\(job)")
        }
        // Submitted together: the long ones and the short ones queue behind each other on one worker.
        var ids: [String] = []
        for size in [50_000, 1, 60_000, 2] {
            let reply = try await server.submit("work", .object(["blob": .string(String(repeating: "y", count: size))]))
            ids.append(try #require(reply.json["id"]?.stringValue))
        }
        for (id, size) in zip(ids, [50_000, 1, 60_000, 2]) {
            let job = try await server.waitFor(id, ["succeeded", "failed", "canceled"], timeout: .seconds(60))
            #expect(job["state"] == "succeeded" && job["result"]?["blob"] == .int(Int64(size)), "\(job)")
        }
    }

    @Test func aLeakingWorkerIsRecycledAtItsMemoryLimitAndStaysBounded() async throws {
        let server = try await server(["max_rss_mb": 100])
        defer { Task { await server.stop() } }
        var peak = 0.0
        var pids = Set<Int64>()
        for _ in 0..<50 {
            let job = try await run(server, ["leak_mb": 10])
            #expect(job["state"] == "succeeded")
            peak = max(peak, job["result"]?["rss_mb"]?.doubleValue ?? .infinity)
            pids.insert(try #require(pid(job)))
        }
        // The job that crosses the limit finishes; the worker is replaced before the next one.
        #expect(peak < 100 + 10 + 5, "RSS reached \(peak) MB with a 100 MB limit")
        #expect(pids.count >= 4, "50 jobs leaking 10 MB each need several workers under 100 MB; saw \(pids.count)")
    }

    @Test func aWorkerThatSegfaultsFailsItsJobAndTheSlotRecovers() async throws {
        let server = try await server()
        defer { Task { await server.stop() } }
        let crashed = try await run(server, ["crash": true])
        #expect(crashed["state"] == "failed")
        #expect(crashed["reason"] == "worker_lost")
        #expect((crashed["error"]?.stringValue ?? "").contains("signal 11"))
        #expect(try await run(server, [:])["state"] == "succeeded", "a fresh worker took the next job")
    }

    @Test func aWorkerCrashIsRetriedWhileAttemptsRemain() async throws {
        let server = try await server(attempts: 2)
        defer { Task { await server.stop() } }
        let crashed = try await run(server, ["crash": true])
        #expect(crashed["state"] == "failed")
        #expect(crashed["attempts"] == 2, "one attempt per crash, no double counting")
    }

    @Test func aHungWorkerIsKilledAndReplaced() async throws {
        let server = try await server(["heartbeat_s": 0.3])
        defer { Task { await server.stop() } }
        let start = ContinuousClock.now
        let hung = try await run(server, ["hang": true])
        #expect(hung["state"] == "failed")
        #expect(hung["reason"] == "worker_lost")
        #expect(ContinuousClock.now - start < .seconds(20))
        #expect(try await run(server, [:])["state"] == "succeeded")
    }

    @Test func garbageOnStdoutGoesToTheLogAndNeverConfusesTheProtocol() async throws {
        let server = try await server()
        defer { Task { await server.stop() } }
        let job = try await run(server, ["garbage": true, "sleep": 0.2])
        #expect(job["state"] == "succeeded")
        let id = try #require(job["id"]?.stringValue)
        let log = String(decoding: try await server.request(.GET, "/v1/jobs/\(id)/logs").body, as: UTF8.self)
        #expect(log.contains("not the protocol") && log.contains("stderr noise"))
        let outputs = try await server.request(.GET, "/v1/jobs/\(id)/outputs").json
        #expect(outputs["outputs"].map(\.canonicalText)?.contains("done.txt") == true)
    }

    /// A worker that prints a line and at once answers `succeeded` (its stdout flushed first,
    /// as the Python kit does): the line is in that job's log, never the worker's log or the
    /// next job's. Stdout and the messages are two pipes, read apart.
    @Test func aLinePrintedJustBeforeSucceededIsInItsOwnJobsLog() async throws {
        let server = try await server()
        defer { Task { await server.stop() } }
        var ids: [String] = []
        for index in 0..<40 {
            let job = try await run(server, ["say": .string("line \(index) of its own")])
            #expect(job["state"] == "succeeded")
            ids.append(try #require(job["id"]?.stringValue))
        }
        for (index, id) in ids.enumerated() {
            let log = String(decoding: try await server.request(.GET, "/v1/jobs/\(id)/logs").body, as: UTF8.self)
            #expect(log.contains("line \(index) of its own"), "job \(index)'s log: \(log)")
            #expect(!log.contains("line \(index - 1) of its own"), "job \(index)'s log has the job before's line: \(log)")
        }
    }

    /// On a shared store the job's waiting reason speaks for the node's own slots only.
    @Test(arguments: SecurityTests.Store.allCases)
    func aWorkerWhoseSetupFailsMakesItsSlotUnhealthyAndJobsWait(store: SecurityTests.Store) async throws {
        let shared: [String: JSONValue] = store == .postgres ? ["store": .string(try await TestPostgres.createDatabase())] : [:]
        let server = try await server(["max_setup_failures": 2], env: ["FAIL_SETUP": "1"], extra: shared)
        defer { Task { await server.stop() } }
        let id = try #require(try await server.submit("work").json["id"]?.stringValue)
        try await withDeadline(.seconds(30), "the slot to be marked unhealthy") {
            while true {
                let queue = try await server.request(.GET, "/v1/queue").json
                if case .array(let slots)? = queue["slots"], case .array(let problems)? = slots.first?["unhealthy"],
                   problems.contains(where: { $0["unhealthy"] == .bool(true) }) { return }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        // The slot is marked unhealthy as its last setup fails; that attempt's return to the queue
        // is recorded a moment later (on a loaded machine, after a first look).
        let job = try await server.waitFor(id, ["queued", "failed", "canceled", "succeeded"], timeout: .seconds(30))
        #expect(job["state"] == "queued", "the job waits instead of failing")
        #expect(job["attempts"] == 0, "failed setups do not use the job's attempts")
        let health = try await server.request(.GET, "/healthz").json
        #expect(health["status"] == "degraded")
        // The job itself says why it waits, while the slot holds the type back (between tries).
        try await withDeadline(.seconds(30), "the job to say why it waits") {
            while true {
                let waiting = try await server.request(.GET, "/v1/jobs/\(id)").json
                if case .string(let reason)? = waiting["waiting_reason"] {
                    let prefix = store == .postgres ? "on this node, no slot can start it now" : "no slot can start it now"
                    #expect(reason.hasPrefix(prefix + ": worker type \"work\" failed to set up"), "\(reason)")
                    #expect(reason.hasSuffix("(another node's slots may take it)") == (store == .postgres), "\(reason)")
                    #expect(waiting["state"] == "queued")
                    return
                }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        if store == .sqlite {
            // Nothing of the type can start before the slot's next try: a deadline that comes
            // sooner is refused, nothing learned yet or not (found by attacking the build: the job
            // was taken with an ETA of 0 s, then canceled for its deadline). Between two tries.
            try await withDeadline(.seconds(30), "a deadline before the next setup try to be refused") {
                while true {
                    let reply = try await server.submit("work", extra: ["start_within_s": 0.001])
                    if reply.status == 409 {
                        #expect(reply.json["type"] == "urn:spool:problem:deadline-unreachable")
                        #expect(reply.json["estimate"]?["method"]?.stringValue?.hasPrefix("no slot can set up its worker type \"work\"") == true,
                                "\(reply.json)")
                        return
                    }
                    #expect(reply.status == 201, "\(String(decoding: reply.body, as: UTF8.self))")
                    if let taken = reply.json["id"]?.stringValue { _ = try await server.request(.POST, "/v1/jobs/\(taken)/cancel") }
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
        }
        _ = try await server.request(.POST, "/v1/jobs/\(id)/cancel")
        #expect(try await server.request(.GET, "/v1/jobs/\(id)").json["waiting_reason"] == nil, "an ended job waits for nothing")
    }

    @Test func cancelInWorkerModeAsksTheWorkerFirst() async throws {
        let server = try await server()
        defer { Task { await server.stop() } }
        let id = try #require(try await server.submit("work", .object(["steps": 400])).json["id"]?.stringValue)
        _ = try await server.waitFor(id, ["running"])
        #expect(try await server.request(.POST, "/v1/jobs/\(id)/cancel").status == 202)
        let job = try await server.waitFor(id, ["succeeded", "failed", "canceled"], timeout: .seconds(20))
        #expect(job["state"] == "canceled")
        #expect(try await run(server, [:])["state"] == "succeeded")
    }

    @Test func aJobThatIgnoresCancelAndOverrunsItsTimeoutCostsItsWorker() async throws {
        let server = try await server(timeout: 1)
        defer { Task { await server.stop() } }
        let stuck = try await run(server, ["ignore_cancel": true])
        #expect(stuck["state"] == "failed")
        #expect(stuck["reason"] == "timeout")
        #expect(try await run(server, [:])["state"] == "succeeded")
    }

    @Test func thePythonKitExampleRendersThroughSpool() async throws {
        guard (try? await runCLI(["--help"])) != nil, FileManager.default.fileExists(atPath: Self.repository + "/examples/python-render/worker.py") else { return }
        let harness = try ServerHarness(config: .object(["kill_grace_s": 1, "job_types": .object(["python-render": .object([
            "command": .array(["python3", "examples/python-render/worker.py"]), "mode": "worker",
            "working_dir": .string(Self.repository), "timeout_s": 120,
            "env": .object(["PYTHONPATH": .string(Self.repository + "/clients/python/src")]),
        ])])]))
        try await harness.start()
        defer { Task { await harness.stop() } }
        let id = try #require(try await harness.submit("python-render", .object(["width": 64, "height": 48])).json["id"]?.stringValue)
        let job = try await harness.waitFor(id, ["succeeded", "failed", "canceled"], timeout: .seconds(90))
        #expect(job["state"] == "succeeded", "\(job.canonicalText)")
        #expect(job["result"]?["width"] == 64)
        let image = try await harness.request(.GET, "/v1/jobs/\(id)/outputs/image.png")
        #expect(image.status == 200)
        #expect(image.body.starts(with: [0x89, 0x50, 0x4E, 0x47]))
    }

    @Test func thePythonKitPassesItsOwnTests() async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-m", "pytest", "-q", "-p", "no:cacheprovider", "clients/python/tests"]
        process.currentDirectoryURL = URL(fileURLWithPath: Self.repository)
        let log = NSTemporaryDirectory() + "spool-pytest-\(UUID().uuidString).log"
        FileManager.default.createFile(atPath: log, contents: nil)
        defer { unlink(log) }
        process.standardOutput = FileHandle(forWritingAtPath: log)
        process.standardError = FileHandle(forWritingAtPath: log)
        let status = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Int32, any Error>) in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do { try process.run() } catch { continuation.resume(throwing: error) }
        }
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(status == 0, "pytest failed:\n\(output.suffix(3000))")
    }

    func lastJobID(_ server: ServerHarness) async throws -> String {
        let page = try await server.request(.GET, "/v1/jobs?limit=1").json
        guard case .array(let jobs)? = page["jobs"], let id = jobs.first?["id"]?.stringValue else { throw HarnessError("no jobs") }
        return id
    }

    @Test func aRestartKillsTheWarmWorkersACrashedServerLeftBehind() async throws {
        // A worker still in its setup when the server dies would otherwise live on (and hold GPU memory).
        let harness = try ServerHarness(config: .object(["kill_grace_s": 1, "job_types": .object(["slow": .object([
            "command": .array(["/bin/sh", "-c", "sleep 300"]), "mode": "worker", "setup_timeout_s": 600,
        ])])]))
        try await harness.start()
        defer { Task { await harness.stop() } }
        _ = try await harness.submit("slow")
        let marker = "SPOOL_MESSAGES=" + harness.dataDirectory + "/workers/"
        @Sendable func workers() -> [Int32] {
            ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { entry in
                guard let pid = Int32(entry), let environ = FileManager.default.contents(atPath: "/proc/\(entry)/environ") else { return nil }
                return environ.split(separator: 0).contains { String(decoding: $0, as: UTF8.self).hasPrefix(marker) } && isAlive(pid) ? pid : nil
            }
        }
        let started = try await withDeadline(.seconds(20), "the worker to start") {
            while true {
                if let pid = workers().first { return pid }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        // Its guard killed first (the guard would kill the worker at once): the restart's sweep's case.
        await harness.kill9WithoutGuard()
        #expect(isAlive(started), "the worker outlives a kill -9 of its server and its guard")
        try await harness.start()
        try await withDeadline(.seconds(20), "the restarted server to kill the old worker") {
            while isAlive(started) { try await Task.sleep(for: .milliseconds(50)) }
        }
    }
}
