import Dispatch
import Foundation
import Glibc
import Synchronization

/// Appends one run's stdout and stderr to its job's log file, up to a size cap, on a private serial
/// queue: callers hand over bytes and go on (no blocking write on the caller's thread). Past
/// the cap one notice is written and the rest is dropped while the pipes keep being drained,
/// so a chatty job can neither fill the disk nor stall on a full pipe.
final class LogSink: @unchecked Sendable {
    // `descriptor` and `written` are touched only on `queue` — or by `close` once no write is
    // queued or running and none can start (`traffic`).
    private let queue: DispatchQueue
    private var descriptor: Int32
    private var written: Int
    /// The notice is written: everything after it is dropped.
    private var truncated = false
    /// Bytes the file could not take (a full disk, an I/O error): in all, since the last notice
    /// of it in the log, and the last error. Found by attacking the build: a job's output while
    /// the disk was full vanished without a word (its log read empty, the job succeeded).
    private var lost = 0, unnoted = 0, lossError: Int32 = 0
    private let limit: Int
    /// Where the log is: written again there at the close if the job removed it or gave it a
    /// second name while it ran (`displaced`).
    private let path: String
    /// The folder the log was opened in (device, inode): a displaced log is written again there only.
    private let folderAtOpen: (dev: UInt, ino: UInt)
    /// `write(2)`, or a test's stand-in for a disk that fills up.
    private let writeFile: @Sendable (Int32, UnsafeRawPointer, Int) -> Int
    /// Writes handed to `queue` and not done yet, and whether the sink is closed (later writes
    /// are dropped, as they always were).
    private let traffic = Mutex<(pending: Int, closed: Bool)>((0, false))

    init(path: String, limit: Int,
         writeFile: @escaping @Sendable (Int32, UnsafeRawPointer, Int) -> Int = { Glibc.write($0, $1, $2) }) throws(ExecutorError) {
        self.writeFile = writeFile
        self.path = path
        // Read too: a log the job displaced is copied back from here (`restore`).
        descriptor = JobFiles.openInJob(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC)
        guard descriptor >= 0 else { throw ExecutorError("cannot open the log file \(path)", errno: errno) }
        var folder = stat()
        folderAtOpen = lstat((path as NSString).deletingLastPathComponent, &folder) == 0 ? (folder.st_dev, folder.st_ino) : (0, 0)
        // One sink per run of the job: each has the cap to itself, counted from where it begins
        // (found by attacking the build: counted from the file's size, an attempt that filled the
        // log left the next, the one that decided the job, no room for a line).
        written = 0
        self.limit = limit
        queue = DispatchQueue(label: "spool.log")
    }

    func write(_ bytes: [UInt8]) {
        let accepted = traffic.withLock { traffic in
            guard !traffic.closed else { return false }
            traffic.pending += 1
            return true
        }
        guard accepted else { return }
        queue.async {
            self.append(bytes)
            self.traffic.withLock { $0.pending -= 1 }
        }
    }

    func note(_ text: String) {
        write(Array("[spool] \(text)\n".utf8))
    }

    /// Returns once every write handed over so far is done.
    func drain() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in queue.async { continuation.resume() } }
    }

    /// Output the log file could not take: how much, and why.
    struct Loss: Sendable, Equatable {
        var bytes: Int
        var error: String
        var sentence: String { "\(bytes) bytes of the job's output could not be written to its log (\(error))" }
    }

    /// Flushes what was handed over, then closes the file; says what output it could not write
    /// (the log says so too, if it can still take the notice). With nothing in flight (a quiet
    /// job, or one whose output was written by the time it ended) the file is closed right here,
    /// without a round trip through the queue on the path that records the job's end.
    @discardableResult
    func close() async -> Loss? {
        let (first, idle) = traffic.withLock { traffic in
            defer { traffic.closed = true }
            return (!traffic.closed, traffic.pending == 0)
        }
        if idle {
            // Only the first close touches the file here; a second one has nothing left to wait for.
            guard first else { return nil }
            // (A log to write again is copied on the queue, off the caller's thread.)
            if !displaced() { return finishFile() }
        }
        return await withCheckedContinuation { (continuation: CheckedContinuation<Loss?, Never>) in
            queue.async { continuation.resume(returning: self.finishFile()) }
        }
    }

    /// On `queue`, or with nothing queued: the notice of a loss not noted yet, then the close.
    private func finishFile() -> Loss? {
        guard descriptor >= 0 else { return nil }
        noteLoss()
        if displaced() { restore() }
        _ = Glibc.close(descriptor)
        descriptor = -1
        return lost == 0 ? nil : Loss(bytes: lost, error: String(cString: strerror(lossError)))
    }

    /// Whether the log's name no longer leads to this file alone: the job removed or replaced it
    /// (its default working directory is the job's, which holds the log: `rm -rf ./*` to clean up),
    /// or gave it a second name (a hard-link snapshot, `cp -al .`), and the API serves a log of
    /// one name only. Found by attacking the build: the job's whole log was gone, or refused.
    private func displaced() -> Bool {
        var own = stat(), named = stat()
        guard descriptor >= 0, fstat(descriptor, &own) == 0 else { return false }
        guard lstat(path, &named) == 0 else { return true }
        return own.st_ino != named.st_ino || own.st_dev != named.st_dev || own.st_nlink != 1
    }

    /// The most of a displaced log written again: its last bytes, so a job that appended without
    /// end through a second name costs no more than this at its end.
    private var restoreLimit: Int { max(limit, 1 << 20) * 4 }

    /// Writes the log again under its name, from this descriptor (the file the job removed, or
    /// the one it linked, which keeps its other name), with a notice at its end: a new file put in
    /// its place, in the folder the log was opened in — through no link a job left there, and not
    /// into a folder put in its place (`directory`). Best effort: with the folder gone, nowhere.
    private func restore() {
        let folder = (path as NSString).deletingLastPathComponent, name = (path as NSString).lastPathComponent
        let directory = open(folder, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard directory >= 0 else { return }
        defer { Glibc.close(directory) }
        var folderNow = stat(), own = stat()
        guard fstat(directory, &folderNow) == 0, folderNow.st_dev == folderAtOpen.dev, folderNow.st_ino == folderAtOpen.ino,
              folderNow.st_nlink > 0, fstat(descriptor, &own) == 0 else { return }
        let temporary = name + ".restoring"
        unlinkat(directory, temporary, 0)
        let copy = openat(directory, temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
        guard copy >= 0 else { return }
        func put(_ bytes: some Collection<UInt8>) -> Bool { StandardStreams.write(bytes, to: copy) == nil }
        let size = Int(own.st_size)
        var offset = off_t(max(0, size - restoreLimit))
        var copied = offset == 0 || put("[spool] the first \(offset) bytes of this log are left out\n".utf8)
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var last = UInt8(ascii: "\n")
        while copied {
            let read = buffer.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, $0.count, offset) }
            if read < 0 && errno == EINTR { continue }
            guard read > 0 else {
                copied = read == 0
                break
            }
            copied = put(buffer[..<read])
            last = buffer[read - 1]
            offset += off_t(read)
        }
        let notice = Array(((last == UInt8(ascii: "\n") ? "" : "\n")
                            + "[spool] the job removed its log file or gave it another name while it ran: written again here from what the server kept\n").utf8)
        if copied { copied = put(notice) }
        Glibc.close(copy)
        if !copied || renameat(directory, temporary, directory, name) != 0 { unlinkat(directory, temporary, 0) }
    }

    /// Writes the notice of bytes lost since the last one, if the file takes it now.
    private func noteLoss() {
        guard unnoted > 0 else { return }
        let notice = Array("\n[spool] \(unnoted) bytes of the job's output could not be written here (\(String(cString: strerror(lossError))))\n".utf8)
        if writeAll(notice) == nil { unnoted = 0 }
    }

    /// Writes all of `bytes`; on an error, how many were left unwritten (and `errno` says why).
    private func writeAll(_ bytes: some Collection<UInt8>) -> Int? {
        Array(bytes).withUnsafeBytes { raw -> Int? in
            var offset = 0
            while offset < raw.count {
                let result = writeFile(descriptor, raw.baseAddress! + offset, raw.count - offset)
                if result < 0 {
                    if errno == EINTR { continue }
                    return raw.count - offset
                }
                offset += result
            }
            return nil
        }
    }

    private func append(_ bytes: [UInt8]) {
        guard descriptor >= 0, !truncated, !bytes.isEmpty else { return }
        let chunk = bytes.prefix(max(0, limit - written))
        noteLoss()
        if let left = writeAll(chunk) {
            lossError = errno
            lost += left
            unnoted += left
        }
        written += chunk.count
        if chunk.count < bytes.count {
            // Once, whether the cap was passed inside a chunk or reached exactly by the one before.
            truncated = true
            let notice = Array("\n[spool] log truncated: the job printed more than \(limit) bytes; the rest was dropped\n".utf8)
            notice.withUnsafeBytes { raw in _ = Glibc.write(descriptor, raw.baseAddress!, raw.count) }
        }
    }
}
