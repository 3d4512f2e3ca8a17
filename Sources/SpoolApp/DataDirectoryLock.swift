import Foundation
import Glibc
import SpoolCore
import SpoolExecutor

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
    static let guardPatience: Duration = .seconds(30)

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
            // The file names the server (its pid) or, once the server is gone, its guard
            // (`guard PID`), which holds the lock while it stops what the server left.
            let owner = Self.readOwner(descriptor) ?? ""
            let guardPID = owner.hasPrefix("guard ") ? Int32(owner.dropFirst(6)) : nil
            let serverGone = Int32(owner).map { !Self.isRunning($0) } ?? false
            guard guardPID != nil || serverGone, ContinuousClock.now < deadline else {
                close(descriptor)
                // A live server's own guard is no one to name (found by attacking the build: a second
                // start on a directory in use blamed the running server's guard, "of a server that is gone").
                let found = guardPID == nil && (serverGone || owner.isEmpty) ? Self.guards(of: directory).first : nil
                let who = (guardPID ?? found?.pid).map { "the guard (pid \($0)) of a spool server that is gone" }
                    ?? "another spool server\(owner.isEmpty ? "" : " (pid \(owner))")"
                throw ConfigurationError("\(who) is using the data directory \(directory)"
                    + (guardPID != nil || serverGone ? " and has not let go of it in \(Self.guardPatience)" : "") + "; stop it or pass another --data-dir")
            }
            if !said {
                waiting("waiting for the guard of the last server to stop the jobs that server left running (\(owner))")
                said = true
            }
            // A guard stopped (SIGSTOP) when its server died is woken by the kernel only when its
            // new parent is in another session; under a subreaper (tini, `docker run --init`) it
            // stays stopped, and every start waited, then named the dead server (found by
            // attacking the build). It is this directory's own guard: it is woken.
            for guardian in Self.guards(of: directory) where guardian.stopped { kill(guardian.pid, SIGCONT) }
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

    /// The live `spool guard --data-dir DIRECTORY` processes, and whether each is stopped.
    static func guards(of directory: String) -> [(pid: Int32, stopped: Bool)] {
        let marker = ["guard", "--data-dir", directory]
        return ProcessTree.numberedEntries(of: "/proc").compactMap { pid in
            guard pid != getpid(), let line = OrphanReaper.readFile("/proc/\(pid)/cmdline") else { return nil }
            let arguments = line.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
            guard arguments.count > 3, (1...(arguments.count - 3)).contains(where: { Array(arguments[$0..<($0 + 3)]) == marker }),
                  let state = OrphanReaper.statFields(of: pid)?.first, state != "Z", state != "X" else { return nil }
            return (pid, state == "T")
        }
    }

    /// Alive and not a zombie (a server its parent has not waited for yet is gone).
    static func isRunning(_ pid: Int32) -> Bool {
        guard pid > 0, kill(pid, 0) == 0 || errno == EPERM else { return false }
        guard let state = OrphanReaper.statFields(of: pid)?.first else { return true }
        return state != "Z" && state != "X"
    }

    static func readOwner(_ descriptor: Int32) -> String? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let count = buffer.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { return nil }
        let text = String(decoding: buffer[0..<count], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return text.isEmpty ? nil : text
    }
}
