import GRDB
import SpoolCore
import SpoolStore

/// The event log in the job database: reading it (for streams, and for the webhook planner in
/// windows of ids), and appending to it in the caller's transaction, pruning the oldest now and
/// then.
extension SQLiteJobStore {
    public func events(after: Int64, job: JobID?, owner: String?, limit: Int) async throws -> [JobEvent] {
        // One statement; ids grow in commit order (one writer), so a page is never missing one.
        try await readWithoutSnapshot("read events") { db in
            let rows = switch (job, owner) {
            case (let job?, _):
                try Row.fetchAll(db, cached: "SELECT * FROM events WHERE job_id = ? AND id > ? AND (? IS NULL OR owner = ?) ORDER BY id LIMIT ?",
                                 arguments: [job.rawValue, after, owner, owner, limit])
            case (nil, let owner?):
                try Row.fetchAll(db, cached: "SELECT * FROM events WHERE owner = ? AND id > ? ORDER BY id LIMIT ?", arguments: [owner, after, limit])
            case (nil, nil):
                try Row.fetchAll(db, cached: "SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", arguments: [after, limit])
            }
            return try rows.map(Self.event(from:))
        }
    }

    static func event(from row: Row) throws -> JobEvent {
        guard let id = JobID(row["job_id"]), let kind = JobEvent.Kind(rawValue: row["kind"]) else {
            throw StoreError(.corrupt, "the job database holds an event it cannot read")
        }
        let text: String = row["data"]
        return JobEvent(id: row["id"], job: id, owner: Self.owner(row["owner"]), kind: kind, at: Timestamp(microseconds: row["at"]),
                        data: try JSONParser.parse(text.utf8))
    }

    /// The log is read in windows of `limit` ids; only entries of jobs with a webhook are
    /// decoded. Without this, the webhook planner read every job's every state event and the
    /// job behind it, on every submit, with no webhook anywhere.
    public func webhookEvents(after: Int64, limit: Int) async throws -> (events: [JobEvent], through: Int64) {
        try await read("read events") { db in
            let newest = try Int64.fetchOne(db, cached: "SELECT MAX(id) FROM events") ?? after
            let through = max(after, min(newest, after + Int64(limit)))
            let rows = try Row.fetchAll(db, cached: """
                SELECT e.* FROM events e JOIN jobs j ON j.id = e.job_id
                WHERE e.id > ? AND e.id <= ? AND j.webhook_url IS NOT NULL ORDER BY e.id
                """, arguments: [after, through])
            return (try rows.map(Self.event(from:)), through)
        }
    }

    /// A job's log lines or its outputs: they wait up to `eventLinger` for another write's
    /// transaction (a submit, a claim, an end) rather than take a sync of their own.
    public func appendEvent(_ kind: JobEvent.Kind, job: JobID, attempt: Int?, data: JSONValue, now: Timestamp) async throws {
        let event = try await write("record an event", lingering: eventLinger) { db -> JobEvent? in
            // Only for a job that is still there (one deleted meanwhile keeps no late event),
            // and with `attempt`, one that has not moved past it.
            let open = try Bool.fetchOne(db, cached: """
                SELECT EXISTS (SELECT 1 FROM jobs WHERE id = ?1
                               AND (?2 IS NULL OR NOT (attempts > ?2 OR (attempts = ?2 AND state <> 'running'))))
                """, arguments: [job.rawValue, attempt]) ?? false
            guard open else { return nil }
            return try Self.insertEvent(kind, job: job, owner: nil, data: data, at: now, in: db)
        }
        if let event { eventNotifier.published([event]) }
    }

    /// A state event for `job` as it is now, in the caller's transaction.
    static func insertEvent(_ kind: JobEvent.Kind, of job: Job, at: Timestamp, in db: Database) throws -> JobEvent {
        try insertEvent(kind, job: job.id, owner: job.owner ?? "", data: JobEvent.stateData(of: job), at: at, in: db)
    }

    /// Appends an event in the caller's transaction (its owner is the job's: looked up when
    /// nil); prunes the oldest now and then.
    static func insertEvent(_ kind: JobEvent.Kind, job: JobID, owner: String?, data: JSONValue, at: Timestamp, in db: Database) throws -> JobEvent {
        let stored = try String.fetchOne(db, cached: """
            INSERT INTO events (job_id, owner, kind, at, data)
            VALUES (?, COALESCE(?, (SELECT owner FROM jobs WHERE id = ?), ''), ?, ?, ?)
            RETURNING owner
            """, arguments: [job.rawValue, owner, job.rawValue, kind.rawValue, at.microseconds, data.canonicalText])
        let id = db.lastInsertedRowID
        if id % 1000 == 0 { try db.execute(cached: "DELETE FROM events WHERE id <= ?", arguments: [id - eventLimit]) }
        return JobEvent(id: id, job: job, owner: Self.owner(stored), kind: kind, at: at, data: data)
    }

    /// The stored owner ('' with authentication off) as a job's `owner`.
    static func owner(_ stored: String?) -> String? { stored.flatMap { $0.isEmpty ? nil : $0 } }
}
