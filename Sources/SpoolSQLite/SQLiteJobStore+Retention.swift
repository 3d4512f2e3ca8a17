import GRDB
import SpoolCore
import SpoolStore

extension SQLiteJobStore {
    public func deleteEnded(before cutoff: Timestamp, limit: Int) async throws -> [JobID] {
        do {
            return try await pool.write { db in
                // Through `jobs_finished`: only the jobs that ended before the cutoff are read.
                let rows = try Row.fetchAll(db, cached: """
                    SELECT id, array_id FROM jobs AS ended
                    WHERE finished_at < ?1 AND state IN ('succeeded', 'failed', 'canceled')
                      AND (array_id IS NULL OR NOT EXISTS (
                        SELECT 1 FROM jobs AS task WHERE task.array_id = ended.array_id
                          AND (task.state NOT IN ('succeeded', 'failed', 'canceled') OR task.finished_at >= ?1)))
                    ORDER BY finished_at, seq LIMIT ?2
                    """, arguments: [cutoff.microseconds, limit])
                // An array begun goes whole, past the limit, in the place of its first task taken
                // (every task of it ended before the cutoff).
                var ids: [String] = []
                var arraysTaken: Set<String> = []
                for row in rows {
                    guard let array: String = row["array_id"] else { ids.append(row["id"]); continue }
                    guard arraysTaken.insert(array).inserted else { continue }
                    ids += try String.fetchAll(db, cached: "SELECT id FROM jobs INDEXED BY jobs_array WHERE array_id = ? ORDER BY finished_at, seq",
                                               arguments: [array])
                }
                for id in ids { try Self.deleteRows(of: id, in: db) }
                return ids.compactMap(JobID.init)
            }
        } catch {
            throw Self.translate(error, doing: "delete the ended jobs")
        }
    }

    public func delete(_ id: JobID) async throws -> DeleteResult {
        do {
            return try await pool.write { db in
                guard let row = try Row.fetchOne(db, cached: "SELECT * FROM jobs WHERE id = ?", arguments: [id.rawValue]) else { return .notFound }
                let job = try Self.job(from: row)
                guard job.state.isTerminal else { return .notEnded(job) }
                guard job.array == nil else { return .arrayTask(job) }
                try Self.deleteRows(of: id.rawValue, in: db)
                return .deleted(job)
            }
        } catch {
            throw Self.translate(error, doing: "delete the job")
        }
    }

    public func deleteArray(_ id: String) async throws -> ArrayDeleteResult {
        do {
            return try await pool.write { db in
                let tasks = try Row.fetchAll(db, cached: "SELECT id, state FROM jobs INDEXED BY jobs_array WHERE array_id = ? ORDER BY array_index",
                                             arguments: [id])
                guard !tasks.isEmpty else { return .notFound }
                let open = tasks.count { row in !(JobState(rawValue: row["state"])?.isTerminal ?? false) }
                guard open == 0 else { return .notEnded(open) }
                let ids: [String] = tasks.map { $0["id"] }
                for task in ids { try Self.deleteRows(of: task, in: db) }
                return .deleted(ids.compactMap(JobID.init))
            }
        } catch {
            throw Self.translate(error, doing: "delete the job array")
        }
    }

    /// A job's row, its events, its webhook deliveries (their attempts by cascade) and the keys
    /// of the requests that joined it.
    private static func deleteRows(of id: String, in db: Database) throws {
        try db.execute(cached: "DELETE FROM joined_keys WHERE job_id = ?", arguments: [id])
        try db.execute(cached: "DELETE FROM events WHERE job_id = ?", arguments: [id])
        try db.execute(cached: "DELETE FROM webhook_deliveries WHERE job_id = ?", arguments: [id])
        try db.execute(cached: "DELETE FROM jobs WHERE id = ?", arguments: [id])
    }
}
