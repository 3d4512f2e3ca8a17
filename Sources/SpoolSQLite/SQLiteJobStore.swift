import Foundation
import GRDB
import SpoolCore
import SpoolStore
import Logging
import Synchronization

/// The embedded default store: one SQLite file in WAL mode, through GRDB's pool (one writer,
/// concurrent readers, all on GRDB's own dispatch queues — never on an event loop).
///
/// Durability: `synchronous = FULL` by default, so a job acknowledged with `201` survives a
/// power cut, not just a crash. Concurrent writes — submits, claims, ends, events — share
/// transactions (`WriteLoop`), so the cost of each sync is split between them.
///
/// The job lifecycle's transactions (enqueue, claim, finish, cancel, recover) are in this file;
/// the statements they share (`+Statements`), the event log (`+Events`), tokens, the webhook
/// outbox and job arrays are in their own extension files.
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
    let writes: WriteLoop
    /// How long a job's log lines and outputs event wait for another write to commit with.
    let eventLinger: Duration = .milliseconds(20)

    /// The database file as opened, and when writes last checked it is still the file at `path`.
    let file: DatabaseFile
    /// Where the last `deleteEnded` stopped reading, for the next call with the same cutoff (a
    /// retention pass is many calls); and how many rows the calls have read (for tests).
    let retentionCursor = Mutex<RetentionCursor?>(nil)
    let retentionRowsRead = Atomic<Int>(0)
    /// Room kept in the file for recording jobs' ends on a full disk (`DiskReserve`).
    let reserve: Mutex<DiskReserve>
    let logger = Logger(label: "spool.store")
    /// Tasks per transaction when an array is canceled or deleted; and what runs between two
    /// transactions (nothing; a test looks at what other writes can do meanwhile).
    let arrayChunkSize = Atomic<Int>(500)
    let arrayChunkGap = Mutex<(@Sendable () async -> Void)?>(nil)
    var arrayChunk: Int { arrayChunkSize.load(ordering: .relaxed) }
    func betweenArrayChunks() async { await arrayChunkGap.withLock { $0 }?() }

    /// `fileCheckInterval`: how often writes make sure the file at `path` is still the one
    /// opened (one `stat`; removed or replaced under a running server, writes would be lost).
    /// `diskReserveMiB`: room kept in the file for recording how jobs end once the disk is full
    /// (`DiskReserve`; the server's default is `defaultDiskReserveMiB`; 0 keeps none).
    public init(path: String, synchronous: Synchronous = .full, fileCheckInterval: Duration = .seconds(1), diskReserveMiB: Int = 0) throws {
        self.path = path
        reserve = Mutex(DiskReserve(rows: max(diskReserveMiB, 0)))
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
        Self.keepPrivate(path)
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
        } catch {
            throw Self.translate(error, doing: "open the job database at \(path)", at: path)
        }
        writes = WriteLoop(pool: pool)
        file = DatabaseFile(path: path, checkEvery: fileCheckInterval)
    }

    /// The database holds the session-signing key and the token digests: readable by its owner
    /// only (found by attacking the build: under the usual umask it was 0644, and any local user
    /// could read the key and make an administrator's session cookie). A new file is made 0600
    /// (SQLite gives its `-wal` and `-shm` the database's mode); an existing one, and its
    /// companions, lose any group or other access.
    static func keepPrivate(_ path: String) {
        let made = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if made >= 0 { close(made) }
        for file in [path, path + "-wal", path + "-shm", path + "-journal"] {
            var status = stat()
            guard stat(file, &status) == 0, status.st_mode & 0o077 != 0, status.st_uid == getuid() else { continue }
            chmod(file, status.st_mode & 0o700)
        }
    }

    public func prepare() async throws { try await prepare(upgrading: true) }

    /// `upgrading` false: a database an earlier Spool made is refused, not migrated
    /// (`SQLiteSchema.refuseAnOlder`).
    public func prepare(upgrading: Bool) async throws {
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
            try await SQLiteSchema.refuseANewer(in: pool, path: path)
            if !upgrading { try await SQLiteSchema.refuseAnOlder(in: pool, path: path) }
            try await SQLiteSchema.migrator.migrate(pool)
            // Then the writer keeps a transaction's statement journal in memory: past 64 KiB it went
            // to a temporary file and stayed there, and storing a 2,000-task array made 52,612
            // `pwrite`s to it (666 in memory). Not before the migrations, whose index builds may
            // sort a whole table (in memory, a big one's would have no bound); not for readers,
            // whose sorts keep their spill to files.
            try await pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA temp_store = MEMORY") }
            try await reserveWAL()
            await refillReserve(atStart: true)
            // Event ids continue from the last run; readers resuming from before a restart
            // must see the events written before it.
            let newest = try await pool.read { db in try Int64.fetchOne(db, cached: "SELECT MAX(id) FROM events") ?? 0 }
            eventNotifier.published(upTo: newest)
        } catch {
            throw Self.translate(error, doing: "migrate the job database", at: path)
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
            throw Self.translate(error, doing: "check the job database \(path)", at: path)
        }
        guard problems != ["ok"] else { return }
        let said = problems.joined(separator: "\n").split(whereSeparator: \.isNewline)
            .filter { !$0.hasPrefix("*** in database") }.prefix(2).joined(separator: "; ")
        throw StoreError(.corrupt, "the job database \(path) is damaged (SQLite's quick_check: \(said.isEmpty ? "no answer" : said)); "
                         + "restore it from a backup, or move it aside to start with an empty queue")
    }

    public func enqueue(_ job: Job, limits: QueueLimits) async throws -> EnqueueResult {
        let (result, event) = try await write("store the job", newWork: true) { db in try Self.insert(job, limits: limits, in: db) }.get()
        eventNotifier.published(event.map { [$0] } ?? [])
        return result
    }

    public func job(_ id: JobID) async throws -> Job? {
        // The row, and for a queued job its position (an estimate: a job that starts between the
        // two reads is reported queued, as it was a moment before).
        try await readWithoutSnapshot("read a job") { db in
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
            switch query.array {
            case nil: break
            case .alone?: clauses.append("array_id IS NULL")
            case .tasks(let id)?: clauses.append("array_id = ?"); _ = arguments.append(contentsOf: [id])
            }
            let filter = clauses.isEmpty ? "" : "WHERE " + clauses.joined(separator: " AND ")
            _ = arguments.append(contentsOf: [query.limit + 1])
            // Row by row, so the rows past the page's byte budget are never read into memory.
            let rows = try Row.fetchCursor(db, cached: """
                SELECT *, length(CAST(input AS BLOB)) + IFNULL(length(CAST(result AS BLOB)), 0) AS listed_bytes
                FROM jobs \(filter) ORDER BY seq DESC LIMIT ?
                """, arguments: arguments)
            var budget = PageBudget(query)
            var jobs: [Job] = []
            while let row = try rows.next() {
                guard budget.take(size: row["listed_bytes"]) else { return JobPage(jobs: jobs, nextCursor: jobs.last?.sequence) }
                jobs.append(try Self.job(from: row))
            }
            return JobPage(jobs: jobs, nextCursor: nil)
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

    public func queuedAhead(ofNew job: Job, dueBy: Timestamp) async throws -> Int {
        try await read("count the queue ahead of a job") { db in
            // The tag its insert would give it (`insert`).
            let tags = try Self.fairTags(priority: job.priority, owner: job.owner ?? "", in: db)
            let tag = FairShare.tag(ownerLast: tags.ownerLast, head: tags.head, served: tags.served, weight: job.shareWeight)
            // Higher priorities from the counters, less those delayed past `dueBy`; its own priority up to its tag.
            let higher = try Int.fetchOne(db, cached: "SELECT COALESCE(SUM(queued), 0) FROM queue_counts WHERE priority > ?", arguments: [job.priority]) ?? 0
            let later = try Int.fetchOne(db, cached: """
                SELECT COUNT(*) FROM jobs INDEXED BY jobs_not_before
                WHERE state = 'queued' AND not_before IS NOT NULL AND not_before > ? AND priority > ?
                """, arguments: [dueBy.microseconds, job.priority]) ?? 0
            let level = try Int.fetchOne(db, cached: """
                SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND priority = ? AND fair_tag <= ? AND (not_before IS NULL OR not_before <= ?)
                """, arguments: [job.priority, tag, dueBy.microseconds]) ?? 0
            return higher - later + level
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
        // A look, not a claim: what it finds is claimed conditionally, in the write that starts it.
        try await readWithoutSnapshot("look at the queue") { db in
            // A tenant's max_running depends on the running count, read in the claiming transaction.
            if try Bool.fetchOne(db, cached: "SELECT EXISTS (SELECT 1 FROM tokens WHERE max_running IS NOT NULL)") == true {
                return .claimInStore
            }
            var arguments: StatementArguments = []
            let filter = Self.queueFilter(now: now, excluding: types, skipping: skipping, arguments: &arguments)
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
            let claimHeld: Bool
            let recorded: (job: Job, event: JobEvent)?
            if let claimed, let finished, finished.job == claimed.id, finished.attempt == claimed.attempts {
                (claimHeld, recorded) = try Self.claimAndRecord(claimed, finished, in: db, events: &events)
            } else {
                claimHeld = try claimed.map { try Self.claim($0, in: db, events: &events) } ?? false
                recorded = try finished.flatMap { try Self.record($0, in: db) }
            }
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

    /// An attempt whose claim commits with its end (a short job started before its claim
    /// committed): `claim`, then `record`, as one write of the row — queued to ended, never
    /// through `running` in the table and its indexes — with both events, `running` first.
    /// The same rows and events as the two, in about half the work.
    private static func claimAndRecord(_ started: Job, _ finished: FinishedAttempt, in db: Database,
                                       events: inout [JobEvent]) throws -> (claimed: Bool, recorded: (job: Job, event: JobEvent)?) {
        guard let startedAt = started.startedAt, let slot = started.slot,
              let row = try Row.fetchOne(db, cached: "SELECT * FROM jobs WHERE id = ? AND state = 'queued' AND attempts = ?",
                                         arguments: [started.id.rawValue, started.attempts - 1])
        else { return (false, nil) }
        var job = try Self.job(from: row)
        job.start(on: slot, at: startedAt)
        events.append(try Self.insertEvent(.state, of: job, at: startedAt, in: db))
        return (true, try end(job, finished, in: db))
    }

    /// Records an attempt's end in the caller's transaction, if that attempt still runs: the job
    /// as it is now, and its event.
    private static func record(_ finished: FinishedAttempt, in db: Database) throws -> (job: Job, event: JobEvent)? {
        guard let row = try Row.fetchOne(db, cached: "SELECT * FROM jobs WHERE id = ? AND state = 'running' AND attempts = ?",
                                         arguments: [finished.job.rawValue, finished.attempt]) else { return nil }
        return try end(try Self.job(from: row), finished, in: db)
    }

    /// Writes `finished`'s end of `job` (as it runs) in the caller's transaction: the job as
    /// it is then, and its event.
    private static func end(_ job: Job, _ finished: FinishedAttempt, in db: Database) throws -> (job: Job, event: JobEvent) {
        var job = job
        job.record(finished.outcome, at: finished.now, result: finished.result)
        try Self.saveOutcome(of: job, in: db)
        return (job, try Self.insertEvent(.state, of: job, at: finished.now, in: db))
    }

    public func cancel(_ id: JobID, by actor: String?, now: Timestamp) async throws -> CancelResult {
        let (result, event) = try await write("cancel a job") { db -> (CancelResult, JobEvent?) in
            guard let row = try Row.fetchOne(db, cached: "SELECT * FROM jobs WHERE id = ?", arguments: [id.rawValue]) else {
                return (.notFound, nil)
            }
            return try Self.cancel(Self.job(from: row), by: actor, now: now, in: db)
        }
        notifier.publish(id)
        eventNotifier.published(event.map { [$0] } ?? [])
        return result
    }

    /// Every task of the array that has not finished, each as `cancel` does it, in transactions
    /// of `arrayChunk` tasks in index order: one sync per chunk, where a task at a time was one
    /// each (10,000 tasks took 4 s), and other writes between chunks, where the whole array in one
    /// transaction held every submit for half a second. A task that starts between two chunks is
    /// asked to stop by its own. A failure after the first chunk throws `ArrayCancelInterrupted`
    /// with the tasks canceled so far (the running ones among them are the caller's to stop):
    /// cancelling again finishes the rest.
    public func cancelArray(_ id: String, by actor: String?, now: Timestamp) async throws -> [Job] {
        var affected: [Job] = []
        var after: Int64?   // none for the first chunk: an index may be Int64.min
        while true {
            let chunkCanceled: ([Job], [JobEvent], Int64?)
            do {
                chunkCanceled = try await write("cancel a job array") { [chunk = arrayChunk, after] db -> ([Job], [JobEvent], Int64?) in
                    if after == nil {   // begun: a crash before the last chunk leaves it to the next start
                        try db.execute(cached: "INSERT OR REPLACE INTO array_operations (array_id, operation, actor) VALUES (?, 'cancel', ?)",
                                       arguments: [id, actor])
                    }
                    let open = try Row.fetchAll(db, cached: """
                        SELECT * FROM jobs INDEXED BY jobs_array WHERE array_id = ?\(after == nil ? "" : " AND array_index > ?")
                          AND state IN ('queued', 'running') ORDER BY array_index LIMIT ?
                        """, arguments: after.map { [id, $0, chunk] } ?? [id, chunk])
                    var canceled: [Job] = []
                    var events: [JobEvent] = []
                    for row in open {
                        switch try Self.cancel(Self.job(from: row), by: actor, now: now, in: db) {
                        case (.canceled(let job), let event), (.stopping(let job), let event):
                            canceled.append(job)
                            if let event { events.append(event) }
                        case (.alreadyFinished, _), (.notFound, _):
                            break
                        }
                    }
                    guard open.count == chunk else {
                        try db.execute(cached: "DELETE FROM array_operations WHERE array_id = ? AND operation = 'cancel'", arguments: [id])
                        return (canceled, events, nil)
                    }
                    return (canceled, events, open.last?["array_index"])
                }
            } catch {
                guard affected.isEmpty else { throw ArrayCancelInterrupted(canceled: affected, cause: error) }
                throw error
            }
            let (canceled, events, last) = chunkCanceled
            for job in canceled { notifier.publish(job.id) }
            eventNotifier.published(events)
            affected += canceled
            guard let last else { return affected }
            after = last
            await betweenArrayChunks()
        }
    }

    /// Cancels `job` as read in this transaction: a queued one at once, a running one asked to stop.
    private static func cancel(_ job: Job, by actor: String?, now: Timestamp, in db: Database) throws -> (CancelResult, JobEvent?) {
        var job = job
        switch job.state {
        case .queued:
            job.cancelWhileQueued(at: now, by: actor)
            try db.execute(cached: "UPDATE jobs SET state = 'canceled', reason = 'canceled', finished_at = ?, error = ?, canceled_by = ? WHERE seq = ?",
                           arguments: [now.microseconds, job.error, job.canceledBy, job.sequence])
            return (.canceled(job), try insertEvent(.state, of: job, at: now, in: db))
        case .running:
            job.requestCancel(by: actor)
            try db.execute(cached: "UPDATE jobs SET cancel_requested = 1, canceled_by = ? WHERE seq = ?", arguments: [job.canceledBy, job.sequence])
            return (.stopping(job), try insertEvent(.state, of: job, at: now, in: db))
        case .succeeded, .failed, .canceled:
            return (.alreadyFinished(job), nil)
        }
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
}
