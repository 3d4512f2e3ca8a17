import Logging
import PostgresNIO
import SpoolCore
import SpoolStore
import Synchronization

/// One slot's step at the store: record the end of its job's attempt, claim its next job, or
/// both. A node's concurrent steps commit together (`commitSteps`).
struct SlotStep: Sendable {
    struct Finish: Sendable {
        var id: JobID
        var attempt: Int
        var outcome: JobOutcome
        var result: JSONValue?
        var now: Timestamp

        /// This finish's attempt, as a batch's answer names those it recorded.
        var key: Key { Key(job: id, attempt: attempt) }

        struct Key: Hashable, Sendable {
            var job: JobID
            var attempt: Int
        }
    }

    struct Claim: Sendable {
        var slot: SlotID
        var excluding: Set<String>
        var now: Timestamp
    }

    var finish: Finish?
    var claim: Claim?
}

/// The hot path of a shared queue: every slot of a node that finishes a job and wants the next
/// one. Concurrent steps of one node share a round trip and a commit (`GroupCommit`), and the
/// common batch is one prepared statement — finishes fenced by their attempts, claims of the
/// queue's head with SKIP LOCKED, their events and one notification — parsed once per
/// connection rather than once per job.
extension PostgresJobStore {
    /// Makes claims take turns across nodes while some token caps its running jobs: held to the
    /// end of the claim's transaction, taken before the claim statement's snapshot.
    static func lockRunningCaps(on connection: PostgresConnection, logger: Logger) async throws {
        try await connection.query("SELECT pg_advisory_xact_lock(hashtextextended('spool:max_running', 0))", logger: logger)
    }

    /// Commits `steps` in one transaction; answers, in order, whether each step's finish was
    /// recorded (false without one) and the job it claimed (nil when it claimed none, or asked
    /// for none). Throws when nothing was written.
    func commitSteps(_ steps: [SlotStep]) async throws -> [Result<FinishResult, any Error>] {
        // No claims while another session may hold this node's name (`holdNodeName`).
        let steps = nameHold.withLock { $0.mayClaim } ? steps : steps.map { SlotStep(finish: $0.finish, claim: nil) }
        guard steps.contains(where: { $0.finish != nil || $0.claim != nil }) else {
            return steps.map { _ in .success(FinishResult(recorded: false, next: nil)) }
        }
        let (blind, read) = blindAndRead(steps.compactMap { $0.finish })
        let takeTurns = runningCapped.withLock { $0 } && steps.contains { $0.claim != nil }
        // Claims that skip the same job types share a statement; each statement sees the jobs
        // the ones before it claimed.
        let groups = Dictionary(grouping: steps.indices.filter { steps[$0].claim != nil }) { steps[$0].claim!.excluding.sorted() }
            .sorted { $0.key.lexicographicallyPrecedes($1.key) }
        // The first statement carries the finishes (alone when nothing is claimed).
        let pending = groups.isEmpty
            ? (blind.isEmpty ? [] : [SlotStepsBatch(finishes: blind, claims: [], excluding: [], served: [], node: node,
                                                    lease: leaseDuration, takingTurns: false)])
            : groups.enumerated().map { number, group in
                SlotStepsBatch(finishes: number == 0 ? blind : [], claims: group.value.map { steps[$0].claim! }, excluding: group.key,
                             served: servedTypes.withLock { $0 }, node: node, lease: leaseDuration, takingTurns: takeTurns)
            }
        // Tokens' max_running is counted in each claim's snapshot: two nodes claiming at once
        // would each see the other's claim uncommitted and both start one. While caps are known
        // claims take turns (a lock, then the claim in a snapshot taken after it); a claim that
        // does not skips capped tenants' jobs, and its answer says whether there are caps.
        let run: @Sendable (PostgresConnection) async throws -> (newest: Int64?, claims: [[Job]], recorded: Set<SlotStep.Finish.Key>) = { connection in
            if takeTurns { try await Self.lockRunningCaps(on: connection, logger: self.logger) }
            var newest: Int64?
            var recorded: Set<SlotStep.Finish.Key> = []
            for finish in read {
                if var job = try await Self.fetchJob(where: "j.id = \(finish.id.rawValue) AND j.state = 'running' AND j.attempts = \(finish.attempt)",
                                                     locking: true, on: connection, logger: self.logger) {
                    job.record(finish.outcome, at: finish.now, result: finish.result)
                    newest = try await self.saveOutcome(of: job, at: finish.now, on: connection)
                    recorded.insert(finish.key)
                }
            }
            var claims: [[Job]] = []
            for statement in pending {
                let answer = try await statement.run(on: connection, logger: self.logger)
                newest = [newest, answer.newest].compactMap { $0 }.max()
                claims.append(answer.claimed)
                recorded.formUnion(answer.finished)
                if let capped = answer.capped { self.runningCapped.withLock { $0 = capped } }
            }
            return (newest, claims, recorded)
        }
        let answer = read.isEmpty && pending.count <= 1 && !takeTurns
            ? try await write("record finished jobs and claim the next", run)
            : try await transaction("record finished jobs and claim the next", run)

        var results = steps.map { step in
            Result<FinishResult, any Error>.success(FinishResult(recorded: step.finish.map { answer.recorded.contains($0.key) } ?? false, next: nil))
        }
        var started: [Job] = []
        for (group, jobs) in zip(groups, answer.claims) {
            for (index, job) in zip(group.value, jobs) {
                results[index] = results[index].map { FinishResult(recorded: $0.recorded, next: job) }
                started.append(job)
            }
        }
        let finished = steps.compactMap(\.finish)
        claimedJobs.withLock { jobs in
            // Not a stale attempt's: the job may be claimed here again, as a newer attempt.
            for finish in finished where jobs[finish.id]?.attempts == finish.attempt { jobs[finish.id] = nil }
            for job in started { jobs[job.id] = job }
        }
        published(answer.newest, jobs: finished.map(\.id) + started.map { $0.id })
        return results
    }

    /// Finishes of jobs this node claimed are written blind, from the job as claimed (its
    /// attempt, limits and timeout do not change while it runs); any other (a job claimed
    /// before this store was opened, say) is read and locked first.
    private func blindAndRead(_ finishes: [SlotStep.Finish]) -> (blind: [(job: Job, attempt: Int, at: Timestamp)], read: [SlotStep.Finish]) {
        let claimed = claimedJobs.withLock { jobs in finishes.map { jobs[$0.id] } }
        var blind: [(job: Job, attempt: Int, at: Timestamp)] = []
        var read: [SlotStep.Finish] = []
        for (finish, job) in zip(finishes, claimed) {
            if var job, job.attempts == finish.attempt {
                job.record(finish.outcome, at: finish.now, result: finish.result)
                blind.append((job, finish.attempt, finish.now))
            } else {
                read.append(finish)
            }
        }
        return (blind, read)
    }
}

/// What a step statement does; each shape is its own prepared statement, so that a claim alone
/// (an idle slot waking up) is planned without the finishing half, and the other way round.
protocol SlotStepsShape: Sendable {
    static var finishes: Bool { get }
    static var claims: Bool { get }
    /// `SlotStepsStatement.text()` for this shape, built once.
    static var sql: String { get }
}

enum FinishAndClaim: SlotStepsShape {
    static let finishes = true, claims = true
    static let sql = SlotStepsStatement<Self>.text()
}

enum FinishOnly: SlotStepsShape {
    static let finishes = true, claims = false
    static let sql = SlotStepsStatement<Self>.text()
}

enum ClaimOnly: SlotStepsShape {
    static let finishes = false, claims = true
    static let sql = SlotStepsStatement<Self>.text()
}

/// The prepared statements behind `commitSteps`: record finished attempts (each fenced by its
/// attempt number, their rows locked in `seq` order), claim up to one job per claim from the
/// queue's head with SKIP LOCKED (priority, then FIFO; the n-th job claimed goes to the n-th
/// claim), write a state event for each, and notify once. The claim's event data is built in
/// SQL; the conformance suite holds it to `JobEvent.stateData`.
struct SlotStepsStatement<Shape: SlotStepsShape>: PostgresPreparedStatement {
    static var sql: String { Shape.sql }

    /// Parameters: `$1` node, `$2` lease; finishing: `$3` the finished jobs as JSON, `$4` their
    /// `seq`s; claiming: then the claims' slots, their start times, the types they skip.
    static func text() -> String {
        var parts: [String] = []
        var events: [String] = []
        if Shape.finishes {
            parts.append("""
                f AS (
                    SELECT * FROM json_to_recordset($3::json) AS f(seq bigint, attempt integer, state text, reason text,
                        attempts integer, started_at bigint, finished_at bigint, exit_code integer, signal integer, error text,
                        slot integer, node text, result text, not_before bigint, attempt_log text, start_by bigint, at bigint, event text)
                ), locked AS (
                    SELECT seq FROM jobs WHERE seq = ANY($4::bigint[]) ORDER BY seq FOR UPDATE
                ), fin AS (
                    UPDATE jobs j SET state = f.state, reason = f.reason, attempts = f.attempts, started_at = f.started_at,
                        finished_at = f.finished_at, exit_code = f.exit_code, signal = f.signal, error = f.error, slot = f.slot,
                        node = f.node, lease_until = NULL, result = f.result, not_before = f.not_before, attempt_log = f.attempt_log,
                        start_by = f.start_by,
                        -- A stop asked for that the job outran (it ended on its own): nobody canceled it.
                        canceled_by = CASE WHEN f.state IN ('succeeded', 'failed') THEN NULL ELSE j.canceled_by END,
                        progress_fraction = CASE WHEN f.state = 'queued' THEN NULL ELSE j.progress_fraction END,
                        progress_message = CASE WHEN f.state = 'queued' THEN NULL ELSE j.progress_message END
                    FROM f, locked WHERE j.seq = locked.seq AND j.seq = f.seq AND j.state = 'running' AND j.attempts = f.attempt
                    RETURNING j.id, f.attempt, j.state, j.owner, f.at, f.event
                ), fin_event AS (
                    INSERT INTO events (job_id, kind, at, data, origin, owner)
                    SELECT id, 'state', at, event, $1, owner FROM fin
                    RETURNING id
                )
                """)
            events.append("SELECT id FROM fin_event")
        }
        if Shape.claims {
            let first = Shape.finishes ? 5 : 3
            parts.append("""
                c AS (
                    SELECT * FROM unnest($\(first)::bigint[], $\(first + 1)::bigint[]) WITH ORDINALITY AS c(slot, at, n)
                ), room AS (
                    -- Tenants whose token caps their running jobs: how many more may start (the
                    -- jobs this statement finishes still read as running in its snapshot).
                    SELECT t.name, t.max_running - (SELECT count(*) FROM jobs r WHERE r.state = 'running' AND r.owner = t.name)
                        \(Shape.finishes ? "+ (SELECT count(*) FROM fin WHERE fin.owner = t.name)" : "") AS spare
                    FROM tokens t WHERE t.max_running IS NOT NULL
                ), next AS (
                    SELECT seq, priority, fair_tag, owner FROM jobs
                    WHERE state = 'queued' AND NOT (type = ANY($\(first + 2)::text[]))
                      -- Only types this node knows (none listed: any).
                      AND (cardinality($\(first + 4)::text[]) = 0 OR type = ANY($\(first + 4)::text[]))
                      -- The node's time, capped by the database's: a node whose clock runs ahead
                      -- starts nothing early (one behind is late, never early).
                      AND (not_before IS NULL OR not_before <= LEAST((SELECT min(at) FROM c), spool_now()))
                      AND (start_by IS NULL OR start_by > LEAST((SELECT min(at) FROM c), spool_now()))
                      -- Unless claims take turns (locked), a capped tenant's job is left to one that does.
                      AND owner NOT IN (SELECT name FROM room WHERE spare <= 0 OR NOT $\(first + 3)::boolean)
                    ORDER BY priority DESC, fair_tag, seq LIMIT cardinality($\(first)::bigint[]) FOR UPDATE SKIP LOCKED
                ), allowed AS (
                    SELECT n.*, row_number() OVER (PARTITION BY n.owner ORDER BY n.priority DESC, n.fair_tag, n.seq) AS k FROM next n
                ), ranked AS (
                    SELECT a.seq, row_number() OVER (ORDER BY a.priority DESC, a.fair_tag, a.seq) AS n
                    FROM allowed a LEFT JOIN room r ON r.name = a.owner WHERE r.name IS NULL OR a.k <= r.spare
                ), claimed AS (
                    UPDATE jobs j SET state = 'running', attempts = j.attempts + 1, slot = c.slot, node = $1, started_at = c.at,
                        finished_at = NULL, progress_fraction = NULL, progress_message = NULL, result = NULL,
                        lease_until = spool_now() + $2::bigint
                    FROM ranked r JOIN c ON c.n = r.n WHERE j.seq = r.seq
                    RETURNING j.*, c.n AS claim
                ), claim_event AS (
                    INSERT INTO events (job_id, kind, at, data, origin, owner)
                    SELECT id, 'state', started_at,
                           (jsonb_build_object('job', id, 'type', type, 'state', 'running', 'attempts', attempts, 'slot', slot)
                            || CASE WHEN array_id IS NULL THEN '{}'::jsonb
                                    ELSE jsonb_build_object('array', jsonb_build_object('id', array_id, 'index', array_index)) END)::text,
                           $1, owner
                    FROM claimed
                    RETURNING id, job_id
                )
                """)
            events.append("SELECT id FROM claim_event")
        }
        parts.append("newest AS (SELECT max(id) AS id FROM (\(events.joined(separator: " UNION ALL "))) AS e)")
        var sql = "WITH " + parts.joined(separator: ", ") + """

            SELECT n.id AS newest,
                   (SELECT count(pg_notify('\(PostgresJobStore.eventsChannel)', id::text)) FROM newest WHERE id IS NOT NULL) AS notified
            """
        if Shape.finishes {
            sql += """
                ,
                       (SELECT count(pg_notify('\(PostgresJobStore.channel)', 'queued'))
                        FROM (SELECT 1 FROM fin WHERE state = 'queued' LIMIT 1) AS r) AS requeued,
                       (SELECT array_agg(id ORDER BY id, attempt) FROM fin) AS finished,
                       (SELECT array_agg(attempt ORDER BY id, attempt) FROM fin) AS finished_attempts
                """
        }
        if Shape.claims {
            sql += """
                , (SELECT count(*) > 0 FROM room) AS capped, claimed.*
                FROM newest n LEFT JOIN (claimed JOIN claim_event ON claim_event.job_id = claimed.id) ON true
                ORDER BY claimed.claim
                """
        } else {
            sql += "\nFROM newest n"
        }
        return sql
    }

    typealias Row = PostgresRandomAccessRow

    var batch: SlotStepsBatch

    func makeBindings() throws -> PostgresBindings {
        let (finishes, claims) = (batch.finishes, batch.claims)
        var bindings = PostgresBindings(capacity: 8)
        bindings.append(batch.node)
        bindings.append(batch.lease.microseconds)
        if Shape.finishes {
            bindings.append(JSONValue.array(finishes.map { finish in
                let job = finish.job
                return .object([
                    "seq": .int(job.sequence), "attempt": .int(Int64(finish.attempt)), "state": .string(job.state.rawValue),
                    "reason": job.reason.map { .string($0.rawValue) } ?? .null, "attempts": .int(Int64(job.attempts)),
                    "started_at": job.startedAt.map { .int($0.microseconds) } ?? .null,
                    "finished_at": job.finishedAt.map { .int($0.microseconds) } ?? .null,
                    "exit_code": job.exitCode.map { .int(Int64($0)) } ?? .null, "signal": job.signal.map { .int(Int64($0)) } ?? .null,
                    "error": job.error.map(JSONValue.string) ?? .null, "slot": job.slot.map { .int(Int64($0.rawValue)) } ?? .null,
                    "node": job.node.map(JSONValue.string) ?? .null, "result": job.result.map { .string($0.canonicalText) } ?? .null,
                    "not_before": job.notBefore.map { .int($0.microseconds) } ?? .null,
                    "attempt_log": AttemptRecord.encode(job.attemptLog).map(JSONValue.string) ?? .null,
                    "start_by": job.startBy.map { .int($0.microseconds) } ?? .null,
                    "at": .int(finish.at.microseconds), "event": .string(JobEvent.stateData(of: job).canonicalText),
                ])
            }).canonicalText)
            // The rows to finish, by primary key: the planner cannot count the JSON's rows, and
            // would otherwise walk every `running` entry of the state index, dead ones included.
            // They are locked in `seq` order, as lease renewal locks them, so the two never deadlock.
            bindings.append(finishes.map { $0.job.sequence })
        }
        if Shape.claims {
            bindings.append(claims.map { Int64($0.slot.rawValue) })
            bindings.append(claims.map { $0.now.microseconds })
            bindings.append(batch.excluding)
            bindings.append(batch.takingTurns)
            bindings.append(batch.served)
        }
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> PostgresRandomAccessRow { row.makeRandomAccess() }

    /// Runs the statement; answers the newest event it wrote, the claimed jobs, in claim order,
    /// and (with claims) whether some token caps its running jobs.
    func run(on connection: PostgresConnection, logger: Logger) async throws -> SlotStepsBatch.Answer {
        var answer = SlotStepsBatch.Answer()
        for try await row in try await connection.execute(self, logger: logger) {
            answer.newest = try row["newest"].decode(Int64?.self)
            if Shape.finishes {
                // Two aggregates of the same rows in the same order (by id, then attempt).
                let ids = try row["finished"].decode([String]?.self) ?? [], attempts = try row["finished_attempts"].decode([Int]?.self) ?? []
                answer.finished = Set(zip(ids, attempts).compactMap { id, attempt in JobID(id).map { SlotStep.Finish.Key(job: $0, attempt: attempt) } })
            }
            if Shape.claims {
                answer.capped = try row["capped"].decode(Bool.self)
                if try row["seq"].decode(Int64?.self) != nil { answer.claimed.append(try PostgresJobStore.job(from: row)) }
            }
        }
        return answer
    }
}

/// One statement's worth of a batch: finishes and claims that skip the same types. It runs as
/// the prepared statement of the shape its contents need.
struct SlotStepsBatch: Sendable {
    /// The jobs after `record`, with the attempt each outcome belongs to and when it ended.
    var finishes: [(job: Job, attempt: Int, at: Timestamp)]
    var claims: [SlotStep.Claim]
    var excluding: [String]
    /// The job types the node can run (`PostgresJobStore.serve(types:)`); empty: any.
    var served: [String]
    var node: String
    var lease: Duration
    /// The claims run under `lockRunningCaps`: they may start capped tenants' jobs.
    var takingTurns: Bool

    /// What a batch's statement did.
    struct Answer: Sendable {
        /// The newest event it wrote.
        var newest: Int64?
        var claimed: [Job] = []
        /// The attempts whose finishes were recorded (one that no longer held its job was not).
        var finished: Set<SlotStep.Finish.Key> = []
        /// Whether some token caps its running jobs (nil: nothing was claimed, nothing read).
        var capped: Bool?
    }

    func run(on connection: PostgresConnection, logger: Logger) async throws -> Answer {
        switch (finishes.isEmpty, claims.isEmpty) {
        case (false, false): try await SlotStepsStatement<FinishAndClaim>(batch: self).run(on: connection, logger: logger)
        case (false, true): try await SlotStepsStatement<FinishOnly>(batch: self).run(on: connection, logger: logger)
        case (true, false): try await SlotStepsStatement<ClaimOnly>(batch: self).run(on: connection, logger: logger)
        case (true, true): Answer()
        }
    }
}
