import PostgresNIO
import SpoolCore
import SpoolStore

/// The webhook outbox in the shared database, as durable as the events it reports.
///
/// Every API node runs a deliverer on the same outbox, so `dueDeliveries` *claims* what it
/// returns (for `claimWindow`, with SKIP LOCKED): two nodes never send one attempt twice, and
/// a node that dies mid-delivery leaves its claim to expire and another node to retry. The
/// claiming node itself sees its claims as it would with a store of its own.
extension PostgresJobStore: WebhookOutbox {
    static let claimWindowMicroseconds: Int64 = 60_000_000

    public func webhookCursor() async throws -> Int64 {
        try await read("read the webhook cursor") { connection in
            try await connection.query("SELECT last_event_id FROM webhook_cursor WHERE id = 1", logger: self.logger).decodeFirst(Int64.self) ?? 0
        }
    }

    @discardableResult
    public func addDeliveries(_ drafts: [WebhookDelivery.Draft], cursor: Int64) async throws -> [WebhookDelivery] {
        try await transaction("store webhook deliveries") { connection in
            var added: [WebhookDelivery] = []
            for draft in drafts {
                let id = try await connection.query("""
                    INSERT INTO webhook_deliveries (job_id, event, event_id, url, payload, state, attempts, next_attempt_at, created_at)
                    VALUES (\(draft.job.rawValue), \(draft.event.rawValue), \(draft.eventID), \(draft.url), \(draft.payload.canonicalText),
                            'pending', 0, \(draft.createdAt.microseconds), \(draft.createdAt.microseconds))
                    ON CONFLICT (event_id, event) DO NOTHING
                    RETURNING id
                    """, logger: self.logger).decodeFirst(Int64.self)
                guard let id else { continue }
                added.append(WebhookDelivery(id: WebhookDeliveryID(id), draft: draft, state: .pending, attempts: 0, nextAttemptAt: draft.createdAt))
            }
            try await connection.query("UPDATE webhook_cursor SET last_event_id = GREATEST(last_event_id, \(cursor)) WHERE id = 1",
                                       logger: self.logger)
            return added
        }
    }

    public func dueDeliveries(at now: Timestamp, limit: Int) async throws -> [WebhookDelivery] {
        try await write("claim due webhook deliveries") { connection in
            let rows = try await connection.query("""
                UPDATE webhook_deliveries d SET claimed_by = \(self.node), claimed_until = spool_now() + \(Self.claimWindowMicroseconds)
                WHERE d.id IN (
                    SELECT id FROM webhook_deliveries
                    WHERE state = 'pending' AND next_attempt_at <= \(now.microseconds)
                      AND (claimed_by IS NULL OR claimed_by = \(self.node) OR claimed_until < spool_now())
                    ORDER BY next_attempt_at, id LIMIT \(limit) FOR UPDATE SKIP LOCKED
                )
                RETURNING d.*
                """, logger: self.logger)
            var deliveries: [WebhookDelivery] = []
            for try await row in rows { deliveries.append(try Self.delivery(from: row.makeRandomAccess())) }
            return deliveries.sorted { ($0.nextAttemptAt?.microseconds ?? 0, $0.id) < ($1.nextAttemptAt?.microseconds ?? 0, $1.id) }
        }
    }

    /// Another node's live claim counts as due when it expires.
    public func nextDeliveryDue() async throws -> Timestamp? {
        try await read("read the next webhook delivery") { connection in
            try await connection.query("""
                SELECT MIN(CASE WHEN claimed_by IS NULL OR claimed_by = \(self.node) THEN next_attempt_at
                                ELSE GREATEST(next_attempt_at, claimed_until) END)
                FROM webhook_deliveries WHERE state = 'pending'
                """, logger: self.logger).decodeFirst(Int64?.self)?.map(Timestamp.init(microseconds:))
        }
    }

    public func recordAttempt(_ attempt: WebhookAttempt, of delivery: WebhookDeliveryID, then next: WebhookDelivery.Next) async throws {
        let (state, nextAt): (WebhookDeliveryState, Timestamp?) = switch next {
        case .delivered: (.delivered, nil)
        case .failed: (.failed, nil)
        case .retry(let at): (.pending, at)
        }
        try await write("record a webhook attempt") { connection in
            try await connection.query("""
                WITH upd AS (
                    UPDATE webhook_deliveries SET attempts = \(attempt.number), state = \(state.rawValue),
                        next_attempt_at = \(nextAt?.microseconds), claimed_by = NULL, claimed_until = NULL
                    WHERE id = \(delivery.rawValue) AND state = 'pending' AND attempts = \(attempt.number - 1)
                    RETURNING id
                )
                INSERT INTO webhook_attempts (delivery_id, number, at, status, error, duration_ms)
                SELECT id, \(attempt.number), \(attempt.at.microseconds), \(attempt.status), \(attempt.error), \(attempt.durationMilliseconds)
                FROM upd
                """, logger: self.logger)
        }
    }

    public func webhookDeliveries(of job: JobID) async throws -> [WebhookDeliveryRecord] {
        try await read("read webhook deliveries") { connection in
            var deliveries: [WebhookDelivery] = []
            for try await row in try await connection.query("SELECT * FROM webhook_deliveries WHERE job_id = \(job.rawValue) ORDER BY id",
                                                            logger: self.logger) {
                deliveries.append(try Self.delivery(from: row.makeRandomAccess()))
            }
            var records: [WebhookDeliveryRecord] = []
            for delivery in deliveries {
                var attempts: [WebhookAttempt] = []
                let rows = try await connection.query("""
                    SELECT number, at, status, error, duration_ms FROM webhook_attempts WHERE delivery_id = \(delivery.id.rawValue) ORDER BY number
                    """, logger: self.logger)
                for try await (number, at, status, error, duration) in rows.decode((Int, Int64, Int?, String?, Double).self) {
                    attempts.append(WebhookAttempt(number: number, at: Timestamp(microseconds: at), status: status, error: error,
                                                   durationMilliseconds: duration))
                }
                records.append(WebhookDeliveryRecord(delivery: delivery, attempts: attempts))
            }
            return records
        }
    }

    static func delivery(from row: PostgresRandomAccessRow) throws -> WebhookDelivery {
        let id = try row["id"].decode(Int64.self)
        guard let job = JobID(try row["job_id"].decode(String.self)), let event = WebhookEvent(rawValue: try row["event"].decode(String.self)),
              let state = WebhookDeliveryState(rawValue: try row["state"].decode(String.self)) else {
            throw StoreError(.corrupt, "the job database holds a webhook delivery it cannot read (id \(id))")
        }
        let draft = WebhookDelivery.Draft(job: job, event: event, eventID: try row["event_id"].decode(Int64.self),
                                          url: try row["url"].decode(String.self),
                                          payload: try JSONParser.parse(try row["payload"].decode(String.self).utf8),
                                          createdAt: Timestamp(microseconds: try row["created_at"].decode(Int64.self)))
        return WebhookDelivery(id: WebhookDeliveryID(id), draft: draft, state: state, attempts: try row["attempts"].decode(Int.self),
                               nextAttemptAt: try row["next_attempt_at"].decode(Int64?.self).map(Timestamp.init(microseconds:)))
    }
}
