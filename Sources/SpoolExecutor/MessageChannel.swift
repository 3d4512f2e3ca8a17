import Glibc
import NIOCore
import NIOPosix
import SpoolCore

/// The job → server message channel: a FIFO at `$SPOOL_MESSAGES`, read through NIO's event
/// loop (non-blocking). The server opens it read-write, so the FIFO never reports end-of-file
/// when a writer closes and a job may open and close it as often as it likes.
struct MessageChannel {
    static let maxLineBytes = 4096

    /// Creates the FIFO (replacing a stale one from a crashed run).
    static func create(at path: String) throws(ExecutorError) {
        unlink(path)
        guard mkfifo(path, 0o600) == 0 else {
            throw ExecutorError("cannot create the message FIFO \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// Reads lines until the task is cancelled, calling `handle` with each one.
    static func read(from path: String, handle: @escaping @Sendable ([UInt8]) async -> Void) async throws {
        let descriptor = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC)
        guard descriptor >= 0 else { throw ExecutorError("cannot open the message FIFO \(path): \(String(cString: strerror(errno)))") }
        let channel = try await NIOPipeBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .takingOwnershipOfDescriptor(input: descriptor) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        try await channel.executeThenClose { inbound, _ in
            var pending: [UInt8] = []
            var discarding = false
            for try await buffer in inbound {
                for byte in buffer.readableBytesView {
                    if byte == UInt8(ascii: "\n") {
                        if !discarding && !pending.isEmpty { await handle(pending) }
                        pending.removeAll(keepingCapacity: true)
                        discarding = false
                    } else if !discarding {
                        pending.append(byte)
                        if pending.count > maxLineBytes { pending.removeAll(); discarding = true }
                    }
                }
            }
        }
    }
}
