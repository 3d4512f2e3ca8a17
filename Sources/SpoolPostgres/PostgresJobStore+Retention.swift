import PostgresNIO
import SpoolCore
import SpoolStore

extension PostgresJobStore {
    /// Any node may sweep: two at once skip each other's rows (`SKIP LOCKED`). Each node then
    /// removes the directories it holds of jobs no longer stored (`RetentionSweeper`).
    public func deleteEnded(before cutoff: Timestamp, limit: Int) async throws -> [JobID] {
        try await transaction("delete the ended jobs") { connection in
            let rows = try await connection.query("""
                SELECT id, array_id FROM jobs AS ended
                WHERE finished_at < \(cutoff.microseconds) AND state IN ('succeeded', 'failed', 'canceled')
                  AND (array_id IS NULL OR NOT EXISTS (
                    SELECT 1 FROM jobs AS task WHERE task.array_id = ended.array_id
                      AND (task.state NOT IN ('succeeded', 'failed', 'canceled') OR task.finished_at >= \(cutoff.microseconds))))
                ORDER BY finished_at, seq LIMIT \(limit)
                FOR UPDATE SKIP LOCKED
                """, logger: self.logger)
            var picked: [(id: String, array: String?)] = []
            for try await (id, array) in rows.decode((String, String?).self) { picked.append((id, array)) }
            // An array begun goes whole, past the limit, in the place of its first task taken. Each
            // pass deletes an array only when it could lock every task of it (another node's pass
            // may hold some): never part of one.
            var ids: [String] = []
            var arraysTaken: Set<String> = []
            for pick in picked {
                guard let array = pick.array else { ids.append(pick.id); continue }
                guard arraysTaken.insert(array).inserted else { continue }
                var tasks: [String] = []
                let locked = try await connection.query("""
                    SELECT id FROM jobs WHERE array_id = \(array) ORDER BY finished_at, seq FOR UPDATE SKIP LOCKED
                    """, logger: self.logger)
                for try await id in locked.decode(String.self) { tasks.append(id) }
                let size = try await connection.query("SELECT count(*) FROM jobs WHERE array_id = \(array)", logger: self.logger).decodeFirst(Int64.self) ?? 0
                if tasks.count == Int(size) { ids += tasks }
            }
            try await self.deleteRows(of: ids, on: connection)
            return ids.compactMap(JobID.init)
        }
    }

    /// The job's row, events, webhook deliveries and shared files go in one transaction. Its
    /// directory stays on the node that ran it until that node's retention pass finds it old.
    public func delete(_ id: JobID) async throws -> DeleteResult {
        try await transaction("delete the job") { connection in
            guard let job = try await Self.fetchJob(where: "j.id = \(id.rawValue)", locking: true, on: connection, logger: self.logger) else {
                return .notFound
            }
            guard job.state.isTerminal else { return .notEnded(job) }
            guard job.array == nil else { return .arrayTask(job) }
            try await self.deleteRows(of: [id.rawValue], on: connection)
            return .deleted(job)
        }
    }

    /// The array's rows are locked first, so no node claims a task (none is queued, but a
    /// rescue may requeue one) or changes one while they go.
    public func deleteArray(_ id: String) async throws -> ArrayDeleteResult {
        try await transaction("delete the job array") { connection in
            let rows = try await connection.query("""
                SELECT id, state FROM jobs WHERE array_id = \(id) ORDER BY array_index FOR UPDATE
                """, logger: self.logger)
            var ids: [String] = []
            var open = 0
            for try await (task, state) in rows.decode((String, String).self) {
                ids.append(task)
                if !(JobState(rawValue: state)?.isTerminal ?? false) { open += 1 }
            }
            guard !ids.isEmpty else { return .notFound }
            guard open == 0 else { return .notEnded(open) }
            try await self.deleteRows(of: ids, on: connection)
            return .deleted(ids.compactMap(JobID.init))
        }
    }

    /// Jobs' rows with their events, webhook deliveries (their attempts by cascade), shared
    /// files and the keys of the requests that joined them, in the caller's transaction (whose
    /// rows it has locked).
    private func deleteRows(of ids: [String], on connection: PostgresConnection) async throws {
        guard !ids.isEmpty else { return }
        try await connection.query("DELETE FROM joined_keys WHERE job_id = ANY(\(ids))", logger: logger)
        try await connection.query("DELETE FROM events WHERE job_id = ANY(\(ids))", logger: logger)
        try await connection.query("DELETE FROM webhook_deliveries WHERE job_id = ANY(\(ids))", logger: logger)
        try await connection.query("DELETE FROM job_files WHERE job_id = ANY(\(ids))", logger: logger)
        try await connection.query("DELETE FROM jobs WHERE id = ANY(\(ids))", logger: logger)
    }
}
