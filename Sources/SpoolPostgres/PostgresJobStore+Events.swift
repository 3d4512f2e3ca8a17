import Logging
import PostgresNIO
import SpoolCore
import SpoolStore

/// The shared event log, and the notifications that tie the nodes together.
extension PostgresJobStore {
    public func events(after: Int64, job: JobID?, owner: String?, limit: Int) async throws -> [JobEvent] {
        let horizon = self.horizon.settled
        guard after < horizon else { return [] }
        return try await read("read events") { connection in
            let rows = switch (job, owner) {
            case (let job?, _):
                try await connection.query("""
                    SELECT id, job_id, owner, kind, at, data FROM events WHERE job_id = \(job.rawValue) AND id > \(after) AND id <= \(horizon)
                        AND (CAST(\(owner) AS text) IS NULL OR owner = \(owner))
                    ORDER BY id LIMIT \(limit)
                    """, logger: self.logger)
            case (nil, let owner?):
                try await connection.query("""
                    SELECT id, job_id, owner, kind, at, data FROM events WHERE owner = \(owner) AND id > \(after) AND id <= \(horizon)
                    ORDER BY id LIMIT \(limit)
                    """, logger: self.logger)
            case (nil, nil):
                try await connection.query("""
                    SELECT id, job_id, owner, kind, at, data FROM events WHERE id > \(after) AND id <= \(horizon) ORDER BY id LIMIT \(limit)
                    """, logger: self.logger)
            }
            var events: [JobEvent] = []
            for try await (id, jobID, owner, kind, at, data) in rows.decode((Int64, String, String, String, Int64, String).self) {
                guard let job = JobID(jobID), let kind = JobEvent.Kind(rawValue: kind) else {
                    throw StoreError(.corrupt, "the job database holds an event it cannot read (id \(id))")
                }
                events.append(JobEvent(id: id, job: job, owner: owner.isEmpty ? nil : owner, kind: kind, at: Timestamp(microseconds: at),
                                       data: try JSONParser.parse(data.utf8)))
            }
            return events
        }
    }

    /// Concurrent calls (every slot's log lines and outputs) share one statement.
    public func appendEvent(_ kind: JobEvent.Kind, job: JobID, attempt: Int?, data: JSONValue, now: Timestamp) async throws {
        try await appendedEvents.submit(NewEvent(kind: kind, job: job, data: data, at: now, attempt: attempt))
    }

    /// Writes a batch of `appendEvent` calls in one statement.
    func commitEvents(_ events: [NewEvent]) async throws -> [Result<Void, any Error>] {
        let eventID = try await write("record an event") { connection in
            try await self.insertEvents(events, on: connection)
        }
        published(eventID, jobs: events.map(\.job))
        return Array(repeating: .success(()), count: events.count)
    }

    /// Appends events in the caller's transaction and notifies every node at commit (with
    /// `signal` too, when given). Prunes the oldest events now and then. Returns the newest id;
    /// nil when none was written (each named an attempt its job has moved past, or a job gone).
    func insertEvents(_ events: [NewEvent], signal: String? = nil, on connection: PostgresConnection) async throws -> Int64? {
        let row = try await connection.query("""
            WITH ev AS (
                INSERT INTO events (job_id, kind, at, data, origin, owner)
                SELECT e.job_id, e.kind, e.at, e.data, \(node),
                       CASE WHEN e.owner = '?' THEN COALESCE((SELECT j.owner FROM jobs j WHERE j.id = e.job_id), '') ELSE e.owner END
                FROM unnest(\(events.map(\.job.rawValue))::text[], \(events.map(\.kind.rawValue))::text[],
                            \(events.map(\.at.microseconds))::bigint[], \(events.map(\.data.canonicalText))::text[],
                            \(events.map { $0.owner ?? "?" })::text[], \(events.map { Int64($0.attempt ?? -1) })::bigint[])
                    AS e(job_id, kind, at, data, owner, attempt)
                WHERE EXISTS (SELECT 1 FROM jobs j WHERE j.id = e.job_id
                              AND (e.attempt < 0 OR NOT (j.attempts > e.attempt OR (j.attempts = e.attempt AND j.state <> 'running')))
                              -- A delete holding the job waits for this, or this for it (then the job is gone).
                              FOR KEY SHARE)
                RETURNING id
            ), newest AS (SELECT max(id) AS id FROM ev)
            SELECT id, pg_notify('\(unescaped: Self.eventsChannel)', id::text) IS NULL,
                   (SELECT count(pg_notify('\(unescaped: Self.channel)', s)) FROM (SELECT CAST(\(signal) AS text) AS s) AS given WHERE s IS NOT NULL)
            FROM newest WHERE id IS NOT NULL
            """, logger: logger).decodeFirstRow((Int64, Bool?, Int64).self)
        guard let newest = row?.0 else { return nil }   // all fenced off, or of jobs deleted meanwhile
        if newest / 1000 != (newest - Int64(events.count)) / 1000 {
            try await connection.query(Self.trimEvents(upTo: newest - Self.eventLimit), logger: logger)
        }
        return newest
    }

    /// Deletes the events up to `id`. Nodes trim at the same time, each in its own transaction,
    /// and their plans may scan in different orders (an index scan by id, a bitmap or sequential
    /// scan by place in the table, where new rows reuse freed space): two plain deletes waiting
    /// on each other's rows from opposite ends abort with "deadlock detected". Rows another trim
    /// holds are that trim's to delete, so they are skipped.
    static func trimEvents(upTo id: Int64) -> PostgresQuery {
        "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id <= \(id) FOR UPDATE SKIP LOCKED)"
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

    func broadcast(_ signal: ClusterSignal) {
        for continuation in subscribers.withLock({ Array($0.values) }) { continuation.yield(signal) }
    }

    /// Holds one connection listening on the channel, reconnecting after a failure. After each
    /// (re)connect everything is looked at again, as notifications may have been missed.
    func listen() async {
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
}

/// An event to append, as `appendEvent` takes it.
struct NewEvent: Sendable {
    var kind: JobEvent.Kind
    var job: JobID
    var data: JSONValue
    var at: Timestamp
    /// The job's owner ('' with authentication off); nil: looked up from the job (sent as "?",
    /// which no token name can be).
    var owner: String?
    /// Written only while the job has not moved past this attempt (`appendEvent`); nil: always.
    var attempt: Int?

    /// The state event of `job` as it is now.
    static func state(of job: Job, at now: Timestamp) -> NewEvent {
        NewEvent(kind: .state, job: job.id, data: JobEvent.stateData(of: job), at: now, owner: job.owner ?? "")
    }
}
