import PostgresNIO
import SpoolCore
import SpoolStore

extension PostgresJobStore {
    /// Any node may sweep: two at once skip each other's rows (`SKIP LOCKED`). Each node then
    /// removes the directories it holds of jobs no longer stored (`RetentionSweeper`).
    public func deleteEnded(before cutoff: Timestamp, limit: Int) async throws -> [JobID] {
        try await transaction("delete the ended jobs") { connection in
            let rows = try await connection.query("""
                WITH doomed AS (
                    SELECT id FROM jobs AS ended
                    WHERE finished_at < \(cutoff.microseconds) AND state IN ('succeeded', 'failed', 'canceled')
                      AND (array_id IS NULL OR NOT EXISTS (
                        SELECT 1 FROM jobs AS task WHERE task.array_id = ended.array_id
                          AND (task.state NOT IN ('succeeded', 'failed', 'canceled') OR task.finished_at >= \(cutoff.microseconds))))
                    ORDER BY finished_at, seq LIMIT \(limit)
                    FOR UPDATE SKIP LOCKED
                ), events_gone AS (
                    DELETE FROM events WHERE job_id IN (SELECT id FROM doomed)
                ), deliveries_gone AS (
                    DELETE FROM webhook_deliveries WHERE job_id IN (SELECT id FROM doomed)
                ), files_gone AS (
                    DELETE FROM job_files WHERE job_id IN (SELECT id FROM doomed)
                )
                DELETE FROM jobs WHERE id IN (SELECT id FROM doomed) RETURNING id, finished_at, seq
                """, logger: self.logger)
            // RETURNING comes in no particular order: oldest end first, as on SQLite.
            var deleted: [(id: String, end: Int64, seq: Int64)] = []
            for try await row in rows.decode((String, Int64, Int64).self) { deleted.append(row) }
            return deleted.sorted { ($0.end, $0.seq) < ($1.end, $1.seq) }.compactMap { JobID($0.id) }
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
            try await connection.query("DELETE FROM events WHERE job_id = \(id.rawValue)", logger: self.logger)
            try await connection.query("DELETE FROM webhook_deliveries WHERE job_id = \(id.rawValue)", logger: self.logger)
            try await connection.query("DELETE FROM job_files WHERE job_id = \(id.rawValue)", logger: self.logger)
            try await connection.query("DELETE FROM jobs WHERE id = \(id.rawValue)", logger: self.logger)
            return .deleted(job)
        }
    }
}
