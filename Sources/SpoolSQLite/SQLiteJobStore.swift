import Foundation
import GRDB
import SpoolCore
import SpoolStore

/// The embedded default store: one SQLite file in WAL mode, through GRDB's pool (one writer,
/// concurrent readers, all on GRDB's own dispatch queues — never on an event loop).
///
/// Durability: `synchronous = FULL` by default, so a job acknowledged with `201` survives a
/// power cut, not just a crash. Concurrent writes — submits, claims, ends, events — share
/// transactions (`WriteLoop`), so the cost of each sync is split between them.
///
/// The job lifecycle's statements (enqueue, claim, finish, cancel, recover, events) stay in this
/// one file so each transaction's SQL reads next to the others it must agree with; tokens, the
/// webhook outbox and job arrays are in their own extension files.
public final class SQLiteJobStore: LocalJobStore, TokenStore {
    public enum Synchronous: String, Sendable, CaseIterable {
        /// fsync on every commit: survives power loss (default).
        case full
        /// WAL default: survives a crash of the process, may lose the last commits on power loss.
        case normal
    }

    public let path: String
    public let synchronous: Synchronous
    /// Shared with the store's other capabilities (the webhook outbox) in this module.
    let pool: DatabasePool
    private let notifier = JobChangeNotifier()
    public let eventNotifier = EventNotifier()
    /// Events kept in all; older ones are pruned as new ones arrive.
    static let eventLimit: Int64 = 200_000
    /// Every write of the job lifecycle goes through here: one transaction for whatever arrived
    /// while the previous one committed. A step that throws fails its whole transaction (only
    /// a database error does: refusals like a full queue are values).
    private let writes: WriteLoop
    /// How long a job's log lines and outputs event wait for another write to commit with.
    let eventLinger: Duration = .milliseconds(20)

    public init(path: String, synchronous: Synchronous = .full) throws {
        self.path = path
        self.synchronous = synchronous
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
        writes = WriteLoop(pool: pool)
    }

    public func prepare() async throws {
        try await checkIntegrity()
        do {
            // GRDB's WAL set-up sets `synchronous = NORMAL` on the writer after our
            // prepareDatabase ran, so the durability setting is applied (and checked) here.
            let mode = synchronous
            try await pool.writeWithoutTransaction { db in
                try db.execute(sql: "PRAGMA synchronous = \(mode.rawValue.uppercased())")
                let applied = try Int.fetchOne(db, sql: "PRAGMA synchronous")
                guard applied == (mode == .full ? 2 : 1) else {
                    throw StoreError(.other, "SQLite did not accept synchronous = \(mode.rawValue) (it reports \(applied ?? -1))")
                }
            }
            try await SQLiteSchema.migrator.migrate(pool)
            try await reserveWAL()
            // Event ids continue from the last run; readers resuming from before a restart
            // must see the events written before it.
            let newest = try await pool.read { db in try Int64.fetchOne(db, cached: "SELECT MAX(id) FROM events") ?? 0 }
            eventNotifier.published(upTo: newest)
        } catch {
            throw Self.translate(error, doing: "migrate the job database")
        }
    }

    /// Gives the write-ahead log its full size now, holding the writer meanwhile, so that commits
    /// overwrite it rather than append (`WALReserve` says why). Best effort: a WAL that cannot
    /// grow keeps its size, as it would have anyway.
    func reserveWAL() async throws {
        let walPath = pool.path + "-wal"
        try await pool.writeWithoutTransaction { db in
            let pageSize = try Int.fetchOne(db, sql: "PRAGMA page_size") ?? 4096
            let checkpointPages = try Int.fetchOne(db, sql: "PRAGMA wal_autocheckpoint") ?? 1000
            WALReserve.extend(walPath, to: WALReserve.size(pageSize: pageSize, checkpointPages: checkpointPages))
        }
    }

    /// Refuses a damaged file before anything is served from it: a garbled page in the queue
    /// index would otherwise let the server start, answer submits and never run a job.
    /// `quick_check` reads every page once (about a second per few hundred MB) without the
    /// index cross-checks of `integrity_check`.
    func checkIntegrity() async throws {
        let problems: [String]
        do {
            problems = try await pool.read { db in try String.fetchAll(db, sql: "PRAGMA quick_check(5)") }
        } catch {
            throw Self.translate(error, doing: "check the job database \(path)")
        }
        guard problems != ["ok"] else { return }
        let said = problems.joined(separator: "\n").split(whereSeparator: \.isNewline)
            .filter { !$0.hasPrefix("*** in database") }.prefix(2).joined(separator: "; ")
        throw StoreError(.corrupt, "the job database \(path) is damaged (SQLite's quick_check: \(said.isEmpty ? "no answer" : said)); "
                         + "restore it from a backup, or move it aside to start with an empty queue")
    }

    public func enqueue(_ job: Job, limits: QueueLimits) async throws -> EnqueueResult {
        let (result, event) = try await write("store the job") { db in try Self.insert(job, limits: limits, in: db) }.get()
        eventNotifier.published(event.map { [$0] } ?? [])
        return result
    }

    public func job(_ id: JobID) async throws -> Job? {
        try await read("read a job") { db in
            guard let row = try Row.fetchOne(db, cached: "SELECT * FROM jobs WHERE id = ?", arguments: [id.rawValue]) else { return nil }
            return try Self.withPosition(Self.job(from: row), in: db)
        }
    }

    public func jobs(_ query: JobQuery) async throws -> JobPage {
        try await read("list jobs") { db in
            var clauses: [String] = []
            var arguments: StatementArguments = []
            if let state = query.state { clauses.append("state = ?"); _ = arguments.append(contentsOf: [state.rawValue]) }
            if let type = query.type { clauses.append("type = ?"); _ = arguments.append(contentsOf: [type]) }
            if let owner = query.owner { clauses.append("owner = ?"); _ = arguments.append(contentsOf: [owner]) }
            if let before = query.before { clauses.append("seq < ?"); _ = arguments.append(contentsOf: [before]) }
            let filter = clauses.isEmpty ? "" : "WHERE " + clauses.joined(separator: " AND ")
            _ = arguments.append(contentsOf: [query.limit + 1])
            let rows = try Row.fetchAll(db, cached: "SELECT * FROM jobs \(filter) ORDER BY seq DESC LIMIT ?", arguments: arguments)
            let jobs = try rows.prefix(query.limit).map(Self.job(from:))
            return JobPage(jobs: jobs, nextCursor: rows.count > query.limit ? jobs.last?.sequence : nil)
        }
    }

    public func queuedCount() async throws -> Int {
        try await read("count the queue") { db in
            try Int.fetchOne(db, cached: "SELECT COALESCE(SUM(queued), 0) FROM queue_counts") ?? 0
        }
    }

    public func queuedCount(owner: String) async throws -> Int {
        try await read("count the queue") { db in
            try Int.fetchOne(db, cached: "SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND owner = ?", arguments: [owner]) ?? 0
        }
    }

    public func queuedCount(priorityAtLeast priority: Int, dueBy: Timestamp) async throws -> Int {
        try await read("count the queue") { db in
            // All of them from the counters, less those delayed past `dueBy` (few, through their index).
            let all = try Int.fetchOne(db, cached: "SELECT COALESCE(SUM(queued), 0) FROM queue_counts WHERE priority >= ?", arguments: [priority]) ?? 0
            let later = try Int.fetchOne(db, cached: """
                SELECT COUNT(*) FROM jobs INDEXED BY jobs_not_before
                WHERE state = 'queued' AND not_before IS NOT NULL AND not_before > ? AND priority >= ?
                """, arguments: [dueBy.microseconds, priority]) ?? 0
            return all - later
        }
    }

    public func expireDeadlines(now: Timestamp) async throws -> [Job] {
        let (expired, events) = try await write("cancel jobs past their deadline") { db -> ([Job], [JobEvent]) in
            let rows = try Row.fetchAll(db, cached: """
                UPDATE jobs SET state = 'canceled', reason = 'deadline', finished_at = ?, error = ?
                WHERE state = 'queued' AND start_by IS NOT NULL AND start_by <= ?
                RETURNING *
                """, arguments: [now.microseconds, Job.deadlineMessage, now.microseconds])
            let jobs = try rows.map(Self.job(from:)).sorted { $0.sequence < $1.sequence }
            return (jobs, try jobs.map { try Self.insertEvent(.state, of: $0, at: now, in: db) })
        }
        notifier.publish(expired.map(\.id))
        eventNotifier.published(events)
        return expired
    }

    public func nextTimer(after now: Timestamp) async throws -> Timestamp? {
        try await read("read the queue's timers") { db in
            let due = try Int64.fetchOne(db, cached: "SELECT MIN(not_before) FROM jobs WHERE state = 'queued' AND not_before > ?",
                                         arguments: [now.microseconds])
            let deadline = try Int64.fetchOne(db, cached: "SELECT MIN(start_by) FROM jobs WHERE state = 'queued' AND start_by IS NOT NULL")
            return [due, deadline].compactMap { $0 }.min().map(Timestamp.init(microseconds:))
        }
    }

    public func claimNext(for slot: SlotID, excluding: Set<String>, now: Timestamp) async throws -> Job? {
        try await claimNext(for: slot, excluding: excluding, skipping: [], now: now)
    }

    public func claimNext(for slot: SlotID, excluding: Set<String>, skipping: Set<JobID>, now: Timestamp) async throws -> Job? {
        let claimed = try await write("claim a job") { db in try Self.claim(for: slot, excluding: excluding, skipping: skipping, now: now, in: db) }
        if let (job, event) = claimed {
            notifier.publish(job.id)
            eventNotifier.published([event])
        }
        return claimed?.0
    }

    public func finish(_ id: JobID, attempt: Int, outcome: JobOutcome, result: JSONValue?, now: Timestamp,
                       claimNextFor slot: SlotID?, excluding: Set<String>) async throws -> FinishResult {
        let finished = FinishedAttempt(job: id, attempt: attempt, outcome: outcome, result: result, now: now)
        let (ended, next, events) = try await write("record a finished job") { db -> (Job?, Job?, [JobEvent]) in
            let recorded = try Self.record(finished, in: db)
            var events = recorded.map { [$0.event] } ?? []
            let next = try slot.flatMap { slot in try Self.claim(for: slot, excluding: excluding, now: now, in: db) }
            if let claimedEvent = next?.1 { events.append(claimedEvent) }
            return (recorded?.job, next?.0, events)
        }
        if let ended { notifier.publish(ended) } else { notifier.publish(id) }
        if let next { notifier.publish(next.id) }
        eventNotifier.published(events)
        return FinishResult(recorded: ended != nil, next: next)
    }

    public func peekNext(for slot: SlotID, excluding types: Set<String>, skipping: Set<JobID>, now: Timestamp) async throws -> PeekedJob {
        try await read("look at the queue") { db in
            // A tenant's max_running depends on the running count, read in the claiming transaction.
            if try Bool.fetchOne(db, cached: "SELECT EXISTS (SELECT 1 FROM tokens WHERE max_running IS NOT NULL)") == true {
                return .claimInStore
            }
            var filter = Self.dueFilter
            var arguments: StatementArguments = [now.microseconds, now.microseconds]
            if !types.isEmpty {
                filter += " AND type NOT IN (" + Array(repeating: "?", count: types.count).joined(separator: ",") + ")"
                _ = arguments.append(contentsOf: StatementArguments(types.sorted()))
            }
            if !skipping.isEmpty {
                filter += " AND id NOT IN (" + Array(repeating: "?", count: skipping.count).joined(separator: ",") + ")"
                _ = arguments.append(contentsOf: StatementArguments(skipping.map(\.rawValue).sorted()))
            }
            let row = try Row.fetchOne(db, cached: """
                SELECT * FROM jobs INDEXED BY jobs_queue WHERE state = 'queued'\(filter) ORDER BY priority DESC, fair_tag, seq LIMIT 1
                """, arguments: arguments)
            return try row.map { .job(try Self.job(from: $0)) } ?? PeekedJob.none
        }
    }

    public func commit(claimed: Job?, finished: FinishedAttempt?, started: Job?) async throws -> HandOverCommit {
        if finished != nil, started != nil { try await Failpoints.hold(Failpoints.holdHandOverCommit) }
        if claimed != nil { try await Failpoints.hold(Failpoints.holdClaimWithEnd) }
        let (answer, ended, events) = try await write("record a finished job and start the next") { db -> (HandOverCommit, Job?, [JobEvent]) in
            var events: [JobEvent] = []
            let claimHeld = try claimed.map { try Self.claim($0, in: db, events: &events) } ?? false
            let recorded = try finished.flatMap { try Self.record($0, in: db) }
            if let recorded { events.append(recorded.event) }
            let startedHeld = try started.map { try Self.claim($0, in: db, events: &events) } ?? false
            return (HandOverCommit(claimed: claimHeld, started: startedHeld), recorded?.job, events)
        }
        // The ended job goes with its wake-up (`?wait=` answers without reading it again).
        if let ended { notifier.publish(ended) } else if let finished { notifier.publish(finished.job) }
        if answer.started, let started { notifier.publish(started.id) }
        eventNotifier.published(events)
        return answer
    }

    /// Claims `started` — a job `peekNext` returned, after `Job.start(on:at:)` — in the caller's
    /// transaction if it is still queued with one attempt fewer; its event goes to `events`.
    private static func claim(_ started: Job, in db: Database, events: inout [JobEvent]) throws -> Bool {
        guard let startedAt = started.startedAt, let slot = started.slot,
              let row = try Row.fetchOne(db, cached: """
                UPDATE jobs SET state = 'running', attempts = ?, slot = ?, started_at = ?, finished_at = NULL,
                    pid = NULL, progress_fraction = NULL, progress_message = NULL, result = NULL
                WHERE id = ? AND state = 'queued' AND attempts = ?
                RETURNING *
                """, arguments: [started.attempts, slot.rawValue, startedAt.microseconds, started.id.rawValue, started.attempts - 1])
        else { return false }
        events.append(try Self.insertEvent(.state, of: try Self.job(from: row), at: startedAt, in: db))
        return true
    }

    /// Records an attempt's end in the caller's transaction, if that attempt still runs: the job
    /// as it is now, and its event.
    private static func record(_ finished: FinishedAttempt, in db: Database) throws -> (job: Job, event: JobEvent)? {
        guard let row = try Row.fetchOne(db, cached: "SELECT * FROM jobs WHERE id = ? AND state = 'running' AND attempts = ?",
                                         arguments: [finished.job.rawValue, finished.attempt]) else { return nil }
        var job = try Self.job(from: row)
        job.record(finished.outcome, at: finished.now, result: finished.result)
        try Self.saveOutcome(of: job, in: db)
        return (job, try Self.insertEvent(.state, of: job, at: finished.now, in: db))
    }

    public func cancel(_ id: JobID, by actor: String?, now: Timestamp) async throws -> CancelResult {
        let (result, event) = try await write("cancel a job") { db -> (CancelResult, JobEvent?) in
            guard let row = try Row.fetchOne(db, cached: "SELECT * FROM jobs WHERE id = ?", arguments: [id.rawValue]) else {
                return (.notFound, nil)
            }
            var job = try Self.job(from: row)
            switch job.state {
            case .queued:
                job.cancelWhileQueued(at: now, by: actor)
                try db.execute(cached: "UPDATE jobs SET state = 'canceled', reason = 'canceled', finished_at = ?, error = ?, canceled_by = ? WHERE seq = ?",
                               arguments: [now.microseconds, job.error, job.canceledBy, job.sequence])
                return (.canceled(job), try Self.insertEvent(.state, of: job, at: now, in: db))
            case .running:
                job.cancelRequested = true
                job.canceledBy = actor ?? job.canceledBy
                try db.execute(cached: "UPDATE jobs SET cancel_requested = 1, canceled_by = ? WHERE seq = ?", arguments: [job.canceledBy, job.sequence])
                return (.stopping(job), try Self.insertEvent(.state, of: job, at: now, in: db))
            case .succeeded, .failed, .canceled:
                return (.alreadyFinished(job), nil)
            }
        }
        notifier.publish(id)
        eventNotifier.published(event.map { [$0] } ?? [])
        return result
    }

    public func reportProgress(_ id: JobID, attempt: Int, progress: JobProgress) async throws {
        let event = try await write("save progress") { db -> JobEvent? in
            try db.execute(cached: """
                UPDATE jobs SET progress_fraction = ?, progress_message = ?
                WHERE id = ? AND state = 'running' AND attempts = ?
                """, arguments: [progress.fraction, progress.message, id.rawValue, attempt])
            guard db.changesCount > 0 else { return nil }
            return try Self.insertEvent(.progress, job: id, owner: nil, data: JobEvent.progressData(of: id, progress), at: WallClock.now(), in: db)
        }
        notifier.publish(id)
        eventNotifier.published(event.map { [$0] } ?? [])
    }

    public func recoverInterrupted(now: Timestamp) async throws -> [Job] {
        let (found, events) = try await write("recover interrupted jobs") { db -> ([Job], [JobEvent]) in
            let jobs = try Row.fetchAll(db, cached: "SELECT * FROM jobs WHERE state = 'running' ORDER BY seq").map(Self.job(from:))
            var events: [JobEvent] = []
            for var job in jobs {
                job.recoverFromInterruption(at: now)
                try Self.saveOutcome(of: job, in: db)
                events.append(try Self.insertEvent(.state, of: job, at: now, in: db))
            }
            return (jobs, events)
        }
        notifier.publish(found.map(\.id))
        eventNotifier.published(events)
        return found
    }

    public func watch(_ id: JobID) -> JobWatch { notifier.watch(id) }

    public func events(after: Int64, job: JobID?, owner: String?, limit: Int) async throws -> [JobEvent] {
        try await read("read events") { db in
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
    public func appendEvent(_ kind: JobEvent.Kind, job: JobID, data: JSONValue, now: Timestamp) async throws {
        let event = try await write("record an event", lingering: eventLinger) { db in
            try Self.insertEvent(kind, job: job, owner: nil, data: data, at: now, in: db)
        }
        eventNotifier.published([event])
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

    // MARK: - Statements

    static func insert(_ job: Job, limits: QueueLimits, in db: Database) throws -> Result<(EnqueueResult, JobEvent?), any Error> {
        let owner = job.owner ?? ""
        if let key = job.idempotencyKey,
           let row = try Row.fetchOne(db, cached: "SELECT * FROM jobs WHERE owner = ? AND idempotency_key = ?", arguments: [owner, key]) {
            let existing = try withPosition(self.job(from: row), in: db)
            guard existing.fingerprint == job.fingerprint else {
                return .failure(StoreError(.idempotencyConflict, "the Idempotency-Key was already used for a different request", existing: existing))
            }
            return .success((.existing(existing), nil))
        }
        if let dedup = job.dedup, let hash = job.dedupHash, let row = try Row.fetchOne(db, cached: """
            SELECT * FROM jobs INDEXED BY jobs_dedup
            WHERE owner = ? AND dedup_hash = ? AND (state IN ('queued', 'running') OR (state = 'succeeded' AND finished_at >= ?))
            ORDER BY state IN ('queued', 'running') DESC, seq DESC LIMIT 1
            """, arguments: [owner, hash, dedup.succeededWithin.map { job.createdAt.adding(seconds: -$0).microseconds } ?? Int64.max]) {
            return .success((.duplicate(try withPosition(self.job(from: row), in: db)), nil))
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
        let tags = try Row.fetchOne(db, cached: """
            SELECT (SELECT MIN(fair_tag) FROM jobs WHERE state = 'queued' AND priority = ?),
                   (SELECT MAX(fair_tag) FROM jobs WHERE state = 'queued' AND priority = ?),
                   (SELECT MAX(fair_tag) FROM jobs WHERE state = 'queued' AND owner = ? AND priority = ?)
            """, arguments: [job.priority, job.priority, owner, job.priority])
        let (head, tail, ownerLast): (Int64?, Int64?, Int64?) = (tags?[0], tags?[1], tags?[2])
        var stored = job
        stored.fairTag = FairShare.tag(ownerLast: ownerLast, head: head, weight: job.shareWeight)
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
    private static func saveOutcome(of job: Job, in db: Database) throws {
        try db.execute(cached: """
            UPDATE jobs SET state = ?, reason = ?, attempts = ?, started_at = ?, finished_at = ?,
                exit_code = ?, signal = ?, error = ?, slot = ?, pid = NULL,
                progress_fraction = ?, progress_message = ?, result = ?, not_before = ?, attempt_log = ?
            WHERE seq = ?
            """, arguments: [job.state.rawValue, job.reason?.rawValue, job.attempts, job.startedAt?.microseconds,
                             job.finishedAt?.microseconds, job.exitCode, job.signal, job.error, job.slot?.rawValue,
                             job.progress?.fraction, job.progress?.message, job.result?.canonicalText, job.notBefore?.microseconds,
                             AttemptRecord.encode(job.attemptLog), job.sequence])
    }

    /// The claimed job and the id of the event recording it.
    private static func claim(for slot: SlotID, excluding: Set<String>, skipping: Set<JobID> = [], now: Timestamp,
                              in db: Database) throws -> (Job, JobEvent)? {
        guard let job = try claimRow(for: slot, excluding: excluding, skipping: skipping, now: now, in: db) else { return nil }
        return (job, try insertEvent(.state, of: job, at: now, in: db))
    }

    /// The next job in fair-share order. `INDEXED BY`: without statistics SQLite's planner took
    /// `jobs_state_seq` and sorted every queued job on each claim (20 ms at 100,000 queued); the
    /// partial queue index hands the head over directly.
    private static func claimRow(for slot: SlotID, excluding: Set<String>, skipping: Set<JobID>, now: Timestamp, in db: Database) throws -> Job? {
        var arguments: StatementArguments = [slot.rawValue, now.microseconds, now.microseconds, now.microseconds]
        var filter = dueFilter
        if !excluding.isEmpty {
            filter += " AND type NOT IN (" + Array(repeating: "?", count: excluding.count).joined(separator: ",") + ")"
            _ = arguments.append(contentsOf: StatementArguments(excluding.sorted()))
        }
        if !skipping.isEmpty {
            filter += " AND id NOT IN (" + Array(repeating: "?", count: skipping.count).joined(separator: ",") + ")"
            _ = arguments.append(contentsOf: StatementArguments(skipping.map(\.rawValue).sorted()))
        }
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
    private static let dueFilter = " AND (not_before IS NULL OR not_before <= ?) AND (start_by IS NULL OR start_by > ?)"

    private static func withPosition(_ job: Job, in db: Database) throws -> Job {
        guard job.state == .queued else { return job }
        var job = job
        job.position = try position(of: job, in: db)
        return job
    }

    /// 1-based: the queued jobs of higher priority, then those before it in fair-share order.
    private static func position(of job: Job, in db: Database) throws -> Int {
        let higher = try Int.fetchOne(db, cached: "SELECT COALESCE(SUM(queued), 0) FROM queue_counts WHERE priority > ?",
                                      arguments: [job.priority]) ?? 0
        let ahead = try Int.fetchOne(db, cached: """
            SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND priority = ? AND (fair_tag < ? OR (fair_tag = ? AND seq < ?))
            """, arguments: [job.priority, job.fairTag, job.fairTag, job.sequence]) ?? 0
        return higher + ahead + 1
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

    // MARK: - Errors

    func read<T: Sendable>(_ what: String, _ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do { return try await pool.read(body) } catch { throw Self.translate(error, doing: what) }
    }

    func write<T: Sendable>(_ what: String, lingering: Duration? = nil, _ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        let output: any Sendable
        do { output = try await writes.submit({ db in try body(db) }, lingering: lingering) } catch { throw Self.translate(error, doing: what) }
        guard let value = output as? T else { throw StoreError(.other, "could not \(what): a write answered \(type(of: output))") }
        return value
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
