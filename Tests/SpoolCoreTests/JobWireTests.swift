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
}
