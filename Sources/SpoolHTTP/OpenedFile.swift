import Foundation
import Hummingbird
import NIOCore
import NIOPosix
import SpoolExecutor

/// A job's file (its log, an output), opened once and served from that descriptor: never
/// through a link at its end, never waiting on a FIFO, and only while it is a regular file. A
/// job runs as the server's user and may swap what lies at a path at any moment; a check of the
/// path followed by an open of the path again (a FIFO swapped in between) left an open waiting
/// for a writer on the shared blocking pool, and every file route of the server behind it
/// (found by attacking the build). Blocking: open on a thread pool.
final class OpenedFile: @unchecked Sendable {
    let descriptor: Int32
    let size: Int
    /// Validators from the open file's inode, size and modification time.
    let download: Download

    private init(descriptor: Int32, status: stat) {
        self.descriptor = descriptor
        size = Int(status.st_size)
        let nanoseconds = Int64(status.st_mtim.tv_sec) * 1_000_000_000 + Int64(status.st_mtim.tv_nsec)
        let tag = [UInt64(status.st_ino), UInt64(status.st_size), UInt64(bitPattern: nanoseconds)].map { String($0, radix: 36) }
        download = Download(etag: "\"" + tag.joined(separator: "-") + "\"", lastModified: Int(status.st_mtim.tv_sec), size: size)
    }

    deinit { _ = Glibc.close(descriptor) }

    /// The regular file at `path`, open for reading; nil for anything else (a link at its end, a
    /// FIFO, a directory, a device) or when it cannot be opened. `singleLink`: not a hard link to
    /// a file elsewhere either (a log the job could have linked to any file of the server's user).
    static func open(_ path: String, singleLink: Bool = false) -> OpenedFile? {
        JobFiles.openRegularFile(path, singleLink: singleLink).map { OpenedFile(descriptor: $0.descriptor, status: $0.status) }
    }

    /// `range` of the file as a response body, read in chunks on NIO's blocking pool. The
    /// descriptor closes when the last holder (this body, once written or dropped) lets go.
    func body(_ range: ClosedRange<Int>, chunk: Int = 128 * 1024) -> ResponseBody {
        ResponseBody(contentLength: range.count) { [self] writer in
            var offset = range.lowerBound
            while offset <= range.upperBound {
                let (wanted, at) = (min(chunk, range.upperBound - offset + 1), offset)
                let bytes = try await NIOThreadPool.singleton.runIfActive { self.read(wanted, at: at) }
                guard !bytes.isEmpty else { break }   // the file shrank: what there was
                try await writer.write(ByteBuffer(bytes: bytes))
                offset += bytes.count
            }
            try await writer.finish(nil)
        }
    }

    /// Up to `count` bytes at `offset` (fewer at the end of the file); empty on an error.
    private func read(_ count: Int, at offset: Int) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let read = buffer.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress! + got, count - got, off_t(offset + got)) }
            if read < 0 && errno == EINTR { continue }
            guard read > 0 else { break }
            got += read
        }
        return Array(buffer.prefix(got))
    }
}
