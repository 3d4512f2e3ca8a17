import Glibc

/// Room for the write-ahead log, written once at start-up, so that commits overwrite blocks the
/// file already has instead of appending to it.
///
/// Why: `fdatasync` after an append must also write the inode (the file's size and new blocks);
/// after an overwrite it writes the data alone. On this project's test machine that is 0.16 ms
/// against 0.08 ms per sync, and every acknowledged submit, claim and end waits for one. SQLite
/// appends to a fresh WAL until a checkpoint lets it start over from the beginning (after
/// `wal_autocheckpoint` pages, about 4 MB), and a fresh WAL comes with every start, since SQLite
/// deletes it when the last connection closes. PostgreSQL preallocates and recycles its WAL
/// segments for the same reason.
///
/// Safe because of how SQLite reads a WAL: a frame counts only if its salt matches the header's
/// and its checksum continues the chain, so recovery stops at the first zeroed frame (and a
/// zeroed header means an empty log). Only bytes past the current end are written, while the
/// caller holds the writer, so no frame SQLite wrote is touched.
enum WALReserve {
    /// The size the WAL reaches before SQLite starts it over: a checkpoint's worth of frames
    /// (`checkpointPages`, each a 24-byte header and a page) after the 32-byte file header, and
    /// room for the commit that crosses the line.
    static func size(pageSize: Int, checkpointPages: Int) -> Int {
        32 + (max(checkpointPages, 0) + 128) * (24 + pageSize)
    }

    /// Writes zeros from the end of the WAL at `path` up to `bytes`, then syncs them. Best effort:
    /// with no WAL yet, or no room on the disk, it leaves the file as it was (the log then grows
    /// as it would have) and says why.
    @discardableResult
    static func extend(_ path: String, to bytes: Int) -> Outcome {
        let descriptor = open(path, O_WRONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return .skipped(errno) }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { return .skipped(errno) }
        let original = Int(status.st_size)
        guard original < bytes else { return .alreadyThere }
        let zeros = [UInt8](repeating: 0, count: 1 << 18)
        var offset = original
        while offset < bytes {
            let count = min(zeros.count, bytes - offset)
            let written = zeros.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, count, off_t(offset)) }
            if written < 0, errno == EINTR { continue }
            guard written > 0 else { return undo(descriptor, to: original) }
            offset += written
        }
        guard fdatasync(descriptor) == 0 else { return undo(descriptor, to: original) }
        return .extended(from: original)
    }

    private static func undo(_ descriptor: Int32, to size: Int) -> Outcome {
        let reason = errno
        _ = ftruncate(descriptor, off_t(size))
        return .skipped(reason)
    }

    enum Outcome: Equatable {
        case extended(from: Int)
        case alreadyThere
        /// Left as it was; the `errno` that stopped it.
        case skipped(Int32)
    }
}
