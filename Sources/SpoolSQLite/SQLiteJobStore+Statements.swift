import GRDB
import SpoolCore
import SpoolStore

/// The statements the job lifecycle's transactions share: a submit's insert (idempotent
/// repeats, result reuse, queue limits, the fair-share tag and the queue position), an
/// attempt's outcome, a claim in fair-share order, and a job row decoded.
extension SQLiteJobStore {
    /// What the queue's fair-share query read for an array's first task, carried on for the
    /// tasks after it in the same transaction (same owner, priority and weight): the owner's last
    /// queued tag is then the task before's, the head stays (tags only grow), and the tail is the
    /// larger of the two.
    struct TagRun {
        var ownerLast: Int64
        var head: Int64
        var tail: Int64
        var served: Int64?
    }

    static func insert(_ job: Job, limits: QueueLimits, in db: Database) throws -> Result<(EnqueueResult, JobEvent?), any Error> {
        var run: TagRun?
        return try insert(job, limits: limits, run: &run, in: db)
    }

    /// `run`: nil for a job on its own, or an array's first task (then set for the next).
    static func insert(_ job: Job, limits: QueueLimits, run: inout TagRun?, in db: Database) throws -> Result<(EnqueueResult, JobEvent?), any Error> {
        let owner = job.owner ?? ""
        if let key = job.idempotencyKey,
           let row = try Row.fetchOne(db, cached: "SELECT * FROM jobs WHERE owner = ? AND idempotency_key = ?", arguments: [owner, key]) {
            let existing = try withPosition(self.job(from: row), in: db)
            // The request as sent, as its fingerprint was stored (the job read back does not keep all of it).
            guard job.repeats(fingerprint: row["fingerprint"]) else {
                return .failure(StoreError(.idempotencyConflict, "the Idempotency-Key was already used for a different request", existing: existing))
            }
            return .success((.existing(existing), nil))
        }
        if let key = job.idempotencyKey,
           let held = try Row.fetchOne(db, cached: "SELECT job_id, fingerprint FROM joined_keys WHERE owner = ? AND key = ?", arguments: [owner, key]),
           let row = try Row.fetchOne(db, cached: "SELECT * FROM jobs WHERE id = ?", arguments: [held["job_id"] as String]) {
            // The key of a request that joined this job: a repeat answers it, as a stored job's key does.
            let joined = try withPosition(self.job(from: row), in: db)
            guard job.repeats(fingerprint: held["fingerprint"]) else {
                return .failure(StoreError(.idempotencyConflict, "the Idempotency-Key was already used for a different request", existing: joined))
            }
            return .success((.existing(joined), nil))
        }
        if let dedup = job.dedup, let hash = job.dedupHash, let row = try Row.fetchOne(db, cached: """
            SELECT * FROM jobs INDEXED BY jobs_dedup
            WHERE owner = ? AND dedup_hash = ? AND (state IN ('queued', 'running') AND NOT cancel_requested OR (state = 'succeeded' AND finished_at >= ?))
            ORDER BY state IN ('queued', 'running') DESC, seq DESC LIMIT 1
            """, arguments: [owner, hash, dedup.succeededWithin.map { job.createdAt.adding(seconds: -$0).microseconds } ?? Int64.max]) {
            let same = try withPosition(self.job(from: row), in: db)
            if let key = job.idempotencyKey {
                try db.execute(cached: "INSERT INTO joined_keys (owner, key, job_id, fingerprint) VALUES (?, ?, ?, ?)",
                               arguments: [owner, key, same.id.rawValue, job.fingerprint])
            }
            return .success((.duplicate(same), nil))
        }
        if let total = limits.total, try Int.fetchOne(db, cached: "SELECT COALESCE(SUM(queued), 0) FROM queue_counts") ?? 0 >= total {
            return .failure(StoreError.queueFull(.server, total))
        }
        if let most = limits.owner, try Int.fetchOne(db, cached: "SELECT COUNT(*) FROM (SELECT 1 FROM jobs WHERE state = 'queued' AND owner = ? LIMIT ?)",
                                                     arguments: [owner, most]) ?? 0 >= most {
            return .failure(StoreError.queueFull(.owner, most))
        }
        // The priority's head and tail and the owner's last tag, in one statement. Each is its own
        // subquery with a single MIN or MAX: SQLite reads those from an end of the index, but a
        // MIN and a MAX in one SELECT scan the whole range (every queued job: a submit at 20,000
        // queued went from 0.2 to 0.9 ms of CPU).
        var stored = job
        let tail: Int64?
        if let carried = run {
            stored.fairTag = FairShare.tag(ownerLast: carried.ownerLast, head: carried.head, served: carried.served, weight: job.shareWeight)
            tail = carried.tail
        } else {
            let (head, last, ownerLast, served) = try fairTags(priority: job.priority, owner: owner, in: db)
            stored.fairTag = FairShare.tag(ownerLast: ownerLast, head: head, served: served, weight: job.shareWeight)
            tail = last
            run = TagRun(ownerLast: stored.fairTag, head: head ?? stored.fairTag, tail: stored.fairTag, served: served)
        }
        run?.ownerLast = stored.fairTag
        run?.tail = max(tail ?? stored.fairTag, stored.fairTag)
        try db.execute(cached: """
            INSERT INTO jobs (id, type, input, priority, timeout_s, max_attempts, state, attempts, created_at,
                              idempotency_key, fingerprint, webhook_url, webhook_events, owner, fair_tag, retry, not_before, start_by,
                              dedup_hash, array_id, array_index, array_fail_fast)
            VALUES (?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, arguments: [job.id.rawValue, job.type, job.input.canonicalText, job.priority, job.timeoutSeconds,
                             job.maxAttempts, job.createdAt.microseconds, job.idempotencyKey, job.storedFingerprint,
                             job.webhookURL, job.webhookURL == nil ? nil : job.webhookEvents.joined(separator: ","), owner, stored.fairTag,
                             job.retry?.json.canonicalText, job.notBefore?.microseconds, job.startBy?.microseconds,
                             job.dedup == nil ? nil : job.dedupHash, job.array?.id, job.array?.index, job.array?.failFast])
        stored.sequence = db.lastInsertedRowID
        stored.state = .queued
        stored.attempts = 0
        let event = try insertEvent(.state, of: stored, at: job.createdAt, in: db)
        // At the tail of its priority (one tenant, or the busiest one): everything queued at this
        // priority or above is ahead, read from the counters — counting the jobs ahead one by one
        // made a submit slower the deeper the queue (≈3 ms at 100,000 queued).
        if stored.fairTag >= tail ?? stored.fairTag {
            stored.position = try Int.fetchOne(db, cached: "SELECT COALESCE(SUM(queued), 0) FROM queue_counts WHERE priority >= ?",
                                               arguments: [job.priority]) ?? 1
        } else {
            stored.position = try position(of: stored, in: db)   // near the head: few to count
        }
        return .success((.created(stored), event))
    }

    /// Writes the fields an attempt's end (or a recovery) decides, as `Job` worked them out.
    static func saveOutcome(of job: Job, in db: Database) throws {
        try db.execute(cached: """
            UPDATE jobs SET state = ?, reason = ?, attempts = ?, started_at = ?, finished_at = ?,
                exit_code = ?, signal = ?, error = ?, slot = ?, pid = NULL,
                progress_fraction = ?, progress_message = ?, result = ?, not_before = ?, attempt_log = ?, start_by = ?, canceled_by = ?
            WHERE seq = ?
            """, arguments: [job.state.rawValue, job.reason?.rawValue, job.attempts, job.startedAt?.microseconds,
                             job.finishedAt?.microseconds, job.exitCode, job.signal, job.error, job.slot?.rawValue,
                             job.progress?.fraction, job.progress?.message, job.result?.canonicalText, job.notBefore?.microseconds,
                             AttemptRecord.encode(job.attemptLog), job.startBy?.microseconds, job.canceledBy, job.sequence])
    }

    /// A priority's queued head and tail fair-share tags, `owner`'s last there, and the largest
    /// among its running jobs: what a new job's tag (`FairShare.tag`) is worked out from.
    static func fairTags(priority: Int, owner: String, in db: Database) throws
        -> (head: Int64?, tail: Int64?, ownerLast: Int64?, served: Int64?) {
        let tags = try Row.fetchOne(db, cached: """
            SELECT (SELECT MIN(fair_tag) FROM jobs WHERE state = 'queued' AND priority = ?1),
                   (SELECT MAX(fair_tag) FROM jobs WHERE state = 'queued' AND priority = ?1),
                   (SELECT MAX(fair_tag) FROM jobs WHERE state = 'queued' AND owner = ?2 AND priority = ?1),
                   (SELECT MAX(fair_tag) FROM jobs INDEXED BY jobs_running WHERE state = 'running' AND priority = ?1)
            """, arguments: [priority, owner])
        return (tags?[0], tags?[1], tags?[2], tags?[3])
    }

    /// The claimed job and the id of the event recording it.
    static func claim(for slot: SlotID, excluding: Set<String>, skipping: Set<JobID> = [], now: Timestamp,
                      in db: Database) throws -> (Job, JobEvent)? {
        guard let job = try claimRow(for: slot, excluding: excluding, skipping: skipping, now: now, in: db) else { return nil }
        return (job, try insertEvent(.state, of: job, at: now, in: db))
    }

    /// The next job in fair-share order. `INDEXED BY`: without statistics SQLite's planner took
    /// `jobs_state_seq` and sorted every queued job on each claim (20 ms at 100,000 queued); the
    /// partial queue index hands the head over directly.
    private static func claimRow(for slot: SlotID, excluding: Set<String>, skipping: Set<JobID>, now: Timestamp, in db: Database) throws -> Job? {
        var arguments: StatementArguments = [slot.rawValue, now.microseconds]
        var filter = queueFilter(now: now, excluding: excluding, skipping: skipping, arguments: &arguments)
        // Tenants whose token's max_running their running jobs have reached wait.
        let capped = try String.fetchAll(db, cached: """
            SELECT name FROM tokens WHERE max_running IS NOT NULL
              AND max_running <= (SELECT COUNT(*) FROM jobs INDEXED BY jobs_owner_running WHERE state = 'running' AND owner = tokens.name)
            """)
        if !capped.isEmpty {
            filter += " AND owner NOT IN (" + Array(repeating: "?", count: capped.count).joined(separator: ",") + ")"
            _ = arguments.append(contentsOf: StatementArguments(capped))
        }
        return try Row.fetchOne(db, cached: """
            UPDATE jobs SET state = 'running', attempts = attempts + 1, slot = ?, started_at = ?, finished_at = NULL,
                pid = NULL, progress_fraction = NULL, progress_message = NULL, result = NULL
            WHERE seq = (SELECT seq FROM jobs INDEXED BY jobs_queue WHERE state = 'queued'\(filter)
                         ORDER BY priority DESC, fair_tag, seq LIMIT 1)
            RETURNING *
            """, arguments: arguments).map(job(from:))
    }

    /// Queued jobs a slot may take now (`Job.isDue`); takes `now` twice.
    static let dueFilter = " AND (not_before IS NULL OR not_before <= ?) AND (start_by IS NULL OR start_by > ?)"

    /// The conditions a look at the queue adds (`dueFilter`, the types it refuses, the jobs it
    /// passes over), with their arguments appended to `arguments`.
    static func queueFilter(now: Timestamp, excluding types: Set<String>, skipping: Set<JobID>,
                            arguments: inout StatementArguments) -> String {
        var filter = dueFilter
        _ = arguments.append(contentsOf: [now.microseconds, now.microseconds])
        if !types.isEmpty {
            filter += " AND type NOT IN (" + Array(repeating: "?", count: types.count).joined(separator: ",") + ")"
            _ = arguments.append(contentsOf: StatementArguments(types.sorted()))
        }
        if !skipping.isEmpty {
            filter += " AND id NOT IN (" + Array(repeating: "?", count: skipping.count).joined(separator: ",") + ")"
            _ = arguments.append(contentsOf: StatementArguments(skipping.map(\.rawValue).sorted()))
        }
        return filter
    }

    static func withPosition(_ job: Job, in db: Database) throws -> Job {
        guard job.state == .queued else { return job }
        var job = job
        job.position = try position(of: job, in: db)
        return job
    }

    /// 1-based: the queued jobs of higher priority, then those before it in fair-share order.
    ///
    /// The jobs of its own priority are counted from the nearer end of the queue: those ahead
    /// of it, or those behind it taken from the priority's count. SQLite has no count of an
    /// index range but the one it steps through, so a job deep in a queue of 100,000 cost every
    /// status read a walk over the whole priority; it now walks at most half, and a job near
    /// either end next to nothing. The fair-share tags (a virtual time that grows down the queue)
    /// say which end is nearer. The statements run without one snapshot (a status read needs
    /// none), so the position is clamped to 1 should the job leave the queue between them.
    private static func position(of job: Job, in db: Database) throws -> Int {
        let counts = try Row.fetchOne(db, cached: """
            SELECT (SELECT COALESCE(SUM(queued), 0) FROM queue_counts WHERE priority > ?1),
                   (SELECT COALESCE(SUM(queued), 0) FROM queue_counts WHERE priority = ?1),
                   (SELECT MIN(fair_tag) FROM jobs WHERE state = 'queued' AND priority = ?1),
                   (SELECT MAX(fair_tag) FROM jobs WHERE state = 'queued' AND priority = ?1)
            """, arguments: [job.priority])
        let (higher, level, head, tail): (Int, Int, Int64?, Int64?) = (counts?[0] ?? 0, counts?[1] ?? 0, counts?[2], counts?[3])
        let ahead: Int
        if let head, let tail, job.fairTag - head > tail - job.fairTag {
            let behind = try Int.fetchOne(db, cached: """
                SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND priority = ? AND (fair_tag, seq) > (?, ?)
                """, arguments: [job.priority, job.fairTag, job.sequence]) ?? 0
            ahead = level - 1 - behind
        } else {
            ahead = try Int.fetchOne(db, cached: """
                SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND priority = ? AND (fair_tag, seq) < (?, ?)
                """, arguments: [job.priority, job.fairTag, job.sequence]) ?? 0
        }
        return higher + max(0, ahead) + 1
    }

    static func job(from row: Row) throws -> Job {
        let row = JobRow(row)
        guard let id = JobID(row["id"]), let state = JobState(rawValue: row["state"]) else {
            throw StoreError(.corrupt, "the job database holds a row it cannot read (seq \(row["seq"] as Int64? ?? -1))")
        }
        let inputText: String = row["input"]
        let input = try JSONParser.parse(inputText.utf8)
        var job = Job(id: id, sequence: row["seq"], type: row["type"], input: input, priority: row["priority"],
                      timeoutSeconds: row["timeout_s"], maxAttempts: row["max_attempts"], state: state,
                      createdAt: Timestamp(microseconds: row["created_at"]), idempotencyKey: row["idempotency_key"])
        job.reason = (row["reason"] as String?).flatMap(FailureReason.init(rawValue:))
        job.attempts = row["attempts"]
        job.startedAt = (row["started_at"] as Int64?).map(Timestamp.init(microseconds:))
        job.finishedAt = (row["finished_at"] as Int64?).map(Timestamp.init(microseconds:))
        job.exitCode = row["exit_code"]
        job.signal = row["signal"]
        job.error = row["error"]
        job.slot = (row["slot"] as Int?).map(SlotID.init)
        if let fraction = row["progress_fraction"] as Double? {
            job.progress = JobProgress(fraction: fraction, message: row["progress_message"])
        }
        job.cancelRequested = row["cancel_requested"] as Bool? ?? false
        job.webhookURL = row["webhook_url"]
        job.webhookEvents = (row["webhook_events"] as String?)?.split(separator: ",").map(String.init) ?? []
        if let resultText = row["result"] as String? {
            job.result = try JSONParser.parse(resultText.utf8)
        }
        job.owner = owner(row["owner"])
        job.canceledBy = row["canceled_by"]
        job.fairTag = row["fair_tag"] as Int64? ?? 0
        if let retryText = row["retry"] as String? {
            job.retry = try? RetryPolicy(json: try JSONParser.parse(retryText.utf8))
        }
        job.notBefore = (row["not_before"] as Int64?).map(Timestamp.init(microseconds:))
        job.startBy = (row["start_by"] as Int64?).map(Timestamp.init(microseconds:))
        job.attemptLog = AttemptRecord.decode(row["attempt_log"])
        job.dedupHash = row["dedup_hash"]
        if let array = row["array_id"] as String?, let index = row["array_index"] as Int64? {
            job.array = ArrayMembership(id: array, index: index, failFast: row["array_fail_fast"] as Bool? ?? false)
        }
        return job
    }
}
