import GRDB
import SpoolCore
import SpoolStore

extension SQLiteJobStore {
    public func deleteEnded(before cutoff: Timestamp, limit: Int) async throws -> [JobID] {
        do {
            return try await pool.write { db in
                // Through `jobs_finished`: only the jobs that ended before the cutoff are read.
                let ids = try String.fetchAll(db, cached: """
                    SELECT id FROM jobs AS ended
                    WHERE finished_at < ?1 AND state IN ('succeeded', 'failed', 'canceled')
                      AND (array_id IS NULL OR NOT EXISTS (
                        SELECT 1 FROM jobs AS task WHERE task.array_id = ended.array_id
                          AND (task.state NOT IN ('succeeded', 'failed', 'canceled') OR task.finished_at >= ?1)))
                    ORDER BY finished_at, seq LIMIT ?2
                    """, arguments: [cutoff.microseconds, limit])
                for id in ids {
                    try db.execute(cached: "DELETE FROM events WHERE job_id = ?", arguments: [id])
                    // Its attempts go with it (ON DELETE CASCADE).
                    try db.execute(cached: "DELETE FROM webhook_deliveries WHERE job_id = ?", arguments: [id])
                    try db.execute(cached: "DELETE FROM jobs WHERE id = ?", arguments: [id])
                }
                return ids.compactMap(JobID.init)
            }
        } catch {
            throw Self.translate(error, doing: "delete the ended jobs")
        }
    }
}
