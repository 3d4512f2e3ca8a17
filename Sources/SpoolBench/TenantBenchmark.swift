#if canImport(Glibc)
import Glibc
#endif
import AsyncHTTPClient
import Foundation
import Logging
import SpoolCore
import SpoolPostgres
import SpoolSQLite
import SpoolStore
import Subprocess
import SystemPackage

/// `spool bench --tenants`: what tokens, tenants and fair share cost.
///
/// 1. **Auth on vs off**: submit p99 and status p99 from 8 clients, against a server with
///    `auth: off` and against one where each client has its own tenant's token (auth, tenant
///    filtering and fair-share ordering all on), in alternating fresh runs; the median of each.
/// 2. **Claim time with many tenants**: the store's claim (finish the previous job and claim the
///    next, as a slot does) on a queue of 1,000 tenants × 100 jobs against one tenant × 100,000,
///    on SQLite and PostgreSQL, in this process (no HTTP, no child processes).
///
/// Every process is started here and killed by pid before returning.
public enum TenantBenchmark {
    public static func run(_ options: BenchOptions, store: String?) async throws -> String {
        let logger = Logger(label: "bench")
        var postgresServer = store
        if postgresServer == nil, let script = BenchAssets.locate("scripts/throwaway-postgres.sh", options) {
            postgresServer = try ThrowawayPostgres.start(script: script)
        }
        var report = "## Tenants, `spool bench --tenants`\n\n"
        report += "- Machine: \(ProcessInfo.processInfo.activeProcessorCount) cores. Release build, everything on this one machine.\n"

        // 1. Auth on vs off.
        let rounds = options.quick ? 1 : 3
        let submits = options.quick ? 500 : 2_000
        var off: [(submit: Double, status: Double)] = []
        var on: [(submit: Double, status: Double)] = []
        for round in 1...rounds {
            for auth in [false, true] {
                progress("tenants: round \(round)/\(rounds), auth \(auth ? "on (8 tenants)" : "off")")
                let result = try await httpRun(options, auth: auth, submits: submits, round: round)
                if auth { on.append(result) } else { off.append(result) }
            }
        }
        func median(_ values: [Double]) -> Double { LatencySummary.median(values) }
        let submitOff = median(off.map(\.submit)), submitOn = median(on.map(\.submit))
        let statusOff = median(off.map(\.status)), statusOn = median(on.map(\.status))
        report += "\n### 1. Submit and status p99, auth and fair share on vs `auth: off`\n\n"
        report += "\(submits.grouped) submits then \(submits.grouped) status GETs from 8 clients (closed loop) while a job holds the one slot; "
        report += "on: each client its own tenant's token. Median of \(rounds) fresh run(s) each, alternating.\n\n"
        report += "| metric | auth off | auth on | on ÷ off | goal |\n|---|---|---|---|---|\n"
        for (name, a, b) in [("submit p99", submitOff, submitOn), ("status p99", statusOff, statusOn)] {
            let ratio = b / a
            report += "| \(name) | \(a.fixed(2)) ms | \(b.fixed(2)) ms | \(ratio.fixed(2))× | ≤ 1.05× — \(ratio <= 1.05 ? "PASS" : "MISS") |\n"
        }
        report += "\nEach run's p99 (ms), off / on: submit \(off.map { $0.submit.fixed(2) }.joined(separator: ", ")) / "
            + "\(on.map { $0.submit.fixed(2) }.joined(separator: ", ")); status \(off.map { $0.status.fixed(2) }.joined(separator: ", ")) / "
            + "\(on.map { $0.status.fixed(2) }.joined(separator: ", ")).\n"

        // 2. Claim time.
        let total = options.quick ? 10_000 : 100_000
        let tenants = options.quick ? 100 : 1_000
        let claims = options.quick ? 500 : 2_000
        report += "\n### 2. Claim time: \(tenants.grouped) tenants × \((total / tenants).grouped) queued vs one tenant × \(total.grouped)\n\n"
        report += "One slot finishing its job and claiming the next (one transaction), \(claims.grouped) times in a row, on a queue filled "
        report += "tenant by tenant (the worst order for fair share). In this process; no HTTP.\n\n"
        report += "| store | one tenant: median / p99 | \(tenants.grouped) tenants: median / p99 | many ÷ one (p99) | goal | distinct tenants in the first \(min(claims, tenants)) claims |\n"
        report += "|---|---|---|---|---|---|\n"
        // Each store as (fill, claim): the queue is filled through one and claimed through the
        // other — SQLite fills with `synchronous=normal` (a faster fill; the same file), claims at `full`.
        typealias Stores = (fill: any JobStore, claim: any JobStore, cleanUp: @Sendable () -> Void)
        // (name, queued jobs, factory). PostgreSQL is filled to a tenth: its submit still counts the
        // jobs ahead of the new one (O(queue) per submit; SQLite reads its counters), so a
        // 100,000-job fill takes most of an hour there (noted in BENCHMARKS.md).
        var stores: [(String, Int, @Sendable () async throws -> Stores)] = [
            ("SQLite (`synchronous=full`)", total, {
                let path = options.workDir + "/claims-\(UUID().uuidString.prefix(8)).sqlite"
                let fill = try SQLiteJobStore(path: path, synchronous: .normal)
                return (fill, try SQLiteJobStore(path: path), { try? FileManager.default.removeItem(atPath: path) })
            }),
        ]
        if let postgresServer {
            stores.append(("PostgreSQL (throwaway, `fsync=off`)", total / 10, {
                let url = try await ClusterBenchmark.createDatabase(postgresServer, logger: logger)
                let store = try PostgresJobStore(location: PostgresLocation(url: url), node: "bench", connections: 8, logger: logger)
                return (store, store, { store.close() })
            }))
        }
        for (name, queued, make) in stores {
            progress("tenants: claim time on \(name): filling \(queued.grouped) jobs for 1 tenant")
            let one = try await claimRun(make, tenants: 1, total: queued, claims: min(claims, queued / 2))
            progress("tenants: claim time on \(name): filling \(queued.grouped) jobs for \(tenants.grouped) tenants")
            let many = try await claimRun(make, tenants: tenants, total: queued, claims: min(claims, queued / 2))
            let ratio = many.p99 / one.p99
            report += "| \(name), \(queued.grouped) queued | \(one.median.fixed(2)) / \(one.p99.fixed(2)) ms | \(many.median.fixed(2)) / \(many.p99.fixed(2)) ms | "
            report += "\(ratio.fixed(2))× | ≤ 1.5× — \(ratio <= 1.5 ? "PASS" : "MISS") | \(many.distinct) of \(min(claims, tenants)) |\n"
        }
        return report
    }

    // MARK: - 1. Over HTTP

    static func httpRun(_ options: BenchOptions, auth: Bool, submits: Int, round: Int) async throws -> (submit: Double, status: Double) {
        let directory = options.workDir + "/tenants-\(auth ? "on" : "off")-\(round)"
        try FileManager.default.createDirectory(atPath: directory + "/data", withIntermediateDirectories: true)
        var tokens: [String] = []
        if auth {
            for index in 0..<8 { tokens.append(try await createToken(options.spoolBinary, data: directory + "/data", name: "tenant-\(index)")) }
            tokens.append(try await createToken(options.spoolBinary, data: directory + "/data", name: "root", admin: true))
        }
        let launch = try SpoolServer.launch(binary: options.spoolBinary, in: directory, python: options.python, stampBinary: nil,
                                            extraTypes: "{}", extraArguments: [])
        if !auth {   // the config file launch() wrote, with `auth: off`
            let config = directory + "/spool.json"
            var settings = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: config))) as? [String: Any] ?? [:]
            settings["auth"] = "off"
            try JSONSerialization.data(withJSONObject: settings, options: [.sortedKeys]).write(to: URL(fileURLWithPath: config))
        }
        let http = HTTPClient.shared
        return try await ServerProcess.with(launch, http: http) { server in
            let clients = (0..<8).map { JobClient(http: http, baseURL: server.baseURL, token: auth ? tokens[$0] : nil) }
            let admin = JobClient(http: http, baseURL: server.baseURL, token: auth ? tokens[8] : nil)
            _ = try await admin.submit(type: "hold", inputJSON: #"{"seconds":3600}"#)
            let body = JobClient.submitBody(type: "noop")
            _ = try await LoadGenerator.run(total: submits / 4, clients: 8) { index in _ = try await clients[index % 8].submitUnparsed(body) }
            let submitLoad = try await LoadGenerator.run(total: submits, clients: 8) { index in
                _ = try await clients[index % 8].submitUnparsed(body)
            }
            // Status: each client reads its own jobs.
            var submitted: [String] = []
            for client in clients { submitted.append(try await client.submit(type: "noop").id) }
            let ids = submitted
            let statusLoad = try await LoadGenerator.run(total: submits, clients: 8) { index in
                _ = try await clients[index % 8].getUnparsed("/v1/jobs/\(ids[index % 8])")
            }
            return (submitLoad.summary.p99, statusLoad.summary.p99)
        }
    }

    static func createToken(_ binary: String, data: String, name: String, admin: Bool = false) async throws -> String {
        let result = try await Subprocess.run(.path(FilePath(binary)),
                                              arguments: Arguments(["token", "create", "--data-dir", data, "--name", name] + (admin ? ["--admin"] : [])),
                                              output: .string(limit: 1 << 16), error: .discarded)
        guard result.terminationStatus.isSuccess, let token = result.standardOutput.split(separator: "\n").last, token.hasPrefix("spool_") else {
            throw BenchError("spool token create --name \(name) failed (\(result.terminationStatus))")
        }
        return String(token)
    }

    // MARK: - 2. In the store

    struct ClaimRun { var median: Double; var p99: Double; var distinct: Int }

    static func claimRun(_ make: @Sendable () async throws -> (fill: any JobStore, claim: any JobStore, cleanUp: @Sendable () -> Void),
                         tenants: Int, total: Int, claims: Int) async throws -> ClaimRun {
        let (filler, store, cleanUp) = try await make()
        defer { cleanUp() }
        try await filler.prepare()
        let perTenant = total / tenants
        // Tenant by tenant: all of tenant 0's jobs are older than tenant 1's, and so on.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<8 {
                group.addTask {
                    for tenant in stride(from: worker, to: tenants, by: 8) {
                        for _ in 0..<perTenant {
                            var job = Job(id: JobID.random(), type: "noop", input: .object([:]), priority: 0, timeoutSeconds: 60,
                                          maxAttempts: 1, createdAt: WallClock.now(), idempotencyKey: nil)
                            job.owner = "tenant-\(tenant)"
                            _ = try await filler.enqueue(job)
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        try await store.prepare()
        let slot = SlotID(0)
        var samples: [Double] = []
        var owners: [String] = []
        var job = try await store.claimNext(for: slot, now: WallClock.now())
        for _ in 0..<claims {
            guard let current = job else { break }
            owners.append(current.owner ?? "")
            let start = ContinuousClock.now
            job = try await store.finish(current.id, attempt: current.attempts, outcome: .succeeded, now: WallClock.now(), claimNextFor: slot).next
            samples.append((ContinuousClock.now - start).milliseconds)
        }
        guard samples.count == claims else { throw BenchError("the queue ran dry after \(samples.count) of \(claims) claims") }
        let summary = LatencySummary(milliseconds: samples)
        return ClaimRun(median: LatencySummary.median(samples), p99: summary.p99, distinct: Set(owners.prefix(min(claims, tenants))).count)
    }
}
