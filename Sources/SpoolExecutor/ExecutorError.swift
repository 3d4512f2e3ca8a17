/// Something the executor could not do before the job's process started.
public struct ExecutorError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
