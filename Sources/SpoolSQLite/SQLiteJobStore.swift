import Foundation
import GRDB
import SpoolCore
import SpoolStore

/// The embedded default store: one SQLite file in WAL mode, through GRDB's pool (one writer,
/// concurrent readers, all on GRDB's own dispatch queues — never on an event loop).
///
/// Durability: `synchronous = FULL` by default, so a job acknowledged with `201` survives a
/// power cut, not just a crash. Concurrent submits share transactions (`GroupCommit`), so the
/// cost of each sync is split between them.
public final class SQLiteJobStore: JobStore {
    public enum Synchronous: String, Sendable, CaseIterable {
        /// fsync on every commit: survives power loss (default).
        case full
        /// WAL default: survives a crash of the process, may lose the last commits on power loss.
        case normal
    }

    public let path: String
    private let pool: DatabasePool
    private let notifier = JobChangeNotifier()
    private let enqueuer: GroupCommit<Job, EnqueueResult>

    public init(path: String, synchronous: Synchronous = .full) throws {
        self.path = path
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        configuration.label = "spool"
        // A queue's hot pages are few (the queue index head, recent rows): small caches and
        // few readers keep the server's memory flat at any queue depth.
        configuration.maximumReaderCount = 3
        let pragma = "PRAGMA synchronous = \(synchronous.rawValue.uppercased())"
        configuration.prepareDatabase { db in
            try db.execute(sql: pragma)
            try db.execute(sql: "PRAGMA cache_size = -1024")
            try db.execute(sql: "PRAGMA foreign_keys = ON")
        }
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
        } catch {
            throw Self.translate(error, doing: "open the job database at \(path)")
        }
        let pool = self.pool
        enqueuer = GroupCommit { jobs in
            do {
                return try await pool.write { db in try jobs.map { job in try Self.insert(job, in: db) } }
            } catch {
                throw Self.translate(error, doing: "store the job")
            }
        }
    }

    public func prepare() async throws {
        do {
            try await SQLiteSchema.migrator.migrate(pool)
        } catch {
            throw Self.translate(error, doing: "migrate the job database")
        }
    }

    public func enqueue(_ job: Job) async throws -> EnqueueResult {
        try await enqueuer.submit(job)
    }

    public func job(_ id: JobID) async throws -> Job? {
        try await read("read a job") { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM jobs WHERE id = ?", arguments: [id.rawValue]) else { return nil }
            return try Self.withPosition(Self.job(from: row), in: db)
        }
    }

    public func jobs(_ query: JobQuery) async throws -> JobPage {
        try await read("list jobs") { db in
            var clauses: [String] = []
            var arguments: StatementArguments = []
            if let state = query.state { clauses.append("state = ?"); _ = arguments.append(contentsOf: [state.rawValue]) }
            if let type = query.type { clauses.append("type = ?"); _ = arguments.append(contentsOf: [type]) }
            if let before = query.before { clauses.append("seq < ?"); _ = arguments.append(contentsOf: [before]) }
            let filter = clauses.isEmpty ? "" : "WHERE " + clauses.joined(separator: " AND ")
            _ = arguments.append(contentsOf: [query.limit + 1])
            let rows = try Row.fetchAll(db, sql: "SELECT * FROM jobs \(filter) ORDER BY seq DESC LIMIT ?", arguments: arguments)
            let jobs = try rows.prefix(query.limit).map(Self.job(from:))
            return JobPage(jobs: jobs, nextCursor: rows.count > query.limit ? jobs.last?.sequence : nil)
        }
    }

    public func queuedCount() async throws -> Int {
        try await read("count the queue") { db in
            try Int.fetchOne(db, sql: "SELECT COALESCE(SUM(queued), 0) FROM queue_counts") ?? 0
        }
    }

    public func claimNext(for slot: SlotID, excluding: Set<String>, now: Timestamp) async throws -> Job? {
        let job = try await write("claim a job") { db in try Self.claim(for: slot, excluding: excluding, now: now, in: db) }
        if let job { notifier.publish(job.id) }
        return job
    }

    public func finish(_ id: JobID, attempt: Int, outcome: JobOutcome, result: JSONValue?, now: Timestamp,
                       claimNextFor slot: SlotID?, excluding: Set<String>) async throws -> Job? {
        let next = try await write("record a finished job") { db -> Job? in
            if let row = try Row.fetchOne(db, sql: "SELECT * FROM jobs WHERE id = ? AND state = 'running' AND attempts = ?",
                                          arguments: [id.rawValue, attempt]) {
                var job = try Self.job(from: row)
                job.record(outcome, at: now, result: result)
                try db.execute(sql: """
                    UPDATE jobs SET state = ?, reason = ?, attempts = ?, started_at = ?, finished_at = ?,
                        exit_code = ?, signal = ?, error = ?, slot = ?, pid = NULL,
                        progress_fraction = ?, progress_message = ?, result = ?
                    WHERE seq = ?
                    """, arguments: [job.state.rawValue, job.reason?.rawValue, job.attempts, job.startedAt?.microseconds,
                                     job.finishedAt?.microseconds, job.exitCode, job.signal, job.error, job.slot?.rawValue,
                                     job.progress?.fraction, job.progress?.message, job.result?.canonicalText, job.sequence])
            }
            return try slot.flatMap { slot in try Self.claim(for: slot, excluding: excluding, now: now, in: db) }
        }
        notifier.publish(id)
        if let next { notifier.publish(next.id) }
        return next
    }

    public func cancel(_ id: JobID, now: Timestamp) async throws -> CancelResult {
        let result = try await write("cancel a job") { db -> CancelResult in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM jobs WHERE id = ?", arguments: [id.rawValue]) else {
                return .notFound
            }
            var job = try Self.job(from: row)
            switch job.state {
            case .queued:
                job.state = .canceled
                job.reason = .canceled
                job.finishedAt = now
                job.error = JobOutcome.canceled.errorMessage(timeout: nil)
                try db.execute(sql: "UPDATE jobs SET state = 'canceled', reason = 'canceled', finished_at = ?, error = ? WHERE seq = ?",
                               arguments: [now.microseconds, job.error, job.sequence])
                return .canceled(job)
            case .running:
                job.cancelRequested = true
                try db.execute(sql: "UPDATE jobs SET cancel_requested = 1 WHERE seq = ?", arguments: [job.sequence])
                return .stopping(job)
            case .succeeded, .failed, .canceled:
                return .alreadyFinished(job)
            }
        }
        notifier.publish(id)
        return result
    }

    public func reportProgress(_ id: JobID, attempt: Int, progress: JobProgress) async throws {
        try await write("save progress") { db in
            try db.execute(sql: """
                UPDATE jobs SET progress_fraction = ?, progress_message = ?
                WHERE id = ? AND state = 'running' AND attempts = ?
                """, arguments: [progress.fraction, progress.message, id.rawValue, attempt])
        }
        notifier.publish(id)
    }

    public func recoverInterrupted(now: Timestamp) async throws -> [Job] {
        let found = try await write("recover interrupted jobs") { db -> [Job] in
            let jobs = try Row.fetchAll(db, sql: "SELECT * FROM jobs WHERE state = 'running' ORDER BY seq").map(Self.job(from:))
            for job in jobs {
                if job.attempts >= job.maxAttempts {
                    try db.execute(sql: """
                        UPDATE jobs SET state = 'failed', reason = 'interrupted', finished_at = ?, error = ?, pid = NULL
                        WHERE seq = ?
                        """, arguments: [now.microseconds, RecoveryPolicy.interruptedMessage, job.sequence])
                } else {
                    try db.execute(sql: """
                        UPDATE jobs SET state = 'queued', slot = NULL, started_at = NULL, pid = NULL,
                            progress_fraction = NULL, progress_message = NULL
                        WHERE seq = ?
                        """, arguments: [job.sequence])
                }
            }
            return jobs
        }
        notifier.publish(found.map(\.id))
        return found
    }

    public func watch(_ id: JobID) -> JobWatch { notifier.watch(id) }

    // MARK: - Statements

    private static func insert(_ job: Job, in db: Database) throws -> Result<EnqueueResult, any Error> {
        if let key = job.idempotencyKey,
           let row = try Row.fetchOne(db, sql: "SELECT * FROM jobs WHERE idempotency_key = ?", arguments: [key]) {
            let existing = try withPosition(self.job(from: row), in: db)
            guard existing.fingerprint == job.fingerprint else {
                return .failure(StoreError(.idempotencyConflict, "the Idempotency-Key was already used for a different request", existing: existing))
            }
            return .success(.existing(existing))
        }
        try db.execute(sql: """
            INSERT INTO jobs (id, type, input, priority, timeout_s, max_attempts, state, attempts, created_at,
                              idempotency_key, fingerprint)
            VALUES (?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?, ?)
            """, arguments: [job.id.rawValue, job.type, job.input.canonicalText, job.priority, job.timeoutSeconds,
                             job.maxAttempts, job.createdAt.microseconds, job.idempotencyKey, job.fingerprint])
        var stored = job
        stored.sequence = db.lastInsertedRowID
        stored.state = .queued
        // The newest job is last among its priority: everything at or above it is ahead.
        stored.position = try Int.fetchOne(db, sql: "SELECT COALESCE(SUM(queued), 0) FROM queue_counts WHERE priority >= ?",
                                           arguments: [job.priority]) ?? 1
        return .success(.created(stored))
    }

    private static func claim(for slot: SlotID, excluding: Set<String>, now: Timestamp, in db: Database) throws -> Job? {
        var arguments: StatementArguments = [slot.rawValue, now.microseconds]
        var filter = ""
        if !excluding.isEmpty {
            filter = " AND type NOT IN (" + Array(repeating: "?", count: excluding.count).joined(separator: ",") + ")"
            _ = arguments.append(contentsOf: StatementArguments(excluding.sorted()))
        }
        return try Row.fetchOne(db, sql: """
            UPDATE jobs SET state = 'running', attempts = attempts + 1, slot = ?, started_at = ?, finished_at = NULL,
                pid = NULL, progress_fraction = NULL, progress_message = NULL, result = NULL
            WHERE seq = (SELECT seq FROM jobs WHERE state = 'queued'\(filter) ORDER BY priority DESC, seq LIMIT 1)
            RETURNING *
            """, arguments: arguments).map(job(from:))
    }

    private static func withPosition(_ job: Job, in db: Database) throws -> Job {
        guard job.state == .queued else { return job }
        var job = job
        let higher = try Int.fetchOne(db, sql: "SELECT COALESCE(SUM(queued), 0) FROM queue_counts WHERE priority > ?",
                                      arguments: [job.priority]) ?? 0
        let ahead = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND priority = ? AND seq < ?",
                                     arguments: [job.priority, job.sequence]) ?? 0
        job.position = higher + ahead + 1
        return job
    }

    static func job(from row: Row) throws -> Job {
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
        if let resultText = row["result"] as String? {
            job.result = try JSONParser.parse(resultText.utf8)
        }
        return job
    }

    // MARK: - Errors

    private func read<T: Sendable>(_ what: String, _ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do { return try await pool.read(body) } catch { throw Self.translate(error, doing: what) }
    }

    private func write<T: Sendable>(_ what: String, _ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do { return try await pool.write(body) } catch { throw Self.translate(error, doing: what) }
    }

    /// SQLite errors become `StoreError`s here and nowhere else.
    static func translate(_ error: any Error, doing what: String) -> any Error {
        if error is StoreError { return error }
        guard let error = error as? DatabaseError else { return error }
        switch error.resultCode {
        case .SQLITE_FULL: return StoreError(.storageUnavailable, "could not \(what): the disk is full")
        case .SQLITE_READONLY, .SQLITE_IOERR, .SQLITE_CANTOPEN, .SQLITE_PERM:
            return StoreError(.storageUnavailable, "could not \(what): \(error.message ?? "storage error") (\(error.resultCode))")
        case .SQLITE_CORRUPT, .SQLITE_NOTADB:
            return StoreError(.corrupt, "could not \(what): the job database is damaged (\(error.message ?? ""))")
        default:
            return StoreError(.other, "could not \(what): \(error.message ?? "\(error.resultCode)")")
        }
    }
}
