import GRDB
import SpoolCore
import SpoolStore

/// The webhook outbox in the job database itself (tables from migration `v4-webhooks`), so a
/// delivery is exactly as durable as the event it reports, and the cursor moves in the same
/// transaction that stores the deliveries.
extension SQLiteJobStore: WebhookOutbox {
    public func webhookCursor() async throws -> Int64 {
        try await outboxRead("read the webhook cursor") { db in
            try Int64.fetchOne(db, cached: "SELECT last_event_id FROM webhook_cursor WHERE id = 1") ?? 0
        }
    }

    @discardableResult
    public func addDeliveries(_ drafts: [WebhookDelivery.Draft], cursor: Int64) async throws -> [WebhookDelivery] {
        try await outboxWrite("store webhook deliveries") { db in
            var added: [WebhookDelivery] = []
            for draft in drafts {
                try db.execute(cached: """
                    INSERT OR IGNORE INTO webhook_deliveries (job_id, event, event_id, url, payload, state, attempts, next_attempt_at, created_at)
                    VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?)
                    """, arguments: [draft.job.rawValue, draft.event.rawValue, draft.eventID, draft.url, draft.payload.canonicalText,
                                     draft.createdAt.microseconds, draft.createdAt.microseconds])
                guard db.changesCount > 0 else { continue }
                added.append(WebhookDelivery(id: WebhookDeliveryID(db.lastInsertedRowID), draft: draft, state: .pending,
                                             attempts: 0, nextAttemptAt: draft.createdAt))
            }
            try db.execute(cached: "UPDATE webhook_cursor SET last_event_id = MAX(last_event_id, ?) WHERE id = 1", arguments: [cursor])
            return added
        }
    }

    public func dueDeliveries(at now: Timestamp, limit: Int) async throws -> [WebhookDelivery] {
        try await outboxRead("read due webhook deliveries") { db in
            try Row.fetchAll(db, cached: """
                SELECT * FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at <= ?
                ORDER BY next_attempt_at, id LIMIT ?
                """, arguments: [now.microseconds, limit]).map(Self.delivery(from:))
        }
    }

    public func nextDeliveryDue() async throws -> Timestamp? {
        try await outboxRead("read the next webhook delivery") { db in
            try Int64.fetchOne(db, cached: "SELECT MIN(next_attempt_at) FROM webhook_deliveries WHERE state = 'pending'")
                .map(Timestamp.init(microseconds:))
        }
    }

    public func recordAttempt(_ attempt: WebhookAttempt, of delivery: WebhookDeliveryID, then next: WebhookDelivery.Next) async throws {
        try await outboxWrite("record a webhook attempt") { db in
            let (state, nextAt): (WebhookDeliveryState, Timestamp?) = switch next {
            case .delivered: (.delivered, nil)
            case .failed: (.failed, nil)
            case .retry(let at): (.pending, at)
            }
            try db.execute(cached: """
                UPDATE webhook_deliveries SET attempts = ?, state = ?, next_attempt_at = ?
                WHERE id = ? AND state = 'pending' AND attempts = ?
                """, arguments: [attempt.number, state.rawValue, nextAt?.microseconds, delivery.rawValue, attempt.number - 1])
            guard db.changesCount > 0 else { return }
            try db.execute(cached: """
                INSERT INTO webhook_attempts (delivery_id, number, at, status, error, duration_ms) VALUES (?, ?, ?, ?, ?, ?)
                """, arguments: [delivery.rawValue, attempt.number, attempt.at.microseconds, attempt.status, attempt.error,
                                 attempt.durationMilliseconds])
        }
    }

    public func webhookDeliveries(of job: JobID) async throws -> [WebhookDeliveryRecord] {
        try await outboxRead("read webhook deliveries") { db in
            let deliveries = try Row.fetchAll(db, cached: "SELECT * FROM webhook_deliveries WHERE job_id = ? ORDER BY id",
                                              arguments: [job.rawValue]).map(Self.delivery(from:))
            return try deliveries.map { delivery in
                let attempts = try Row.fetchAll(db, cached: "SELECT * FROM webhook_attempts WHERE delivery_id = ? ORDER BY number",
                                                arguments: [delivery.id.rawValue]).map { row in
                    WebhookAttempt(number: row["number"], at: Timestamp(microseconds: row["at"]), status: row["status"],
                                   error: row["error"], durationMilliseconds: row["duration_ms"])
                }
                return WebhookDeliveryRecord(delivery: delivery, attempts: attempts)
            }
        }
    }

    static func delivery(from row: Row) throws -> WebhookDelivery {
        guard let job = JobID(row["job_id"]), let event = WebhookEvent(rawValue: row["event"]),
              let state = WebhookDeliveryState(rawValue: row["state"]) else {
            throw StoreError(.corrupt, "the job database holds a webhook delivery it cannot read")
        }
        let payload: String = row["payload"]
        let draft = WebhookDelivery.Draft(job: job, event: event, eventID: row["event_id"], url: row["url"],
                                          payload: try JSONParser.parse(payload.utf8),
                                          createdAt: Timestamp(microseconds: row["created_at"]))
        return WebhookDelivery(id: WebhookDeliveryID(row["id"]), draft: draft, state: state, attempts: row["attempts"],
                               nextAttemptAt: (row["next_attempt_at"] as Int64?).map(Timestamp.init(microseconds:)))
    }

    // MARK: - Database access

    /// The store's own pool: one writer queue for jobs and webhooks alike.
    private var outboxPool: DatabasePool { pool }

    private func outboxRead<T: Sendable>(_ what: String, _ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do { return try await outboxPool.read(body) } catch { throw Self.translate(error, doing: what) }
    }

    private func outboxWrite<T: Sendable>(_ what: String, _ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do { return try await outboxPool.write(body) } catch { throw Self.translate(error, doing: what) }
    }
}
