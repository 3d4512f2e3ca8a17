import Foundation
import GRDB
@testable import SpoolSQLite
import SpoolTestSupport
import Testing

/// The SQLite store's group commit: writes that arrive while a transaction commits share the
/// next one (a step that throws fails everything in its transaction, which shows who shared it),
/// the loop goes on after a failed transaction, and it lets the pool's other writers in between
/// its rounds.
@Suite final class WriteLoopTests {
    let directory: ScratchDirectory
    let pool: DatabasePool

    init() throws {
        directory = try ScratchDirectory("spool-writeloop")
        pool = try DatabasePool(path: directory.path + "/loop.sqlite")
        try pool.write { db in try db.execute(sql: "CREATE TABLE t (x INTEGER)") }
    }
    deinit { try? pool.close() }   // before the directory goes

    struct Refused: Error {}

    /// Submits a step that waits, inside its transaction, until the returned gate is opened;
    /// returns once the loop is in that transaction.
    func hold(_ loop: WriteLoop) async -> (gate: DispatchSemaphore, write: Task<any Sendable, any Error>) {
        let gate = DispatchSemaphore(value: 0), entered = DispatchSemaphore(value: 0)
        let write = Task {
            try await loop.submit { db in
                entered.signal()
                gate.wait()
                try db.execute(sql: "INSERT INTO t VALUES (0)")
                return 0
            }
        }
        await withCheckedContinuation { done in DispatchQueue.global().async { entered.wait(); done.resume() } }
        return (gate, write)
    }

    func insert(_ value: Int, _ loop: WriteLoop) -> Task<any Sendable, any Error> {
        Task {
            try await loop.submit { db in
                try db.execute(sql: "INSERT INTO t VALUES (?)", arguments: [value])
                return value
            }
        }
    }

    func queued(_ count: Int, _ loop: WriteLoop) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while loop.waiting < count {
            try #require(ContinuousClock.now < deadline, "\(count) writes queued behind the transaction")
            await Task.yield()
        }
    }

    func values() throws -> [Int] { try pool.read { db in try Int.fetchAll(db, sql: "SELECT x FROM t ORDER BY x") } }

    @Test func writesQueuedBehindACommitShareTheNextTransaction() async throws {
        let loop = WriteLoop(pool: pool)
        let (gate, first) = await hold(loop)
        // The loop is inside the first transaction: these two queue up behind it, together.
        let kept = insert(1, loop)
        let refused = Task { try await loop.submit { _ in throw Refused() } }
        try await queued(2, loop)
        gate.signal()
        #expect(try await first.value as? Int == 0)
        await #expect(throws: Refused.self) { try await kept.value }
        await #expect(throws: Refused.self) { try await refused.value }
        #expect(try values() == [0], "the insert rolled back with the step that failed beside it")
        #expect(try await insert(2, loop).value as? Int == 2, "the loop goes on after a failed transaction")
        #expect(try values() == [0, 2])
    }

    /// A transaction whose COMMIT fails (a deferred foreign key, checked only then) is rolled
    /// back: its writes fail, nothing of it stays, and the next transaction can begin.
    @Test func aCommitThatFailsIsRolledBackAndTheLoopGoesOn() async throws {
        try await pool.write { db in
            try db.execute(sql: """
                CREATE TABLE parent (id INTEGER PRIMARY KEY);
                CREATE TABLE child (parent INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)
                """)
        }
        let loop = WriteLoop(pool: pool)
        let orphan = Task {
            try await loop.submit { db in
                try db.execute(sql: "INSERT INTO t VALUES (1)")
                try db.execute(sql: "INSERT INTO child VALUES (99)")   // no parent 99: the COMMIT refuses it
                return 1
            }
        }
        await #expect(throws: (any Error).self) { try await orphan.value }
        #expect(try values().isEmpty, "nothing of the refused transaction stays")
        #expect(try await insert(2, loop).value as? Int == 2, "the loop goes on after a failed COMMIT")
        #expect(try values() == [2])
    }

    /// A step that ends the transaction under the loop (as SQLite does on some errors, which a
    /// step might swallow) fails its batch: the steps after it never write outside a transaction.
    @Test func aTransactionEndedInsideAStepFailsTheRestOfItsBatch() async throws {
        let loop = WriteLoop(pool: pool)
        let (gate, first) = await hold(loop)
        let ending = Task {
            try await loop.submit { db in
                try db.execute(sql: "INSERT INTO t VALUES (1)")
                try db.execute(sql: "ROLLBACK")
                return 1
            }
        }
        let after = insert(2, loop)
        try await queued(2, loop)
        gate.signal()
        #expect(try await first.value as? Int == 0)
        await #expect(throws: (any Error).self) { try await ending.value }
        await #expect(throws: (any Error).self) { try await after.value }
        #expect(try values() == [0], "nothing of that batch was written, in a transaction or outside one")
        #expect(try await insert(3, loop).value as? Int == 3, "the loop goes on")
    }

    /// A lingering write waits for another write and shares its transaction (the other's step
    /// throws, and the lingering one fails with it); nothing commits before that.
    @Test func aLingeringWriteRidesWithTheNextWrite() async throws {
        let loop = WriteLoop(pool: pool)
        let lingering = Task { try await loop.submit({ db in try db.execute(sql: "INSERT INTO t VALUES (1)"); return 1 }, lingering: .seconds(60)) }
        try await queued(1, loop)
        for _ in 0..<100 { await Task.yield() }
        #expect(try loop.waiting == 1 && values().isEmpty, "no transaction for it alone")
        let refused = Task { try await loop.submit { _ in throw Refused() } }
        await #expect(throws: Refused.self) { try await refused.value }
        await #expect(throws: Refused.self) { try await lingering.value }
        #expect(try values().isEmpty)
        #expect(try await insert(2, loop).value as? Int == 2, "the loop goes on")
    }

    /// With no other write to ride with, a lingering write commits alone once its time is up.
    @Test(.timeLimit(.minutes(1))) func aLingeringWriteWithNothingToRideWithCommitsAlone() async throws {
        let loop = WriteLoop(pool: pool)
        let lingering = Task { try await loop.submit({ db in try db.execute(sql: "INSERT INTO t VALUES (7)"); return 7 }, lingering: .milliseconds(20)) }
        #expect(try await lingering.value as? Int == 7)   // a miss waits here until the time limit
        #expect(try values() == [7])
    }

    @Test func otherWritersOfThePoolGetInBetweenRounds() async throws {
        let loop = WriteLoop(pool: pool, maxBatch: 1, maxRounds: 1)
        let (gate, first) = await hold(loop)
        let second = insert(2, loop)
        try await queued(1, loop)
        // Queued on the writer now, while the loop's first round runs: it goes before the second.
        pool.asyncWriteWithoutTransaction { db in try? db.execute(sql: "INSERT INTO t VALUES (1)") }
        gate.signal()
        _ = try await first.value
        _ = try await second.value
        let order = try await pool.read { db in try Int.fetchAll(db, sql: "SELECT x FROM t ORDER BY rowid") }
        #expect(order == [0, 1, 2], "the outside write went between the loop's two rounds")
    }
}
