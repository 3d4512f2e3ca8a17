import Foundation
import Synchronization

/// The job database file as the store opened it (its device and inode), checked at most once
/// per interval on the write path: a file removed or replaced under a running server takes
/// every later write with it (SQLite goes on writing to the open, unlinked file), so a job
/// accepted then would be gone at the next start. Once seen, writes stay refused: the store
/// must be reopened (a restart).
final class DatabaseFile: Sendable {
    private let path: String
    private let identity: (device: UInt64, inode: UInt64)?
    private let interval: Duration
    private let state = Mutex<(checkedAt: ContinuousClock.Instant?, problem: String?)>((nil, nil))

    init(path: String, checkEvery interval: Duration) {
        self.path = path
        self.interval = interval
        identity = Self.identity(of: path)
    }

    /// Why writes must stop, or nil while the file is the one opened.
    func problem() -> String? {
        guard let identity else { return nil }   // not a file (an in-memory database): nothing to check
        let now = ContinuousClock.now
        let due = state.withLock { state -> Bool in
            if state.problem != nil { return false }
            if let checkedAt = state.checkedAt, now - checkedAt < interval { return false }
            state.checkedAt = now
            return true
        }
        if due, Self.identity(of: path).map({ $0 != identity }) ?? true {
            state.withLock { state in
                state.problem = state.problem ?? "the job database \(path) was removed or replaced while the server ran; "
                    + "restart the server (jobs written since would be lost)"
            }
        }
        return state.withLock { $0.problem }
    }

    private static func identity(of path: String) -> (device: UInt64, inode: UInt64)? {
        var status = stat()
        guard stat(path, &status) == 0 else { return nil }
        return (UInt64(status.st_dev), UInt64(status.st_ino))
    }
}
