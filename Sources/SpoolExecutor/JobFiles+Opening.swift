import Glibc
import SpoolCore

/// Opening what lies in a job's directory. A job runs as the server's user and may put anything
/// where its files were — a symbolic link, a hard link to a file elsewhere, a FIFO — and swap it
/// at any moment: the server opens such a file once (never through a link at its end, never
/// waiting on a FIFO), checks the open file, and works from that descriptor.
extension JobFiles {
    /// The regular file at `path`, open for reading, with its status; nil for anything else (a
    /// link at its end, a FIFO, a directory, a device) or when it cannot be opened. `singleLink`:
    /// not a hard link to a file elsewhere either. The caller closes the descriptor.
    public static func openRegularFile(_ path: String, singleLink: Bool) -> (descriptor: Int32, status: stat)? {
        let descriptor = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        var status = stat()
        guard fstat(descriptor, &status) == 0, isOwnFile(status, singleLink: singleLink) else {
            close(descriptor)
            return nil
        }
        return (descriptor, status)
    }

    /// A regular file, and (`singleLink`) one with no other name.
    private static func isOwnFile(_ status: stat, singleLink: Bool) -> Bool {
        (status.st_mode & S_IFMT) == S_IFREG && (!singleLink || status.st_nlink == 1)
    }

    /// Up to `limit` bytes of a job's regular file (`openRegularFile`); nil for anything else,
    /// or when it cannot be read.
    public static func contents(of path: String, limit: Int, singleLink: Bool = true) -> [UInt8]? {
        guard let (descriptor, status) = openRegularFile(path, singleLink: singleLink) else { return nil }
        defer { close(descriptor) }
        let wanted = min(limit, Int(status.st_size) + 1)   // one past its size: a file that grew says so
        var buffer = [UInt8](repeating: 0, count: wanted)
        var count = 0
        while count < wanted {
            let got = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress! + count, wanted - count) }
            if got < 0 && errno == EINTR { continue }
            guard got > 0 else { break }
            count += got
        }
        return Array(buffer.prefix(count))
    }

    /// Opens a file of a job's directory as a file of the job's own: never through a symbolic
    /// link, never a hard link to a file elsewhere (`O_TRUNC` would cut it, an append would write
    /// into it), never a FIFO (an open would wait for its other end). Whatever else the job put
    /// at `path` is removed and the file made (with `O_CREAT`) in its place. `O_TRUNC` is applied
    /// once the file is known to be the job's.
    static func openInJob(_ path: String, _ flags: Int32) -> Int32 {
        let truncating = flags & O_TRUNC != 0
        let safe = (flags & ~O_TRUNC) | O_NOFOLLOW | O_NONBLOCK
        var descriptor = open(path, safe, 0o644)
        if descriptor >= 0 {
            var status = stat()
            guard fstat(descriptor, &status) == 0 else { close(descriptor); return -1 }
            if !isOwnFile(status, singleLink: true) {
                close(descriptor)
                descriptor = -1
                errno = ELOOP   // replaced below, like a symbolic link
            }
        }
        if descriptor < 0 {
            // A symbolic link (ELOOP), a FIFO with no reader (ENXIO), or what was refused above.
            guard errno == ELOOP || errno == ENXIO, flags & O_CREAT != 0, unlink(path) == 0 else { return -1 }
            descriptor = open(path, safe | O_EXCL, 0o644)
            guard descriptor >= 0 else { return -1 }
        }
        _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) & ~O_NONBLOCK)
        if truncating, ftruncate(descriptor, 0) != 0 {
            let code = errno
            close(descriptor)
            errno = code
            return -1
        }
        return descriptor
    }

    /// Whether `path` is a directory itself, not a link to one.
    public static func isRealDirectory(_ path: String) -> Bool {
        var status = stat()
        return lstat(path, &status) == 0 && (status.st_mode & S_IFMT) == S_IFDIR
    }

    /// Whether the job's directory and its outputs folder are still the directories the server
    /// made, not links a job put in their place: only then is what lies under them the job's to
    /// serve. (A job racing its own reads could still swap them between this look and the open;
    /// it runs as the server's user and could read those files itself.)
    public static func holdsItsOwnOutputs(_ paths: JobPaths) -> Bool {
        isRealDirectory(paths.directory) && isRealDirectory(paths.outputs)
    }
}
