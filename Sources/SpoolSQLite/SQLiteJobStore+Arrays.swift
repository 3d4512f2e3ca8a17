import GRDB
import SpoolCore
import SpoolStore

/// Job arrays: the tasks stored in one transaction (each with the insert a submit uses, the
/// first marked as the array's head), what they add up to, the list of arrays (by heads), and
/// the fail-fast arrays a crash left open.
extension SQLiteJobStore {
    /// A refusal (the queue full, the key held) is the step's answer, not an error thrown in
    /// it: a step that throws fails its whole transaction, and with it the writes of others
    /// that share it (`WriteLoop`). Refused, it has written nothing: the checks come first, and
    /// only the first task, holding the key, can be refused.
    public func enqueueArray(_ tasks: [Job], limits: QueueLimits) async throws -> [Job] {
        let (stored, events) = try await write("store an array's tasks", newWork: true) { db -> Result<([Job], [JobEvent]), any Error> in
            let owner = tasks.first?.owner ?? ""
            if let total = limits.total, (try Int.fetchOne(db, cached: "SELECT COALESCE(SUM(queued), 0) FROM queue_counts") ?? 0) + tasks.count > total {
                return .failure(StoreError.queueFull(.server, total))
            }
            if let most = limits.owner,
               (try Int.fetchOne(db, cached: "SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND owner = ?", arguments: [owner]) ?? 0) + tasks.count > most {
                return .failure(StoreError.queueFull(.owner, most))
            }
            var stored: [Job] = []
            var events: [JobEvent] = []
            var run: TagRun?
            for (index, task) in tasks.enumerated() {
                var task = task
                task.dedup = nil
                if index > 0 { task.idempotencyKey = nil }
                // Only the first task has a key, and so only it can be refused (before anything is written).
                let (result, event): (EnqueueResult, JobEvent?)
                switch try Self.insert(task, limits: QueueLimits(), run: &run, in: db) {
                case .success(let inserted): (result, event) = inserted
                case .failure(let refusal): return .failure(refusal)   // the key held for another request
                }
                // The first task's key was held: by a job, or by this very array stored by a request at the same moment.
                guard case .created = result else {
                    return .failure(StoreError(.idempotencyConflict, "the Idempotency-Key was already used for a different request", existing: result.job))
                }
                stored.append(result.job)
                if let event { events.append(event) }
            }
            if let head = stored.first {
                try db.execute(sql: "UPDATE jobs SET array_head = 1 WHERE id = ?", arguments: [head.id.rawValue])
                // A cancel or delete left on record for an earlier array of this id (its key's, that
                // array gone since: by retention, say) is not this one's (found in review: the next
                // start would have canceled, or deleted, the new array).
                if let array = head.array?.id {
                    try db.execute(cached: "DELETE FROM array_operations WHERE array_id = ?", arguments: [array])
                }
            }
            return .success((stored, events))
        }.get()
        eventNotifier.published(events)
        return stored
    }

    public func arrayOperations() async throws -> [ArrayOperation] {
        try await read("look for array cancels and deletes under way") { db in
            try Row.fetchAll(db, sql: "SELECT array_id, operation, actor FROM array_operations ORDER BY array_id, operation").compactMap { row in
                ArrayOperation.Kind(rawValue: row["operation"]).map { ArrayOperation(array: row["array_id"], kind: $0, actor: row["actor"]) }
            }
        }
    }

    public func failFastArraysLeftOpen() async throws -> [String] {
        try await read("look for fail-fast arrays left open") { db in
            try String.fetchAll(db, sql: """
                SELECT DISTINCT array_id FROM jobs AS open
                WHERE state IN ('queued', 'running') AND array_fail_fast = 1
                  AND EXISTS (SELECT 1 FROM jobs AS failed WHERE failed.array_id = open.array_id AND failed.state = 'failed')
                ORDER BY array_id
                """)
        }
    }

    public func arraySummary(_ id: String) async throws -> ArraySummary? {
        try await read("sum up an array") { db in try Self.arraySummary(id, in: db) }
    }

    public func requestFingerprint(owner: String?, key: String) async throws -> String? {
        try await read("read an Idempotency-Key") { db in
            try String.fetchOne(db, cached: "SELECT fingerprint FROM jobs WHERE owner = ? AND idempotency_key = ?", arguments: [owner ?? "", key])
                ?? String.fetchOne(db, cached: """
                    SELECT k.fingerprint FROM joined_keys k JOIN jobs j ON j.id = k.job_id WHERE k.owner = ? AND k.key = ?
                    """, arguments: [owner ?? "", key])
        }
    }

    public func arrays(_ query: ArrayQuery) async throws -> ArrayPage {
        try await read("list arrays") { db in
            var clauses = ["array_head = 1"]
            var arguments: StatementArguments = []
            if let type = query.type { clauses.append("type = ?"); _ = arguments.append(contentsOf: [type]) }
            if let owner = query.owner { clauses.append("owner = ?"); _ = arguments.append(contentsOf: [owner]) }
            if let before = query.before { clauses.append("seq < ?"); _ = arguments.append(contentsOf: [before]) }
            _ = arguments.append(contentsOf: [query.limit + 1])
            let heads = try Row.fetchAll(db, cached: "SELECT array_id, seq FROM jobs WHERE \(clauses.joined(separator: " AND ")) ORDER BY seq DESC LIMIT ?",
                                         arguments: arguments)
            let page = heads.prefix(query.limit)
            return ArrayPage(arrays: try page.compactMap { try Self.arraySummary($0["array_id"], in: db) },
                             nextCursor: heads.count > query.limit ? page.last?["seq"] : nil)
        }
    }

    static func arraySummary(_ id: String, in db: Database) throws -> ArraySummary? {
        let counts = try Row.fetchAll(db, cached: """
            SELECT state, COUNT(*) AS n,
                   SUM(CASE WHEN state IN ('succeeded', 'failed', 'canceled') THEN 1.0
                            WHEN state = 'running' THEN COALESCE(progress_fraction, 0) ELSE 0 END) AS progress
            FROM jobs INDEXED BY jobs_array WHERE array_id = ? GROUP BY state
            """, arguments: [id])
        guard !counts.isEmpty, let first = try Row.fetchOne(db, cached: "SELECT * FROM jobs INDEXED BY jobs_array WHERE array_id = ? ORDER BY array_index LIMIT 1",
                                                             arguments: [id]) else { return nil }
        let task = try Self.job(from: first)
        let last = try String.fetchOne(db, cached: """
            SELECT id FROM jobs INDEXED BY jobs_array WHERE array_id = ? AND state = 'queued' ORDER BY array_index DESC LIMIT 1
            """, arguments: [id])
        var byState: [JobState: Int] = [:]
        var progress = 0.0
        for row in counts {
            if let state = JobState(rawValue: row["state"]) { byState[state] = row["n"] }
            progress += row["progress"] as Double? ?? 0
        }
        return ArraySummary(id: id, type: task.type, owner: task.owner, createdAt: task.createdAt, failFast: task.array?.failFast ?? false,
                            counts: byState, progressSum: progress, lastQueued: last.flatMap(JobID.init))
    }

    /// (The first page from the lowest index, Int64.min included: not `> Int64.min`.)
    public func arrayTasks(_ id: String, after index: Int64?, limit: Int) async throws -> [Job] {
        try await read("list an array's tasks") { db in
            guard let index else {
                return try Row.fetchAll(db, cached: "SELECT * FROM jobs INDEXED BY jobs_array WHERE array_id = ? ORDER BY array_index LIMIT ?",
                                        arguments: [id, limit]).map(Self.job(from:))
            }
            return try Row.fetchAll(db, cached: "SELECT * FROM jobs INDEXED BY jobs_array WHERE array_id = ? AND array_index > ? ORDER BY array_index LIMIT ?",
                                    arguments: [id, index, limit]).map(Self.job(from:))
        }
    }
}
