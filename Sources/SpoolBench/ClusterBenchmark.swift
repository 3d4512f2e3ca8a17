#if canImport(Glibc)
import Glibc
#endif
import AsyncHTTPClient
import Foundation
import Logging
import SpoolCore
import SpoolExecutor
import SpoolPostgres
import SpoolStore

/// `spool bench --cluster`: the shared PostgreSQL store, measured on this machine.
///
/// 1. **Store ceiling**: 8 slot loops in this process, over 2 `PostgresJobStore`s (two nodes'
///    worth of connections), each doing what a slot does per job — record the finished job and
///    claim the next in one transaction — on a pre-filled queue. No process runs.
/// 2. **Claim/complete through real nodes**: an API node and 2 agents × 4 slots, a warm worker
///    per slot that answers every job at once (`Benchmarks/workers/noop_worker.py`); the queue
///    is filled first, then the agents start. Rate from the store's own timestamps.
/// 3. **Pickup latency**: jobs submitted one at a time to the API node while the agents idle;
///    the time from `created_at` (set by the API node) to `started_at` (the agent's claim).
/// 4. **Rescue**: an agent running a long job is killed with SIGKILL; the time until the job
///    runs again on the other agent, at a 2 s lease and at the default 10 s.
///
/// Every process is started here and killed by pid before returning.
public enum ClusterBenchmark {
    public struct Options: Sendable {
        public var spoolBinary: String
        public var workDir: String
        public var python: String
        public var store: String?
        public var quick: Bool

        public init(spoolBinary: String, workDir: String, python: String, store: String?, quick: Bool) {
            self.spoolBinary = spoolBinary
            self.workDir = workDir
            self.python = python
            self.store = store
            self.quick = quick
        }
    }

    public static func run(_ options: Options) async throws -> String {
        let logger = Logger(label: "bench")
        let benchOptions = BenchOptions(spoolBinary: options.spoolBinary, workDir: options.workDir, python: options.python)
        guard let worker = BenchAssets.locate("Benchmarks/workers/noop_worker.py", benchOptions) else {
            throw BenchError("Benchmarks/workers/noop_worker.py not found (run from the checkout)")
        }
        let server: String
        var serverNote: String
        var durableServer: String?
        if let store = options.store {
            server = store
            serverNote = "the PostgreSQL server at `\(try PostgresLocation(url: store))` (its own settings)"
        } else {
            guard let script = BenchAssets.locate("scripts/throwaway-postgres.sh", benchOptions) else {
                throw BenchError("scripts/throwaway-postgres.sh not found (run from the checkout), or pass --store")
            }
            server = try ThrowawayPostgres.start(script: script)
            durableServer = try ThrowawayPostgres.start(script: script, durable: true)
            serverNote = "a throwaway PostgreSQL 15 on loopback started by `scripts/throwaway-postgres.sh` (`fsync=off`, `synchronous_commit=off`: it measures Spool's statements and round trips, not the disk)"
        }
        let http = HTTPClient.shared
        let jobs = options.quick ? 4_000 : 20_000
        var report = "## Shared store (PostgreSQL), `spool bench --cluster`\n\n"
        report += "- Machine: \(ProcessInfo.processInfo.activeProcessorCount) cores; \(serverNote). Release build, everything on this one machine.\n"

        let ceiling = try await storeCeiling(server: server, jobs: jobs, logger: logger)
        report += "\n### 1. Store ceiling: claim/complete with 8 slot loops in-process over 2 nodes' connections\n\n"
        report += "| jobs | seconds | jobs/s | target |\n|---|---|---|---|\n"
        report += "| \(jobs) | \(format(ceiling.seconds, 2)) | **\(Int(ceiling.rate))** | ≥ 10,000 — \(ceiling.rate >= 10_000 ? "PASS" : "MISS") |\n"
        if let durableServer {
            let durable = try await storeCeiling(server: durableServer, jobs: jobs / 2, logger: logger)
            report += "| \(jobs / 2), PostgreSQL's durable defaults (`fsync`, `synchronous_commit=on`) | \(format(durable.seconds, 2)) | **\(Int(durable.rate))** | ≥ 10,000 — \(durable.rate >= 10_000 ? "PASS" : "MISS") |\n"
        }
        report += "\nCPU per job (first row): PostgreSQL \(Int(ceiling.cpu.postgres * 1e6 / Double(jobs))) µs, this process (postgres-nio, the store) \(Int(ceiling.cpu.spool * 1e6 / Double(jobs))) µs; \(ProcessInfo.processInfo.activeProcessorCount) cores × \(format(ceiling.seconds, 2)) s = \(Int(Double(ProcessInfo.processInfo.activeProcessorCount) * ceiling.seconds * 1e6 / Double(jobs))) µs of CPU available per job.\n"

        let cluster = try await throughNodes(server: server, jobs: options.quick ? 2_000 : 10_000, worker: worker, options: options,
                                             http: http, logger: logger)
        report += "\n### 2. Claim/complete through real nodes: 2 agents × 4 slots, a warm no-op worker per slot\n\n"
        report += "| jobs | seconds (first start → last finish) | jobs/s | target |\n|---|---|---|---|\n"
        report += "| \(cluster.jobs) | \(format(cluster.seconds, 2)) | **\(Int(cluster.rate))** | ≥ 10,000 — \(cluster.rate >= 10_000 ? "PASS" : "MISS") |\n"
        report += "\nCPU per job over the run: PostgreSQL \(Int(cluster.cpu.postgres * 1e6 / Double(cluster.jobs))) µs, the agents \(Int(cluster.cpu.spool * 1e6 / Double(cluster.jobs))) µs, the Python workers \(Int(cluster.cpu.workers * 1e6 / Double(cluster.jobs))) µs.\n"

        let pickup = LatencySummary(milliseconds: cluster.pickup)
        report += "\n### 3. Pickup latency: submit on the API node → claim on an idle agent (store timestamps)\n\n"
        report += "| jobs | p50 ms | p99 ms | max ms | target |\n|---|---|---|---|---|\n"
        report += "| \(pickup.count) | \(format(pickup.p50, 2)) | **\(format(pickup.p99, 2))** | \(format(pickup.max, 2)) | p99 ≤ 5 ms — \(pickup.p99 <= 5 ? "PASS" : "MISS") |\n"

        report += "\n### 4. Rescue: SIGKILL of the agent running a job → the job running again on the other agent\n\n"
        report += "| lease | trials | seconds (each) |\n|---|---|---|\n"
        for (lease, trials) in [(2.0, options.quick ? 1 : 3), (10.0, 1)] {
            let times = try await rescue(server: server, lease: lease, trials: trials, options: options, http: http, logger: logger)
            report += "| \(Int(lease)) s | \(trials) | \(times.map { format($0, 2) }.joined(separator: ", ")) |\n"
        }
        return report
    }

    // MARK: - 1. Store ceiling

    static func storeCeiling(server: String, jobs: Int, logger: Logger) async throws -> (seconds: Double, rate: Double, cpu: (postgres: Double, spool: Double)) {
        let url = try await createDatabase(server, logger: logger)
        let nodes = try (0..<2).map { index in
            try PostgresJobStore(location: PostgresLocation(url: url), node: "bench-\(index)", connections: 8, logger: logger)
        }
        defer { for node in nodes { node.close() } }
        for node in nodes { try await node.prepare() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for client in 0..<8 {
                group.addTask {
                    for _ in stride(from: client, to: jobs, by: 8) {
                        _ = try await nodes[client % 2].enqueue(noop(at: WallClock.now()))
                    }
                }
            }
            try await group.waitForAll()
        }
        let start = ContinuousClock.now
        let (postgresBefore, ownBefore) = (postgresCPUSeconds(), ownCPUSeconds())
        let done = try await withThrowingTaskGroup(of: Int.self) { group in
            for slot in 0..<8 {
                group.addTask {
                    let store = nodes[slot % 2]
                    var count = 0
                    var job = try await store.claimNext(for: SlotID(slot), now: WallClock.now())
                    while let current = job {
                        count += 1
                        job = try await store.finish(current.id, attempt: current.attempts, outcome: .succeeded, now: WallClock.now(),
                                                     claimNextFor: SlotID(slot)).next
                    }
                    return count
                }
            }
            return try await group.reduce(0, +)
        }
        let seconds = (ContinuousClock.now - start).milliseconds / 1000
        let cpu = (postgresCPUSeconds() - postgresBefore, ownCPUSeconds() - ownBefore)
        guard done == jobs else { throw BenchError("the store ceiling run finished \(done) of \(jobs) jobs") }
        return (seconds, Double(jobs) / seconds, cpu)
    }

    // MARK: - 2 and 3. Through nodes

    struct NodeRun {
        var jobs: Int
        var seconds: Double
        var rate: Double { Double(jobs) / seconds }
        var pickup: [Double]
        var cpu: (postgres: Double, spool: Double, workers: Double)
    }

    static func throughNodes(server: String, jobs: Int, worker: String, options: Options, http: HTTPClient,
                             logger: Logger) async throws -> NodeRun {
        let url = try await createDatabase(server, logger: logger)
        let directory = options.workDir + "/cluster-throughput"
        let config = try writeConfig(directory, store: url, lease: 10, worker: worker, python: options.python)
        let store = try PostgresJobStore(location: PostgresLocation(url: url), node: "bench-filler", connections: 8, logger: logger)
        defer { store.close() }
        try await store.prepare()
        // Fill the queue first, so the agents start on a full queue.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for client in 0..<8 {
                group.addTask { for _ in stride(from: client, to: jobs, by: 8) { _ = try await store.enqueue(noop(at: WallClock.now())) } }
            }
            try await group.waitForAll()
        }
        let api = ServerLaunch(label: "api", executable: options.spoolBinary,
                               arguments: ["serve", "--config", config, "--no-slots", "--port", "0", "--data-dir", directory + "/api",
                                           "--log-level", "warning"],
                               workingDirectory: directory, logPath: directory + "/api.log")
        return try await ServerProcess.with(api, http: http) { apiNode in
            var agents: [Agent] = []
            do {
                let run = try await measureNodes(&agents, api: apiNode, store: store, jobs: jobs, config: config, directory: directory,
                                                 options: options, http: http)
                for agent in agents { await agent.stop() }
                return run
            } catch {
                for agent in agents { await agent.stop() }
                throw error
            }
        }
    }

    static func measureNodes(_ agents: inout [Agent], api apiNode: RunningServer, store: PostgresJobStore, jobs: Int, config: String,
                             directory: String, options: Options, http: HTTPClient) async throws -> NodeRun {
        let postgresBefore = postgresCPUSeconds()
        for index in 0..<2 {
            agents.append(try Agent.start(options.spoolBinary, config: config, dataDirectory: directory + "/agent\(index)", slots: 4,
                                          log: directory + "/agent\(index).log"))
        }
        let deadline = ContinuousClock.now + .seconds(600)
        while true {
            let queued = try await store.queuedCount()
            let running = try await store.jobs(JobQuery(state: .running, limit: 1)).jobs.count
            if queued == 0 && running == 0 { break }
            guard ContinuousClock.now < deadline else { throw BenchError("the nodes did not finish \(jobs) jobs in 10 minutes") }
            try await Task.sleep(for: .milliseconds(50))
        }
        let postgresCPU = postgresCPUSeconds() - postgresBefore
        let agentCPU = agents.compactMap { ProcessStats.cpuSeconds(of: $0.process.processIdentifier) }.reduce(0, +)
        let workerCPU = agents.flatMap { ProcessStats.descendants(of: $0.process.processIdentifier) }
            .compactMap { ProcessStats.cpuSeconds(of: $0.pid) }.reduce(0, +)
        let finished = try await allJobs(store)
        guard finished.count == jobs, finished.allSatisfy({ $0.state == .succeeded }) else {
            throw BenchError("expected \(jobs) succeeded jobs, found \(finished.filter { $0.state == .succeeded }.count)")
        }
        let first = finished.compactMap(\.startedAt).map(\.microseconds).min() ?? 0
        let last = finished.compactMap(\.finishedAt).map(\.microseconds).max() ?? 0
        // Pickup: the agents idle now; one job at a time through the API node.
        let client = JobClient(http: http, baseURL: apiNode.baseURL)
        var pickup: [Double] = []
        for _ in 0..<(options.quick ? 100 : 500) {
            let submitted = try await client.submit(type: "noop")
            let done = try await client.poll(submitted.id, until: ["succeeded"], within: .seconds(30))
            guard let job = try await store.job(JobID(done.id)!), let started = job.startedAt else { continue }
            pickup.append(Double(started.microseconds - job.createdAt.microseconds) / 1000)
            try await Task.sleep(for: .milliseconds(10))
        }
        return NodeRun(jobs: jobs, seconds: Double(last - first) / 1e6, pickup: pickup, cpu: (postgresCPU, agentCPU, workerCPU))
    }

    // MARK: - 4. Rescue

    static func rescue(server: String, lease: Double, trials: Int, options: Options, http: HTTPClient, logger: Logger) async throws -> [Double] {
        let url = try await createDatabase(server, logger: logger)
        let directory = options.workDir + "/cluster-rescue-\(Int(lease))"
        let config = try writeConfig(directory, store: url, lease: lease, worker: nil, python: options.python)
        let store = try PostgresJobStore(location: PostgresLocation(url: url), node: "bench-watcher", connections: 4, logger: logger)
        defer { store.close() }
        try await store.prepare()
        var agents = try (0..<2).map { index in
            try Agent.start(options.spoolBinary, config: config, dataDirectory: directory + "/agent\(index)", slots: 1,
                            log: directory + "/agent\(index).log")
        }
        do {
            let times = try await measureRescue(&agents, store: store, trials: trials, config: config, options: options)
            for agent in agents { await agent.stop() }
            return times
        } catch {
            for agent in agents { await agent.stop() }
            throw error
        }
    }

    static func measureRescue(_ agents: inout [Agent], store: PostgresJobStore, trials: Int, config: String,
                              options: Options) async throws -> [Double] {
        var times: [Double] = []
        for _ in 0..<trials {
            var hold = noop(at: WallClock.now())
            hold.type = "hold"
            hold.input = .object(["seconds": .int(600)])
            hold.maxAttempts = 5
            _ = try await store.enqueue(hold)
            var running = try await waitForRunning(store, hold.id, attempt: 1)
            let victim = try require(agents.firstIndex { $0.node == running.node }, "the job runs on no known agent (\(running.node ?? "none"))")
            let killed = WallClock.now()
            await agents[victim].kill9()
            running = try await waitForRunning(store, hold.id, attempt: 2)
            let restarted = try require(running.startedAt, "a running job has a start time")
            times.append(Double(restarted.microseconds - killed.microseconds) / 1e6)
            _ = try await store.cancel(hold.id, now: WallClock.now())
            // The killed agent comes back (and kills the job process it left behind).
            agents[victim] = try Agent.start(options.spoolBinary, config: config, dataDirectory: agents[victim].dataDirectory, slots: 1,
                                             log: agents[victim].log)
            try await Task.sleep(for: .seconds(1))
        }
        return times
    }

    static func waitForRunning(_ store: PostgresJobStore, _ id: JobID, attempt: Int) async throws -> Job {
        let deadline = ContinuousClock.now + .seconds(120)
        while ContinuousClock.now < deadline {
            if let job = try await store.job(id), job.state == .running, job.attempts == attempt, job.node != nil { return job }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw BenchError("job \(id) did not run attempt \(attempt) within 2 minutes")
    }

    // MARK: - Parts

    /// An agent process, started and killed by pid.
    struct Agent {
        var process: Process
        var dataDirectory: String
        var log: String
        var node: String

        static func start(_ binary: String, config: String, dataDirectory: String, slots: Int, log: String) throws -> Agent {
            let node = URL(fileURLWithPath: dataDirectory).lastPathComponent
            let process = Process()
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = ["agent", "--config", config, "--data-dir", dataDirectory, "--slots", String(slots), "--gpus", "none",
                                 "--node", node, "--log-level", "warning"]
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            handle.seekToEndOfFile()
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
            return Agent(process: process, dataDirectory: dataDirectory, log: log, node: node)
        }

        func kill9() async {
            kill(process.processIdentifier, SIGKILL)
            while process.isRunning { try? await Task.sleep(for: .milliseconds(5)) }
        }

        /// SIGTERM (the agent stops its workers), then SIGKILL; then whatever it left.
        func stop() async {
            if process.isRunning {
                kill(process.processIdentifier, SIGTERM)
                let deadline = ContinuousClock.now + .seconds(10)
                while process.isRunning && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(20)) }
                if process.isRunning { await kill9() }
            }
            _ = OrphanReaper.killProcesses(withEnvironmentPrefix: "SPOOL_MESSAGES=" + dataDirectory)
        }
    }

    static func writeConfig(_ directory: String, store: String, lease: Double, worker: String?, python: String) throws -> String {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var types: [String: Any] = [
            "hold": ["command": ["/bin/sleep", "{input.seconds}"], "timeout_s": 7200, "max_attempts": 5],
        ]
        if let worker {
            types["noop"] = ["command": [python, worker], "mode": "worker", "timeout_s": 60,
                             "env": ["SPOOL_BENCH_STAMPS": directory + "/worker-stamps.txt"]]
        }
        let settings: [String: Any] = ["store": store, "lease_s": lease, "job_types": types, "shutdown_grace_s": 1, "kill_grace_s": 1]
        let path = directory + "/spool.json"
        try JSONSerialization.data(withJSONObject: settings, options: [.prettyPrinted, .sortedKeys]).write(to: URL(fileURLWithPath: path))
        return path
    }

    static func noop(at now: Timestamp) -> Job {
        Job(id: JobID.random(), type: "noop", input: .object([:]), priority: 0, timeoutSeconds: 60, maxAttempts: 1, createdAt: now,
            idempotencyKey: nil)
    }

    static func allJobs(_ store: PostgresJobStore) async throws -> [Job] {
        var jobs: [Job] = []
        var cursor: Int64?
        repeat {
            let page = try await store.jobs(JobQuery(limit: 1000, before: cursor))
            jobs += page.jobs
            cursor = page.nextCursor
        } while cursor != nil
        return jobs
    }

    /// A new database on `server` for one measurement; returns its URL.
    static func createDatabase(_ server: String, logger: Logger) async throws -> String {
        let name = "spool_bench_" + String(UInt64.random(in: 0..<UInt64.max), radix: 36)
        let admin = try PostgresJobStore(location: PostgresLocation(url: server), node: "bench-admin", connections: 2, logger: logger)
        defer { admin.close() }
        try await admin.execute(unsafeSQL: "CREATE DATABASE \(name)")
        guard let slash = server.lastIndex(of: "/") else { throw BenchError("a store URL ends in /DATABASE") }
        return String(server[..<slash]) + "/" + name
    }

    /// CPU seconds used so far by every process named `postgres` (the server and its backends).
    static func postgresCPUSeconds() -> Double {
        let pids = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap(Int32.init)
        return pids.filter { (try? String(contentsOfFile: "/proc/\($0)/comm", encoding: .utf8))?.hasPrefix("postgres") == true }
            .compactMap { ProcessStats.cpuSeconds(of: $0) }.reduce(0, +)
    }

    static func ownCPUSeconds() -> Double { ProcessStats.cpuSeconds(of: getpid()) ?? 0 }

    static func require<T>(_ value: T?, _ message: String) throws -> T {
        guard let value else { throw BenchError(message) }
        return value
    }

    static func format(_ value: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", value) }
}
