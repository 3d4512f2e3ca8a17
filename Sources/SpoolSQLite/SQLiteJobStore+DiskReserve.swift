import Foundation
import GRDB
import Logging
import SpoolStore
import Synchronization

/// Room kept for what must be written when the disk fills up: how running jobs end, cancels,
/// deletes (which free space), events.
///
/// Why: with the disk full, every write failed alike — a job that succeeded stayed `running`
/// until space came back, and a graceful restart meanwhile recovered it as `failed`/`interrupted`;
/// a `DELETE` that would have freed the job's files answered 503 (both found by attacking the
/// build). Two things were used up by then: the write-ahead log's preallocated frames (taken by
/// submits that still fitted in them, while checkpoints could no longer grow the file to take
/// them out), and the file's pages. So:
/// - **new work stops first**: a submit finds the disk full by `statvfs` (less than
///   `lowWaterBytes` left, read at most every `diskCheckInterval`) or by SQLite's `SQLITE_FULL`,
///   and is refused (503) without writing, which leaves the log's frames to the writes below;
/// - **a reserve in the file**: rows of zeros (`disk_reserve`, 1 MiB each) are deleted the first
///   time the disk is found full, so the file has free pages for those writes and for the
///   checkpoints that empty the log into it — pages inside the file, which no other process on
///   the disk can take. A write that fails on a full disk before that (SQLite said so first) is
///   tried once more after the release.
///
/// From the release until the disk has room to write the reserve back (checked at most every
/// `refillInterval`, by the submits refused meanwhile and by `/healthz`), submits are refused.
/// Deleting the rows writes only the free-list's pages (`secure_delete` is off for that
/// statement); writing them back is one 1-MiB transaction a row, so the log keeps its size.
struct DiskReserve {
    /// Rows the full reserve has (each `rowBytes`); 0: none is kept.
    var rows = 0
    /// Rows in the table now, as far as this store knows.
    var present = 0
    /// Times the reserve was released (a write compares the count before and after it failed, so
    /// one release serves all the writes of a failed batch).
    var releases = 0
    /// The disk was found full and the reserve is not whole again: new work is refused.
    var drawnOn = false
    /// No refill is tried before this (the disk had no room at the last try).
    var nextRefill: ContinuousClock.Instant?
    /// When the disk's free space was last read for a submit, and whether it was below the mark.
    var diskCheckedAt: ContinuousClock.Instant?
    /// A refill is under way (one at a time: two would write twice the rows).
    var refilling = false

    static let rowBytes = 1 << 20
    /// Less free space than this is a full disk for new work.
    static let lowWaterBytes: UInt64 = 1 << 20
    /// Room the disk must have beyond the missing rows before they are written back.
    static let headroomBytes: UInt64 = 8 << 20
    static let refillInterval: Duration = .seconds(5)
    static let diskCheckInterval: Duration = .milliseconds(250)
}

extension SQLiteJobStore {
    /// The reserve the server keeps unless configured otherwise (`sqlite_disk_reserve_mb`).
    public static let defaultDiskReserveMiB = 8

    /// Writes the reserve's missing rows, one transaction each, when the disk has room for them
    /// and `headroom` more (`atStart`: the missing bytes and 4 MiB, so opening a database on a
    /// nearly full disk does not fill it; after a release: the missing bytes twice and 8 MiB, so
    /// the reserve does not come and go); stops at the first row the disk cannot take. One refill
    /// at a time; one overtaken by a release (the disk full again meanwhile) leaves the state to
    /// it. Whole again: new work is taken again.
    func refillReserve(atStart: Bool = false) async {
        guard let (wanted, releases) = reserve.withLock({ state -> (Int, Int)? in
            guard state.rows > 0, !state.refilling else { return nil }
            state.refilling = true
            return (state.rows, state.releases)
        }) else { return }
        var rows = 0
        var counted = false
        do {
            rows = try await pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM disk_reserve") ?? 0 }
            counted = true
            let missing = UInt64(max(wanted - rows, 0) * DiskReserve.rowBytes)
            let needed = atStart ? missing + (4 << 20) : missing * 2 + DiskReserve.headroomBytes
            if missing > 0, Self.freeBytes(at: path).map({ $0 >= needed }) ?? false {
                while rows < wanted, reserve.withLock({ $0.releases }) == releases {
                    try await pool.write { db in
                        try db.execute(sql: "INSERT INTO disk_reserve (bytes) VALUES (zeroblob(?))", arguments: [DiskReserve.rowBytes])
                    }
                    rows += 1
                }
            }
        } catch {
            if !Self.isFull(error, at: path) {
                logger.warning("could not write the database's reserve for a full disk", metadata: ["error": "\(error)"])
            }
        }
        let whole = rows >= wanted
        let wasDrawnOn = reserve.withLock { state -> Bool in
            state.refilling = false
            guard counted, state.releases == releases else { return false }   // a release came meanwhile: its state stands
            let was = state.drawnOn
            state.present = rows
            if whole { state.drawnOn = false }
            state.nextRefill = whole ? nil : ContinuousClock.now + DiskReserve.refillInterval
            return was
        }
        if whole, wasDrawnOn {
            logger.notice("the disk has room again: the database's reserve is whole, and submits are taken again")
        }
    }

    /// Why new work is refused now, or nil: the disk is full (just found so: the reserve is
    /// released), or was and has not room enough to make the reserve whole again (the refill is
    /// tried when it may go through).
    func reserveProblem() async -> String? {
        if !reserve.withLock({ $0.drawnOn }) {
            guard diskIsFull() else { return nil }
            await releaseReserve(after: nil)
        } else if refillDue() {
            await refillReserve()
            guard reserve.withLock({ $0.drawnOn }) else { return nil }
        }
        return "the disk holding the job database is full: its remaining room is kept for recording how running jobs end, "
            + "not for new jobs (free some space: deleting ended jobs or their files does)"
    }

    public func storageProblem() async -> String? { await reserveProblem() }

    /// Whether the disk has less than `lowWaterBytes` left, read at most every `diskCheckInterval`
    /// (no store with no reserve, which keeps no watch either).
    private func diskIsFull() -> Bool {
        let now = ContinuousClock.now
        let due = reserve.withLock { state -> Bool in
            guard state.rows > 0, state.diskCheckedAt.map({ now - $0 >= DiskReserve.diskCheckInterval }) ?? true else { return false }
            state.diskCheckedAt = now
            return true
        }
        return due && (Self.freeBytes(at: path).map { $0 < DiskReserve.lowWaterBytes } ?? false)
    }

    /// Whether a refill may be tried now (it checks the disk's room itself). Either way the next
    /// look is an interval away (so submits arriving together start one refill, not one each).
    private func refillDue() -> Bool {
        let now = ContinuousClock.now
        return reserve.withLock { state -> Bool in
            guard state.nextRefill.map({ now >= $0 }) ?? true else { return false }
            state.nextRefill = now + DiskReserve.refillInterval
            return true
        }
    }

    /// Runs `operation`. New work is refused instead while the disk is full (`reserveProblem`).
    /// Anything else that fails because the disk is full is run once more after the reserve is
    /// released (unless it was released since this began: then at once).
    func drawingOnReserve<T>(_ what: String, newWork: Bool, _ operation: () async throws -> T) async throws -> T {
        if newWork, let problem = await reserveProblem() { throw StoreError(.storageUnavailable, "could not \(what): \(problem)") }
        let seen = reserve.withLock { $0.releases }
        do {
            return try await operation()
        } catch where Self.isFull(error, at: path) {
            let freed = await releaseReserve(after: seen)
            guard !newWork, freed else { throw error }
            return try await operation()
        }
    }

    /// Deletes the reserve's rows, the disk being full, unless that was done since `seen` (when
    /// given). Returns whether room was freed, now or since `seen`; from here new work is refused.
    @discardableResult
    private func releaseReserve(after seen: Int?) async -> Bool {
        let mine = reserve.withLock { state -> Bool in
            state.nextRefill = ContinuousClock.now + DiskReserve.refillInterval
            guard state.rows > 0, seen == nil || state.releases == seen, state.present > 0 || !state.drawnOn else { return false }
            state.releases += 1
            state.drawnOn = true
            return true
        }
        guard mine else { return reserve.withLock { $0.releases } != seen }
        do {
            let freed = try await pool.writeWithoutTransaction { db -> Int in
                // Only the free list's pages are written (not the rows' zeros again); the
                // connection's own setting comes back after.
                let secure = try Int.fetchOne(db, sql: "PRAGMA secure_delete") ?? 0
                try db.execute(sql: "PRAGMA secure_delete = OFF")
                defer { try? db.execute(sql: "PRAGMA secure_delete = \(secure)") }
                var freed = 0
                try db.inTransaction(.immediate) {
                    try db.execute(sql: "DELETE FROM disk_reserve")
                    freed = db.changesCount
                    return .commit
                }
                return freed
            }
            reserve.withLock { $0.present = 0 }
            logger.critical("""
                the disk holding the job database is full: submits answer 503 until it has room again, and \(freed) MiB \
                kept in the database is released to record how jobs end
                """)
            return freed > 0
        } catch {
            logger.error("could not release the database's reserve on a full disk", metadata: ["error": "\(error)"])
            return false
        }
    }

    /// Whether `error` is SQLite saying the disk is full (`SQLITE_FULL`, or an I/O error while
    /// the disk has no room: SQLite says only "disk I/O error" when its `-wal` cannot grow).
    static func isFull(_ error: any Error, at path: String) -> Bool {
        guard let error = error as? DatabaseError else { return false }
        switch error.resultCode {
        case .SQLITE_FULL: return true
        case .SQLITE_IOERR, .SQLITE_CANTOPEN: return hasNoRoom(path)
        default: return false
        }
    }
}
