import Glibc

/// Something the executor could not do before the job's process started.
public struct ExecutorError: Error, Sendable, CustomStringConvertible {
    public var description: String
    /// The data directory's file system is full (ENOSPC, or the owner's quota: EDQUOT): the job
    /// is not at fault, and goes back to the queue instead of failing.
    public var dataDirectoryFull = false

    public init(_ description: String) { self.description = description }

    /// `what` failed with the system error `code`, named in the description.
    public init(_ what: String, errno code: Int32) {
        description = "\(what): \(String(cString: strerror(code)))"
        dataDirectoryFull = code == ENOSPC || code == EDQUOT
    }
}
