import Logging
import PostgresNIO
import SpoolCore
import SpoolStore

/// Reading jobs: rows to `Job` values, and one job with its queue position.
extension PostgresJobStore {
    /// A queued job's position: the jobs of higher priority from `queue_counts`, and those
    /// ahead of it in its own priority counted from the nearer end of it, as one range of
    /// `jobs_queue` (a row comparison; an `OR` of the two cases read the whole priority). The
    /// fair-share tags of the priority's first and last job say which end is nearer; from the
    /// back, the jobs behind it are taken from the priority's count.
    static func fetchJob(where condition: PostgresQuery, locking: Bool = false, on connection: PostgresConnection,
                         logger: Logger) async throws -> Job? {
        try await jobs(from: connection.query(jobQuery(where: condition, locking: locking), logger: logger)).first
    }

    /// The statement `fetchJob` runs: the job's row and its queue position.
    static func jobQuery(where condition: PostgresQuery, locking: Bool) -> PostgresQuery {
        var sql = """
            SELECT j.*, CASE WHEN j.state = 'queued' THEN CAST(
                (SELECT COALESCE(sum(queued), 0) FROM queue_counts c WHERE c.priority > j.priority)
                + CASE WHEN j.fair_tag - (SELECT h.fair_tag FROM jobs h WHERE h.state = 'queued' AND h.priority = j.priority
                                          ORDER BY h.fair_tag LIMIT 1)
                            > (SELECT t.fair_tag FROM jobs t WHERE t.state = 'queued' AND t.priority = j.priority
                               ORDER BY t.fair_tag DESC LIMIT 1) - j.fair_tag
                  THEN (SELECT COALESCE(sum(queued), 0) FROM queue_counts c WHERE c.priority = j.priority) - 1
                       - (SELECT count(*) FROM jobs q WHERE q.state = 'queued' AND q.priority = j.priority
                              AND (q.fair_tag, q.seq) > (j.fair_tag, j.seq))
                  ELSE (SELECT count(*) FROM jobs q WHERE q.state = 'queued' AND q.priority = j.priority
                            AND (q.fair_tag, q.seq) < (j.fair_tag, j.seq))
                  END + 1 AS bigint)
            END AS position
            FROM jobs j WHERE
            """
        sql += " " + condition.sql
        if locking { sql += " FOR UPDATE OF j" }
        return PostgresQuery(unsafeSQL: sql, binds: condition.binds)
    }

    /// The first job `condition` selects, with its stored request fingerprint, in one statement.
    static func fetchJobAndFingerprint(where condition: PostgresQuery, on connection: PostgresConnection,
                                       logger: Logger) async throws -> (Job, String)? {
        var found: (Job, String)?
        for try await row in try await connection.query(jobQuery(where: condition, locking: false), logger: logger) where found == nil {
            let columns = row.makeRandomAccess()
            found = (try job(from: columns), try columns["fingerprint"].decode(String.self))
        }
        return found
    }

    static func jobs(from rows: PostgresRowSequence) async throws -> [Job] {
        var jobs: [Job] = []
        for try await row in rows { jobs.append(try job(from: row.makeRandomAccess())) }
        return jobs
    }

    static func job(from row: PostgresRandomAccessRow) throws -> Job {
        let sequence = try row["seq"].decode(Int64.self)
        guard let id = JobID(try row["id"].decode(String.self)), let state = JobState(rawValue: try row["state"].decode(String.self)) else {
            throw StoreError(.corrupt, "the job database holds a row it cannot read (seq \(sequence))")
        }
        let input = try JSONParser.parse(try row["input"].decode(String.self).utf8)
        var job = Job(id: id, sequence: sequence, type: try row["type"].decode(String.self), input: input,
                      priority: try row["priority"].decode(Int.self), timeoutSeconds: try row["timeout_s"].decode(Double.self),
                      maxAttempts: try row["max_attempts"].decode(Int.self), state: state,
                      createdAt: Timestamp(microseconds: try row["created_at"].decode(Int64.self)),
                      idempotencyKey: try row["idempotency_key"].decode(String?.self))
        job.reason = try row["reason"].decode(String?.self).flatMap(FailureReason.init(rawValue:))
        job.attempts = try row["attempts"].decode(Int.self)
        job.startedAt = try row["started_at"].decode(Int64?.self).map(Timestamp.init(microseconds:))
        job.finishedAt = try row["finished_at"].decode(Int64?.self).map(Timestamp.init(microseconds:))
        job.exitCode = try row["exit_code"].decode(Int32?.self)
        job.signal = try row["signal"].decode(Int32?.self)
        job.error = try row["error"].decode(String?.self)
        job.slot = try row["slot"].decode(Int?.self).map(SlotID.init)
        job.node = try row["node"].decode(String?.self)
        if let fraction = try row["progress_fraction"].decode(Double?.self) {
            job.progress = JobProgress(fraction: fraction, message: try row["progress_message"].decode(String?.self))
        }
        job.cancelRequested = try row["cancel_requested"].decode(Bool.self)
        job.webhookURL = try row["webhook_url"].decode(String?.self)
        job.webhookEvents = try row["webhook_events"].decode(String?.self)?.split(separator: ",").map(String.init) ?? []
        if let resultText = try row["result"].decode(String?.self) {
            job.result = try JSONParser.parse(resultText.utf8)
        }
        let owner = try row["owner"].decode(String.self)
        job.owner = owner.isEmpty ? nil : owner
        job.canceledBy = try row["canceled_by"].decode(String?.self)
        job.fairTag = try row["fair_tag"].decode(Int64.self)
        if let retryText = try row["retry"].decode(String?.self) {
            job.retry = try? RetryPolicy(json: try JSONParser.parse(retryText.utf8))
        }
        job.notBefore = try row["not_before"].decode(Int64?.self).map(Timestamp.init(microseconds:))
        job.startBy = try row["start_by"].decode(Int64?.self).map(Timestamp.init(microseconds:))
        job.attemptLog = AttemptRecord.decode(try row["attempt_log"].decode(String?.self))
        job.dedupHash = try row["dedup_hash"].decode(String?.self)
        if let array = try row["array_id"].decode(String?.self), let index = try row["array_index"].decode(Int64?.self) {
            job.array = ArrayMembership(id: array, index: index, failFast: try row["array_fail_fast"].decode(Bool?.self) ?? false)
        }
        if row.contains("position") {
            job.position = try row["position"].decode(Int64?.self).map(Int.init)
        }
        return job
    }
}
