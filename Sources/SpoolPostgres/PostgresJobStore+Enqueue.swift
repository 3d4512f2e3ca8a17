import Logging
import PostgresNIO
import SpoolCore
import SpoolStore

/// Storing a submitted job: the one statement that inserts it (with its event, its
/// notifications and both queue limits), the locks that make limited submits take turns, and
/// the answers for an idempotent repeat or a reused result.
extension PostgresJobStore {
    /// What the statement that inserts a job answers: its `seq`, fair-share tag and event id
    /// (nil when nothing was inserted), the jobs ahead of it, two notification counts, and
    /// whether the queue (or its owner's share) was full.
    typealias InsertedRow = (Int64?, Int64?, Int64?, Int64, Int64, Int64, Bool, Bool)

    /// The statement that inserts `job`, for any connection (a submit's, or an array's transaction).
    /// The fair-share tag (`FairShare.tag`) and both queue limits are worked out in it, so they
    /// see what it sees. A submit that starts after another of its owner's was answered sees it,
    /// and goes after it; submits that overlap (from many threads or nodes at once) have no
    /// order to keep, and ties go by `seq`. The owner's last tag and the priority's head are
    /// each the first entry of an index read from one end (`ORDER BY … LIMIT 1`): as `max()`
    /// and `min()`, on a table whose statistics were not yet gathered, PostgreSQL aggregated
    /// every queued job of the owner (7.3 ms a submit at 20,000 queued).
    ///
    /// Nothing in it grows with the queue: the server's limit and the jobs of higher priority
    /// come from `queue_counts`, and the jobs ahead in the job's own priority are counted from
    /// the nearer end of it (the fair-share tags say which): a new job usually goes last, so
    /// that count is of the jobs behind it, next to none. Counting the queue made a submit
    /// 2.2 → 6.7 ms from empty to 20,000 queued.
    func insertion(of job: Job, limits: QueueLimits) -> @Sendable (PostgresConnection) async throws -> InsertedRow? {
        var stored = job
        stored.state = .queued
        stored.attempts = 0
        let owner = job.owner ?? ""
        let eventData = JobEvent.stateData(of: stored).canonicalText
        let webhookEvents = job.webhookURL == nil ? nil : job.webhookEvents.joined(separator: ",")
        let stride = FairShare.stride(weight: job.shareWeight)
        return { connection in
            try await connection.query("""
                WITH full_total AS (
                    SELECT CAST(\(limits.total) AS bigint) IS NOT NULL
                           AND (SELECT COALESCE(sum(queued), 0) FROM queue_counts) >= \(limits.total) AS f
                ), full_owner AS (
                    SELECT CAST(\(limits.owner) AS bigint) IS NOT NULL
                           AND (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE state = 'queued' AND owner = \(owner) LIMIT \(limits.owner)) AS q)
                               >= \(limits.owner) AS f
                ), ends AS (
                    SELECT (SELECT fair_tag FROM jobs WHERE state = 'queued' AND priority = \(job.priority)
                            ORDER BY fair_tag LIMIT 1) AS head,
                           (SELECT fair_tag FROM jobs WHERE state = 'queued' AND priority = \(job.priority)
                            ORDER BY fair_tag DESC LIMIT 1) AS tail
                ), tag AS (
                    -- FairShare.tag: GREATEST passes over a NULL (an owner with nothing queued here).
                    SELECT GREATEST(
                        (SELECT fair_tag FROM jobs WHERE state = 'queued' AND owner = \(owner) AND priority = \(job.priority)
                         ORDER BY fair_tag DESC LIMIT 1) + \(stride),
                        GREATEST(COALESCE((SELECT head FROM ends), 0),
                                 COALESCE((SELECT max(fair_tag) FROM jobs WHERE state = 'running' AND priority = \(job.priority)), 0)) + 1) AS t
                ), ins AS (
                    INSERT INTO jobs (id, type, input, priority, timeout_s, max_attempts, state, attempts, created_at,
                                      idempotency_key, fingerprint, webhook_url, webhook_events, owner, fair_tag, retry, not_before, start_by,
                                      dedup_hash, array_id, array_index, array_fail_fast)
                    SELECT \(job.id.rawValue), \(job.type), \(job.input.canonicalText), \(job.priority), \(job.timeoutSeconds),
                           \(job.maxAttempts), 'queued', 0, \(job.createdAt.microseconds), \(job.idempotencyKey),
                           \(job.storedFingerprint), \(job.webhookURL), \(webhookEvents), \(owner), tag.t,
                           \(job.retry?.json.canonicalText), \(job.notBefore?.microseconds), \(job.startBy?.microseconds),
                           \(job.dedup == nil ? nil : job.dedupHash), \(job.array?.id), \(job.array?.index), \(job.array?.failFast)
                    FROM tag WHERE NOT (SELECT f FROM full_total) AND NOT (SELECT f FROM full_owner)
                      AND NOT EXISTS (SELECT 1 FROM joined_keys k JOIN jobs h ON h.id = k.job_id
                                      WHERE k.owner = \(owner) AND k.key = \(job.idempotencyKey))
                    ON CONFLICT DO NOTHING
                    RETURNING seq, fair_tag
                ), ev AS (
                    INSERT INTO events (job_id, kind, at, data, origin, owner)
                    SELECT \(job.id.rawValue), 'state', \(job.createdAt.microseconds), \(eventData), \(self.node), \(owner) FROM ins
                    RETURNING id
                )
                SELECT (SELECT seq FROM ins), (SELECT fair_tag FROM ins), (SELECT id FROM ev),
                       CAST((SELECT COALESCE(sum(queued), 0) FROM queue_counts WHERE priority > \(job.priority))
                       + (SELECT CASE WHEN tag.t - ends.head > ends.tail - tag.t
                                 THEN (SELECT COALESCE(sum(queued), 0) FROM queue_counts WHERE priority = \(job.priority))
                                      - (SELECT count(*) FROM jobs WHERE state = 'queued' AND priority = \(job.priority) AND fair_tag > tag.t)
                                 ELSE (SELECT count(*) FROM jobs WHERE state = 'queued' AND priority = \(job.priority) AND fair_tag <= tag.t)
                                 END FROM tag, ends) AS bigint),
                       (SELECT count(pg_notify('\(unescaped: Self.channel)', 'queued')) FROM ev),
                       (SELECT count(pg_notify('\(unescaped: Self.eventsChannel)', id::text)) FROM ev),
                       (SELECT f FROM full_total), (SELECT f FROM full_owner)
                """, logger: self.logger).decodeFirstRow((Int64?, Int64?, Int64?, Int64, Int64, Int64, Bool, Bool).self)
        }
    }

    /// Makes submits bound by `limits` take turns (from any node): each counts the queue in a
    /// snapshot taken after the one before it committed, so two cannot both take the last
    /// place. Held to the end of the caller's transaction; taken before any other lock.
    static func lockQueueLimits(_ limits: QueueLimits, owner: String, on connection: PostgresConnection, logger: Logger) async throws {
        if limits.total != nil {
            try await connection.query("SELECT pg_advisory_xact_lock(hashtextextended('spool:max_queued', 0))", logger: logger)
        }
        if limits.owner != nil {
            try await connection.query("SELECT pg_advisory_xact_lock(hashtextextended(\("spool:max_queued:" + owner), 0))", logger: logger)
        }
    }

    public func enqueue(_ job: Job, limits: QueueLimits) async throws -> EnqueueResult {
        var stored = job
        stored.state = .queued
        stored.attempts = 0
        let owner = job.owner ?? ""
        let insert = insertion(of: job, limits: limits)
        let limited = limits.total != nil || limits.owner != nil
        let row: InsertedRow?
        if let dedup = job.dedup, let hash = job.dedupHash {
            // Result reuse: identical submits (from any node) take turns on a lock of their hash,
            // so the second one finds the first.
            let cutoff = dedup.succeededWithin.map { job.createdAt.adding(seconds: -$0).microseconds } ?? Int64.max
            enum Found: Sendable { case keyHeld(KeyHolder), duplicate(Job), inserted(InsertedRow?) }
            let found = try await transaction("store the job") { connection -> Found in
                try await Self.lockQueueLimits(limits, owner: owner, on: connection, logger: self.logger)
                try await connection.query("SELECT pg_advisory_xact_lock(hashtextextended(\(hash), 0))", logger: self.logger)
                // The key first, as SQLite's insert does: a key its owner used answers for that
                // request (a repeat, or a conflict), whatever job this one would join.
                if let key = job.idempotencyKey,
                   let held = try await Self.keyHolder(owner: owner, key: key, on: connection, logger: self.logger) {
                    return .keyHeld(held)
                }
                if let same = try await Self.fetchJob(where: """
                    j.owner = \(owner) AND j.dedup_hash = \(hash)
                      AND (j.state IN ('queued', 'running') AND NOT j.cancel_requested OR (j.state = 'succeeded' AND j.finished_at >= \(cutoff)))
                    ORDER BY j.state IN ('queued', 'running') DESC, j.seq DESC LIMIT 1
                    """, locking: job.idempotencyKey != nil, on: connection, logger: self.logger) {
                    if let key = job.idempotencyKey {
                        // The request holds its key from now on: a repeat answers the job it joined.
                        // The joined job is locked (above), so a delete of it waits for this commit
                        // and then takes the key with it. A job stored under the key by a submit
                        // this transaction cannot see yet (another request under the same key, at
                        // the same moment) keeps the key; this request's repeat is then a conflict.
                        let held = try await connection.query("""
                            INSERT INTO joined_keys (owner, key, job_id, fingerprint)
                            SELECT \(owner), \(key), \(same.id.rawValue), \(job.fingerprint)
                            WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE owner = \(owner) AND idempotency_key = \(key))
                            ON CONFLICT (owner, key) DO UPDATE SET job_id = EXCLUDED.job_id, fingerprint = EXCLUDED.fingerprint
                                WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE id = joined_keys.job_id)
                            RETURNING 1
                            """, logger: self.logger).decodeFirst(Int.self)
                        // Taken by another request under the same key, joining another job, meanwhile: its answer.
                        if held == nil, let holder = try await Self.keyHolder(owner: owner, key: key, on: connection, logger: self.logger) {
                            return .keyHeld(holder)
                        }
                    }
                    return .duplicate(same)
                }
                return .inserted(try await insert(connection))
            }
            switch found {
            case .keyHeld(let held): return try Self.repeatOf(job, holder: held)
            case .duplicate(let same): return .duplicate(same)
            case .inserted(let inserted): row = inserted
            }
        } else if limited {
            row = try await transaction("store the job") { connection in
                try await Self.lockQueueLimits(limits, owner: owner, on: connection, logger: self.logger)
                return try await insert(connection)
            }
        } else {
            row = try await write("store the job", insert)
        }
        guard let row, let sequence = row.0, let tag = row.1, let eventID = row.2 else {
            // Nothing inserted: a repeat of a stored job (or a conflict with it), or a full queue.
            if let repeated = try await repeatOf(job) { return repeated }
            if row?.6 == true, let total = limits.total { throw StoreError.queueFull(.server, total) }
            if row?.7 == true, let most = limits.owner { throw StoreError.queueFull(.owner, most) }
            throw StoreError(.other, "a job with id \(job.id) already exists")
        }
        stored.sequence = sequence
        stored.fairTag = tag
        stored.position = Int(row.3) + 1
        published(eventID, jobs: [job.id])
        return .created(stored)
    }

    /// The job its owner's key of `job` already names (an idempotent repeat), nil when the key
    /// is free; throws when the request differs from the one that used the key (a conflict).
    private func repeatOf(_ job: Job) async throws -> EnqueueResult? {
        guard let key = job.idempotencyKey,
              let holder = try await read("read a job", { connection in
                  try await Self.keyHolder(owner: job.owner ?? "", key: key, on: connection, logger: self.logger)
              }) else { return nil }
        return try Self.repeatOf(job, holder: holder)
    }

    /// What holds an owner's Idempotency-Key: the job stored under it, or the job that the
    /// request under it joined through result reuse; with the fingerprint of that request.
    struct KeyHolder: Sendable {
        var job: Job
        var fingerprint: String
    }

    /// The holder of `owner`'s `key`; nil when the key is free.
    static func keyHolder(owner: String, key: String, on connection: PostgresConnection, logger: Logger) async throws -> KeyHolder? {
        // With the request's fingerprint as stored (the job read back does not keep all of it).
        if let (job, fingerprint) = try await fetchJobAndFingerprint(where: "j.owner = \(owner) AND j.idempotency_key = \(key)",
                                                                    on: connection, logger: logger) {
            return KeyHolder(job: job, fingerprint: fingerprint)
        }
        guard let (id, fingerprint) = try await connection.query(
                  "SELECT job_id, fingerprint FROM joined_keys WHERE owner = \(owner) AND key = \(key)", logger: logger
              ).decodeFirstRow((String, String).self),
              let job = try await fetchJob(where: "j.id = \(id)", on: connection, logger: logger) else { return nil }
        return KeyHolder(job: job, fingerprint: fingerprint)
    }

    /// `job` as a repeat of the request that holds its key: the job that key names, or a
    /// conflict when the request differs.
    private static func repeatOf(_ job: Job, holder: KeyHolder) throws -> EnqueueResult {
        guard job.repeats(fingerprint: holder.fingerprint) else {
            throw StoreError(.idempotencyConflict, "the Idempotency-Key was already used for a different request", existing: holder.job)
        }
        return .existing(holder.job)
    }
}
