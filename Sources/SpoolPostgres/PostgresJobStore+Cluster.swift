import PostgresNIO
import SpoolCore
import SpoolStore

/// Leases, rescue, and files that any node can serve.
extension PostgresJobStore {
    public func renewLeases(of attempts: [JobID: Int]) async throws -> [LeaseHolding] {
        guard !attempts.isEmpty else { return [] }
        let given = Array(attempts), ids = given.map(\.key.rawValue), numbers = given.map(\.value)
        return try await write("renew this node's leases") { connection in
            // Rows are locked in `seq` order, as a batch of finishes locks them (no deadlock).
            let rows = try await connection.query("""
                WITH mine AS (
                    SELECT j.seq FROM jobs j JOIN unnest(\(ids)::text[], \(numbers)::int8[]) AS given(id, attempt)
                        ON j.id = given.id AND j.attempts = given.attempt
                    WHERE j.state = 'running' AND j.node = \(self.node) ORDER BY j.seq FOR UPDATE OF j)
                UPDATE jobs j SET lease_until = spool_now() + \(self.leaseDuration.microseconds)
                FROM mine WHERE j.seq = mine.seq AND j.state = 'running' AND j.node = \(self.node)
                RETURNING j.id, j.attempts, j.cancel_requested
                """, logger: self.logger)
            var held: [LeaseHolding] = []
            for try await (id, attempts, cancel) in rows.decode((String, Int, Bool).self) {
                if let job = JobID(id) { held.append(LeaseHolding(job: job, attempt: attempts, cancelRequested: cancel)) }
            }
            return held
        }
    }

    /// A claim waits at most for the node's batch in flight and then its own (`GroupCommit`),
    /// each bounded by `operationTimeout`; a second more for the node's clock to read it.
    public var claimAnswerLimit: Duration { operationTimeout * 2 + .seconds(1) }

    public func settleUnansweredClaims(known: Set<JobID>, answerableSince: Timestamp, now: Timestamp) async throws -> [Job] {
        // The running jobs under this node's name that it does not know may be another node's
        // of the same name, while that one holds it: nothing is given back meanwhile.
        guard nameHold.withLock({ $0.mayClaim }) else { return [] }
        let known = known.map(\.rawValue), since = answerableSince.microseconds
        try await write("extend the leases of this node's unanswered claims") { connection in
            // Locked in `seq` order, as the renewal and a batch of finishes lock them.
            _ = try await connection.query("""
                WITH unanswered AS (
                    SELECT j.seq FROM jobs j
                    WHERE j.state = 'running' AND j.node = \(self.node) AND NOT (j.id = ANY(\(known)::text[]))
                      AND j.started_at >= \(since)
                    ORDER BY j.seq FOR UPDATE)
                UPDATE jobs j SET lease_until = spool_now() + \(self.leaseDuration.microseconds)
                FROM unanswered WHERE j.seq = unanswered.seq
                """, logger: self.logger)
        }
        return try await resolveRunning(where: "j.node = \(node) AND NOT (j.id = ANY(\(known)::text[])) AND j.started_at < \(since)",
                                        now: now, doing: "give back this node's unanswered claims") { job in
            job.releaseUnansweredClaim(at: now)
        }
    }

    public func heartbeat(role: String, slots: Int, health: NodeHealth) async throws {
        try await write("record this node's heartbeat") { connection in
            _ = try await connection.query("""
                INSERT INTO nodes (name, role, slots, started_at, seen_at, status, problems)
                VALUES (\(self.node), \(role), \(slots), \(self.startedAt.microseconds), spool_now(),
                        \(health.status.rawValue), \(health.problems))
                ON CONFLICT (name) DO UPDATE SET role = EXCLUDED.role, slots = EXCLUDED.slots,
                    started_at = EXCLUDED.started_at, seen_at = EXCLUDED.seen_at,
                    status = EXCLUDED.status, problems = EXCLUDED.problems
                -- A heartbeat of this run still in flight as it stopped does not undo its "stopped".
                WHERE nodes.status <> 'stopped' OR nodes.started_at <> EXCLUDED.started_at
                """, logger: self.logger)
        }
        let fold = heartbeatsSinceFold.withLock { count in
            count += 1
            if count >= Self.heartbeatsPerFold { count = 0 }
            return count == 0
        }
        if fold { await foldQueueCounts() }
    }

    /// About one fold a minute at the default lease (a heartbeat every 3.3 s).
    static let heartbeatsPerFold = 18

    /// Merges the `queue_counts` rows of database sessions that have ended into this session's
    /// own, so the rows summed stay about one per priority and open session. The pool opens and
    /// closes connections as the load comes and goes, and each new session keeps its own rows.
    /// Rows another transaction holds are skipped (`SKIP LOCKED`): their session is alive (its
    /// process id reused), and the fold never waits on anyone. A priority's sum is unchanged by
    /// it. A failure is logged: the counts stay right, only a little longer to sum.
    func foldQueueCounts() async {
        do {
            try await write("fold the queue counters") { connection in
                _ = try await connection.query("""
                    WITH gone AS (
                        DELETE FROM queue_counts WHERE (priority, backend) IN (
                            SELECT priority, backend FROM queue_counts
                            WHERE backend <> pg_backend_pid()
                              AND backend NOT IN (SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL)
                            FOR UPDATE SKIP LOCKED)
                        RETURNING priority, queued
                    )
                    INSERT INTO queue_counts (priority, backend, queued)
                    SELECT priority, pg_backend_pid(), sum(queued) FROM gone GROUP BY priority
                    ON CONFLICT (priority, backend) DO UPDATE SET queued = queue_counts.queued + EXCLUDED.queued
                    """, logger: self.logger)
            }
        } catch {
            logger.warning("could not fold the queue counters", metadata: ["error": "\(error)"])
        }
    }

    public func nodes() async throws -> [NodeStatus] {
        try await read("list the nodes") { connection in
            let day: Int64 = 86_400_000_000
            let rows = try await connection.query("""
                SELECT n.name, n.role, n.slots, n.started_at, spool_now() - n.seen_at,
                       (SELECT count(*) FROM jobs j WHERE j.state = 'running' AND j.node = n.name), n.status, n.problems
                FROM nodes n WHERE n.seen_at > spool_now() - \(day) ORDER BY n.name
                """, logger: self.logger)
            var nodes: [NodeStatus] = []
            for try await (name, role, slots, started, silent, running, status, problems)
                in rows.decode((String, String, Int, Int64, Int64, Int64, String, [String]).self) {
                // A status this build does not know (a newer node's) reads as degraded, with its word kept.
                let health = NodeHealth.Status(rawValue: status).map { NodeHealth($0, problems: problems) }
                    ?? NodeHealth(.degraded, problems: ["the node reports \"\(status)\""] + problems)
                nodes.append(NodeStatus(name: name, role: role, slots: slots, running: Int(running),
                                        startedAt: Timestamp(microseconds: started), silentSeconds: Double(silent) / 1e6,
                                        health: health))
            }
            return nodes
        }
    }

    /// Jobs whose lease ran out on the database's clock: their node died or lost the database.
    public func rescueExpired(now: Timestamp) async throws -> [Job] {
        // Only once its node has had the time to stop it (`rescueGrace`): no two copies at once.
        try await resolveRunning(where: "j.lease_until < spool_now() - \(rescueGrace.microseconds)", now: now,
                                 doing: "rescue jobs of a lost node") { job in
            job.rescueFromLostNode(at: now)
        }
    }

    /// One statement per file, each fenced on its own (no transaction to hold open while
    /// large files travel); an empty one is stored too (a `_SUCCESS` marker: found by attacking
    /// the build, empty outputs were dropped here and vanished from other nodes' lists).
    @discardableResult
    public func storeFiles(_ files: [StoredFile], of job: JobID, attempt: Int) async throws -> Bool {
        try await write("store a job's files") { connection in
            for file in files {
                let stored = try await connection.query("""
                    INSERT INTO job_files (job_id, name, size, content)
                    SELECT \(job.rawValue), \(file.name), \(file.content.count), \(ByteBuffer(bytes: file.content))
                    WHERE EXISTS (SELECT 1 FROM jobs WHERE id = \(job.rawValue) AND state = 'running' AND attempts = \(attempt))
                    ON CONFLICT (job_id, name) DO UPDATE SET size = EXCLUDED.size, content = EXCLUDED.content
                    RETURNING 1
                    """, logger: self.logger).decodeFirst(Int.self)
                if stored == nil { return false }
            }
            return true
        }
    }

    public func storedFiles(of job: JobID) async throws -> [StoredFileInfo] {
        try await read("list a job's files") { connection in
            var files: [StoredFileInfo] = []
            let rows = try await connection.query("SELECT name, size FROM job_files WHERE job_id = \(job.rawValue) ORDER BY name",
                                                  logger: self.logger)
            for try await (name, size) in rows.decode((String, Int).self) { files.append(StoredFileInfo(name: name, size: size)) }
            return files
        }
    }

    public func storedFile(_ name: String, of job: JobID) async throws -> [UInt8]? {
        try await read("read a job's file") { connection in
            let rows = try await connection.query("SELECT content FROM job_files WHERE job_id = \(job.rawValue) AND name = \(name)",
                                                  logger: self.logger)
            return try await rows.decodeFirst(ByteBuffer.self).map { Array($0.readableBytesView) }
        }
    }
}
