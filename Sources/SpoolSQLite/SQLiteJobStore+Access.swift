import Glibc
import GRDB
import SpoolStore

/// How the store reaches its database: reads on GRDB's reader pool (in a transaction, or without
/// one where no snapshot is needed), writes through the write loop, and SQLite's errors turned
/// into `StoreError`s.
extension SQLiteJobStore {
    func read<T: Sendable>(_ what: String, _ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do { return try await pool.read(body) } catch { throw Self.translate(error, doing: what) }
    }

    /// A read with no transaction around it, where one snapshot for all its statements adds
    /// nothing (one statement, or an estimate worked out from a row): each statement reads what
    /// was committed when it runs. GRDB's read transaction prepares a `BEGIN` and a `COMMIT`
    /// anew each time, which cost a status `GET` about a fifth of its CPU.
    func readWithoutSnapshot<T: Sendable>(_ what: String, _ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do { return try await pool.unsafeRead(body) } catch { throw Self.translate(error, doing: what) }
    }

    /// `newWork`: the write adds work (a submit), which the disk's last room is not kept for
    /// (`drawingOnReserve`).
    func write<T: Sendable>(_ what: String, newWork: Bool = false, lingering: Duration? = nil,
                            _ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        if let problem = file.problem() { throw StoreError(.storageUnavailable, "could not \(what): \(problem)") }
        let output: any Sendable
        do {
            output = try await drawingOnReserve(what, newWork: newWork) { try await writes.submit({ db in try body(db) }, lingering: lingering) }
        } catch {
            throw Self.translate(error, doing: what, at: path)
        }
        guard let value = output as? T else { throw StoreError(.other, "could not \(what): a write answered \(type(of: output))") }
        return value
    }

    /// SQLite errors become `StoreError`s here and nowhere else.
    /// `path`: the database file, when the caller has it: an I/O error on a disk with no room
    /// left (SQLite says only "disk I/O error" when it cannot make its `-wal` or `-shm` file)
    /// is then named as the full disk it is.
    static func translate(_ error: any Error, doing what: String, at path: String? = nil) -> any Error {
        if error is StoreError { return error }
        guard let error = error as? DatabaseError else { return error }
        switch error.resultCode {
        case .SQLITE_FULL: return StoreError(.storageUnavailable, "could not \(what): the disk is full")
        case .SQLITE_IOERR where path.map(Self.hasNoRoom) == true, .SQLITE_CANTOPEN where path.map(Self.hasNoRoom) == true:
            return StoreError(.storageUnavailable, "could not \(what): the disk is full (\(error.message ?? "storage error"))")
        case .SQLITE_READONLY, .SQLITE_IOERR, .SQLITE_CANTOPEN, .SQLITE_PERM:
            return StoreError(.storageUnavailable, "could not \(what): \(error.message ?? "storage error") (\(error.resultCode))")
        case .SQLITE_CORRUPT, .SQLITE_NOTADB:
            return StoreError(.corrupt, "could not \(what): the job database is damaged (\(error.message ?? ""))")
        default:
            return StoreError(.other, "could not \(what): \(error.message ?? "\(error.resultCode)")")
        }
    }

    /// Whether the file system holding `path` has less than 64 KiB left for this user.
    static func hasNoRoom(_ path: String) -> Bool {
        freeBytes(at: path).map { $0 < 64 * 1024 } ?? false
    }

    /// Bytes free for this user on the file system holding `path`'s directory.
    static func freeBytes(at path: String) -> UInt64? {
        var status = statvfs()
        let directory = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        guard statvfs(directory.isEmpty ? "/" : directory, &status) == 0 else { return nil }
        return UInt64(status.f_bavail) * UInt64(status.f_frsize)
    }
}
