import GRDB
import SpoolCore
import SpoolStore
import Synchronization

extension SQLiteJobStore {
    public func deleteEnded(before cutoff: Timestamp, limit: Int) async throws -> [JobID] {
        // A call with the cutoff of the one before goes on from where that one stopped: what
        // it read before that point went, or belongs to an array that cannot go yet — and stays
        // so for this cutoff, since a task that ends now ends after it. (Noticed in review: an
        // open array's ended tasks were read again by every call of a pass.)
        let resume = retentionCursor.withLock { $0?.cutoff == cutoff.microseconds ? $0 : nil }
        do {
            let (ids, reached) = try await drawingOnReserve("delete the ended jobs", newWork: false) { try await pool.write { db in
                // The jobs that ended before the cutoff, oldest first, read through `jobs_finished`
                // a chunk at a time. An array goes whole, past the limit, in the place of its first
                // task read — once every task of it ended before the cutoff; each array is looked at
                // once per call. (Found by attacking the build: one query that checked, for every
                // ended task, its whole array — a 10,000-task array took 10 to 50 s, every write
                // waiting behind it — and read all ended jobs through the state index to sort them.)
                var ids: [String] = []
                var arraysSeen: Set<String> = []
                var after: (finished: Int64, seq: Int64) = resume.map { ($0.finished, $0.seq) } ?? (.min, .min)
                scanning: while ids.count < limit {
                    let rows = try Row.fetchAll(db, cached: """
                        SELECT id, array_id, finished_at, seq FROM jobs INDEXED BY jobs_finished
                        WHERE finished_at IS NOT NULL AND finished_at < ?1 AND (finished_at, seq) > (?2, ?3)
                          AND state IN ('succeeded', 'failed', 'canceled')
                        ORDER BY finished_at, seq LIMIT ?4
                        """, arguments: [cutoff.microseconds, after.finished, after.seq, Self.retentionChunk])
                    for row in rows {
                        after = (row["finished_at"], row["seq"])
                        retentionRowsRead.add(1, ordering: .relaxed)
                        guard let array: String = row["array_id"] else {
                            ids.append(row["id"])
                            if ids.count >= limit { break scanning }
                            continue
                        }
                        guard arraysSeen.insert(array).inserted else { continue }
                        let open = try Bool.fetchOne(db, cached: """
                            SELECT EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_array WHERE array_id = ?1
                                AND (state NOT IN ('succeeded', 'failed', 'canceled') OR finished_at IS NULL OR finished_at >= ?2))
                            """, arguments: [array, cutoff.microseconds]) ?? true
                        guard !open else { continue }
                        ids += try String.fetchAll(db, cached: "SELECT id FROM jobs INDEXED BY jobs_array WHERE array_id = ? ORDER BY finished_at, seq",
                                                   arguments: [array])
                        if ids.count >= limit { break scanning }
                    }
                    if rows.count < Self.retentionChunk { break }
                }
                for id in ids { try Self.deleteRows(of: id, in: db) }
                return (ids, after)
            } }
            retentionCursor.withLock { $0 = RetentionCursor(cutoff: cutoff.microseconds, finished: reached.finished, seq: reached.seq) }
            return ids.compactMap(JobID.init)
        } catch {
            throw Self.translate(error, doing: "delete the ended jobs")
        }
    }

    /// Ended jobs read at a time by `deleteEnded`.
    static let retentionChunk = 1_000

    /// The last row `deleteEnded` read (`finished_at`, `seq`), and for which cutoff.
    struct RetentionCursor {
        var cutoff: Int64
        var finished: Int64
        var seq: Int64
    }

    public func delete(_ id: JobID) async throws -> DeleteResult {
        do {
            // Deleting frees the disk: with it full, the reserve makes room for the delete itself.
            return try await drawingOnReserve("delete the job", newWork: false) { try await pool.write { db in
                guard let row = try Row.fetchOne(db, cached: "SELECT * FROM jobs WHERE id = ?", arguments: [id.rawValue]) else { return .notFound }
                let job = try Self.job(from: row)
                guard job.state.isTerminal else { return .notEnded(job) }
                guard job.array == nil else { return .arrayTask(job) }
                try Self.deleteRows(of: id.rawValue, in: db)
                return .deleted(job)
            } }
        } catch {
            throw Self.translate(error, doing: "delete the job")
        }
    }

    /// Checks that every task has ended, then deletes them in transactions of `arrayChunk` tasks,
    /// the highest index first, with other writes between (the whole array in one transaction
    /// held every submit for a quarter of a second at 10,000 tasks). An ended task never runs
    /// again, so the check holds for the chunks after the first (which take ended tasks only all
    /// the same). A failure leaves the chunks before it deleted, and the array listed by its first
    /// task, which goes last: deleting again finishes the rest.
    public func deleteArray(_ id: String) async throws -> ArrayDeleteResult {
        var deleted: [JobID] = []
        var below: Int64?   // none for the first chunk: an index may be Int64.max
        do {
            while true {
                let step = try await drawingOnReserve("delete the job array", newWork: false) { [chunk = arrayChunk, below, first = deleted.isEmpty] in
                    try await pool.write { db -> (ArrayDeleteResult, last: Int64?) in
                        if first {
                            let states = try Row.fetchAll(db, cached: "SELECT state, COUNT(*) FROM jobs INDEXED BY jobs_array WHERE array_id = ? GROUP BY state",
                                                          arguments: [id])
                            guard !states.isEmpty else {
                                // Nothing left (a delete resumed after the rest went by retention): none under way either.
                                try db.execute(cached: "DELETE FROM array_operations WHERE array_id = ?", arguments: [id])
                                return (.notFound, nil)
                            }
                            let open = states.reduce(0) { open, row in (JobState(rawValue: row[0])?.isTerminal ?? false) ? open : open + (row[1] as Int) }
                            guard open == 0 else { return (.notEnded(open), nil) }
                            // Begun: a crash before the last chunk leaves it to the next start, and
                            // meanwhile a submit under the array's key is told it is being deleted.
                            try db.execute(cached: "INSERT OR REPLACE INTO array_operations (array_id, operation, actor) VALUES (?, 'delete', NULL)",
                                           arguments: [id])
                        }
                        let tasks = try Row.fetchAll(db, cached: """
                            SELECT id, array_index FROM jobs INDEXED BY jobs_array WHERE array_id = ?\(below == nil ? "" : " AND array_index < ?")
                              AND state IN ('succeeded', 'failed', 'canceled') ORDER BY array_index DESC LIMIT ?
                            """, arguments: below.map { [id, $0, chunk] } ?? [id, chunk])
                        let ids: [String] = tasks.map { $0["id"] }
                        for task in ids { try Self.deleteRows(of: task, in: db) }
                        guard tasks.count == chunk else {
                            try db.execute(cached: "DELETE FROM array_operations WHERE array_id = ?", arguments: [id])
                            return (.deleted(ids.compactMap(JobID.init)), nil)
                        }
                        return (.deleted(ids.compactMap(JobID.init)), tasks.last?["array_index"])
                    }
                }
                guard case .deleted(let tasks) = step.0 else { return step.0 }
                deleted += tasks
                guard let last = step.last else { return .deleted(deleted.reversed()) }
                below = last
                await betweenArrayChunks()
                try await Failpoints.hold(Failpoints.holdArrayDeleteChunk)
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
