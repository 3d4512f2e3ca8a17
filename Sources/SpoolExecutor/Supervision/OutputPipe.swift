import Glibc
import NIOCore
import NIOPosix
import SpoolCore
import Synchronization
import SystemPackage

/// A child's stdout and stderr, as one pipe the server makes: their lines reach the log in the
/// order they were written, and for a warm worker the server can put a fence in the stream
/// behind everything the worker wrote so far.
///
/// A worker's output and its messages are two pipes, read apart, so its `succeeded` can be
/// read before the last line it printed (the kit flushes stdout first). When it says a job
/// ended, the server writes a fresh marker into the output pipe (`fence`); the reader hands
/// on the bytes before it as the job's, and the job ends once the marker comes through
/// (`OutputFence`). A pipe is first in, first out, and a write of at most `PIPE_BUF` bytes is
/// never interleaved with another.
///
/// Like `MessageChannel`, the server keeps write ends of its own until `closeWriter`, once the
/// child and everything it started are gone: the reader then gets what is still buffered and
/// end-of-file.
final class OutputPipe: Sendable {
    /// The write end the child gets as its stdout and stderr: blocking, as programs expect
    /// (close-on-exec here; the spawn duplicates it onto 1 and 2).
    let childEnd: Int32
    private let reader: Mutex<Int32>
    /// The write ends the server holds: `childEnd`, and a second open of the same pipe that does
    /// not block, for the marker (the flag belongs to an open, and the child's must block).
    private let writers: Mutex<(child: Int32, fence: Int32)>

    /// `fences`: the pipe takes fences (a warm worker's); else `fence` always returns nil.
    init(fences: Bool) throws(ExecutorError) {
        // Close-on-exec from birth, so no process started meanwhile, by anything, holds a write
        // end and keeps end-of-file away.
        let ends: [Int32]
        do {
            let pipe = try FileDescriptor.pipe(options: .closeOnExec)
            ends = [pipe.readEnd.rawValue, pipe.writeEnd.rawValue]
        } catch {
            throw ExecutorError("cannot make the child's output pipe", errno: (error as? Errno)?.rawValue ?? EIO)
        }
        _ = fcntl(ends[0], F_SETFL, fcntl(ends[0], F_GETFL) | O_NONBLOCK)
        // Without /proc there are no fences (-1): output is handed on as it comes.
        let fence = fences ? open("/proc/self/fd/\(ends[1])", O_WRONLY | O_NONBLOCK | O_CLOEXEC) : -1
        reader = Mutex(ends[0])
        childEnd = ends[1]
        writers = Mutex((child: ends[1], fence: fence))
    }

    /// Reads until end-of-file (after `closeWriter`) or until the task is cancelled, calling
    /// `handle` with each chunk as it comes.
    func read(_ handle: @escaping @Sendable ([UInt8]) async -> Void) async {
        let descriptor = reader.withLock { descriptor in
            defer { descriptor = -1 }   // NIO owns it from here
            return descriptor
        }
        await readPipe(descriptor) { buffer in await handle(Array(buffer.readableBytesView)) }
    }

    /// Writes a fresh marker behind everything written so far, whole; nil when it could not
    /// (the pipe takes no fences, is full or closed, or there was no /proc to open it with): then
    /// there is no fence to wait for.
    func fence() -> [UInt8]? {
        var marker = Array("\u{0}spool-fence-".utf8)
        // One draw, 16 hex digits (each draw is a getrandom(2) call; one per digit was 16 a job).
        var random = SystemRandomNumberGenerator()
        let bits = random.next() as UInt64
        let hex = Array("0123456789abcdef".utf8)
        for digit in 0..<16 { marker.append(hex[Int(bits >> UInt64(digit * 4) & 15)]) }
        marker.append(0)
        let written = writers.withLock { writers in
            guard writers.fence >= 0 else { return false }
            while true {
                let result = marker.withUnsafeBytes { Glibc.write(writers.fence, $0.baseAddress, $0.count) }
                if result < 0 && errno == EINTR { continue }
                return result == marker.count
            }
        }
        return written ? marker : nil
    }

    /// Drops the server's write ends: the reader sees end-of-file once the child's are gone too.
    func closeWriter() {
        writers.withLock { writers in
            for descriptor in [writers.child, writers.fence] where descriptor >= 0 { close(descriptor) }
            writers = (child: -1, fence: -1)
        }
    }

    /// Closes whatever is still open.
    func remove() {
        closeWriter()
        reader.withLock { descriptor in
            if descriptor >= 0 { close(descriptor) }
            descriptor = -1
        }
    }
}

/// Reads a non-blocking pipe's read end through NIO's event loop, taking ownership of it,
/// until end-of-file or until the task is cancelled; `handle` gets each buffer as it comes.
/// True when it read to end-of-file.
@discardableResult
func readPipe(_ descriptor: Int32, _ handle: (ByteBuffer) async -> Void) async -> Bool {
    guard descriptor >= 0 else { return false }
    do {
        let channel = try await NIOPipeBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .takingOwnershipOfDescriptor(input: descriptor) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        try await channel.executeThenClose { inbound, _ in
            for try await buffer in inbound { await handle(buffer) }
        }
        return true
    } catch {
        // Cancelled (the drain ran out of time) or the pipe failed: what was read is handled.
        return false
    }
}
