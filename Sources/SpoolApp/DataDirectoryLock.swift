import Glibc
import SpoolCore

/// One server per data directory: an exclusive `flock` on `DATA_DIR/spool.lock`, held for the
/// life of the process (the kernel drops it if the process dies, even by `kill -9`). Two
/// servers on one SQLite file would each "recover" the other's running jobs.
///
/// The server's guard (`GuardProcess`) shares the lock (one open file description), so it is
/// held until both are gone: after a crash, until the guard has killed the jobs the server left.
/// A server started meanwhile waits for that (up to `guardPatience`) rather than failing.
struct DataDirectoryLock: ~Copyable {
    let descriptor: Int32

    /// How long a start waits for the lock while the server that holds it is gone (its guard is
    /// stopping what it left running).
    static let guardPatience: Duration = .seconds(15)

    /// Takes the lock; `waiting` is called once if it must wait for a dead server's guard.
    init(directory: String, waiting: (String) -> Void = { _ in }) async throws {
        let path = directory + "/spool.lock"
        descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw ConfigurationError("cannot open \(path): \(String(cString: strerror(errno)))")
        }
        let deadline = ContinuousClock.now.advanced(by: Self.guardPatience)
        var said = false
        while flock(descriptor, LOCK_EX | LOCK_NB) != 0 {
            let owner = Self.readOwner(descriptor)
            // The pid in the file is the server's; when it is gone, its guard holds the lock a moment.
            let ownerGone = owner.flatMap { Int32($0) }.map { kill($0, 0) != 0 && errno == ESRCH } ?? false
            guard ownerGone, ContinuousClock.now < deadline else {
                close(descriptor)
                throw ConfigurationError("another spool server\(owner.map { " (pid \($0))" } ?? "") is using the data directory \(directory)"
                    + (ownerGone ? ", or its guard process is still stopping the jobs it left" : "") + "; stop it or pass another --data-dir")
            }
            if !said {
                waiting("waiting for the guard of the last server (pid \(owner ?? "?")) to stop the jobs that server left running")
                said = true
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(descriptor, 0)
        _ = pid.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, 0) }
    }

    /// Closes this process's descriptor: the lock goes once the guard, which shares it, is gone
    /// too (at once after a clean stop; after killing what was left otherwise).
    func release() {
        close(descriptor)
    }

    static func readOwner(_ descriptor: Int32) -> String? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let count = buffer.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { return nil }
        let text = String(decoding: buffer[0..<count], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return text.isEmpty ? nil : text
    }
}
