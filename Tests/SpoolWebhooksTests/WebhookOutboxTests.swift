import Foundation
import SpoolCore
import SpoolSQLite
import SpoolTestSupport
import SpoolStore
import Testing

/// The outbox contract, run against every driver.
struct WebhookOutboxTests {
    enum Kind: String, CaseIterable, Sendable { case memory, sqlite, postgres }

    func withOutbox(_ kind: Kind, _ body: (any WebhookOutbox) async throws -> Void) async throws {
        let directory = NSTemporaryDirectory() + "spool-outbox-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        switch kind {
        case .memory:
            try await body(MemoryWebhookOutbox())
        case .sqlite:
            let store = try SQLiteJobStore(path: directory + "/spool.sqlite", synchronous: .normal)
            try await store.prepare()
            try await body(store)
        case .postgres:
            try await TestPostgres.withStore { store in try await body(store) }
        }
    }

    func draft(_ job: JobID, _ event: WebhookEvent, eventID: Int64, at seconds: Double = 1) -> WebhookDelivery.Draft {
        WebhookDelivery.Draft(job: job, event: event, eventID: eventID, url: "http://127.0.0.1:9/hook",
                              payload: .object(["event": .string(event.wireName)]), createdAt: Timestamp(secondsSince1970: seconds))
    }

    @Test(arguments: Kind.allCases) func deliveriesAndTheCursorMoveTogetherAndNeverTwice(kind: Kind) async throws {
        try await withOutbox(kind) { outbox in
            let job = JobID.random()
            #expect(try await outbox.webhookCursor() == 0)
            let added = try await outbox.addDeliveries([draft(job, .started, eventID: 3), draft(job, .completed, eventID: 5)], cursor: 6)
            #expect(added.count == 2)
            #expect(try await outbox.webhookCursor() == 6)
            // Replaying the same events (a crash before the cursor was seen) adds nothing.
            #expect(try await outbox.addDeliveries([draft(job, .completed, eventID: 5)], cursor: 4).isEmpty)
            #expect(try await outbox.webhookCursor() == 6)
            let records = try await outbox.webhookDeliveries(of: job)
            #expect(records.map(\.delivery.draft.event) == [.started, .completed])
            #expect(records[1].delivery.draft.payload == .object(["event": "job.completed"]))
        }
    }

    @Test(arguments: Kind.allCases) func attemptsAreRecordedFencedAndScheduleTheNextTry(kind: Kind) async throws {
        try await withOutbox(kind) { outbox in
            let job = JobID.random()
            let delivery = try #require(try await outbox.addDeliveries([draft(job, .completed, eventID: 1, at: 10)], cursor: 1).first)
            #expect(try await outbox.dueDeliveries(at: Timestamp(secondsSince1970: 9), limit: 10).isEmpty)
            #expect(try await outbox.dueDeliveries(at: Timestamp(secondsSince1970: 10), limit: 10).map(\.id) == [delivery.id])
            #expect(try await outbox.nextDeliveryDue() == Timestamp(secondsSince1970: 10))

            let first = WebhookAttempt(number: 1, at: Timestamp(secondsSince1970: 10), status: 500, error: nil, durationMilliseconds: 3)
            try await outbox.recordAttempt(first, of: delivery.id, then: .retry(at: Timestamp(secondsSince1970: 12)))
            // A stale write for the same attempt number changes nothing.
            try await outbox.recordAttempt(first, of: delivery.id, then: .failed)
            #expect(try await outbox.dueDeliveries(at: Timestamp(secondsSince1970: 11), limit: 10).isEmpty)
            let due = try await outbox.dueDeliveries(at: Timestamp(secondsSince1970: 12), limit: 10)
            #expect(due.map(\.attempts) == [1])

            let second = WebhookAttempt(number: 2, at: Timestamp(secondsSince1970: 12), status: nil, error: "timeout", durationMilliseconds: 10_000)
            try await outbox.recordAttempt(second, of: delivery.id, then: .delivered)
            #expect(try await outbox.nextDeliveryDue() == nil)
            let record = try #require(try await outbox.webhookDeliveries(of: job).first)
            #expect(record.delivery.state == .delivered)
            #expect(record.delivery.nextAttemptAt == nil)
            #expect(record.attempts == [first, second])
        }
    }
}
