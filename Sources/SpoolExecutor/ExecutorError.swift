import Glibc

/// Something the executor could not do before the job's process started.
public struct ExecutorError: Error, Sendable, CustomStringConvertible {
    public var description: String
    /// The data directory cannot take the job's files — its file system is full (ENOSPC, or the
    /// owner's quota: EDQUOT) or read-only (EROFS), or, for the job's own directory,
    /// `dataDirectory` errors: gone or not writable (ENOENT, EACCES, EPERM: found by attacking the
    /// build, an agent whose data directory went failed every job it claimed). The job is not at
    /// fault, and goes back to the queue instead of failing.
    public var dataDirectoryUnusable = false
    /// How it is unusable, in words: "is full" or "cannot be written".
    public var dataDirectoryFault: String { code == ENOSPC || code == EDQUOT ? "is full" : "cannot be written" }
    /// The server itself is short of what a start needs: file descriptors (EMFILE, ENFILE: event
    /// streams and downloads hold many) or processes (EAGAIN: its user's limit, a cgroup's
    /// `pids.max`, which a job's own forks may use up). The job is not at fault, and goes back to
    /// the queue instead of failing (found by attacking the build: every job that came due failed
    /// for good, `spawn_failed`, and the queue drained in milliseconds). Not ENOMEM: the job's own
    /// `execve` may fail so for good (a binary too big for the memory it may have).
    public var serverShort: Bool { [EMFILE, ENFILE, EAGAIN].contains(code) }
    /// What it is short of, in words.
    public var shortOf: String { code == EAGAIN ? "processes" : "file descriptors" }
    private var code: Int32 = 0

    public init(_ description: String) { self.description = description }

    /// `what` failed with the system error `code`, named in the description. `dataDirectory`: it
    /// made a directory of the data directory's own (a job's), so its parent's errors are the
    /// data directory's.
    public init(_ what: String, errno code: Int32, dataDirectory: Bool = false) {
        self.init("\(what): \(String(cString: strerror(code)))", code: code, dataDirectory: dataDirectory)
    }

    /// `description` as it is, for a failure whose system error was `code`.
    public init(_ description: String, code: Int32, dataDirectory: Bool = false) {
        self.description = description
        self.code = code
        dataDirectoryUnusable = code == ENOSPC || code == EDQUOT || code == EROFS
            || (dataDirectory && (code == ENOENT || code == EACCES || code == EPERM))
    }
}
