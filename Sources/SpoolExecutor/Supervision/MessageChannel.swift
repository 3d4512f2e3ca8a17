import Glibc
import SpoolCore
import Synchronization

/// A child → server message channel: a FIFO the child writes lines to, read through NIO's
/// event loop (non-blocking).
///
/// The server opens the read end, and a write end of its own, *before* the child starts: the
/// FIFO then never reports end-of-file while the child runs, however often the child opens
/// and closes it. Once the child and everything it started are gone, `closeWriter` drops that
/// write end; the reader then gets what is still buffered and end-of-file, so the last lines a
/// child writes before exiting are never lost.
final class MessageChannel: Sendable {
    static let maxLineBytes = JobMessage.maxLineBytes

    let path: String
    private let reader: Mutex<Int32>
    private let writer: Mutex<Int32>
    /// The FIFO's identity, so `remove` never unlinks another channel's FIFO at the same path
    /// (a later attempt of the same job).
    private let identity: FileIdentity

    /// Creates the FIFO (replacing a stale one from a crashed run) and opens both ends. `made`:
    /// the caller has just made it with `makeFIFO` (ahead of the start); it is opened as it is,
    /// and made again only if it is gone or is not a FIFO.
    init(at path: String, made: Bool = false) throws(ExecutorError) {
        var reader: Int32 = -1
        if made {
            reader = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
            var status = stat()
            if reader >= 0, fstat(reader, &status) != 0 || (status.st_mode & S_IFMT) != S_IFIFO {
                close(reader)
                reader = -1
            }
        }
        if reader < 0 {
            try Self.makeFIFO(at: path)
            reader = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        }
        guard reader >= 0 else { throw ExecutorError("cannot open the message FIFO \(path)", errno: errno) }
        let writer = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC)
        guard writer >= 0 else {
            close(reader)
            throw ExecutorError("cannot open the message FIFO \(path)", errno: errno)
        }
        self.path = path
        self.reader = Mutex(reader)
        self.writer = Mutex(writer)
        identity = FileIdentity(descriptor: reader)
    }

    /// Makes a fresh FIFO at `path`, replacing whatever is there (a stale one from a crashed run).
    static func makeFIFO(at path: String) throws(ExecutorError) {
        unlink(path)
        guard mkfifo(path, 0o600) == 0 else {
            throw ExecutorError("cannot create the message FIFO \(path)", errno: errno)
        }
    }

    /// Reads lines until end-of-file (after `closeWriter`) or until the task is cancelled,
    /// calling `handle` with each line (without its newline). A line over `maxLineBytes` is
    /// handed over once, cut one byte past it (the parsers refuse it, and the log says why), and
    /// the rest of it is dropped.
    func read(_ handle: @escaping @Sendable ([UInt8]) async -> Void) async {
        let descriptor = reader.withLock { descriptor in
            defer { descriptor = -1 }   // NIO owns it from here
            return descriptor
        }
        var pending: [UInt8] = []
        var discarding = false
        let ended = await readPipe(descriptor) { buffer in
            for byte in buffer.readableBytesView {
                if byte == UInt8(ascii: "\n") {
                    if !discarding && !pending.isEmpty { await handle(pending) }
                    pending.removeAll(keepingCapacity: true)
                    discarding = false
                } else if !discarding {
                    pending.append(byte)
                    if pending.count > Self.maxLineBytes {
                        await handle(pending)
                        pending.removeAll()
                        discarding = true
                    }
                }
            }
        }
        if ended && !discarding && !pending.isEmpty { await handle(pending) }   // a last line without its newline, at end-of-file
    }

    /// Drops the server's write end: the reader sees end-of-file once the child's are gone too.
    func closeWriter() {
        writer.withLock { descriptor in
            if descriptor >= 0 { close(descriptor) }
            descriptor = -1
        }
    }

    /// Closes whatever is still open and removes the FIFO (if the path is still this one).
    func remove() {
        closeWriter()
        reader.withLock { descriptor in
            if descriptor >= 0 { close(descriptor) }
            descriptor = -1
        }
        identity.unlink(path)
    }
}

/// A file's device and inode: unlink a path only while it still names the file created.
struct FileIdentity: Sendable {
    let device: UInt64
    let inode: UInt64

    init(descriptor: Int32) {
        var status = stat()
        _ = fstat(descriptor, &status)
        device = UInt64(status.st_dev)
        inode = UInt64(status.st_ino)
    }

    func unlink(_ path: String) {
        var status = stat()
        guard stat(path, &status) == 0, UInt64(status.st_dev) == device, UInt64(status.st_ino) == inode else { return }
        Glibc.unlink(path)
    }
}

/// A server → child command channel (warm workers): a FIFO the server writes lines to. The
/// server holds it open read-write, so opening never blocks and writing never raises SIGPIPE
/// before the child has opened its end.
final class CommandChannel: Sendable {
    let path: String
    private let descriptor: Mutex<Int32>
    /// What was still unread when the channel was removed (the child gone): `unreadBytes` goes on
    /// answering it, so the worker can tell a job it died before reading from one it took.
    private let unreadAtRemoval = Atomic<Int>(0)
    private let identity: FileIdentity

    init(at path: String) throws(ExecutorError) {
        unlink(path)
        guard mkfifo(path, 0o600) == 0 else {
            throw ExecutorError("cannot create the command FIFO \(path)", errno: errno)
        }
        let descriptor = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC)
        guard descriptor >= 0 else { throw ExecutorError("cannot open the command FIFO \(path)", errno: errno) }
        self.path = path
        self.descriptor = Mutex(descriptor)
        identity = FileIdentity(descriptor: descriptor)
    }

    /// Writes a line of at most PIPE_BUF bytes in one non-blocking write, which a pipe performs
    /// whole or not at all; false (nothing written) when it is longer or the pipe has no room.
    func writeWhole(_ line: String) -> Bool {
        let bytes = Array(line.utf8)
        guard bytes.count <= Int(PIPE_BUF) else { return false }
        return descriptor.withLock { descriptor in
            guard descriptor >= 0 else { return false }
            while true {
                let result = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
                if result < 0 && errno == EINTR { continue }
                return result == bytes.count
            }
        }
    }

    /// Bytes in the FIFO that no one has read yet (the server holds it open read-write, so it can ask).
    func unreadBytes() -> Int {
        descriptor.withLock { descriptor in
            guard descriptor >= 0 else { return unreadAtRemoval.load(ordering: .relaxed) }
            return Self.unread(descriptor)
        }
    }

    private static func unread(_ descriptor: Int32) -> Int {
        var count: Int32 = 0
        return ioctl(descriptor, UInt(FIONREAD), &count) == 0 ? Int(count) : 0
    }

    /// Writes a line; waits (up to 10 s) while the pipe is full, then gives up.
    func send(_ line: String) async -> Bool {
        let bytes = Array(line.utf8)
        var offset = 0
        var waits = 0
        while offset < bytes.count {
            let (written, error) = descriptor.withLock { descriptor -> (Int, Int32) in
                guard descriptor >= 0 else { return (-1, EBADF) }
                let result = bytes[offset...].withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
                return (result, errno)
            }
            if written > 0 { offset += written; continue }
            // A full pipe means the child is not reading; give it a moment, then give up.
            guard error == EAGAIN || error == EINTR, waits < 10_000 else { return false }
            waits += 1
            try? await Task.sleep(for: .milliseconds(1))
        }
        return true
    }

    func remove() {
        descriptor.withLock { descriptor in
            if descriptor >= 0 {
                unreadAtRemoval.store(Self.unread(descriptor), ordering: .relaxed)
                close(descriptor)
            }
            descriptor = -1
        }
        identity.unlink(path)
    }
}
