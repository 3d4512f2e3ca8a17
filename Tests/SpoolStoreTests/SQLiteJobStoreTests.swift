// SQLiteJobStoreTests: what only the SQLite driver promises on top of the conformance
// suite — the file outlives the process (reopen), WAL mode, repeatable migrations, and
// storage errors translated into StoreError codes.

import Foundation
import GRDB
import GRDBSQLite
import Synchronization
import SpoolCore
@testable import SpoolSQLite
import SpoolStore
import SpoolTestSupport
import Testing

@Suite final class SQLiteJobStoreTests {
    let directory: ScratchDirectory
    var path: String { directory.path + "/spool.sqlite" }

    init() throws { directory = try ScratchDirectory("spool-sqlite") }

    func open(_ synchronous: SQLiteJobStore.Synchronous = .full) async throws -> SQLiteJobStore {
        let store = try SQLiteJobStore(path: path, synchronous: synchronous)
        try await store.prepare()
        return store
    }

    /// Fills a store with jobs in every interesting state and returns them as stored.
    func populate(_ store: SQLiteJobStore) async throws -> [Job] {
        let input: JSONValue = .object(["size": .int(64), "scale": .double(1.5), "tags": .array([.string("a b"), .null, .bool(true)])])
        let succeeded = try await store.create(makeJob(type: "render", priority: 5, input: input, maxAttempts: 3, timeout: 12.5, key: "key-1"))
        let running = try await store.create(makeJob(priority: 4))
        let failed = try await store.create(makeJob(priority: 3))
        let canceled = try await store.create(makeJob(priority: -2))
        let queued = try await store.create(makeJob(type: "echo", priority: -3, input: .object(["text": .string("héllo\n")])))
        _ = try await store.claimNext(for: SlotID(1), now: at(100))
        _ = try await store.finish(succeeded.id, attempt: 1, outcome: .succeeded, now: at(200), claimNextFor: SlotID(1))
        try await store.reportProgress(running.id, attempt: 1, progress: JobProgress(fraction: 0.4, message: "rows"))
        _ = try await store.cancel(running.id, now: at(250))
        _ = try await store.claimNext(for: SlotID(0), now: at(300))
        _ = try await store.finish(failed.id, attempt: 1, outcome: .signaled(signal: 9), now: at(400), claimNextFor: nil)
        _ = try await store.cancel(canceled.id, now: at(500))
        var jobs: [Job] = []
        for id in [succeeded.id, running.id, failed.id, canceled.id, queued.id] { jobs.append(try await store.require(id)) }
        return jobs
    }

    @Test(arguments: SQLiteJobStore.Synchronous.allCases)
    func jobsSurviveClosingAndReopeningTheFile(synchronous: SQLiteJobStore.Synchronous) async throws {
        var before: [Job] = []
        do {
            let store = try await open(synchronous)
            before = try await populate(store)
        }
        #expect(before.map(\.state) == [.succeeded, .running, .failed, .canceled, .queued])
        let reopened = try await open(synchronous)
        for job in before {
            #expect(try await reopened.job(job.id) == job)
        }
        #expect(try await reopened.queuedCount() == 1)
        let newer = try await reopened.create(makeJob(priority: -3))
        #expect(newer.sequence > before.map(\.sequence).max()!, "sequences are never reused")
        #expect(newer.position == 2)
        #expect(try await reopened.enqueue(makeJob(type: "render", priority: 5, input: before[0].input, maxAttempts: 3,
                                                   timeout: 12.5, key: "key-1")).existing?.id == before[0].id)
    }

    /// The database file removed (or replaced) under a running server: writes would go to a
    /// file no one can open again, so every job accepted from then on would be lost at the next
    /// start. Writes are refused (a submit's 503) once that is seen, and stay refused (found by
    /// attacking the build: submits got 201 and the jobs were gone after a restart).
    @Test func writesAreRefusedOnceTheDatabaseFileIsGone() async throws {
        let store = try SQLiteJobStore(path: path, fileCheckInterval: .zero)
        try await store.prepare()
        _ = try await store.create(makeJob())
        for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) }
        await #expect(performing: { try await store.enqueue(makeJob()) }, throws: { error in
            (error as? StoreError)?.code == .storageUnavailable
                && (error as? StoreError)?.message.contains("was removed or replaced while the server ran") == true
        })
        FileManager.default.createFile(atPath: path, contents: nil)   // another file by that name is not the one opened
        await #expect(throws: StoreError.self) { try await store.enqueue(makeJob()) }
    }

    /// A full disk (here the file may not grow past the pages it has, `max_page_count`, which
    /// SQLite refuses with the same `SQLITE_FULL`): the first write that finds it so releases the
    /// reserve, whose room records how a running job ended and lets an ended job be deleted,
    /// while new jobs are refused with the reason; once
    /// there is room again, the reserve is written back and submits are taken (found by attacking
    /// the build: a job that succeeded stayed `running`, and was recovered `failed` after a
    /// restart; a DELETE that would have freed space answered 503).
    @Test func aFullDiskLeavesTheReservesRoomForJobsEndsAndDeletesNotForNewJobs() async throws {
        let store = try SQLiteJobStore(path: path, diskReserveMiB: 2)
        try await store.prepare()
        func reserveRows() async throws -> Int {
            try await store.pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM disk_reserve") ?? 0 }
        }
        #expect(try await reserveRows() == 2)
        let ended = try await store.create(makeJob())
        _ = try await store.claimNext(for: SlotID(0), now: at(10))
        _ = try await store.finish(ended.id, attempt: 1, outcome: .exited(code: 1), now: at(20), claimNextFor: nil)
        let running = try await store.create(makeJob())
        _ = try await store.claimNext(for: SlotID(0), now: at(30))
        try await store.pool.writeWithoutTransaction { db in
            let pages = try Int.fetchOne(db, sql: "PRAGMA page_count") ?? 0
            try db.execute(sql: "PRAGMA max_page_count = \(pages)")
        }
        // Submits take what room the pages have left, down to the smallest, then the disk is full for them.
        var refusal: StoreError?
        for size in [8_000, 800, 80, 1] {
            let padding = JSONValue.string(String(repeating: "x", count: size))
            for _ in 0..<1_000 {
                do { _ = try await store.create(makeJob(input: .object(["pad": padding]))) } catch let error as StoreError {
                    refusal = error
                    break
                }
            }
        }
        #expect(refusal?.code == .storageUnavailable && refusal?.message.contains("is full") == true, "\(String(describing: refusal))")
        #expect(try await reserveRows() == 0, "the full disk released the reserve")
        let problem = try #require(await store.storageProblem())
        #expect(problem.contains("its remaining room is kept for recording how running jobs end"))

        _ = try await store.finish(running.id, attempt: 1, outcome: .succeeded, now: at(40), claimNextFor: nil)
        #expect(try await store.require(running.id).state == .succeeded)
        await #expect(performing: { try await store.enqueue(makeJob()) }, throws: { error in
            (error as? StoreError)?.code == .storageUnavailable && (error as? StoreError)?.message.contains(problem) == true
        })
        guard case .deleted = try await store.delete(ended.id) else { Issue.record("the ended job was not deleted"); return }

        // Room again: the reserve is whole again (tried at most every few seconds), and submits are taken.
        try await store.pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA max_page_count = 1073741823") }
        store.reserve.withLock { $0.nextRefill = nil }
        _ = try await store.create(makeJob())
        #expect(try await reserveRows() == 2)
        #expect(await store.storageProblem() == nil)
    }

    @Test func runningJobsFromAClosedStoreAreRecoveredAfterReopening() async throws {
        var running: Job?
        do {
            let store = try await open()
            _ = try await store.create(makeJob(maxAttempts: 2))
            running = try await store.claimNext(for: SlotID(0), now: at(10))
        }
        let id = try #require(running?.id)
        let reopened = try await open()
        #expect(try await reopened.recoverInterrupted(now: at(20)).map(\.id) == [id])
        let claimed = try #require(try await reopened.claimNext(for: SlotID(0), now: at(30)))
        #expect(claimed.id == id && claimed.attempts == 2)
    }

    @Test func theDatabaseRunsInWALMode() async throws {
        let store = try await open()
        _ = try await store.create(makeJob())
        #expect(FileManager.default.fileExists(atPath: path + "-wal"))
        #expect(FileManager.default.fileExists(atPath: path + "-shm"))
    }

    /// The database (the session key, the token digests) and its write-ahead files are their
    /// owner's only, whatever the umask: made so, or made so when found readable by others
    /// (found by attacking the build: 0644, and any local user could mint an admin session).
    @Test func theDatabaseFilesAreReadableByTheirOwnerOnly() async throws {
        func mode(_ file: String) -> mode_t {
            var status = stat()
            return stat(file, &status) == 0 ? status.st_mode & 0o777 : 0
        }
        let previous = umask(0o022)
        defer { umask(previous) }
        do {
            let store = try await open()
            _ = try await store.create(makeJob())
            #expect([path, path + "-wal", path + "-shm"].map(mode) == [0o600, 0o600, 0o600])
        }
        for file in [path, path + "-wal", path + "-shm"] { chmod(file, 0o644) }
        let reopened = try await open()
        _ = try await reopened.create(makeJob())
        #expect([path, path + "-wal", path + "-shm"].map(mode) == [0o600, 0o600, 0o600])
    }

    /// Steps of SQLite's virtual machine, in hundreds (a progress handler on the writer).
    static let machineSteps = Atomic<Int>(0)

    /// A retention pass looks at an array's tasks once, not once for each of its ended tasks (a
    /// work count, not a time: found by attacking the build, a 10,000-task array that could not
    /// go yet held every write for 10 to 50 s, its check costing the square of its size).
    @Test func aRetentionPassLooksAtALargeArrayOnce() async throws {
        let store = try await open(.normal)
        let id = ArraySpec.newID()
        let stored = try await store.enqueueArray(tasks(id, count: 1_000), limits: QueueLimits())
        for (index, task) in stored.enumerated() {
            _ = try await store.claimNext(for: SlotID(0), now: at(1_000))
            // All but the last end before the cutoff: the array cannot go yet.
            _ = try await store.finish(task.id, attempt: 1, outcome: .succeeded, now: at(index == 999 ? 9_000 : 2_000 + Int64(index)), claimNextFor: nil)
        }
        let alone = try await store.create(makeJob())
        _ = try await store.claimNext(for: SlotID(0), now: at(3_500))
        _ = try await store.finish(alone.id, attempt: 1, outcome: .succeeded, now: at(3_600), claimNextFor: nil)
        try await store.pool.write { db in
            sqlite3_progress_handler(db.sqliteConnection, 100, { _ in
                SQLiteJobStoreTests.machineSteps.add(1, ordering: .relaxed)
                return 0
            }, nil)
        }
        Self.machineSteps.store(0, ordering: .relaxed)
        #expect(try await store.deleteEnded(before: at(5_000), limit: 500) == [alone.id])
        let steps = Self.machineSteps.load(ordering: .relaxed) * 100
        try await store.pool.write { db in sqlite3_progress_handler(db.sqliteConnection, 0, nil, nil) }
        // About 20 steps a task read once; a check of the whole array per task is a million and more.
        #expect(steps < 200_000, "\(steps) steps")
    }

    /// The WAL gets its full size at start, so commits overwrite it (WALReserve).
    @Test func theWriteAheadLogIsReservedWhenTheStoreIsPrepared() async throws {
        let store = try await open()
        let reserved = WALReserve.size(pageSize: 4096, checkpointPages: 1000)
        let size = { try #require(FileManager.default.attributesOfItem(atPath: self.path + "-wal")[.size] as? Int) }
        #expect(try size() == reserved)
        for _ in 0..<20 { _ = try await store.create(makeJob()) }
        #expect(try size() == reserved, "the commits landed inside the reserved room")
    }

    /// What a kill -9 leaves: the database and a reserved WAL with commits at its front and zeros
    /// after them. Opening a copy of those two files (SQLite recovers the WAL, no shared memory
    /// left) finds every acknowledged write, and the next commits go on from there.
    @Test func aReservedWriteAheadLogIsRecoveredUpToItsLastCommit() async throws {
        let store = try await open()
        var created: [Job] = []
        for priority in 0..<12 { created.append(try await store.create(makeJob(priority: priority))) }
        let claimed = try #require(try await store.claimNext(for: SlotID(0), now: at(10)))
        #expect(try FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int
                == WALReserve.size(pageSize: 4096, checkpointPages: 1000))
        let copy = directory.path + "/copy.sqlite"
        try FileManager.default.copyItem(atPath: path, toPath: copy)
        try FileManager.default.copyItem(atPath: path + "-wal", toPath: copy + "-wal")

        let recovered = try SQLiteJobStore(path: copy)
        try await recovered.prepare()
        #expect(try await recovered.queuedCount() == 11)
        #expect(try await recovered.require(claimed.id).state == .running)
        for job in created where job.id != claimed.id {
            #expect(try await recovered.require(job.id).state == .queued)
        }
        let newer = try await recovered.create(makeJob())
        #expect(newer.sequence == created.map(\.sequence).max()! + 1)
    }

    @Test func reservingAppendsZerosAndLeavesWhatIsThere() throws {
        let file = directory.path + "/log"
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: file))
        #expect(WALReserve.extend(file, to: 600_000) == .extended(from: 3))
        let bytes = try Data(contentsOf: URL(fileURLWithPath: file))
        #expect(bytes.count == 600_000)
        #expect(Array(bytes.prefix(3)) == [1, 2, 3] && bytes.dropFirst(3).allSatisfy { $0 == 0 })
        #expect(WALReserve.extend(file, to: 4096) == .alreadyThere)
        #expect(try Data(contentsOf: URL(fileURLWithPath: file)).count == 600_000, "never shrinks")
        #expect(WALReserve.extend(directory.path + "/none", to: 4096) == .skipped(ENOENT), "never creates the log")
        #expect(!FileManager.default.fileExists(atPath: directory.path + "/none"))
    }

    @Test func preparingTwiceIsHarmless() async throws {
        let store = try await open()
        let job = try await store.create(makeJob())
        try await store.prepare()
        #expect(try await store.require(job.id).position == 1)
        let second = try await open()
        try await second.prepare()
        #expect(try await second.queuedCount() == 1)
        _ = try await second.create(makeJob())
        #expect(try await store.queuedCount() == 2, "two stores on one file see each other's writes")
    }

    /// The schema number `spool --version` prints is the newest migration a new file gets, and the
    /// migrations are numbered one after the other.
    @Test func theSchemaVersionIsTheNewestMigrationApplied() async throws {
        let store = try await open()
        let applied = try await store.pool.read { db in try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations") }
        #expect(SQLiteJobStore.schemaVersion == applied.count && applied.contains { $0.hasPrefix("v\(applied.count)-") }, "\(applied)")
    }

    @Test func arraysStoredBeforeTheirHeadsWereMarkedAreListedAfterTheMigration() async throws {
        let store = try await open()
        let older = ArraySpec.newID(), newer = ArraySpec.newID()
        for (id, count) in [(older, 3), (newer, 2)] {
            _ = try await store.enqueueArray(tasks(id, count: count, first: 7), limits: QueueLimits())
        }
        // The file as the build before `v10-array-heads` left it.
        let queue = try DatabaseQueue(path: path)
        try await queue.write { db in
            try db.execute(sql: """
                DROP INDEX jobs_array_heads;
                DROP INDEX jobs_owner_array_heads;
                ALTER TABLE jobs DROP COLUMN array_head;
                DELETE FROM grdb_migrations WHERE identifier = 'v10-array-heads';
                """)
        }
        try queue.close()
        let migrated = try await open()
        let page = try await migrated.arrays(ArrayQuery())
        #expect(page.arrays.map(\.id) == [newer, older])
        #expect(page.arrays.map(\.size) == [2, 3])
        let heads = try await migrated.pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM jobs WHERE array_head = 1") }
        #expect(heads == 2)
    }

    /// A database whose tokens were created before `createToken` left its mark gets the mark
    /// when it is migrated, so revoking them all does not open the server after a restart
    /// (found in review); one with no token gets none.
    @Test func aDatabaseWithTokensFromBeforeTheMarkIsMarkedWhenMigrated() async throws {
        do {
            let store = try await open()
            try await store.createToken(TokenRecord(id: "tok1", name: "old", secretDigest: Array(repeating: 1, count: 32), isAdmin: true,
                                                    limits: TenantLimits(), createdAt: at(1)))
        }
        // The file as the build before the mark left it.
        let queue = try DatabaseQueue(path: path)
        try await queue.write { db in
            try db.execute(sql: """
                DELETE FROM settings WHERE name = 'tokens_created';
                DELETE FROM grdb_migrations WHERE identifier = 'v13-tokens-created-mark';
                """)
        }
        try queue.close()
        let migrated = try await open()
        let marks = try await migrated.pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM settings WHERE name = 'tokens_created'") }
        #expect(marks == 1, "marked by the migration, before any revoke")
    }

    /// A database a newer Spool migrated is refused, as PostgreSQL's is, and left as it is
    /// (found by attacking the build: it started and took submits into a schema it did not know).
    @Test func aDatabaseMigratedByANewerSpoolIsRefused() async throws {
        let store = try await open()
        let job = try await store.create(makeJob())
        let queue = try DatabaseQueue(path: path)
        try await queue.write { db in
            try db.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('v99-from-the-future')")
        }
        try queue.close()
        await #expect {
            try await self.open()
        } throws: { error in
            "\(error)".contains("migrated by a newer Spool (v99-from-the-future)")
        }
        let reopened = try DatabaseQueue(path: path)
        #expect(try await reopened.read { db in try String.fetchOne(db, sql: "SELECT id FROM jobs") } == job.id.rawValue)
        try reopened.close()
    }

    /// A caller that must not upgrade a database (the token commands, beside a server that may run
    /// an earlier Spool on it) is refused one an earlier Spool made, and leaves it as it is; a new
    /// one is made as usual (found by attacking an upgrade: `spool token` migrated the database
    /// under the running server, which then ignored the new token's caps).
    @Test func aCallerThatMustNotUpgradeIsRefusedAnOlderDatabase() async throws {
        let store = try await open()
        _ = try await store.create(makeJob())
        try await store.pool.write { db in try db.execute(sql: "DELETE FROM grdb_migrations WHERE identifier = 'v16-array-operations'") }
        try store.pool.close()
        await #expect {
            let again = try SQLiteJobStore(path: self.path)
            try await again.prepare(upgrading: false)
        } throws: { error in
            "\(error)".contains("was made by an earlier Spool") && "\(error)".contains("start this version's server on it first")
        }
        let reopened = try DatabaseQueue(path: path)
        #expect(try await reopened.read { db in
            try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations").contains("v16-array-operations")
        } == false, "left as it was")
        try reopened.close()
        let fresh = try SQLiteJobStore(path: directory.path + "/fresh.sqlite")
        try await fresh.prepare(upgrading: false)   // nothing there yet: made whole
    }

    @Test func fileInAMissingDirectoryIsStorageUnavailable() async throws {
        let missing = directory.path + "/no/such/dir/spool.sqlite"
        await #expect {
            let store = try SQLiteJobStore(path: missing)
            try await store.prepare()
        } throws: { error in
            (error as? StoreError)?.code == .storageUnavailable
        }
    }

    @Test func fileThatIsNotADatabaseIsReportedAsCorrupt() async throws {
        try Data(repeating: 0x5A, count: 8192).write(to: URL(fileURLWithPath: path))
        await #expect {
            let store = try SQLiteJobStore(path: path)
            try await store.prepare()
            _ = try await store.queuedCount()
        } throws: { error in
            (error as? StoreError)?.code == .corrupt
        }
    }

    /// Cancelling or deleting a big array is done some tasks at a time, each their own
    /// transaction: a submit made meanwhile is stored between two of them, instead of waiting
    /// for the whole array (found measuring: at 10,000 tasks a submit waited 0.5 s behind a cancel,
    /// 0.25 s behind a delete). A task that starts between two chunks is asked to stop by its own.
    /// At either end of the indices too (found in review: a chunk's cursor starting at Int64.min
    /// passed over the task with that index, which then ran, and was never deleted).
    @Test(arguments: [0, Int64.min, Int64.max - 24])
    func aBigArraysCancelAndDeleteLetOtherWritesInBetweenTheirChunks(first: Int64) async throws {
        let store = try await open()
        store.arrayChunkSize.store(10, ordering: .relaxed)
        let array = ArraySpec.newID()
        _ = try await store.enqueueArray(tasks(array, count: 25, first: first), limits: QueueLimits())
        let gaps = Mutex<[(ended: Int, submitted: Bool, claimed: Job?)]>([])
        store.arrayChunkGap.withLock {
            $0 = {
                // Between two chunks: a submit is stored at once, the cancel (or delete) unfinished;
                // and, the first time, a claim: the next task (index 10) starts.
                let ended = try? await store.arraySummary(array)?.counts[.canceled]
                let submitted = (try? await store.enqueue(makeJob()).created) != nil
                let claimed = gaps.withLock { $0.isEmpty } ? try? await store.claimNext(for: SlotID(0), now: at(1_500)) : nil
                gaps.withLock { $0.append((ended ?? 0, submitted, claimed)) }
            }
        }
        let canceled = try await store.cancelArray(array, by: nil, now: at(2_000))
        #expect(canceled.count == 25)
        #expect(gaps.withLock { $0.map(\.ended) } == [10, 19], "the cancel's chunks: 10, 10 (one of them running: asked to stop), 5")
        #expect(gaps.withLock { $0.allSatisfy(\.submitted) })
        // The task that started between two chunks is asked to stop by the next one.
        let started = try #require(gaps.withLock { $0.first?.claimed })
        #expect(started.array?.index == first + 10)
        let stopping = try #require(try await store.job(started.id))
        #expect(stopping.state == .running && stopping.cancelRequested)
        #expect(try await store.arraySummary(array)?.counts[.canceled] == 24)

        guard case .notEnded(1) = try await store.deleteArray(array) else {
            Issue.record("an array with a task still running was deleted")
            return
        }
        _ = try await store.finish(started.id, attempt: 1, outcome: .signaled(signal: SIGTERM), now: at(3_000), claimNextFor: nil)
        gaps.withLock { $0 = [] }
        guard case .deleted(let deleted) = try await store.deleteArray(array) else {
            Issue.record("the array was not deleted")
            return
        }
        #expect(deleted.count == 25 && Set(deleted).count == 25)
        #expect(gaps.withLock { $0.count } == 2, "the delete's chunks: 10, 10, 5")
        #expect(try await store.pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM jobs WHERE array_id = ?", arguments: [array]) } == 0)
        #expect(gaps.withLock { $0.allSatisfy(\.submitted) })
        #expect(try await store.arraySummary(array) == nil)
    }

    /// A cancel that fails after its first chunk says which tasks it did cancel: the running
    /// ones among them are still to be stopped by the caller (found in review: the list was
    /// dropped with the error, and a task asked to stop ran on). Cancelling again does the rest.
    @Test func aBigArraysCancelThatFailsPartWaySaysWhatItCanceled() async throws {
        let store = try SQLiteJobStore(path: path, fileCheckInterval: .zero)   // every write checks the file
        try await store.prepare()
        store.arrayChunkSize.store(10, ordering: .relaxed)
        let array = ArraySpec.newID()
        _ = try await store.enqueueArray(tasks(array, count: 25), limits: QueueLimits())
        let running = try #require(try await store.claimNext(for: SlotID(0), now: at(1_000)))
        #expect(running.array?.index == 0)
        let aside = path + ".aside"
        store.arrayChunkGap.withLock {
            $0 = { [path] in _ = rename(path, aside) }   // the database file gone between two chunks
        }
        do {
            _ = try await store.cancelArray(array, by: "ann", now: at(2_000))
            Issue.record("the cancel went through with its database file gone")
        } catch let interrupted as ArrayCancelInterrupted {
            #expect(interrupted.canceled.map { $0.array?.index } == Array(0..<10).map { Optional(Int64($0)) })
            #expect(interrupted.canceled.first?.cancelRequested == true, "the running task, asked to stop")
            #expect((interrupted.cause as? StoreError) != nil, "\(interrupted.cause)")
        }
        store.arrayChunkGap.withLock { $0 = nil }
        #expect(rename(aside, path) == 0)
        let again = try await SQLiteJobStore(path: path)
        try await again.prepare()
        // Left unfinished, by whom (a restart finishes it: `Scheduler.finishArrayOperations`).
        #expect(try await again.arrayOperations() == [ArrayOperation(array: array, kind: .cancel, actor: "ann")])
        #expect(try await again.cancelArray(array, by: "ann", now: at(3_000)).count == 16, "the 15 left, and the running one again")
        #expect(try await again.arraySummary(array)?.counts == [.canceled: 24, .running: 1])
        #expect(try await again.arrayOperations() == [], "finished")
    }

    /// The same for a delete: one cut short is on record until a delete finishes it, and a
    /// delete under way is on record while it runs (a submit under the array's key is told so).
    @Test func aBigArraysDeleteThatFailsPartWayIsOnRecordUntilFinished() async throws {
        let store = try SQLiteJobStore(path: path, fileCheckInterval: .zero)
        try await store.prepare()
        store.arrayChunkSize.store(10, ordering: .relaxed)
        let array = ArraySpec.newID()
        _ = try await store.enqueueArray(tasks(array, count: 25), limits: QueueLimits())
        _ = try await store.cancelArray(array, by: nil, now: at(2_000))
        // The request deleting it is dropped (its task cancelled) after the first chunk.
        let seen = Mutex<[ArrayOperation]>([])
        let deleting = Mutex<Task<ArrayDeleteResult, any Error>?>(nil)
        store.arrayChunkGap.withLock {
            $0 = {
                let underWay = (try? await store.arrayOperations()) ?? []
                seen.withLock { $0 = underWay }
                while deleting.withLock({ $0 }) == nil { await Task.yield() }
                deleting.withLock { $0 }?.cancel()
            }
        }
        let task = Task { try await store.deleteArray(array) }
        deleting.withLock { $0 = task }
        await #expect(throws: (any Error).self) { _ = try await task.value }
        #expect(seen.withLock { $0 } == [ArrayOperation(array: array, kind: .delete, actor: nil)], "under way")
        store.arrayChunkGap.withLock { $0 = nil }
        let again = try await SQLiteJobStore(path: path)
        try await again.prepare()
        #expect(try await again.arrayOperations() == [ArrayOperation(array: array, kind: .delete, actor: nil)])
        #expect(try await again.arraySummary(array)?.size == 15, "the highest ten went first")
        guard case .deleted(let rest) = try await again.deleteArray(array) else {
            Issue.record("the rest was not deleted")
            return
        }
        #expect(rest.count == 15)
        #expect(try await again.arraySummary(array) == nil)
        #expect(try await again.arrayOperations() == [])
    }

    /// A cancel or delete left on record for an array whose id a new array takes (the same
    /// Idempotency-Key, the old array gone meanwhile) is not the new array's: storing it clears
    /// the record (found in review: the next start would have canceled or deleted the new array).
    @Test func aNewArrayUnderAnIdWithAnOperationLeftOnRecordClearsIt() async throws {
        let store = try await open()
        let array = ArraySpec.newID()
        try await store.pool.write { db in
            try db.execute(sql: "INSERT INTO array_operations (array_id, operation, actor) VALUES (?, 'cancel', 'ann'), (?, 'delete', NULL)",
                           arguments: [array, array])
        }
        #expect(try await store.arrayOperations().count == 2)
        _ = try await store.enqueueArray(tasks(array, count: 3), limits: QueueLimits())
        #expect(try await store.arrayOperations() == [])
    }

    /// An array's tasks get the fair-share tags, and the places, that submitting them one after
    /// another would give (the queue's head, the owner's last tag, where it is served): the queue
    /// is read for the first task only, and each task after it follows the one before.
    @Test func anArraysTasksAreTaggedAsOneSubmitAfterAnotherWouldBe() async throws {
        func seeded(_ name: String) async throws -> SQLiteJobStore {
            let store = try SQLiteJobStore(path: directory.path + "/\(name).sqlite")
            try await store.prepare()
            for (owner, weight) in [("a", 1.0), ("b", 2.0), ("b", 2.0), ("a", 1.0), ("c", 0.5)] {
                var job = makeJob()
                job.owner = owner
                job.shareWeight = weight
                _ = try await store.create(job)
            }
            _ = try #require(try await store.claimNext(for: SlotID(0), now: at(1_500)))   // where the queue is served
            return store
        }
        let array = ArraySpec.newID()
        let made = tasks(array, count: 6, owner: "b").map { task -> Job in
            var task = task
            task.shareWeight = 2
            return task
        }
        let whole = try await seeded("whole"), oneByOne = try await seeded("one-by-one")
        let positions = try await whole.enqueueArray(made, limits: QueueLimits()).map(\.position)
        var expectedPositions: [Int?] = []
        for task in made { expectedPositions.append(try await oneByOne.create(task).position) }
        #expect(positions == expectedPositions && positions.allSatisfy { $0 != nil })
        func tags(_ store: SQLiteJobStore) async throws -> [Int64] {
            try await store.pool.read { db in
                try Int64.fetchAll(db, sql: "SELECT fair_tag FROM jobs WHERE array_id = ? ORDER BY array_index", arguments: [array])
            }
        }
        let expected = try await tags(oneByOne)
        #expect(expected.count == 6 && Set(expected).count == 6)
        #expect(try await tags(whole) == expected)
    }

    /// A retention pass is many `deleteEnded` calls with one cutoff: each goes on from where the
    /// one before stopped, instead of reading again, from the oldest, the ended tasks of an array
    /// that cannot go yet (noticed in review: with a big open array, every call of a
    /// pass read all of its tasks, the write lock held meanwhile).
    @Test func aRetentionPassReadsAnOpenArraysTasksOnce() async throws {
        let store = try await open()
        let array = ArraySpec.newID()
        _ = try await store.enqueueArray(tasks(array, count: 1_500), limits: QueueLimits())
        _ = try #require(try await store.claimNext(for: SlotID(0), now: at(1_000)))   // one task runs on: the array stays
        _ = try await store.cancelArray(array, by: nil, now: at(2_000))   // the queued 1,499 end; the running one is asked to stop
        let singles = try await withThrowingTaskGroup(of: Job.self) { group in
            for _ in 0..<1_000 { group.addTask { try await store.create(makeJob()) } }
            return try await group.reduce(into: [Job]()) { $0.append($1) }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for job in singles { group.addTask { _ = try await store.cancel(job.id, now: at(3_000)) } }
            try await group.waitForAll()
        }
        var deleted = 0, calls = 0
        while true {
            let batch = try await store.deleteEnded(before: at(5_000), limit: 100)
            deleted += batch.count
            calls += 1
            if batch.count < 100 { break }
        }
        #expect(deleted == 1_000 && calls == 11)
        let read = store.retentionRowsRead.load(ordering: .relaxed)
        #expect(read < 3_000, "\(read) rows read by \(calls) calls (the array's 1,499 ended tasks once, the 1,000 jobs once)")
        #expect(try await store.arraySummary(array)?.size == 1_500)
        // A pass with a later cutoff starts over: the array, now whole, goes.
        _ = try await store.finish(try #require(try await store.arrayTasks(array, after: nil, limit: 1).first).id, attempt: 1,
                                   outcome: .succeeded, now: at(6_000), claimNextFor: nil)
        #expect(try await store.deleteEnded(before: at(7_000), limit: 100).count == 1_500)
    }
}

/// The durability setting reaches the connection that writes (GRDB's WAL set-up used to
/// override it with NORMAL).
@Suite struct SQLiteDurabilityTests {
    @Test(arguments: [SQLiteJobStore.Synchronous.full, .normal])
    func theWriterUsesTheConfiguredSynchronousMode(_ mode: SQLiteJobStore.Synchronous) async throws {
        let directory = try ScratchDirectory("spool-sync")
        let store = try SQLiteJobStore(path: directory.file("spool.sqlite"), synchronous: mode)
        defer { try? store.pool.close() }
        try await store.prepare()
        let applied = try await store.pool.write { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") }
        #expect(applied == (mode == .full ? 2 : 1))
    }

}
