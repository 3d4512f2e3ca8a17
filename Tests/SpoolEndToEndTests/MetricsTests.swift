import Foundation
import SpoolCore
import Testing

/// `/metrics` passes what `promtool check metrics` checks — every family has HELP and TYPE, a
/// counter ends in `_total`, a duration says its unit (`_seconds`), names are snake_case — and
/// every metric the README names is there.
@Suite struct MetricsTests {
    struct Family { var type: String?; var help: Bool; var samples: Int }

    static func families(_ text: String) -> [String: Family] {
        var families: [String: Family] = [:]
        for line in text.split(separator: "\n") {
            let words = line.split(separator: " ", maxSplits: 3)
            if line.hasPrefix("# HELP "), words.count >= 4 {
                families[String(words[2]), default: Family(help: false, samples: 0)].help = true
            } else if line.hasPrefix("# TYPE "), words.count >= 4 {
                families[String(words[2]), default: Family(help: false, samples: 0)].type = String(words[3])
            } else if !line.hasPrefix("#"), let name = line.split(whereSeparator: { $0 == "{" || $0 == " " }).first {
                var family = String(name)
                for suffix in ["_bucket", "_sum", "_count"] where family.hasSuffix(suffix) && families[family] == nil {
                    family = String(family.dropLast(suffix.count))
                }
                families[family, default: Family(help: false, samples: 0)].samples += 1
            }
        }
        return families
    }

    @Test func metricsPassPromtoolsRulesAndCoverWhatTheREADMENames() async throws {
        let server = try ServerHarness(config: .object([:]))
        try Data(Fixtures.config(scratch: server.scratch).canonicalText.utf8).write(to: URL(fileURLWithPath: server.configPath))
        try await server.start()
        defer { Task { await server.stop() } }
        let id = try #require(try await server.submit("noop").json["id"]?.stringValue)
        _ = try await server.waitFor(id, ["succeeded"])
        _ = try await server.request(.GET, "/v1/jobs/\(JobID.random().rawValue)")
        let text = String(decoding: try await server.request(.GET, "/metrics").body, as: UTF8.self)
        let families = Self.families(text)
        #expect(!families.isEmpty)
        for (name, family) in families.sorted(by: { $0.key < $1.key }) {
            #expect(family.type != nil, "\(name): no TYPE")
            #expect(family.help, "\(name): no HELP")
            #expect(name.allSatisfy { $0.isLowercase || $0.isNumber || $0 == "_" }, "\(name): not snake_case")
            #expect(name.hasPrefix("spool_"), "\(name): not in Spool's namespace")
            if family.type == "counter" { #expect(name.hasSuffix("_total"), "\(name): a counter without _total") }
            if family.type != "counter" { #expect(!name.hasSuffix("_total"), "\(name): _total on a \(family.type ?? "?")") }
            if family.type == "histogram" || name.contains("duration") || name.contains("time") {
                #expect(name.hasSuffix("_seconds") || name.hasSuffix("_seconds_total"), "\(name): a duration without its unit")
            }
        }

        // Every metric the README names exists (the shared-store ones only with a shared store).
        let readme = try String(contentsOfFile: WorkerModeTests.repository + "/README.md", encoding: .utf8)
        let section = try #require(readme.range(of: "### Metrics and logs").map { readme[$0.upperBound...] })
        let body = section[..<(section.range(of: "\n## ")?.lowerBound ?? section.endIndex)]
        let named = Set(body.matches(of: /spool_[a-z_]+/).map { String($0.output) })
        let sharedOnly: Set = ["spool_jobs_rescued_total", "spool_lease_renewal_failures_total", "spool_attempts_fenced_total",
                               "spool_unanswered_claims_released_total"]
        // Each appears with the first of what it counts.
        let onDemand: Set = ["spool_worker_restarts_total", "spool_job_retries_total", "spool_jobs_deadline_expired_total"]
        let gpuOnly: Set = ["spool_slot_quarantines_total"]   // with GPU slots: GPUQuarantineTests
        #expect(named.count >= 10, "\(named)")
        for name in named.subtracting(sharedOnly).subtracting(onDemand).subtracting(gpuOnly).sorted() {
            #expect(families[name] != nil, "README names \(name), /metrics has no such family")
        }
    }

    /// Every job counts once in `spool_jobs_finished_total` when it reaches its final state, by
    /// that state, whether it ran or not: a queued job canceled, an array's queued tasks canceled,
    /// a job whose start deadline passed, the rest of a fail-fast array, and tasks a restart found
    /// interrupted (found by attacking the build: only attempts that ended on a slot were counted).
    @Test func everyJobThatEndsCountsOnceByItsState() async throws {
        let server = try ServerHarness(config: .object([:]))
        try Data(Fixtures.config(scratch: server.scratch).canonicalText.utf8).write(to: URL(fileURLWithPath: server.configPath))
        try await server.start(["--slots", "1"])
        defer { Task { await server.stop() } }
        @Sendable func finished(_ state: String) async throws -> Double {
            let text = String(decoding: try await server.request(.GET, "/metrics").body, as: UTF8.self)
            return text.split(separator: "\n").filter { $0.hasPrefix("spool_jobs_finished_total{") && $0.contains("state=\"\(state)\"") }
                .compactMap { $0.split(separator: " ").last.flatMap { Double($0) } }.reduce(0, +)
        }
        let running = try #require(try await server.submit("sleep", .object(["seconds": 30])).json["id"]?.stringValue)
        _ = try await server.waitFor(running, ["running"])
        let queued = try #require(try await server.submit("noop").json["id"]?.stringValue)
        #expect(try await server.request(.POST, "/v1/jobs/\(queued)/cancel").status == 200)
        let late = try #require(try await server.submit("noop", extra: ["start_within_s": 0.5]).json["id"]?.stringValue)
        _ = try await server.waitFor(late, ["canceled"])
        let array = try #require(try await server.submit("noop", extra: ["array": .object(["range": .array([1, 3])])]).json["id"]?.stringValue)
        #expect(try await server.request(.POST, "/v1/arrays/\(array)/cancel").status == 200)
        _ = try await server.request(.POST, "/v1/jobs/\(running)/cancel")
        _ = try await server.waitFor(running, ["canceled"])
        try await poll(.seconds(10), "6 canceled jobs counted") { try await finished("canceled") == 6 }
        let (succeeded, failed) = (try await finished("succeeded"), try await finished("failed"))
        #expect(succeeded == 0 && failed == 0)

        // A fail-fast array whose running task a crash interrupts: the restart fails that task
        // (its one attempt used) and cancels the rest; the new server counts both.
        let frames = try #require(try await server.submit("frame", .object(["fail_on": -1, "sleep": 30]),
                                                          extra: ["array": .object(["range": .array([1, 3]), "fail_fast": true])]).json["id"]?.stringValue)
        try await poll(.seconds(20), "a task to run") {
            try await server.request(.GET, "/v1/arrays/\(frames)").json["counts"]?["running"] == .int(1)
        }
        await server.kill9()
        try await server.start(["--slots", "1"])
        try await poll(.seconds(20), "the interrupted task and the rest counted") {
            let (failed, canceled) = (try await finished("failed"), try await finished("canceled"))
            return failed == 1 && canceled == 2
        }
        #expect(try await finished("succeeded") == 0)
    }

    /// A job's wait counts from when it was due: a delayed start is not time spent waiting for
    /// a slot (found by attacking the build: a job delayed 3 s recorded a 3-s wait, and a
    /// queue-wait alert fired for scheduled jobs).
    @Test func theWaitOfADelayedJobCountsFromWhenItWasDue() async throws {
        let server = try ServerHarness(config: .object([:]))
        try Data(Fixtures.config(scratch: server.scratch).canonicalText.utf8).write(to: URL(fileURLWithPath: server.configPath))
        try await server.start(["--slots", "1"])
        defer { Task { await server.stop() } }
        let id = try #require(try await server.submit("noop", extra: ["delay_s": 2]).json["id"]?.stringValue)
        _ = try await server.waitFor(id, ["succeeded"])
        let text = String(decoding: try await server.request(.GET, "/metrics").body, as: UTF8.self)
        let sum = text.split(separator: "\n").first { $0.hasPrefix("spool_job_wait_seconds_sum") }
            .flatMap { $0.split(separator: " ").last.flatMap { Double($0) } }
        #expect(sum != nil && sum! < 1.5, "\(String(describing: sum)) s of wait for a job that started when due")
    }

    /// A slot's busy seconds grow while its job runs, scrape by scrape, not all at its end; and
    /// the slot families are there before any job ran (found by attacking the build: a slot busy
    /// with a 6-s job read 0 for 6 s, then 6; `spool_slots` appeared with the first job).
    @Test func aSlotsBusySecondsGrowWhileItsJobRuns() async throws {
        let server = try ServerHarness(config: .object([:]))
        try Data(Fixtures.config(scratch: server.scratch).canonicalText.utf8).write(to: URL(fileURLWithPath: server.configPath))
        try await server.start(["--slots", "1"])
        defer { Task { await server.stop() } }
        @Sendable func sample(_ name: String) async throws -> Double? {
            let text = String(decoding: try await server.request(.GET, "/metrics").body, as: UTF8.self)
            return text.split(separator: "\n").first { $0.hasPrefix(name + " ") || $0.hasPrefix(name + "{") }
                .flatMap { $0.split(separator: " ").last.flatMap { Double($0) } }
        }
        let slots = try await sample("spool_slots"), busySlots = try await sample("spool_slots_busy")
        let quarantined = try await sample("spool_slots_quarantined")
        #expect(slots == 1 && busySlots == 0 && quarantined == 0, "\(String(describing: slots)) \(String(describing: busySlots)) \(String(describing: quarantined))")
        let id = try #require(try await server.submit("sleep", .object(["seconds": 30])).json["id"]?.stringValue)
        _ = try await server.waitFor(id, ["running"])
        // Scrape after scrape while the job runs (it sleeps 30 s): the counter grows past half a
        // second, then half a second more.
        try await poll(.seconds(20), "busy seconds to pass 0.5 while the job runs") { try await sample("spool_slot_busy_seconds_total") ?? 0 > 0.5 }
        let first = try await sample("spool_slot_busy_seconds_total") ?? 0
        try await poll(.seconds(20), "busy seconds to grow past \(first) + 0.5") { try await sample("spool_slot_busy_seconds_total") ?? 0 > first + 0.5 }
        #expect(try await server.job(id)["state"] == "running", "counted while it ran, not at its end")
        _ = try await server.request(.POST, "/v1/jobs/\(id)/cancel")
    }
}
