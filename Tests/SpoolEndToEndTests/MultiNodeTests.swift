import Foundation
import AsyncHTTPClient
import NIOHTTP1
import SpoolCore
import SpoolTestSupport
import Testing

/// Many machines, one queue: 2 API nodes (`serve --no-slots`) and 3 GPU nodes (`agent`, two
/// slots each) on one PostgreSQL database, all real processes on loopback. 300 jobs of
/// random length; one GPU node is killed with SIGKILL while it runs jobs.
///
/// The checks read what the jobs recorded themselves — a ledger of start and end lines with
/// each attempt's token (`SPOOL_ATTEMPT`), node and slot, an flock per slot that reports any
/// overlap, and a result file naming the attempt that wrote it — not the server's word.
@Suite(.serialized) struct MultiNodeTests {
    static let jobScript = """
        exec 9>>"$LEDGER/slot-$NODE-$SPOOL_SLOT.lock"
        flock -n 9 || echo "OVERLAP $SPOOL_JOB_ID $SPOOL_ATTEMPT $NODE $SPOOL_SLOT" >> "$LEDGER/ledger.txt"
        echo "start $SPOOL_JOB_ID $SPOOL_ATTEMPT $NODE $SPOOL_SLOT $(date +%s%N) {input.sleep}" >> "$LEDGER/ledger.txt"
        sleep {input.sleep}
        echo "$SPOOL_JOB_ID $SPOOL_ATTEMPT $NODE" > "$SPOOL_OUTPUT_DIR/result.txt"
        echo "end $SPOOL_JOB_ID $SPOOL_ATTEMPT $NODE $SPOOL_SLOT $(date +%s%N)" >> "$LEDGER/ledger.txt"
        """

    static func config(node: String, ledger: String, store: String) -> JSONValue {
        .object([
            "store": .string(store), "node": .string(node), "lease_s": 2, "kill_grace_s": 1, "shared_file_limit_bytes": 65536,
            "job_types": .object([
                "work": .object([
                    "command": .array(["/bin/sh", "-c", .string(jobScript)]), "timeout_s": 60, "max_attempts": 3,
                    "input_schema": .object(["type": "object", "required": .array(["sleep"]),
                                             "properties": .object(["sleep": .object(["type": "number", "minimum": 0, "maximum": 60])])]),
                    "env": .object(["NODE": .string(node), "LEDGER": .string(ledger)]),
                ]),
                "once": .object(["command": .array(["/bin/sh", "-c", "sleep {input.sleep}"]), "timeout_s": 60, "max_attempts": 1]),
                // An empty marker, a small file, and one past shared_file_limit_bytes.
                "files": .object(["command": .array(["/bin/sh", "-c", "cd \"$SPOOL_OUTPUT_DIR\" && : > _SUCCESS && echo small > small.txt && head -c 200000 /dev/zero > big.bin"])]),
                // A warm worker whose setup always fails: its slot turns unhealthy for it at once.
                "broken": .object(["command": .array(["/bin/sh", "-c", "echo 'no model here' >&2; exit 3"]), "mode": "worker",
                                   "max_setup_failures": 1]),
            ]),
        ])
    }

    struct Entry {
        var kind: String
        var job: String
        var attempt: Int
        var node: String
        var slot: String
        var nanoseconds: Int64
        /// For a start: how long the job means to run, in seconds.
        var sleep: Double = 0
    }

    @Test func threeGPUNodesAndTwoAPINodesLoseNothingWhenAGPUNodeIsKilled() async throws {
        let store = try await TestPostgres.createDatabase()
        let ledger = NSTemporaryDirectory() + "spool-ledger-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: ledger, withIntermediateDirectories: true)
        let apis = try (1...2).map { try ServerHarness(config: Self.config(node: "api\($0)", ledger: ledger, store: store)) }
        let gpus = try (1...3).map { try ServerHarness(config: Self.config(node: "gpu\($0)", ledger: ledger, store: store)) }
        defer { if getenv("SPOOL_KEEP_SCRATCH") == nil { try? FileManager.default.removeItem(atPath: ledger) } else { print("LEDGER \(ledger) GPUS \(gpus.map(\.scratch))") } }
        do {
            for api in apis { try await api.start(["--no-slots"]) }
            for gpu in gpus { try await gpu.start(["--slots", "2"], agent: true) }

            // Kill gpu1 while it runs jobs: watch, from the first submit on, until the ledger shows
            // it inside a job with at least half a second still to go. (Watching only once every
            // job was submitted, the queue had drained on a loaded machine before the watch began.)
            let victim = gpus[0]
            let killer = Task {
                try await withDeadline(.seconds(120), "gpu1 to be inside a long job") {
                    while true {
                        let now = Int64(Date().timeIntervalSince1970 * 1e9)
                        let open = Self.openAttempts(try Self.entries(ledger), node: "gpu1")
                        if open.contains(where: { $0.nanoseconds + Int64($0.sleep * 1e9) - now > 500_000_000 }) {
                            await victim.kill9()
                            return Int64(Date().timeIntervalSince1970 * 1e9)
                        }
                        try await Task.sleep(for: .milliseconds(5))
                    }
                }
            }

            // 300 jobs, half through each API node, of 50 to 400 ms; every fifth takes 1.5 s, so
            // the kill can catch a node surely inside a job.
            var generator = SystemRandomNumberGenerator()
            var ids: [String] = []
            for index in 0..<300 {
                let sleep = index % 5 == 0 ? 1.5 : Double(Int.random(in: 50...400, using: &generator)) / 1000
                let reply = try await apis[index % 2].submit("work", .object(["sleep": .double(sleep)]))
                #expect(reply.status == 201)
                ids.append(try #require(reply.json["id"]?.stringValue))
            }
            let killedAt = try await killer.value

            // Every job ends, as any API node reports it.
            var finished: [String: JSONValue] = [:]
            for (index, id) in ids.enumerated() {
                finished[id] = try await apis[(index + 1) % 2].waitFor(id, ["succeeded", "failed", "canceled"], timeout: .seconds(180))
            }
            let entries = try Self.entries(ledger)

            // None lost: every job succeeded (the killed node's jobs on a later attempt).
            let notSucceeded = finished.filter { $0.value["state"]?.stringValue != "succeeded" }
            #expect(notSucceeded.isEmpty, "jobs that did not succeed: \(notSucceeded.mapValues { $0["reason"]?.stringValue ?? "" })")

            // No slot ever ran two jobs at once: no flock overlap, and per slot each attempt
            // starts after the previous one ended.
            #expect(!entries.contains { $0.kind == "OVERLAP" })
            let bySlot = Dictionary(grouping: entries.filter { $0.kind != "OVERLAP" }) { "\($0.node)/\($0.slot)" }
            for (slot, lines) in bySlot {
                var running: String?
                for entry in lines.sorted(by: { $0.nanoseconds < $1.nanoseconds }) {
                    let attempt = "\(entry.job)#\(entry.attempt)"
                    if entry.kind == "start" {
                        #expect(running == nil || slot.hasPrefix("gpu1/"), "slot \(slot) started \(attempt) while \(running ?? "") ran")
                        running = attempt
                    } else if running == attempt {
                        running = nil
                    }
                }
            }

            // The killed node's jobs were rescued and ran again elsewhere.
            let interrupted = Self.openAttempts(entries.filter { $0.nanoseconds <= killedAt }, node: "gpu1")
            #expect(interrupted.count >= 1)
            for attempt in interrupted {
                let job = try #require(finished[attempt.job])
                #expect((job["attempts"]?.intValue ?? 0) > Int64(attempt.attempt), "job \(attempt.job) ran again after its node died")
                #expect(job["node"]?.stringValue != "gpu1")
            }

            // Any API node lists the five nodes; the killed one has gone silent.
            let listed = try await apis[1].request(.GET, "/v1/nodes").json
            guard case .array(let nodes)? = listed["nodes"] else { throw HarnessError("no nodes in \(listed)") }
            #expect(nodes.compactMap { $0["name"]?.stringValue } == ["api1", "api2", "gpu1", "gpu2", "gpu3"])
            #expect(nodes.map { $0["alive"] == .bool(true) } == [true, true, false, true, true])
            // Its last reading is stale: it reads lost, saying why (it read "ok" before).
            #expect(nodes[2]["status"] == "lost" && nodes[2]["problems"]?.arrayValue?.first?.stringValue?.hasPrefix("no heartbeat for") == true,
                    "\(nodes[2])")
            #expect(nodes.filter { $0["alive"] == .bool(true) }.allSatisfy { $0["status"] == "ok" })
            #expect(nodes.compactMap { $0["role"]?.stringValue } == ["api", "api", "agent", "agent", "agent"])

            // Each result was written by the job's last attempt, on the node the store names,
            // inside the times the store recorded — the attempt tokens agree everywhere.
            for (index, id) in ids.enumerated() {
                let job = try #require(finished[id])
                let attempt = Int(job["attempts"]?.intValue ?? -1)
                let node = job["node"]?.stringValue ?? ""
                let result = try await apis[index % 2].request(.GET, "/v1/jobs/\(id)/outputs/result.txt")
                #expect(result.status == 200, "job \(id)'s output is downloadable from any API node")
                #expect(String(decoding: result.body, as: UTF8.self) == "\(id) \(attempt) \(node)\n")
                let mine = entries.filter { $0.job == id && $0.attempt == attempt && $0.node == node }
                let start = try #require(mine.first { $0.kind == "start" }, "job \(id) attempt \(attempt) started on \(node)")
                let end = try #require(mine.first { $0.kind == "end" }, "job \(id) attempt \(attempt) ended on \(node)")
                let startedAt = try Self.nanoseconds(job["started_at"])
                let finishedAt = try Self.nanoseconds(job["finished_at"])
                #expect(startedAt <= start.nanoseconds && end.nanoseconds <= finishedAt,
                        "job \(id): the store's times enclose its last attempt")
                // A later attempt's end is never older than an earlier attempt's start.
                #expect(!entries.contains { $0.job == id && $0.attempt > attempt }, "no attempt after the recorded one")
            }
        } catch {
            for server in apis + gpus { await server.stop() }
            try? await TestPostgres.dropDatabase(store)
            throw error
        }
        for server in apis + gpus { await server.stop() }
        _ = try await killJobProcesses([], workersUnder: nil)
        try await TestPostgres.dropDatabase(store)
    }

    /// A cancel asked on an API node stops the job on the agent running it (SIGTERM to its
    /// process), and the job's events reach an event stream on the API node.
    @Test func aCancelOnAnAPINodeStopsTheJobOnTheAgent() async throws {
        try await withAPINodeAndAgent { api, ledger, _ in
            let reply = try await api.submit("work", .object(["sleep": 30]))
            let id = try #require(reply.json["id"]?.stringValue)
            let running = try await api.waitFor(id, ["running"], timeout: .seconds(60))
            #expect(running["node"]?.stringValue == "gpu1")
            _ = try await withDeadline(.seconds(30), "the job to write its start line") {
                while !Self.openAttempts(try Self.entries(ledger), node: "gpu1").contains(where: { $0.job == id }) {
                    try await Task.sleep(for: .milliseconds(10))
                }
            }
            let asked = ContinuousClock.now
            let cancel = try await api.request(.POST, "/v1/jobs/\(id)/cancel")
            #expect(cancel.status == 202)
            let canceled = try await api.waitFor(id, ["canceled", "succeeded", "failed"], timeout: .seconds(30))
            #expect(canceled["state"]?.stringValue == "canceled" && canceled["reason"]?.stringValue == "canceled")
            #expect(ContinuousClock.now - asked < .seconds(15), "stopped well before its 30 s sleep ended")
            #expect(!(try Self.entries(ledger)).contains { $0.job == id && $0.kind == "end" }, "the job never reached its end")
            // The whole story, replayed from an event stream on the API node.
            let events = try await api.request(.GET, "/v1/jobs/\(id)/events", headers: [("Accept", "text/event-stream")], timeout: .seconds(10))
            let text = String(decoding: events.body, as: UTF8.self)
            for state in ["queued", "running", "canceled"] { #expect(text.contains("\"state\":\"\(state)\""), "the stream shows \(state)") }
        }
    }

    /// An agent's outputs as an API node lists them: an empty one too, and, when some stayed on
    /// the agent (past shared_file_limit_bytes), a list that says it is not all of them, so
    /// `spool outputs --download` exits 1 saying so (found by attacking the build: the empty
    /// `_SUCCESS` vanished, and the download exited 0 with some of the files).
    @Test func anAgentsOutputsOnAnAPINodeIncludeEmptyOnesAndSayWhenSomeStayedBehind() async throws {
        try await withAPINodeAndAgent { api, _, gpu in
            let id = try #require(try await api.submit("files").json["id"]?.stringValue)
            _ = try await api.waitFor(id, ["succeeded"], timeout: .seconds(60))
            let list = try await api.request(.GET, "/v1/jobs/\(id)/outputs").json
            let names = list["outputs"]?.arrayValue?.compactMap { $0["name"]?.stringValue } ?? []
            #expect(names == ["_SUCCESS", "small.txt"] && list["truncated"] == true, "\(list)")
            let download = NSTemporaryDirectory() + "spool-download-\(UUID().uuidString.prefix(8))"
            defer { try? FileManager.default.removeItem(atPath: download) }
            let run = try await runCLI(["outputs", id, "--download", download, "--server", api.url])
            #expect(run.status == 1 && run.stderr.contains("only some"), "\(run.stderr)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: download).sorted() == ["_SUCCESS", "small.txt"])

            // An agent stopped cleanly reads "stopped" in the nodes list, not "lost" as a crashed
            // one does (found by attacking the build: a rolling restart looked like an outage).
            gpu.terminate()
            #expect(await gpu.waitForExit() == 0)
            let node = try await withDeadline(.seconds(20), "the agent to read stopped") {
                while true {
                    let nodes = try await api.request(.GET, "/v1/nodes").json["nodes"]?.arrayValue ?? []
                    if let node = nodes.first(where: { $0["name"] == "gpu1" }), node["status"] == "stopped" { return node }
                    try await Task.sleep(for: .milliseconds(200))
                }
            }
            #expect(node["alive"] == false && node["problems"]?.arrayValue?.first?.stringValue?.contains("stopped") == true, "\(node)")
        }
    }

    /// An agent serves its metrics and health on `--metrics-port` when asked (found by
    /// attacking the build: with agents running the jobs, their counts and busy slots were
    /// nowhere); nothing else is answered there.
    @Test func anAgentServesItsMetricsOnItsMetricsPort() async throws {
        let port = unusedLoopbackPort()
        try await withAPINodeAndAgent(agent: ["--slots", "1", "--metrics-port", String(port)]) { api, _, _ in
            let id = try #require(try await api.submit("once", .object(["sleep": 0])).json["id"]?.stringValue)
            _ = try await api.waitFor(id, ["succeeded"], timeout: .seconds(60))
            let metrics = try await withDeadline(.seconds(20), "the agent's metrics") {
                try await HTTPClient.shared.get(url: "http://127.0.0.1:\(port)/metrics").get()
            }
            let text = metrics.body.map { String(buffer: $0) } ?? ""
            #expect(metrics.status == .ok && text.contains("spool_jobs_finished_total{") && text.contains("spool_slots 1"), "\(text.prefix(400))")
            let health = try await HTTPClient.shared.get(url: "http://127.0.0.1:\(port)/healthz").get()
            #expect(health.status == .ok)
            let other = try await HTTPClient.shared.get(url: "http://127.0.0.1:\(port)/v1/jobs").get()
            #expect(other.status == .notFound, "only /metrics and /healthz")
        }
    }

    /// A second node under a name a running node holds is refused in one line, and touches
    /// nothing (found by attacking the build: two live nodes named alike each recovered the
    /// other's running job as interrupted, and gave the other's claims back, so one attempt ran
    /// twice at once); the node itself, restarted after a kill -9, takes its name again at once.
    @Test func aSecondNodeUnderARunningNodesNameIsRefused() async throws {
        try await withAPINodeAndAgent { api, ledger, gpu in
            let id = try #require(try await api.submit("work", .object(["sleep": 30])).json["id"]?.stringValue)
            _ = try await api.waitFor(id, ["running"], timeout: .seconds(60))
            let twin = try ServerHarness(config: Self.config(node: "gpu1", ledger: ledger, store: Self.store(of: api)))
            let refused = try await runCLI(["agent", "--config", twin.configPath, "--data-dir", twin.dataDirectory, "--slots", "1",
                                            "--gpus", "none"], killAfter: .seconds(90))
            #expect(refused.status != 0)
            #expect(refused.stderr.contains("another node named \"gpu1\" is running on this store"), "\(refused.stderr)")
            let job = try await api.request(.GET, "/v1/jobs/\(id)").json
            #expect(job["state"] == "running" && job["attempts"] == 1, "the running node's job is untouched: \(job)")
            // The node itself, killed and started again: its name is free once its session is gone.
            await gpu.kill9()
            try await gpu.start(["--slots", "1"], agent: true)
            _ = try await api.request(.POST, "/v1/jobs/\(id)/cancel")
        }
    }

    /// The `store` URL of a harness made by `config(node:ledger:store:)`.
    static func store(of server: ServerHarness) throws -> String {
        let config = try JSONParser.parse(Array(try Data(contentsOf: URL(fileURLWithPath: server.configPath))))
        return try #require(config["store"]?.stringValue)
    }

    /// A node whose process is frozen (`SIGSTOP`, a stalled VM) cannot stop its jobs when its
    /// lease runs out; its guard does, before the other nodes may rescue them (found by attacking
    /// the build: the job's process ran on while the rescue gave the job to another node — one job
    /// running twice at once). The same guard kills a killed node's jobs at once.
    @Test func aFrozenNodesJobsAreKilledBeforeTheRescue() async throws {
        try await withAPINodeAndAgent { api, _, agent in
            let id = try #require(try await api.submit("once", .object(["sleep": 30])).json["id"]?.stringValue)
            _ = try await api.waitFor(id, ["running"], timeout: .seconds(60))
            try await poll(.seconds(10), "the job's process to be seen") { !processes(ofJob: id).isEmpty }
            let agentPID = agent.pid
            kill(agentPID, SIGSTOP)
            defer { kill(agentPID, SIGCONT) }
            // Until the rescue: the first moment the job's processes were all gone, if they were.
            let gone = try await withDeadline(.seconds(60), "the rescue") { () -> Bool in
                var gone = false
                while try await api.request(.GET, "/v1/jobs/\(id)").json["state"] == "running" {
                    if processes(ofJob: id).isEmpty { gone = true }
                    try await Task.sleep(for: .milliseconds(20))
                }
                return gone
            }
            #expect(gone, "the job's processes were gone before the rescue")
            #expect(processes(ofJob: id).isEmpty)
            let rescued = try await api.request(.GET, "/v1/jobs/\(id)").json
            #expect(rescued["state"] == "failed" && rescued["reason"] == "node_lost", "\(rescued)")
            #expect(agent.log.contains("the server has neither renewed its leases nor been heard from in time"), "\(agent.log)")
            kill(agentPID, SIGCONT)
        }
    }

    /// Fail-fast holds when a task fails because its node was lost: the node that rescues it
    /// (here the API node) cancels the rest of the array (found by attacking the build: they
    /// stayed queued, and ran).
    @Test func aTaskFailedAsNodeLostCancelsTheRestOfAFailFastArray() async throws {
        try await withAPINodeAndAgent { api, _, agent in
            let reply = try await api.submit("once", .object(["sleep": 30]), extra: ["array": .object(["range": .array([1, 3]), "fail_fast": true])])
            let id = try #require(reply.json["id"]?.stringValue)
            let first = try #require(try await api.request(.GET, "/v1/arrays/\(id)/tasks").json["tasks"]?.arrayValue?.first?["id"]?.stringValue)
            _ = try await api.waitFor(first, ["running"], timeout: .seconds(60))
            await agent.kill9()
            let lost = try await api.waitFor(first, ["succeeded", "failed", "canceled"], timeout: .seconds(60))
            #expect(lost["state"] == "failed" && lost["reason"] == "node_lost", "\(lost)")
            @Sendable func tasks() async throws -> [JSONValue] {
                try await api.request(.GET, "/v1/arrays/\(id)/tasks").json["tasks"]?.arrayValue ?? []
            }
            try await poll(.seconds(30), "the rest of the array to be canceled") {
                try await tasks().dropFirst().allSatisfy { $0["state"] != "queued" }
            }
            let tasks = try await tasks()
            #expect(tasks.dropFirst().allSatisfy { $0["state"] == "canceled" && $0["canceled_by"] == "fail_fast" }, "\(tasks)")
        }
    }

    /// A deadline is kept by every node, not only the one that took the submit: with that node
    /// killed and every slot busy, another node cancels the job once its deadline passes
    /// (found by attacking the build: it stayed queued until a slot came free, 9–12 s late).
    @Test func aDeadlineIsKeptWhenTheNodeThatTookTheSubmitDies() async throws {
        try await withAPINodeAndAgent { api, ledger, _ in
            let store = try #require(Self.storeOf(api))
            let other = try ServerHarness(config: Self.config(node: "api2", ledger: ledger, store: store))
            try await other.start(["--no-slots"])
            defer { Task { await other.stop() } }
            let blocker = try #require(try await other.submit("work", .object(["sleep": 30])).json["id"]?.stringValue)
            _ = try await other.waitFor(blocker, ["running"], timeout: .seconds(60))
            let missed = try #require(try await api.submit("work", .object(["sleep": 0]), extra: ["start_within_s": 2]).json["id"]?.stringValue)
            await api.kill9()
            let submitted = ContinuousClock.now
            let ended = try await other.waitFor(missed, ["succeeded", "failed", "canceled"], timeout: .seconds(20))
            #expect(ended["state"] == "canceled" && ended["reason"] == "deadline", "\(ended)")
            #expect(ContinuousClock.now - submitted < .seconds(6), "canceled near its deadline, not when a slot came free")
            _ = try await other.request(.POST, "/v1/jobs/\(blocker)/cancel")
        }
    }

    /// A job delayed on an API node starts on an agent once it is due — the agent learns when
    /// from the store, not from the submit (which reached the API node only) — and a job whose
    /// deadline passes while it waits is canceled.
    @Test func aJobDelayedOnAnAPINodeStartsOnAnAgentWhenDue() async throws {
        try await withAPINodeAndAgent { api, _, _ in
            let blocker = try #require(try await api.submit("work", .object(["sleep": 30])).json["id"]?.stringValue)
            _ = try await api.waitFor(blocker, ["running"], timeout: .seconds(60))
            let missed = try #require(try await api.submit("work", .object(["sleep": 0]), extra: ["start_within_s": 1]).json["id"]?.stringValue)
            let expired = try await api.waitFor(missed, ["succeeded", "failed", "canceled"], timeout: .seconds(30))
            #expect(expired["state"] == "canceled" && expired["reason"] == "deadline")
            _ = try await api.request(.POST, "/v1/jobs/\(blocker)/cancel")
            let reply = try await api.submit("work", .object(["sleep": 0]), extra: ["delay_s": 1.5])
            let id = try #require(reply.json["id"]?.stringValue)
            let notBefore = try #require(reply.json["not_before"]?.stringValue.flatMap(Timestamp.init(rfc3339:)))
            let done = try await api.waitFor(id, ["succeeded", "failed", "canceled"], timeout: .seconds(30))
            #expect(done["state"] == "succeeded" && done["node"] == "gpu1")
            let started = try #require(done["started_at"]?.stringValue.flatMap(Timestamp.init(rfc3339:)))
            #expect(started >= notBefore, "not before its time")
        }
    }

    /// An agent answers no `/healthz`; `GET /v1/nodes` on an API node shows what it would say, from
    /// its heartbeats (found by attacking the build: an agent that could run nothing — a full
    /// data directory — read as alive and well there).
    @Test func theNodesListShowsAnAgentThatCannotSetUpAWorkerType() async throws {
        try await withAPINodeAndAgent { api, _, _ in
            @Sendable func nodes() async throws -> [String: JSONValue] {
                let listed = try await api.request(.GET, "/v1/nodes").json["nodes"]?.arrayValue ?? []
                return Dictionary(listed.map { ($0["name"]?.stringValue ?? "", $0) }, uniquingKeysWith: { first, _ in first })
            }
            try await poll(.seconds(30), "both nodes listed") { try await nodes().count == 2 }
            #expect(try await nodes().values.allSatisfy { $0["status"] == "ok" && $0["problems"] == .array([]) })
            let id = try #require(try await api.submit("broken", .object([:])).json["id"]?.stringValue)
            try await poll(.seconds(30), "the agent's heartbeat to say its slot cannot set up the type") {
                try await nodes()["gpu1"]?["status"] == "degraded"
            }
            let agent = try #require(try await nodes()["gpu1"])
            let problems = agent["problems"]?.arrayValue?.compactMap(\.stringValue) ?? []
            #expect(problems.count == 1 && problems[0].contains("worker type broken"), "\(agent)")
            #expect(try await nodes()["api1"]?["status"] == "ok")
            #expect(try await api.request(.GET, "/v1/jobs/\(id)").json["state"] == "queued", "the job waits for a slot that can run it")
            _ = try await api.request(.POST, "/v1/jobs/\(id)/cancel")
        }
    }

    /// The database a node's configuration names.
    static func storeOf(_ server: ServerHarness) -> String? {
        guard let data = FileManager.default.contents(atPath: server.configPath),
              let config = try? JSONParser.parse(data) else { return nil }
        return config["store"]?.stringValue
    }

    /// A fresh database, an API node (`api1`, no slots) and an agent (`gpu1`, one slot) writing to
    /// one ledger (the body gets the API node, the ledger and the agent); both stopped and the database dropped afterwards, whatever happens.
    func withAPINodeAndAgent(agent arguments: [String] = ["--slots", "1"],
                             _ body: (ServerHarness, String, ServerHarness) async throws -> Void) async throws {
        let store = try await TestPostgres.createDatabase()
        let ledger = NSTemporaryDirectory() + "spool-ledger-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: ledger, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: ledger) }
        let api = try ServerHarness(config: Self.config(node: "api1", ledger: ledger, store: store))
        let gpu = try ServerHarness(config: Self.config(node: "gpu1", ledger: ledger, store: store))
        do {
            try await api.start(["--no-slots"])
            try await gpu.start(arguments, agent: true)
            try await body(api, ledger, gpu)
        } catch {
            for server in [api, gpu] { await server.stop() }
            try? await TestPostgres.dropDatabase(store)
            throw error
        }
        for server in [api, gpu] { await server.stop() }
        try await TestPostgres.dropDatabase(store)
    }

    /// Roles that cannot work say so in one line before anything starts.
    @Test(arguments: [
        (["agent"], "an agent needs a shared store"),
        (["serve", "--no-slots"], "--no-slots needs a shared store"),
        (["agent", "--store", "mysql://x@y/z"], "postgres://USER@HOST"),
        (["agent", "--store", "postgres://spool@127.0.0.1:1/none"], "cannot reach the PostgreSQL store"),
        (["serve", "--store", "postgres://spool@127.0.0.1/x", "--node", "bad name!"], "--node: node must be a node name"),
        (["serve", "--store", "postgres://spool@127.0.0.1/x", "--lease", "0.5"], "--lease: lease_s must be a number of seconds from 1 to 3600"),
    ])
    func aNodeThatCannotWorkSaysWhyInOneLine(_ arguments: [String], _ mentions: String) async throws {
        let directory = NSTemporaryDirectory() + "spool-role-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let result = try await runCLI(arguments + ["--data-dir", directory, "--gpus", "none"])
        #expect(result.status == 1)
        #expect(result.stderr.split(separator: "\n").count == 1, "one line: \(result.stderr)")
        #expect(result.stderr.contains(mentions), "\(result.stderr)")
    }

    static func entries(_ ledger: String) throws -> [Entry] {
        guard let text = try? String(contentsOfFile: ledger + "/ledger.txt", encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let parts = line.split(separator: " ").map(String.init)
            guard parts.count >= 5 else { return nil }
            return Entry(kind: parts[0], job: parts[1], attempt: Int(parts[2]) ?? -1, node: parts[3], slot: parts[4],
                         nanoseconds: parts.count > 5 ? Int64(parts[5]) ?? 0 : 0, sleep: parts.count > 6 ? Double(parts[6]) ?? 0 : 0)
        }
    }

    /// Attempts on `node` that started and have not ended.
    static func openAttempts(_ entries: [Entry], node: String) -> [Entry] {
        let ended = Set(entries.filter { $0.kind == "end" }.map { "\($0.job)#\($0.attempt)" })
        return entries.filter { $0.kind == "start" && $0.node == node && !ended.contains("\($0.job)#\($0.attempt)") }
    }

    static func nanoseconds(_ value: JSONValue?) throws -> Int64 {
        let text = try #require(value?.stringValue)
        let timestamp = try #require(Timestamp(rfc3339: text), "a timestamp: \(text)")
        return timestamp.microseconds * 1000
    }
}
