import Logging
import PostgresNIO
import SpoolCore
import SpoolStore

/// Job arrays: the tasks stored in one transaction (each with the insert a submit uses, the
/// first marked as the array's head), what they add up to, the list of arrays (by heads), the
/// cancel of those not finished, and the fail-fast arrays a crash left open.
extension PostgresJobStore {
    public func enqueueArray(_ tasks: [Job], limits: QueueLimits) async throws -> [Job] {
        let owner = tasks.first?.owner ?? ""
        let (stored, newest) = try await transaction("store an array's tasks") { connection -> ([Job], Int64?) in
            // Its checks of the limits take turns with every other limited submit's.
            try await Self.lockQueueLimits(limits, owner: owner, on: connection, logger: self.logger)
            if let total = limits.total, let queued = try await connection.query(
                "SELECT CAST(COALESCE(sum(queued), 0) AS bigint) FROM queue_counts", logger: self.logger).decodeFirst(Int64.self),
               Int(queued) + tasks.count > total {
                throw StoreError.queueFull(.server, total)
            }
            if let most = limits.owner, let queued = try await connection.query(
                "SELECT count(*) FROM jobs WHERE state = 'queued' AND owner = \(owner)", logger: self.logger).decodeFirst(Int64.self),
               Int(queued) + tasks.count > most {
                throw StoreError.queueFull(.owner, most)
            }
            if let first = tasks.first, let key = first.idempotencyKey,
               let holder = try await Self.keyHolder(owner: owner, key: key, on: connection, logger: self.logger) {
                throw StoreError(.idempotencyConflict, "the Idempotency-Key was already used for a different request", existing: holder.job)
            }
            if let batch = try await self.insertAll(tasks, on: connection) { return batch }
            var stored: [Job] = []
            var newest: Int64?
            for (index, task) in tasks.enumerated() {
                var task = task
                task.dedup = nil
                if index > 0 { task.idempotencyKey = nil }
                guard let row = try await self.insertion(of: task, limits: QueueLimits())(connection), let sequence = row.0, let tag = row.1 else {
                    // A job took the key since the look above (a submit on another connection).
                    if index == 0, task.idempotencyKey != nil {
                        throw StoreError(.idempotencyConflict, "the Idempotency-Key was already used for a different request")
                    }
                    throw StoreError(.other, "a job with id \(task.id) already exists")
                }
                task.state = .queued
                task.attempts = 0
                task.sequence = sequence
                task.fairTag = tag
                task.position = Int(row.3) + 1
                newest = row.2
                stored.append(task)
            }
            if let head = stored.first {
                try await connection.query("UPDATE jobs SET array_head = true WHERE seq = \(head.sequence)", logger: self.logger)
            }
            return (stored, newest)
        }
        published(newest, jobs: stored.map(\.id))
        return stored
    }

    /// The tasks in one statement, when they differ only where an array's tasks do (id, input,
    /// index, the first one's key): their fair-share tags follow one another from where the
    /// owner's queue ends, as one at a time they would, with an event each and one notification.
    /// Found by attacking the build: task by task (a submit's insert each, its position counted)
    /// 4,000 tasks took 10–13 s, and the documented largest array, 10,000, ran past the store's
    /// 15-s limit every time. Nil when the tasks differ otherwise (then they go one at a time).
    func insertAll(_ tasks: [Job], on connection: PostgresConnection) async throws -> ([Job], Int64?)? {
        guard let first = tasks.first, let array = first.array else { return nil }
        let alike = tasks.allSatisfy { task in
            task.type == first.type && task.priority == first.priority && task.timeoutSeconds == first.timeoutSeconds
                && task.maxAttempts == first.maxAttempts && task.owner == first.owner && task.webhookURL == first.webhookURL
                && task.webhookEvents == first.webhookEvents && task.retry == first.retry && task.notBefore == first.notBefore
                && task.startBy == first.startBy && task.shareWeight == first.shareWeight && task.array?.id == array.id
                && task.array?.failFast == array.failFast
        }
        guard alike else { return nil }
        var prepared = tasks.enumerated().map { index, task in
            var task = task
            task.dedup = nil
            if index > 0 { task.idempotencyKey = nil }
            task.state = .queued
            task.attempts = 0
            return task
        }
        let owner = first.owner ?? ""
        let stride = FairShare.stride(weight: first.shareWeight)
        let webhookEvents = first.webhookURL == nil ? nil : first.webhookEvents.joined(separator: ",")
        let ids = prepared.map(\.id.rawValue), inputs = prepared.map(\.input.canonicalText)
        let created = prepared.map(\.createdAt.microseconds), indexes = prepared.map { $0.array?.index ?? 0 }
        // Only the first task carries the array's key (and so its fingerprint).
        let key = prepared[0].idempotencyKey, fingerprint = prepared[0].storedFingerprint
        let events = prepared.map { JobEvent.stateData(of: $0).canonicalText }
        let rows = try await connection.query("""
            WITH t AS (
                SELECT * FROM unnest(\(ids)::text[], \(inputs)::text[], \(created)::bigint[], \(indexes)::bigint[], \(events)::text[])
                    WITH ORDINALITY AS t(id, input, created, idx, event, n)
            ), base AS (
                SELECT GREATEST(   -- FairShare.tag, as a single submit's
                    (SELECT fair_tag FROM jobs WHERE state = 'queued' AND owner = \(owner) AND priority = \(first.priority)
                     ORDER BY fair_tag DESC LIMIT 1) + \(stride),
                    GREATEST(COALESCE((SELECT fair_tag FROM jobs WHERE state = 'queued' AND priority = \(first.priority) ORDER BY fair_tag LIMIT 1), 0),
                             COALESCE((SELECT max(fair_tag) FROM jobs WHERE state = 'running' AND priority = \(first.priority)), 0)) + 1) AS b
            ), ins AS (
                INSERT INTO jobs (id, type, input, priority, timeout_s, max_attempts, state, attempts, created_at,
                                  idempotency_key, fingerprint, webhook_url, webhook_events, owner, fair_tag, retry, not_before, start_by,
                                  dedup_hash, array_id, array_index, array_fail_fast)
                SELECT t.id, \(first.type), t.input, \(first.priority), \(first.timeoutSeconds), \(first.maxAttempts), 'queued', 0, t.created,
                       CASE WHEN t.n = 1 THEN \(key) END, CASE WHEN t.n = 1 THEN \(fingerprint) ELSE '' END, \(first.webhookURL), \(webhookEvents), \(owner), base.b + (t.n - 1) * \(stride),
                       \(first.retry?.json.canonicalText), \(first.notBefore?.microseconds), \(first.startBy?.microseconds),
                       NULL, \(array.id), t.idx, \(array.failFast)
                FROM t, base ORDER BY t.n
                ON CONFLICT DO NOTHING
                RETURNING id, seq, fair_tag
            ), ev AS (
                INSERT INTO events (job_id, kind, at, data, origin, owner)
                SELECT t.id, 'state', t.created, t.event, \(self.node), \(owner) FROM t JOIN ins ON ins.id = t.id ORDER BY t.n
                RETURNING id
            ), newest AS (
                SELECT max(id) AS id FROM ev
            )
            SELECT ins.id, ins.seq, ins.fair_tag, (SELECT id FROM newest),
                   (SELECT count(pg_notify('\(unescaped: Self.channel)', 'queued')) FROM newest WHERE id IS NOT NULL),
                   (SELECT count(pg_notify('\(unescaped: Self.eventsChannel)', id::text)) FROM newest WHERE id IS NOT NULL)
            FROM ins
            """, logger: logger)
        var inserted: [String: (sequence: Int64, tag: Int64)] = [:]
        var newest: Int64?
        for try await (id, sequence, tag, last, _, _) in rows.decode((String, Int64, Int64, Int64?, Int64, Int64).self) {
            inserted[id] = (sequence, tag)
            newest = last
        }
        for index in prepared.indices {
            guard let row = inserted[prepared[index].id.rawValue] else {
                // A job took the key since the look above (a submit on another connection).
                if index == 0, prepared[0].idempotencyKey != nil {
                    throw StoreError(.idempotencyConflict, "the Idempotency-Key was already used for a different request")
                }
                throw StoreError(.other, "a job with id \(prepared[index].id) already exists")
            }
            prepared[index].sequence = row.sequence
            prepared[index].fairTag = row.tag
        }
        try await connection.query("UPDATE jobs SET array_head = true WHERE seq = \(prepared[0].sequence)", logger: logger)
        // Their places in the queue (claims go by priority, then tag, then sequence): the first
        // task's counted from the nearer end of its priority, as a submit's is; the others' by
        // their rank among the jobs whose tags lie between the first task's and the last's —
        // never a walk of the whole queue (found in review: a first version ranked it all, for a
        // 2-task array too).
        let firstTag = prepared[0].fairTag, lastTag = prepared[prepared.count - 1].fairTag
        let places = try await connection.query("""
            WITH counts AS (
                SELECT CAST(COALESCE(sum(queued) FILTER (WHERE priority > \(first.priority)), 0) AS bigint) AS above,
                       CAST(COALESCE(sum(queued) FILTER (WHERE priority = \(first.priority)), 0) AS bigint) AS level
                FROM queue_counts
            ), ends AS (
                SELECT (SELECT fair_tag FROM jobs WHERE state = 'queued' AND priority = \(first.priority) ORDER BY fair_tag LIMIT 1) AS head,
                       (SELECT fair_tag FROM jobs WHERE state = 'queued' AND priority = \(first.priority) ORDER BY fair_tag DESC LIMIT 1) AS tail
            ), start AS (
                SELECT counts.above + CASE WHEN \(firstTag) - ends.head > ends.tail - \(firstTag)
                    THEN counts.level - (SELECT count(*) FROM jobs WHERE state = 'queued' AND priority = \(first.priority)
                                         AND (fair_tag, seq) > (\(firstTag), \(prepared[0].sequence)))
                    ELSE (SELECT count(*) FROM jobs WHERE state = 'queued' AND priority = \(first.priority)
                          AND (fair_tag, seq) <= (\(firstTag), \(prepared[0].sequence)))
                    END AS p
                FROM counts, ends
            ), ranked AS (
                SELECT id, row_number() OVER (ORDER BY fair_tag, seq) AS r FROM jobs
                WHERE state = 'queued' AND priority = \(first.priority) AND fair_tag BETWEEN \(firstTag) AND \(lastTag)
                  AND (fair_tag, seq) >= (\(firstTag), \(prepared[0].sequence))
            )
            SELECT ranked.id, CAST((SELECT p FROM start) + ranked.r - 1 AS bigint)
            FROM ranked JOIN unnest(\(ids)::text[]) AS mine(id) ON mine.id = ranked.id
            """, logger: logger)
        var position: [String: Int64] = [:]
        for try await (id, place) in places.decode((String, Int64).self) { position[id] = place }
        for index in prepared.indices { prepared[index].position = position[prepared[index].id.rawValue].map(Int.init) }
        return (prepared, newest)
    }

    /// Every task of the array that has not finished, in one transaction, each as `cancel` does
    /// it (task by task, 10,000 tasks were 10,000 transactions); the nodes that run the running
    /// ones hear it at commit.
    public func cancelArray(_ id: String, by actor: String?, now: Timestamp) async throws -> [Job] {
        let (affected, eventID) = try await transaction("cancel a job array") { connection -> ([Job], Int64?) in
            let open = try await Self.jobs(from: connection.query("""
                SELECT * FROM jobs WHERE array_id = \(id) AND state IN ('queued', 'running') ORDER BY array_index FOR UPDATE
                """, logger: self.logger))
            guard !open.isEmpty else { return ([], nil) }
            let changed = open.map { job in
                var job = job
                if job.state == .queued {
                    job.cancelWhileQueued(at: now, by: actor)
                } else {
                    job.requestCancel(by: actor)
                }
                return job
            }
            let canceled = changed.filter { $0.state == .canceled }.map(\.sequence)
            let stopping = changed.filter { $0.state == .running }
            if !canceled.isEmpty {
                try await connection.query("""
                    UPDATE jobs SET state = 'canceled', reason = 'canceled', finished_at = \(now.microseconds),
                        error = \(JobOutcome.canceled.errorMessage(timeout: nil)), canceled_by = COALESCE(\(actor), canceled_by)
                    WHERE seq = ANY(\(canceled))
                    """, logger: self.logger)
            }
            if !stopping.isEmpty {
                try await connection.query("""
                    UPDATE jobs SET cancel_requested = true, canceled_by = COALESCE(\(actor), canceled_by) WHERE seq = ANY(\(stopping.map(\.sequence)))
                    """, logger: self.logger)
                try await connection.query("""
                    SELECT count(pg_notify('\(unescaped: Self.channel)', 'cancel=' || id)) FROM unnest(\(stopping.map(\.id.rawValue))::text[]) AS id
                    """, logger: self.logger)
            }
            return (changed, try await self.insertEvents(changed.map { .state(of: $0, at: now) }, on: connection))
        }
        published(eventID, jobs: affected.map(\.id))
        return affected
    }

    public func failFastArraysLeftOpen() async throws -> [String] {
        try await read("look for fail-fast arrays left open") { connection in
            var arrays: [String] = []
            let rows = try await connection.query("""
                SELECT DISTINCT array_id FROM jobs AS open
                WHERE state IN ('queued', 'running') AND array_fail_fast
                  AND EXISTS (SELECT 1 FROM jobs AS failed WHERE failed.array_id = open.array_id AND failed.state = 'failed')
                ORDER BY array_id
                """, logger: self.logger)
            for try await array in rows.decode(String.self) { arrays.append(array) }
            return arrays
        }
    }

    public func arraySummary(_ id: String) async throws -> ArraySummary? {
        try await read("sum up an array") { connection in try await self.arraySummary(id, on: connection) }
    }

    public func requestFingerprint(owner: String?, key: String) async throws -> String? {
        try await read("read an Idempotency-Key") { connection in
            try await Self.keyHolder(owner: owner ?? "", key: key, on: connection, logger: self.logger)?.fingerprint
        }
    }

    /// One snapshot for the page: its heads and what each array adds up to.
    public func arrays(_ query: ArrayQuery) async throws -> ArrayPage {
        var sql = "SELECT array_id, seq FROM jobs WHERE array_head"
        var binds = PostgresBindings()
        if let type = query.type { binds.append(type); sql += " AND type = $\(binds.count)" }
        if let owner = query.owner { binds.append(owner); sql += " AND owner = $\(binds.count)" }
        if let before = query.before { binds.append(before); sql += " AND seq < $\(binds.count)" }
        binds.append(query.limit + 1)
        sql += " ORDER BY seq DESC LIMIT $\(binds.count)"
        let statement = PostgresQuery(unsafeSQL: sql, binds: binds)
        return try await transaction("list arrays") { connection in
            try await connection.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", logger: self.logger)
            var heads: [(id: String, sequence: Int64)] = []
            for try await head in try await connection.query(statement, logger: self.logger).decode((String, Int64).self) { heads.append(head) }
            let page = heads.prefix(query.limit)
            var arrays: [ArraySummary] = []
            for head in page {
                if let summary = try await self.arraySummary(head.id, on: connection) { arrays.append(summary) }
            }
            return ArrayPage(arrays: arrays, nextCursor: heads.count > query.limit ? page.last?.sequence : nil)
        }
    }

    private func arraySummary(_ id: String, on connection: PostgresConnection) async throws -> ArraySummary? {
        var byState: [JobState: Int] = [:]
        var progress = 0.0
        for try await (state, count, sum) in try await connection.query("""
            SELECT state, count(*), sum(CASE WHEN state IN ('succeeded', 'failed', 'canceled') THEN 1.0
                                             WHEN state = 'running' THEN COALESCE(progress_fraction, 0) ELSE 0 END)::float8
            FROM jobs WHERE array_id = \(id) GROUP BY state
            """, logger: logger).decode((String, Int64, Double?).self) {
            if let state = JobState(rawValue: state) { byState[state] = Int(count) }
            progress += sum ?? 0
        }
        guard !byState.isEmpty,
              let first = try await Self.fetchJob(where: "j.array_id = \(id) ORDER BY j.array_index LIMIT 1", on: connection, logger: logger)
        else { return nil }
        let last = try await connection.query("""
            SELECT id FROM jobs WHERE array_id = \(id) AND state = 'queued' ORDER BY array_index DESC LIMIT 1
            """, logger: logger).decodeFirst(String.self)
        return ArraySummary(id: id, type: first.type, owner: first.owner, createdAt: first.createdAt, failFast: first.array?.failFast ?? false,
                            counts: byState, progressSum: progress, lastQueued: last.flatMap(JobID.init))
    }

    /// (The first page from the lowest index, Int64.min included: not `> Int64.min`.)
    public func arrayTasks(_ id: String, after index: Int64?, limit: Int) async throws -> [Job] {
        try await read("list an array's tasks") { connection in
            let rows = if let index {
                try await connection.query("""
                    SELECT * FROM jobs WHERE array_id = \(id) AND array_index > \(index) ORDER BY array_index LIMIT \(limit)
                    """, logger: self.logger)
            } else {
                try await connection.query("""
                    SELECT * FROM jobs WHERE array_id = \(id) ORDER BY array_index LIMIT \(limit)
                    """, logger: self.logger)
            }
            return try await Self.jobs(from: rows)
        }
    }
}
