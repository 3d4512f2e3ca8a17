import Logging
import PostgresNIO
import SpoolCore
import SpoolStore
import Synchronization

/// The shared store: one PostgreSQL database behind many API nodes and GPU nodes.
///
/// Same contract as the SQLite store (the conformance suite runs against both), plus what a
/// queue shared by machines needs (`SharedJobStore`): claims with `FOR UPDATE SKIP LOCKED`,
/// leases renewed by the claiming node and rescued by any other once they expire, the attempt
/// number as a fencing token, and wake-ups through `LISTEN`/`NOTIFY` on one channel.
///
/// Every change is one transaction, and most are one statement (one round trip): the job row,
/// its event and the notification commit together. Times on jobs are the writing node's clock,
/// as with SQLite; lease times are the database's clock, so nodes' clocks may disagree.
public final class PostgresJobStore: SharedJobStore {
    public let location: PostgresLocation
    public let node: String
    public let leaseDuration: Duration
    public let eventNotifier = EventNotifier()
    /// Events kept in all; older ones are pruned as new ones arrive.
    static let eventLimit: Int64 = 200_000
    /// Notifications: `spool` carries "queued" and "cancel=ID" (every node listens);
    /// `spool_events` carries new event ids (only nodes that follow events listen).
    static let channel = "spool"
    static let eventsChannel = "spool_events"

    let client: PostgresClient
    let logger: Logger
    private let notifier = JobChangeNotifier()
    let horizon = EventHorizon()
    private let subscribers = Mutex<[Int: AsyncStream<ClusterSignal>.Continuation]>([:])
    private let tasks = Mutex<[Task<Void, Never>]>([])
    private let isListening = Mutex(false)
    /// The jobs this node runs, as claimed: what `finish` needs to write an outcome blind.
    private let claimedJobs = Mutex<[JobID: Job]>([:])

    /// Whether this node follows other nodes' events (for event streams, webhooks and waits
    /// on its API). A node without an API (an agent) does not, and spares the database the
    /// reads.
    public let followsEvents: Bool
    /// How long one store operation may wait (for a connection, mostly) before it fails as
    /// `storageUnavailable`.
    public let operationTimeout: Duration

    /// Opens a pool of up to `connections` connections (none is made until `prepare`).
    public init(location: PostgresLocation, node: String, leaseDuration: Duration = .seconds(10),
                connections: Int = 20, followsEvents: Bool = true, operationTimeout: Duration = .seconds(15),
                logger: Logger) throws {
        self.location = location
        self.operationTimeout = operationTimeout
        self.followsEvents = followsEvents
        self.node = node
        self.leaseDuration = leaseDuration
        self.logger = logger
        var configuration: PostgresClient.Configuration
        do {
            configuration = try location.clientConfiguration()
        } catch {
            throw StoreError(.other, "cannot use the PostgreSQL store \(location): \(error)")
        }
        configuration.options.maximumConnections = max(2, connections)
        configuration.options.connectTimeout = .seconds(5)
        client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        let client = self.client
        tasks.withLock { $0.append(Task { await client.run() }) }
    }

    deinit { close() }

    /// Stops the listener and closes every connection.
    public func close() {
        horizon.finish()
        for task in tasks.withLock({ tasks in defer { tasks = [] }; return tasks }) { task.cancel() }
        for continuation in subscribers.withLock({ Array($0.values) }) { continuation.finish() }
    }

    public func prepare() async throws {
        // One direct connection first: the pool would keep retrying an unreachable server for
        // a minute before it gave up, and a node that cannot reach its store should say so now.
        do {
            let probe = try await PostgresConnection.connect(configuration: try location.connectionConfiguration(), id: 0, logger: logger)
            try await probe.close()
        } catch {
            throw StoreError(.storageUnavailable, "cannot reach the PostgreSQL store at \(location): \(Self.describe(error))")
        }
        let applied: [Int]
        do {
            applied = try await PostgresSchema.migrate(client, logger: logger)
        } catch {
            throw translate(error, doing: "migrate the PostgreSQL store at \(location)")
        }
        if !applied.isEmpty { logger.info("migrated the PostgreSQL store", metadata: ["versions": "\(applied)"]) }
        let newest = try await read("read the event log") { connection in
            try await connection.query("SELECT COALESCE(MAX(id), 0) FROM events", logger: self.logger).decodeFirst(Int64.self) ?? 0
        }
        horizon.start(at: newest)
        eventNotifier.published(upTo: newest)
        let horizon = self.horizon, client = self.client, logger = self.logger, node = self.node
        let eventNotifier = self.eventNotifier, notifier = self.notifier
        tasks.withLock { tasks in
            if followsEvents {
                tasks.append(Task {
                    await horizon.run(client, node: node, logger: logger) { newest, jobs in
                        notifier.publish(jobs.compactMap(JobID.init))
                        eventNotifier.published(upTo: newest)
                    }
                })
            }
            tasks.append(Task { [weak self] in await self?.listen() })
        }
        // Return once this node hears the others (or give up waiting after a few seconds: the
        // listener keeps trying, and slots also look at the queue now and then).
        let deadline = ContinuousClock.now + .seconds(5)
        while !isListening.withLock({ $0 }) && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    // MARK: - Jobs

    public func enqueue(_ job: Job) async throws -> EnqueueResult {
        var stored = job
        stored.state = .queued
        stored.attempts = 0
        let eventData = JobEvent.stateData(of: stored).canonicalText
        let webhookEvents = job.webhookURL == nil ? nil : job.webhookEvents.joined(separator: ",")
        let row = try await write("store the job") { connection in
            try await connection.query("""
                WITH ins AS (
                    INSERT INTO jobs (id, type, input, priority, timeout_s, max_attempts, state, attempts, created_at,
                                      idempotency_key, fingerprint, webhook_url, webhook_events)
                    VALUES (\(job.id.rawValue), \(job.type), \(job.input.canonicalText), \(job.priority), \(job.timeoutSeconds),
                            \(job.maxAttempts), 'queued', 0, \(job.createdAt.microseconds), \(job.idempotencyKey),
                            \(job.fingerprint), \(job.webhookURL), \(webhookEvents))
                    ON CONFLICT DO NOTHING
                    RETURNING seq
                ), ev AS (
                    INSERT INTO events (job_id, kind, at, data, origin)
                    SELECT \(job.id.rawValue), 'state', \(job.createdAt.microseconds), \(eventData), \(self.node) FROM ins
                    RETURNING id
                )
                SELECT (SELECT seq FROM ins), (SELECT id FROM ev),
                       (SELECT count(*) FROM jobs WHERE state = 'queued' AND priority >= \(job.priority)),
                       (SELECT count(pg_notify('\(unescaped: Self.channel)', 'queued')) FROM ev),
                       (SELECT count(pg_notify('\(unescaped: Self.eventsChannel)', id::text)) FROM ev)
                """, logger: self.logger).decodeFirstRow((Int64?, Int64?, Int64, Int64, Int64).self)
        }
        guard let row, let sequence = row.0, let eventID = row.1 else {
            return try await existing(for: job)
        }
        stored.sequence = sequence
        stored.position = Int(row.2) + 1
        published(eventID, jobs: [job.id])
        return .created(stored)
    }

    /// The job already stored under the key of `job` (an idempotent repeat or a conflict).
    private func existing(for job: Job) async throws -> EnqueueResult {
        guard let key = job.idempotencyKey,
              let existing = try await read("read a job", { connection in
                  try await Self.fetchJob(where: "j.idempotency_key = \(key)", on: connection, logger: self.logger)
              }) else {
            throw StoreError(.other, "a job with id \(job.id) already exists")
        }
        guard existing.fingerprint == job.fingerprint else {
            throw StoreError(.idempotencyConflict, "the Idempotency-Key was already used for a different request", existing: existing)
        }
        return .existing(existing)
    }

    public func job(_ id: JobID) async throws -> Job? {
        try await read("read a job") { connection in
            try await Self.fetchJob(where: "j.id = \(id.rawValue)", on: connection, logger: self.logger)
        }
    }

    public func jobs(_ query: JobQuery) async throws -> JobPage {
        var sql = "SELECT * FROM jobs WHERE true"
        var binds = PostgresBindings()
        if let state = query.state { binds.append(state.rawValue); sql += " AND state = $\(binds.count)" }
        if let type = query.type { binds.append(type); sql += " AND type = $\(binds.count)" }
        if let before = query.before { binds.append(before); sql += " AND seq < $\(binds.count)" }
        binds.append(query.limit + 1)
        sql += " ORDER BY seq DESC LIMIT $\(binds.count)"
        let statement = PostgresQuery(unsafeSQL: sql, binds: binds)
        let rows = try await read("list jobs") { connection in
            try await Self.jobs(from: connection.query(statement, logger: self.logger))
        }
        let jobs = Array(rows.prefix(query.limit))
        return JobPage(jobs: jobs, nextCursor: rows.count > query.limit ? jobs.last?.sequence : nil)
    }

    public func queuedCount() async throws -> Int {
        try await read("count the queue") { connection in
            Int(try await connection.query("SELECT count(*) FROM jobs WHERE state = 'queued'", logger: self.logger).decodeFirst(Int64.self) ?? 0)
        }
    }

    public func claimNext(for slot: SlotID, excluding: Set<String>, now: Timestamp) async throws -> Job? {
        let claimed = try await write("claim a job") { connection in
            try await self.finishAndClaim(nil, claim: (slot, excluding), now: now, on: connection).claimed
        }
        if let (job, eventID) = claimed {
            claimedJobs.withLock { $0[job.id] = job }
            published(eventID, jobs: [job.id])
        }
        return claimed?.0
    }

    public func finish(_ id: JobID, attempt: Int, outcome: JobOutcome, result: JSONValue?, now: Timestamp,
                       claimNextFor slot: SlotID?, excluding: Set<String>) async throws -> Job? {
        let claim = slot.map { ($0, excluding) }
        let (finished, next) = try await write("record a finished job") { connection -> (Int64?, (Job, Int64)?) in
            // The job as this node claimed it holds everything `record` needs (its attempt,
            // limits and timeout do not change while it runs): one statement, no read first.
            if var job = self.claimedJobs.withLock({ $0[id] }), job.attempts == attempt {
                job.record(outcome, at: now, result: result)
                let answer = try await self.finishAndClaim((job, attempt), claim: claim, now: now, on: connection)
                return (answer.finished, answer.claimed)
            }
            return try await connection.withTransaction(logger: self.logger) { connection in
                var eventID: Int64?
                if var job = try await Self.fetchJob(where: "j.id = \(id.rawValue) AND j.state = 'running' AND j.attempts = \(attempt)",
                                                     locking: true, on: connection, logger: self.logger) {
                    job.record(outcome, at: now, result: result)
                    eventID = try await self.saveOutcome(of: job, at: now, on: connection)
                }
                let next = try await self.finishAndClaim(nil, claim: claim, now: now, on: connection).claimed
                return (eventID, next)
            }
        }
        claimedJobs.withLock { jobs in
            jobs[id] = nil
            if let next { jobs[next.0.id] = next.0 }
        }
        var touched = [id]
        if let next { touched.append(next.0.id) }
        published([finished, next?.1].compactMap { $0 }.max(), jobs: touched)
        return next?.0
    }

    public func cancel(_ id: JobID, now: Timestamp) async throws -> CancelResult {
        let (result, eventID) = try await transaction("cancel a job") { connection -> (CancelResult, Int64?) in
            guard var job = try await Self.fetchJob(where: "j.id = \(id.rawValue)", locking: true, on: connection, logger: self.logger) else {
                return (.notFound, nil)
            }
            switch job.state {
            case .queued:
                job.cancelWhileQueued(at: now)
                try await connection.query("""
                    UPDATE jobs SET state = 'canceled', reason = 'canceled', finished_at = \(now.microseconds), error = \(job.error)
                    WHERE seq = \(job.sequence)
                    """, logger: self.logger)
                return (.canceled(job), try await self.insertEvents([(.state, id, JobEvent.stateData(of: job))], at: now, on: connection))
            case .running:
                job.cancelRequested = true
                try await connection.query("UPDATE jobs SET cancel_requested = true WHERE seq = \(job.sequence)", logger: self.logger)
                // The node running it hears this at commit and stops it; its lease renewal
                // also reports the request, should the notification be lost.
                return (.stopping(job), try await self.insertEvents([(.state, id, JobEvent.stateData(of: job))], at: now,
                                                                    signal: "cancel=\(id.rawValue)", on: connection))
            case .succeeded, .failed, .canceled:
                return (.alreadyFinished(job), nil)
            }
        }
        published(eventID, jobs: [id])
        return result
    }

    public func reportProgress(_ id: JobID, attempt: Int, progress: JobProgress) async throws {
        let data = JobEvent.progressData(of: id, progress).canonicalText
        let now = WallClock.now()
        let eventID = try await write("save progress") { connection -> Int64? in
            let row = try await connection.query("""
                WITH upd AS (
                    UPDATE jobs SET progress_fraction = \(progress.fraction), progress_message = \(progress.message)
                    WHERE id = \(id.rawValue) AND state = 'running' AND attempts = \(attempt)
                    RETURNING seq
                ), ev AS (
                    INSERT INTO events (job_id, kind, at, data, origin)
                    SELECT \(id.rawValue), 'progress', \(now.microseconds), \(data), \(self.node) FROM upd
                    RETURNING id
                )
                SELECT id, pg_notify('\(unescaped: Self.eventsChannel)', id::text) IS NULL FROM ev
                """, logger: self.logger).decodeFirstRow((Int64, Bool?).self)
            return row?.0
        }
        published(eventID, jobs: [id])
    }

    /// Recovers the jobs this node left running (a restart of the same node); other nodes'
    /// jobs are theirs until their leases expire.
    public func recoverInterrupted(now: Timestamp) async throws -> [Job] {
        try await resolveRunning(where: "j.node = \(node)", now: now, doing: "recover interrupted jobs") { job in
            job.recoverFromInterruption(at: now)
        }
    }

    public func watch(_ id: JobID) -> JobWatch { notifier.watch(id) }

    public func events(after: Int64, job: JobID?, limit: Int) async throws -> [JobEvent] {
        let horizon = self.horizon.settled
        guard after < horizon else { return [] }
        return try await read("read events") { connection in
            let rows = if let job {
                try await connection.query("""
                    SELECT id, job_id, kind, at, data FROM events WHERE job_id = \(job.rawValue) AND id > \(after) AND id <= \(horizon)
                    ORDER BY id LIMIT \(limit)
                    """, logger: self.logger)
            } else {
                try await connection.query("""
                    SELECT id, job_id, kind, at, data FROM events WHERE id > \(after) AND id <= \(horizon) ORDER BY id LIMIT \(limit)
                    """, logger: self.logger)
            }
            var events: [JobEvent] = []
            for try await (id, jobID, kind, at, data) in rows.decode((Int64, String, String, Int64, String).self) {
                guard let job = JobID(jobID), let kind = JobEvent.Kind(rawValue: kind) else {
                    throw StoreError(.corrupt, "the job database holds an event it cannot read (id \(id))")
                }
                events.append(JobEvent(id: id, job: job, kind: kind, at: Timestamp(microseconds: at), data: try JSONParser.parse(data.utf8)))
            }
            return events
        }
    }

    public func appendEvent(_ kind: JobEvent.Kind, job: JobID, data: JSONValue, now: Timestamp) async throws {
        let eventID = try await write("record an event") { connection in
            try await self.insertEvents([(kind, job, data)], at: now, on: connection)
        }
        published(eventID, jobs: [job])
    }

    // MARK: - Statements

    /// One statement, one round trip: records `finished` (the job after `record`, fenced by its
    /// attempt) with its event, and claims the queue's head for `claim` on this node with its
    /// event — either may be absent. The claim locks the head with SKIP LOCKED, so nodes
    /// claiming at once take different jobs and never wait on each other. The claim's event
    /// data is built in SQL; `claimEventMatchesStateData` in the tests holds it to
    /// `JobEvent.stateData`.
    private func finishAndClaim(_ finished: (job: Job, attempt: Int)?, claim: (slot: SlotID, excluding: Set<String>)?, now: Timestamp,
                                on connection: PostgresConnection) async throws -> (finished: Int64?, claimed: (Job, Int64)?) {
        var binds = PostgresBindings()
        func bind<T: PostgresNonThrowingEncodable & Sendable>(_ value: T?) -> String {
            binds.append(value)
            return "$\(binds.count)"
        }
        var parts: [String] = []
        var selects: [String] = []
        if let (job, attempt) = finished {
            let requeued = job.state == .queued
            parts.append("""
                fin AS (
                    UPDATE jobs SET state = \(bind(job.state.rawValue)), reason = \(bind(job.reason?.rawValue)),
                        attempts = \(bind(job.attempts)), started_at = \(bind(job.startedAt?.microseconds)),
                        finished_at = \(bind(job.finishedAt?.microseconds)), exit_code = \(bind(job.exitCode.map(Int.init))),
                        signal = \(bind(job.signal.map(Int.init))), error = \(bind(job.error)), slot = \(bind(job.slot?.rawValue)),
                        node = \(bind(job.node)), lease_until = NULL, result = \(bind(job.result?.canonicalText)),
                        progress_fraction = \(requeued ? "NULL" : "progress_fraction"),
                        progress_message = \(requeued ? "NULL" : "progress_message")
                    WHERE seq = \(bind(job.sequence)) AND state = 'running' AND attempts = \(bind(attempt))
                    RETURNING id
                ), fin_event AS (
                    INSERT INTO events (job_id, kind, at, data, origin)
                    SELECT id, 'state', \(bind(now.microseconds)), \(bind(JobEvent.stateData(of: job).canonicalText)), \(bind(node)) FROM fin
                    RETURNING id
                )
                """)
            selects.append("(SELECT id FROM fin_event) AS fin_event")
            selects.append("(SELECT count(pg_notify('\(Self.eventsChannel)', id::text)) FROM fin_event) AS fin_notified")
            if requeued { selects.append("(SELECT count(pg_notify('\(Self.channel)', 'queued')) FROM fin_event) AS fin_requeued") }
        }
        if let claim {
            binds.append(claim.excluding.sorted())
            let excluded = "$\(binds.count)"
            parts.append("""
                next AS (
                    SELECT seq FROM jobs WHERE state = 'queued' AND NOT (type = ANY(\(excluded)))
                    ORDER BY priority DESC, seq LIMIT 1 FOR UPDATE SKIP LOCKED
                ), claimed AS (
                    UPDATE jobs j SET state = 'running', attempts = j.attempts + 1, slot = \(bind(claim.slot.rawValue)),
                        node = \(bind(node)), started_at = \(bind(now.microseconds)), finished_at = NULL, progress_fraction = NULL,
                        progress_message = NULL, result = NULL, lease_until = spool_now() + \(bind(leaseDuration.microseconds))
                    FROM next WHERE j.seq = next.seq
                    RETURNING j.*
                ), claim_event AS (
                    INSERT INTO events (job_id, kind, at, data, origin)
                    SELECT id, 'state', \(bind(now.microseconds)),
                           json_build_object('job', id, 'type', type, 'state', 'running', 'attempts', attempts, 'slot', slot)::text,
                           \(bind(node))
                    FROM claimed
                    RETURNING id
                )
                """)
            selects.append("(SELECT id FROM claim_event) AS claim_event")
            selects.append("(SELECT count(pg_notify('\(Self.eventsChannel)', id::text)) FROM claim_event) AS claim_notified")
            selects.append("claimed.*")
        }
        guard !parts.isEmpty else { return (nil, nil) }
        let sql = "WITH " + parts.joined(separator: ", ") + " SELECT " + selects.joined(separator: ", ")
            + (claim == nil ? "" : " FROM (SELECT 1) AS one LEFT JOIN claimed ON true")
        let rows = try await connection.query(PostgresQuery(unsafeSQL: sql, binds: binds), logger: logger)
        var finishedEvent: Int64?
        var claimed: (Job, Int64)?
        for try await row in rows {
            let columns = row.makeRandomAccess()
            if finished != nil { finishedEvent = try columns["fin_event"].decode(Int64?.self) }
            if claim != nil, try columns["seq"].decode(Int64?.self) != nil, let eventID = try columns["claim_event"].decode(Int64?.self) {
                claimed = (try Self.job(from: columns), eventID)
            }
        }
        return (finishedEvent, claimed)
    }

    /// Writes the fields an attempt's end (or a recovery, or a rescue) decides, as `Job`
    /// worked them out, and the state event. Returns the event's id.
    private func saveOutcome(of job: Job, at now: Timestamp, on connection: PostgresConnection) async throws -> Int64 {
        try await connection.query("""
            UPDATE jobs SET state = \(job.state.rawValue), reason = \(job.reason?.rawValue), attempts = \(job.attempts),
                started_at = \(job.startedAt?.microseconds), finished_at = \(job.finishedAt?.microseconds),
                exit_code = \(job.exitCode.map(Int.init)), signal = \(job.signal.map(Int.init)), error = \(job.error),
                slot = \(job.slot?.rawValue), node = \(job.node), lease_until = NULL,
                progress_fraction = \(job.progress?.fraction), progress_message = \(job.progress?.message),
                result = \(job.result?.canonicalText)
            WHERE seq = \(job.sequence)
            """, logger: logger)
        return try await insertEvents([(.state, job.id, JobEvent.stateData(of: job))], at: now,
                                      signal: job.state == .queued ? "queued" : nil, on: connection)
    }

    /// Running jobs matching `condition`, resolved by `decide` (requeued or failed), in one
    /// transaction; rows another node holds locked are left for the next pass.
    func resolveRunning(where condition: PostgresQuery, now: Timestamp, doing what: String,
                        _ decide: @escaping @Sendable (inout Job) -> Void) async throws -> [Job] {
        let (found, newest) = try await transaction(what) { connection -> ([Job], Int64?) in
            var sql = "SELECT j.* FROM jobs j WHERE j.state = 'running' AND "
            sql += condition.sql
            sql += " ORDER BY j.seq LIMIT 1000 FOR UPDATE SKIP LOCKED"
            let jobs = try await Self.jobs(from: connection.query(PostgresQuery(unsafeSQL: sql, binds: condition.binds), logger: self.logger))
            var newest: Int64?
            for var job in jobs {
                decide(&job)
                newest = try await self.saveOutcome(of: job, at: now, on: connection)
            }
            return (jobs, newest)
        }
        published(newest, jobs: found.map(\.id))
        return found
    }

    /// Appends events in the caller's transaction and notifies every node at commit (with
    /// `signal` too, when given). Prunes the oldest events now and then. Returns the newest id.
    func insertEvents(_ events: [(JobEvent.Kind, JobID, JSONValue)], at now: Timestamp, signal: String? = nil,
                      on connection: PostgresConnection) async throws -> Int64 {
        let row = try await connection.query("""
            WITH ev AS (
                INSERT INTO events (job_id, kind, at, data, origin)
                SELECT job_id, kind, \(now.microseconds), data, \(node)
                FROM unnest(\(events.map(\.1.rawValue))::text[], \(events.map(\.0.rawValue))::text[], \(events.map(\.2.canonicalText))::text[])
                    AS e(job_id, kind, data)
                RETURNING id
            ), newest AS (SELECT max(id) AS id FROM ev)
            SELECT id, pg_notify('\(unescaped: Self.eventsChannel)', id::text) IS NULL,
                   (SELECT count(pg_notify('\(unescaped: Self.channel)', s)) FROM (SELECT CAST(\(signal) AS text) AS s) AS given WHERE s IS NOT NULL)
            FROM newest
            """, logger: logger).decodeFirstRow((Int64, Bool?, Int64).self)
        guard let newest = row?.0 else { throw StoreError(.other, "the database did not return the id of a new event") }
        if newest / 1000 != (newest - Int64(events.count)) / 1000 {
            try await connection.query("DELETE FROM events WHERE id <= \(newest - Self.eventLimit)", logger: logger)
        }
        return newest
    }

    static func fetchJob(where condition: PostgresQuery, locking: Bool = false, on connection: PostgresConnection,
                         logger: Logger) async throws -> Job? {
        var sql = """
            SELECT j.*, CASE WHEN j.state = 'queued' THEN
                (SELECT count(*) FROM jobs q WHERE q.state = 'queued' AND q.priority > j.priority)
                + (SELECT count(*) FROM jobs q WHERE q.state = 'queued' AND q.priority = j.priority AND q.seq < j.seq) + 1
            END AS position
            FROM jobs j WHERE
            """
        sql += " " + condition.sql
        if locking { sql += " FOR UPDATE OF j" }
        return try await jobs(from: connection.query(PostgresQuery(unsafeSQL: sql, binds: condition.binds), logger: logger)).first
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
        if row.contains("position") {
            job.position = try row["position"].decode(Int64?.self).map(Int.init)
        }
        return job
    }

    // MARK: - Notifications

    /// A commit here wrote events up to `eventID` touching `jobs`: wake this node's waiters now
    /// (other nodes hear it through the notification).
    func published(_ eventID: Int64?, jobs: [JobID]) {
        notifier.publish(jobs)
        if eventID != nil { horizon.poke() }
    }

    public func signals() -> AsyncStream<ClusterSignal> {
        let (stream, continuation) = AsyncStream<ClusterSignal>.makeStream(bufferingPolicy: .bufferingNewest(256))
        let token = subscribers.withLock { subscribers in
            let token = (subscribers.keys.max() ?? 0) + 1
            subscribers[token] = continuation
            return token
        }
        continuation.onTermination = { [weak self] _ in self?.subscribers.withLock { $0[token] = nil } }
        return stream
    }

    private func broadcast(_ signal: ClusterSignal) {
        for continuation in subscribers.withLock({ Array($0.values) }) { continuation.yield(signal) }
    }

    /// Holds one connection listening on the channel, reconnecting after a failure. After each
    /// (re)connect everything is looked at again, as notifications may have been missed.
    private func listen() async {
        var delay = Duration.milliseconds(100)
        while !Task.isCancelled {
            do {
                try await client.withConnection { connection in
                    try await connection.listen(on: Self.channel) { signals in
                        try await self.listenForEvents(on: connection) { events in
                            self.isListening.withLock { $0 = true }
                            defer { self.isListening.withLock { $0 = false } }
                            delay = .milliseconds(100)
                            self.broadcast(.queued)
                            self.horizon.poke()
                            try await withThrowingTaskGroup(of: Void.self) { group in
                                group.addTask { for try await notification in signals { self.handle(notification.payload) } }
                                if let events {
                                    group.addTask { for try await _ in events { self.horizon.poke() } }
                                }
                                // Either sequence ending means the connection is gone: start over.
                                try await group.next()
                                group.cancelAll()
                            }
                        }
                    }
                }
            } catch {
                guard !Task.isCancelled else { return }
                logger.warning("lost the PostgreSQL notification connection; reconnecting",
                               metadata: ["error": "\(String(reflecting: error))", "retry_in": "\(delay)"])
            }
            try? await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(5))
        }
    }

    /// Also listens on the events channel when this node follows events.
    private func listenForEvents(on connection: PostgresConnection,
                                 _ body: (PostgresNotificationSequence?) async throws -> Void) async throws {
        guard followsEvents else { return try await body(nil) }
        try await connection.listen(on: Self.eventsChannel) { events in try await body(events) }
    }

    private func handle(_ payload: String) {
        if payload == "queued" {
            broadcast(.queued)
        } else if payload.hasPrefix("cancel="), let id = JobID(String(payload.dropFirst("cancel=".count))) {
            broadcast(.cancel(id))
        }
    }

    /// Runs one statement outside the store's schema (tools: `spool bench` creates databases
    /// with it). Not for job data.
    public func execute(unsafeSQL sql: String) async throws {
        try await write("run a statement") { connection in
            _ = try await connection.query(PostgresQuery(unsafeSQL: sql), logger: self.logger)
        }
    }

    // MARK: - Transactions and errors

    func read<T: Sendable>(_ what: String, _ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        try await bounded(what) { try await self.client.withConnection { try await body($0) } }
    }

    /// One autocommitted statement (or several that need no transaction).
    func write<T: Sendable>(_ what: String, _ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        try await read(what, body)
    }

    func transaction<T: Sendable>(_ what: String, _ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        try await bounded(what) {
            try await self.client.withConnection { connection in
                try await connection.withTransaction(logger: self.logger) { try await body($0) }
            }
        }
    }

    /// Runs one store operation, translating its errors, and gives up after `operationTimeout`:
    /// while the database is unreachable the pool keeps retrying for about a minute before it
    /// fails a request, and an API answer or a slot should not wait that long to hear it.
    private func bounded<T: Sendable>(_ what: String, _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
        let limit = operationTimeout
        do {
            return try await withThrowingTaskGroup(of: T?.self) { group in
                group.addTask { try await operation() }
                group.addTask {
                    try await Task.sleep(for: limit)
                    return nil
                }
                defer { group.cancelAll() }
                guard let first = try await group.next(), let value = first else {
                    throw StoreError(.storageUnavailable, "could not \(what): the database at \(location) did not answer within \(limit)")
                }
                return value
            }
        } catch {
            throw translate(error, doing: what)
        }
    }

    /// A connection error in a few words (PSQLError's own description hides the cause).
    static func describe(_ error: any Error) -> String {
        guard let error = error as? PSQLError else { return "\(error)" }
        if let message = error.serverInfo?[.message] { return message }
        if let underlying = error.underlying { return "\(underlying)" }
        return "\(error.code)"
    }

    /// PostgreSQL errors become `StoreError`s here and nowhere else.
    func translate(_ error: any Error, doing what: String) -> any Error {
        if let error = error as? StoreError { return error }
        if let transaction = error as? PostgresTransactionError {
            return translate(transaction.closureError ?? transaction.beginError ?? transaction.commitError ?? error, doing: what)
        }
        guard let error = error as? PSQLError else {
            // The pool's own errors (its type is not public): it could not open a connection.
            if String(describing: type(of: error)).contains("ConnectionPoolError") {
                return StoreError(.storageUnavailable, "could not \(what): cannot reach the database at \(location) (\(error))")
            }
            return StoreError(.other, "could not \(what): \(error)")
        }
        if let state = error.serverInfo?[.sqlState] {
            let message = error.serverInfo?[.message] ?? state
            switch state {
            case "53100": return StoreError(.storageUnavailable, "could not \(what): the database server's disk is full (\(message))")
            case "25006", "53000", "53200", "53300", "57P01", "57P02", "57P03", "08000", "08003", "08006":
                return StoreError(.storageUnavailable, "could not \(what): the database is unavailable (\(message))")
            case "XX001", "XX002": return StoreError(.corrupt, "could not \(what): the database is damaged (\(message))")
            default: return StoreError(.other, "could not \(what): \(message) (SQLSTATE \(state))")
            }
        }
        switch error.code {
        case .connectionError, .serverClosedConnection, .clientClosedConnection, .poolClosed, .uncleanShutdown:
            return StoreError(.storageUnavailable, "could not \(what): cannot reach the database at \(location) (\(error.code))")
        default:
            return StoreError(.other, "could not \(what): \(String(reflecting: error))")
        }
    }
}

extension PostgresRowSequence {
    /// The first row, decoded; nil when there is none.
    func decodeFirst<T: PostgresDecodable>(_ type: T.Type) async throws -> T? {
        for try await value in decode(T.self) { return value }
        return nil
    }

    func decodeFirstRow<each T: PostgresDecodable>(_ types: (repeat each T).Type) async throws -> (repeat each T)? {
        for try await value in decode((repeat each T).self) { return value }
        return nil
    }
}

extension Optional {
    func asyncFlatMap<U>(_ transform: (Wrapped) async throws -> U?) async rethrows -> U? {
        guard let self else { return nil }
        return try await transform(self)
    }
}

extension Duration {
    var microseconds: Int64 { components.seconds * 1_000_000 + components.attoseconds / 1_000_000_000_000 }
}
