// The job lifecycle's statements (cancel, progress, recovery) stay in one file so each can be
// read next to the others it must agree with; enqueue, the slots' hot path (finish and claim),
// events and notifications, row decoding, connections, leases, webhooks and job arrays are in
// extensions.
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
    /// How long past a lease's end its job waits for the rescue (`init`).
    public let rescueGrace: Duration
    public let eventNotifier = EventNotifier()
    /// Events kept in all; older ones are pruned as new ones arrive.
    static let eventLimit: Int64 = 200_000
    /// Notifications: `spool` carries "queued" and "cancel=ID" (every node listens);
    /// `spool_events` carries new event ids (only nodes that follow events listen).
    static let channel = "spool"
    static let eventsChannel = "spool_events"

    let client: PostgresClient
    let logger: Logger
    let notifier = JobChangeNotifier()
    let horizon = EventHorizon()
    let subscribers = Mutex<[Int: AsyncStream<ClusterSignal>.Continuation]>([:])
    let tasks = Mutex<[Task<Void, Never>]>([])
    let isListening = Mutex(false)
    /// The jobs this node runs, as claimed: what `finish` needs to write an outcome blind.
    let claimedJobs = Mutex<[JobID: Job]>([:])
    /// Whether some token caps its running jobs, as of this node's last claim (or its start, or
    /// a token it made): claims then take turns (`lockRunningCaps`).
    let runningCapped = Mutex(false)
    /// The job types this node's slots can run (`serve(types:)`); empty: any.
    let servedTypes = Mutex<[String]>([])
    /// This node's concurrent claims and finishes, committed together (`commitSteps`).
    private let steps: GroupCommit<SlotStep, FinishResult>
    /// Concurrent `appendEvent` calls, committed together (`commitEvents`).
    let appendedEvents: GroupCommit<NewEvent, Void>

    /// Whether this node follows other nodes' events (for event streams, webhooks and waits
    /// on its API). A node without an API (an agent) does not, and spares the database the
    /// reads.
    public let followsEvents: Bool
    /// How long one store operation may wait (for a connection, mostly) before it fails as
    /// `storageUnavailable`.
    public let operationTimeout: Duration
    /// When this store (this node's run) started, as its heartbeats report it.
    let startedAt = WallClock.now()
    /// Heartbeats since `queue_counts` was last folded (`foldQueueCounts`).
    let heartbeatsSinceFold = Mutex(0)
    /// Whether this node holds its name (`holdNodeName`): while it does not, it claims nothing
    /// and gives back no claim it does not know (they may be another node's of this name).
    let nameHold = Mutex(NameHold.untracked)
    /// Whether the database took a connection when last asked (`bounded`).
    let reachability = Mutex(Reachability())

    /// Opens a pool of up to `connections` connections (none is made until `prepare`).
    /// `rescueGrace`: how long past a lease's end its job is left before this node rescues it,
    /// for its node to have stopped it — that node stops a job whose lease it could not renew once
    /// the lease has run out, and its process may take two kill graces to go (`SpoolServer` gives
    /// twice the kill grace, a tenth of the lease and a second).
    public init(location: PostgresLocation, node: String, leaseDuration: Duration = .seconds(10),
                rescueGrace: Duration = .zero,
                connections: Int = 20, followsEvents: Bool = true, operationTimeout: Duration = .seconds(15),
                logger: Logger) throws {
        self.rescueGrace = rescueGrace
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
        let owner = WeakStore()
        steps = GroupCommit(maxBatch: 64) { steps in
            try await owner.required().commitSteps(steps)
        }
        appendedEvents = GroupCommit(maxBatch: 256) { events in
            try await owner.required().commitEvents(events)
        }
        owner.store = self
        let client = self.client
        // unstructured: the pool lives as long as the store; `close()` cancels it.
        tasks.withLock { $0.append(Task { await client.run() }) }   // unstructured: see above
    }

    deinit { close() }

    /// Stops the listener and closes every connection.
    public func close() {
        horizon.finish()
        for task in tasks.withLock({ tasks in defer { tasks = [] }; return tasks }) { task.cancel() }
        for continuation in subscribers.withLock({ Array($0.values) }) { continuation.finish() }
    }

    public func prepare() async throws { try await prepare(upgrading: true) }

    /// `upgrading` false: a database an earlier Spool made is refused, not migrated (`PostgresSchema.migrate`).
    public func prepare(upgrading: Bool) async throws {
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
            applied = try await PostgresSchema.migrate(client, upgrading: upgrading, logger: logger)
        } catch {
            throw translate(error, doing: "migrate the PostgreSQL store at \(location)")
        }
        if !applied.isEmpty { logger.info("migrated the PostgreSQL store", metadata: ["versions": "\(applied)"]) }
        await foldQueueCounts()
        // Not at the newest event: an id below it may belong to another node's transaction
        // still open. The horizon starts below the first hole among the newest events, and its
        // loop decides about that hole as about any other.
        let newest = try await read("read the event log") { connection in
            var ids: [Int64] = []
            let rows = try await connection.query("SELECT id FROM events ORDER BY id DESC LIMIT \(EventHorizon.startupWindow)", logger: self.logger)
            for try await id in rows.decode(Int64.self) { ids.append(id) }
            return ids
        }
        let capped = try await read("read the tokens' caps") { connection in
            try await connection.query("SELECT EXISTS (SELECT 1 FROM tokens WHERE max_running IS NOT NULL)", logger: self.logger)
                .decodeFirst(Bool.self) ?? false
        }
        runningCapped.withLock { $0 = capped }
        let start = EventHorizon.start(newest: newest)
        horizon.start(at: start)
        eventNotifier.published(upTo: start)
        let horizon = self.horizon, client = self.client, logger = self.logger, node = self.node
        let eventNotifier = self.eventNotifier, notifier = self.notifier
        // unstructured: the horizon loop and the listener live as long as the store; `close()` cancels them.
        tasks.withLock { tasks in
            if followsEvents {
                tasks.append(Task {   // unstructured: see above
                    await horizon.run(client, node: node, logger: logger) { newest, jobs in
                        notifier.publish(jobs.compactMap(JobID.init))
                        eventNotifier.published(upTo: newest)
                    }
                })
            }
            tasks.append(Task { [weak self] in await self?.listen() })   // unstructured: see above
        }
        // Return once this node hears the others (or give up waiting after a few seconds: the
        // listener keeps trying, and slots also look at the queue now and then).
        let deadline = ContinuousClock.now + .seconds(5)
        while !isListening.withLock({ $0 }) && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    // MARK: - Jobs

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
        if let owner = query.owner { binds.append(owner); sql += " AND owner = $\(binds.count)" }
        if let before = query.before { binds.append(before); sql += " AND seq < $\(binds.count)" }
        switch query.array {
        case nil: break
        case .alone?: sql += " AND array_id IS NULL"
        case .tasks(let id)?: binds.append(id); sql += " AND array_id = $\(binds.count)"
        }
        binds.append(query.limit + 1)
        sql += " ORDER BY seq DESC LIMIT $\(binds.count)"
        // The rows past the page's byte budget are not sent (`listed_bytes` summed in order); how
        // many the limit read says whether some were held back.
        binds.append(query.maxBytes)
        sql = """
            SELECT * FROM (
                SELECT page.*, count(*) OVER () AS listed_rows, sum(listed_bytes) OVER (ORDER BY seq DESC) - listed_bytes AS bytes_before
                FROM (SELECT limited.*, octet_length(input) + COALESCE(octet_length(result), 0) AS listed_bytes
                      FROM (\(sql)) limited) page
            ) sized WHERE bytes_before < $\(binds.count) OR bytes_before = 0 ORDER BY seq DESC
            """
        let statement = PostgresQuery(unsafeSQL: sql, binds: binds)
        return try await read("list jobs") { connection in
            var budget = PageBudget(query)
            var jobs: [Job] = []
            var listed = 0
            var full = false
            for try await row in try await connection.query(statement, logger: self.logger) where !full {
                let columns = row.makeRandomAccess()
                listed = Int(try columns["listed_rows"].decode(Int64.self))
                if budget.take(size: Int(try columns["listed_bytes"].decode(Int64.self))) {
                    jobs.append(try Self.job(from: columns))
                } else {
                    full = true
                }
            }
            return JobPage(jobs: jobs, nextCursor: full || listed > jobs.count ? jobs.last?.sequence : nil)
        }
    }

    public func queuedCount() async throws -> Int {
        try await read("count the queue") { connection in
            Int(try await connection.query("SELECT CAST(COALESCE(sum(queued), 0) AS bigint) FROM queue_counts",
                                           logger: self.logger).decodeFirst(Int64.self) ?? 0)
        }
    }

    public func queuedCount(owner: String) async throws -> Int {
        try await read("count the queue") { connection in
            Int(try await connection.query("SELECT count(*) FROM jobs WHERE state = 'queued' AND owner = \(owner)",
                                           logger: self.logger).decodeFirst(Int64.self) ?? 0)
        }
    }

    public func queuedCount(priorityAtLeast priority: Int, dueBy: Timestamp) async throws -> Int {
        try await read("count the queue") { connection in
            // All of them from the counters, less those delayed past `dueBy` (few, through their index).
            Int(try await connection.query("""
                SELECT CAST((SELECT COALESCE(sum(queued), 0) FROM queue_counts WHERE priority >= \(priority))
                       - (SELECT count(*) FROM jobs WHERE state = 'queued' AND not_before IS NOT NULL
                              AND not_before > \(dueBy.microseconds) AND priority >= \(priority)) AS bigint)
                """,
                                           logger: self.logger).decodeFirst(Int64.self) ?? 0)
        }
    }

    public func queuedAhead(ofNew job: Job, dueBy: Timestamp) async throws -> Int {
        let owner = job.owner ?? "", stride = FairShare.stride(weight: job.shareWeight)
        return try await read("count the queue ahead of a job") { connection in
            // Its tag as its insert would make it (`insertion`); higher priorities from the
            // counters, less those delayed past `dueBy`; its own priority up to its tag.
            Int(try await connection.query("""
                WITH tag AS (
                    SELECT GREATEST(   -- FairShare.tag, as the insert's
                        (SELECT fair_tag FROM jobs WHERE state = 'queued' AND owner = \(owner) AND priority = \(job.priority)
                         ORDER BY fair_tag DESC LIMIT 1) + \(stride),
                        GREATEST(COALESCE((SELECT fair_tag FROM jobs WHERE state = 'queued' AND priority = \(job.priority)
                                           ORDER BY fair_tag LIMIT 1), 0),
                                 COALESCE((SELECT max(fair_tag) FROM jobs WHERE state = 'running' AND priority = \(job.priority)), 0)) + 1) AS t
                )
                SELECT CAST((SELECT COALESCE(sum(queued), 0) FROM queue_counts WHERE priority > \(job.priority))
                       - (SELECT count(*) FROM jobs WHERE state = 'queued' AND not_before IS NOT NULL
                              AND not_before > \(dueBy.microseconds) AND priority > \(job.priority))
                       + (SELECT count(*) FROM jobs, tag WHERE state = 'queued' AND priority = \(job.priority) AND fair_tag <= tag.t
                              AND (not_before IS NULL OR not_before <= \(dueBy.microseconds))) AS bigint)
                """, logger: self.logger).decodeFirst(Int64.self) ?? 0)
        }
    }

    public func expireDeadlines(now: Timestamp) async throws -> [Job] {
        let (expired, newest) = try await transaction("cancel jobs past their deadline") { connection -> ([Job], Int64?) in
            let jobs = try await Self.jobs(from: connection.query("""
                UPDATE jobs SET state = 'canceled', reason = 'deadline', finished_at = \(now.microseconds), error = \(Job.deadlineMessage)
                WHERE seq IN (SELECT seq FROM jobs WHERE state = 'queued' AND start_by IS NOT NULL
                              -- Capped by the database's clock, as a claim is: a node ahead cancels nothing early.
                              AND start_by <= LEAST(\(now.microseconds), spool_now())
                              ORDER BY seq LIMIT 1000 FOR UPDATE SKIP LOCKED)
                RETURNING *
                """, logger: self.logger)).sorted { $0.sequence < $1.sequence }
            guard !jobs.isEmpty else { return (jobs, nil) }
            return (jobs, try await self.insertEvents(jobs.map { .state(of: $0, at: now) }, on: connection))
        }
        published(newest, jobs: expired.map(\.id))
        return expired
    }

    public func nextTimer(after now: Timestamp) async throws -> Timestamp? {
        try await read("read the queue's timers") { connection in
            try await connection.query("""
                SELECT LEAST((SELECT min(not_before) FROM jobs WHERE state = 'queued' AND not_before > \(now.microseconds)),
                             (SELECT min(start_by) FROM jobs WHERE state = 'queued' AND start_by IS NOT NULL))
                """, logger: self.logger).decodeFirst(Int64?.self).flatMap { $0 }.map(Timestamp.init(microseconds:))
        }
    }

    /// Claims only jobs of these types from now on: a node that does not know a type leaves its
    /// jobs to one that does (found by attacking the build: an agent whose config lacked a type
    /// claimed its jobs and failed them, for good, as spawn_failed). Empty: any type.
    public func serve(types: [String]) { servedTypes.withLock { $0 = types.sorted() } }

    public func claimNext(for slot: SlotID, excluding: Set<String>, now: Timestamp) async throws -> Job? {
        try await steps.submit(SlotStep(claim: SlotStep.Claim(slot: slot, excluding: excluding, now: now))).next
    }

    public func finish(_ id: JobID, attempt: Int, outcome: JobOutcome, result: JSONValue?, now: Timestamp,
                       claimNextFor slot: SlotID?, excluding: Set<String>) async throws -> FinishResult {
        try await steps.submit(SlotStep(finish: SlotStep.Finish(id: id, attempt: attempt, outcome: outcome, result: result, now: now),
                                        claim: slot.map { SlotStep.Claim(slot: $0, excluding: excluding, now: now) }))
    }

    public func cancel(_ id: JobID, by actor: String?, now: Timestamp) async throws -> CancelResult {
        let (result, eventID) = try await transaction("cancel a job") { connection -> (CancelResult, Int64?) in
            guard var job = try await Self.fetchJob(where: "j.id = \(id.rawValue)", locking: true, on: connection, logger: self.logger) else {
                return (.notFound, nil)
            }
            switch job.state {
            case .queued:
                job.cancelWhileQueued(at: now, by: actor)
                try await connection.query("""
                    UPDATE jobs SET state = 'canceled', reason = 'canceled', finished_at = \(now.microseconds), error = \(job.error),
                        canceled_by = \(job.canceledBy)
                    WHERE seq = \(job.sequence)
                    """, logger: self.logger)
                return (.canceled(job), try await self.insertEvents([.state(of: job, at: now)], on: connection))
            case .running:
                job.requestCancel(by: actor)
                try await connection.query("UPDATE jobs SET cancel_requested = true, canceled_by = \(job.canceledBy) WHERE seq = \(job.sequence)",
                                           logger: self.logger)
                // The node running it hears this at commit and stops it; its lease renewal
                // also reports the request, should the notification be lost.
                return (.stopping(job), try await self.insertEvents([.state(of: job, at: now)], signal: "cancel=\(id.rawValue)", on: connection))
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
                    RETURNING seq, owner
                ), ev AS (
                    INSERT INTO events (job_id, kind, at, data, origin, owner)
                    SELECT \(id.rawValue), 'progress', \(now.microseconds), \(data), \(self.node), owner FROM upd
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

    // MARK: - Statements

    /// Writes the fields an attempt's end (or a recovery, or a rescue) decides, as `Job`
    /// worked them out, and the state event. Returns the event's id.
    func saveOutcome(of job: Job, at now: Timestamp, on connection: PostgresConnection) async throws -> Int64? {
        try await connection.query("""
            UPDATE jobs SET state = \(job.state.rawValue), reason = \(job.reason?.rawValue), attempts = \(job.attempts),
                started_at = \(job.startedAt?.microseconds), finished_at = \(job.finishedAt?.microseconds),
                exit_code = \(job.exitCode.map(Int.init)), signal = \(job.signal.map(Int.init)), error = \(job.error),
                slot = \(job.slot?.rawValue), node = \(job.node), lease_until = NULL,
                progress_fraction = \(job.progress?.fraction), progress_message = \(job.progress?.message),
                result = \(job.result?.canonicalText), not_before = \(job.notBefore?.microseconds),
                attempt_log = \(AttemptRecord.encode(job.attemptLog)), start_by = \(job.startBy?.microseconds),
                canceled_by = \(job.canceledBy)
            WHERE seq = \(job.sequence)
            """, logger: logger)
        return try await insertEvents([.state(of: job, at: now)], signal: job.state == .queued ? "queued" : nil, on: connection)
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
}

/// Lets a member built in `init` call back into the store once the store exists, without
/// keeping it alive.
private final class WeakStore: Sendable {
    private struct Reference { weak var store: PostgresJobStore? }
    private let reference = Mutex(Reference())

    var store: PostgresJobStore? {
        get { reference.withLock { $0.store } }
        set { reference.withLock { $0.store = newValue } }
    }

    func required() throws -> PostgresJobStore {
        guard let store else { throw StoreError(.other, "the PostgreSQL store was closed") }
        return store
    }
}
