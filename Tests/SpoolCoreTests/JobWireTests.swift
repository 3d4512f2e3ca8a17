import Foundation
@testable import SpoolCore
import Testing

/// The job's wire shape: what the server writes, a client reads back unchanged.
@Suite struct JobWireTests {
    func job(_ state: JobState) -> Job {
        var job = Job(id: JobID.random(), type: "render", input: .object(["width": .int(640)]), priority: 3, timeoutSeconds: 120,
                      maxAttempts: 2, createdAt: Timestamp(microseconds: 1_796_386_095_757_342), idempotencyKey: nil)
        job.state = state
        job.owner = "alice"
        return job
    }

    func roundTrip(_ wire: JobWire) throws -> JobWire {
        try JSONDecoder().decode(JobWire.self, from: Data(wire.json.canonicalText.utf8))
    }

    @Test func aQueuedJobWithItsETA() throws {
        var queued = job(.queued)
        queued.position = 4
        let wire = JobWire(job: queued, estimate: QueueEstimate(startsIn: 12.34, method: "3 ahead"), now: Timestamp(microseconds: 0))
        #expect(try roundTrip(wire) == wire)
        #expect(wire.json["eta"]?["start_in_s"] == .double(12.3))
        #expect(wire.json["owner"] == .string("alice"))
        let learned = JobWire(job: queued, estimate: QueueEstimate(startsIn: 3, method: "m", runSeconds: 4.2))
        #expect(learned.json["eta"]?["run_s"] == .double(4.2))
        #expect(try roundTrip(learned) == learned)
        #expect(wire.json["eta"]?["run_s"] == nil, "only when learned")
        // Without an estimate a queued job still says so (null), as the document promises.
        #expect(JobWire(job: queued).json["eta"] == .null)
    }

    @Test func aFinishedJobWithEverything() throws {
        var done = job(.failed)
        done.reason = .exitCode
        done.exitCode = 3
        done.startedAt = Timestamp(microseconds: 1_796_386_096_000_000)
        done.finishedAt = Timestamp(microseconds: 1_796_386_097_000_000)
        done.error = "exited with status 3"
        done.slot = SlotID(1)
        done.progress = JobProgress(fraction: 0.5, message: "half")
        done.result = .object(["frames": .int(2)])
        done.canceledBy = ""
        done.webhookURL = "https://example.com/hook"
        done.webhookEvents = ["completed"]
        let wire = JobWire(job: done)
        #expect(try roundTrip(wire) == wire)
        #expect(wire.json["eta"] == nil, "only a queued job has an eta")
        #expect(wire.json["canceled_by"] == .string("anonymous"))
        #expect(wire.json["links"]?["logs"] == .string("/v1/jobs/\(done.id)/logs"))
    }

    @Test func aSubsetAsTheBenchmarksBaselineSendsIt() throws {
        let text = #"{"id":"abc","state":"running","type":"noop","started_at":"2026-12-04T12:00:00Z","progress":null}"#
        let wire = try JSONDecoder().decode(JobWire.self, from: Data(text.utf8))
        #expect(wire.id == "abc" && wire.state == "running" && wire.startedAt == "2026-12-04T12:00:00Z" && !wire.isTerminal)
    }

    /// Every field in and out: each optional one present or absent, awkward strings, whole and
    /// fractional numbers, nested input.
    @Test func theBytesWrittenStraightFromTheFieldsAreTheCanonicalJSON() throws {
        var random = SplitMix64(seed: 5)
        func maybe<T>(_ value: @autoclosure () -> T) -> T? { random.roll(2) == 0 ? nil : value() }
        let texts = ["", "plain", "quote \" and \\ slash", "tab\tnew\nline\u{01}", "ünïcødé ✓", "/v1/jobs"]
        func text() -> String { texts[random.roll(texts.count)] }
        let values: [JSONValue] = [.null, .bool(true), .int(-3), .double(2.5), .double(7), .string("x\"y"),
                                   .array([.int(1), .object(["b": .int(2), "a": .array([])])]), .object(["z": .null, "é": .string("e")])]
        for _ in 0..<500 {
            var job = Job(id: JobID.random(), type: text(), input: .object(["k": values[random.roll(values.count)], "a": .int(1)]),
                          priority: random.roll(11) - 5, timeoutSeconds: [0.5, 120, 1e-3][random.roll(3)], maxAttempts: 1 + random.roll(3),
                          createdAt: Timestamp(microseconds: 1_796_386_095_757_342 + Int64(random.roll(1_000_000))), idempotencyKey: maybe(text()))
            job.state = JobState.allCases[random.roll(JobState.allCases.count)]
            job.reason = maybe(FailureReason.allCases[random.roll(FailureReason.allCases.count)])
            job.attempts = random.roll(4)
            job.position = maybe(1 + random.roll(100_000))
            job.progress = maybe(JobProgress(fraction: [0, 0.25, 1][random.roll(3)], message: maybe(text())))
            job.startedAt = maybe(Timestamp(microseconds: 1_796_386_096_000_000))
            job.finishedAt = maybe(Timestamp(microseconds: 1_796_386_097_123_456))
            job.exitCode = maybe(Int32(random.roll(256)))
            job.signal = maybe(Int32(random.roll(32)))
            job.error = maybe(text())
            job.slot = maybe(SlotID(random.roll(8)))
            job.result = maybe(values[random.roll(values.count)])
            job.cancelRequested = random.roll(2) == 0
            job.node = maybe(text())
            job.owner = maybe(text())
            job.canceledBy = maybe(text())
            job.webhookURL = maybe("https://example.com/hook?a=\"1\"")
            job.webhookEvents = ["completed", "started", "progress"].filter { _ in random.roll(2) == 0 }
            job.notBefore = maybe(Timestamp(microseconds: 1_796_386_099_000_000))
            job.startBy = maybe(Timestamp(microseconds: 1_796_386_199_000_000))
            job.retry = maybe(RetryPolicy(maxAttempts: 3))
            job.array = maybe(ArrayMembership(id: "arr", index: Int64(random.roll(9)), failFast: random.roll(2) == 0))
            let estimate = maybe(QueueEstimate(startsIn: Double(random.roll(1000)) / 7, method: text(), runSeconds: maybe(4.25)))
            let wire = JobWire(job: job, estimate: estimate, now: maybe(Timestamp(microseconds: 1_796_386_095_000_000)), waitingReason: maybe(text()))
            #expect(wire.canonicalBytes == wire.json.canonicalBytes, "\(wire.json.canonicalText)")
            // What the client reads back is what was written.
            #expect(try JSONDecoder().decode(JobWire.self, from: Data(wire.canonicalBytes)).waitingReason == wire.waitingReason)
        }
    }
}
