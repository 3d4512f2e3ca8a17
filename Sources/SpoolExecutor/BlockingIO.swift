import NIOPosix

/// Runs blocking file-system work (mkdir, small writes, /proc scans) on NIO's thread pool
/// for blocking I/O, never on an event loop or the cooperative pool's threads.
public enum BlockingIO {
    public static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await NIOThreadPool.singleton.runIfActive(body)
    }
}
