import Glibc
import SpoolCore

/// A job's files for a run after an earlier one: its outputs emptied, its log marked and kept
/// bounded.
extension JobFiles {
    /// Readies a job's files for a run after an earlier one (a retry, or a run handed back by a
    /// shutdown or a quarantine: `Prepared.reused`), once they are in place (blocking):
    /// its outputs folder is emptied of what an earlier attempt left there — a partial file
    /// before it failed, or before the server stopped — which are not this attempt's (found by
    /// attacking the build: a job retried after a failure listed them as its outputs); its log,
    /// which keeps every attempt's lines, gets a line saying where this attempt begins.
    ///
    /// Each run may write `logLimit` bytes, and a job may run more often than its attempts (a
    /// run handed back — a failed worker setup, a quarantine, a shutdown — counts none), so the
    /// log is kept to `logLimit × (maxAttempts + 2)`: a run that could take it past that first
    /// drops the oldest output, leaving the last `logLimit × maxAttempts` bytes after a line
    /// that says so (found in review: a job handed back again and again grew its log without bound).
    static func beginLaterAttempt(_ paths: JobPaths, attempt: Int, logLimit: Int, maxAttempts: Int) throws(ExecutorError) {
        if entries(of: paths.outputs)?.isEmpty == false {
            guard removeTree(paths.outputs), mkdir(paths.outputs, 0o755) == 0 else {
                throw ExecutorError("cannot empty \(paths.outputs) of an earlier attempt's files", errno: errno)
            }
        }
        try trimLog(paths, logLimit: logLimit, maxAttempts: maxAttempts)
        let log = openInJob(paths.log, O_RDWR | O_APPEND | O_CLOEXEC)
        guard log >= 0 else { throw ExecutorError("cannot open \(paths.log)", errno: errno) }
        defer { close(log) }
        let size = lseek(log, 0, SEEK_END)
        guard size > 0 else { return }
        var last: UInt8 = 0
        let ended = pread(log, &last, 1, size - 1) == 1 && last == UInt8(ascii: "\n")
        let line = Array(((ended ? "" : "\n") + "--- attempt \(attempt) ---\n").utf8)
        let written = Glibc.write(log, line, line.count)
        // A short write sets no errno: the disk is full.
        guard written == line.count else { throw ExecutorError("cannot write \(paths.log)", errno: written < 0 ? errno : ENOSPC) }
    }

    /// Drops the oldest output of a log that one more run could take past
    /// `logLimit × (maxAttempts + 2)`, keeping its last `logLimit × maxAttempts` bytes behind a
    /// line that says how much went, and where the kept bytes stand in all the job wrote
    /// (`LogBase`). Written as a new file renamed over the log, so a reader's open descriptor
    /// holds one log or the other, each with its own notice, never a mix (found in review: an
    /// in-place cut, with its base in a file beside the log, could be read half before it); the
    /// notice is also kept in `log.cut` first, so that a line the job wrote is never taken for
    /// one (found by attacking the build: a job that printed an old log's first line moved every
    /// reader's offsets).
    static func trimLog(_ paths: JobPaths, logLimit: Int, maxAttempts: Int) throws(ExecutorError) {
        let path = paths.log
        let runs = max(1, maxAttempts)
        let (keep, keepOverflow) = logLimit.multipliedReportingOverflow(by: runs)
        let (cap, capOverflow) = logLimit.multipliedReportingOverflow(by: runs + 2)
        guard !keepOverflow, !capOverflow else { return }
        let log = openInJob(path, O_RDONLY | O_CLOEXEC)
        guard log >= 0 else { throw ExecutorError("cannot open \(path)", errno: errno) }
        defer { close(log) }
        let size = Int(lseek(log, 0, SEEK_END))
        guard size > cap - logLimit else { return }
        var dropped = size - keep
        // From the start of a line, if one starts soon after (the byte before the cut on).
        var head = [UInt8](repeating: 0, count: 4096)
        let read = head.withUnsafeMutableBytes { pread(log, $0.baseAddress, $0.count, off_t(dropped - 1)) }
        if read > 0, let newline = head[0..<read].firstIndex(of: UInt8(ascii: "\n")), newline < size - dropped { dropped += newline }
        // Byte `dropped` of this file is byte `first` of all the job wrote.
        let before = LogBase.read(log, cut: JobFiles.contents(of: paths.logCut, limit: LogBase.noticeLimit)) ?? LogBase(first: 0, notice: 0)
        let first = before.first + max(0, dropped - before.notice)
        let notice = Array((LogBase.noticePrefix + "\(first): \(dropped) bytes of earlier runs' output were dropped here: "
                            + "a job's log keeps \(runs + 2) runs' worth of log_limit_bytes at most\n").utf8)
        let next = path + ".trim"
        let out = openInJob(next, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC)
        guard out >= 0 else { throw ExecutorError("cannot write \(next)", errno: errno) }
        var closed = false
        defer { if !closed { close(out); unlink(next) } }
        func failed() -> ExecutorError { ExecutorError("cannot trim the log \(path)", errno: errno == 0 ? ENOSPC : errno) }
        errno = 0
        guard Glibc.write(out, notice, notice.count) == notice.count else { throw failed() }
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var from = dropped
        while from < size {
            let count = buffer.withUnsafeMutableBytes { pread(log, $0.baseAddress, min($0.count, size - from), off_t(from)) }
            guard count > 0 else { throw failed() }
            guard buffer.withUnsafeBytes({ Glibc.write(out, $0.baseAddress, count) }) == count else { throw failed() }
            from += count
        }
        closed = true
        guard close(out) == 0 else {
            unlink(next)
            throw failed()
        }
        // The notice beside the log, then the log under its name.
        let cut = paths.logCut + ".new"
        let side = openInJob(cut, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC)
        guard side >= 0 else {
            unlink(next)
            throw ExecutorError("cannot write \(cut)", errno: errno)
        }
        let wrote = Glibc.write(side, notice, notice.count)
        guard close(side) == 0, wrote == notice.count, rename(cut, paths.logCut) == 0, rename(next, path) == 0 else {
            unlink(next)
            unlink(cut)
            throw failed()
        }
    }
}

/// Where a job's log file stands in all the job ever wrote, so that log offsets count every
/// byte written and a follower keeps its place when the log is cut at its head (found by
/// attacking the build: an offset still under the cut log's size pointed into other bytes).
/// A cut log begins with the cut's notice, `[spool] log offset FIRST: …` (`notice` bytes, its
/// line); the byte after it is byte `first` of everything written. Read from the same open file
/// as the bytes it places, and taken only when `log.cut` holds the same line (a job's own line
/// that looks like one is not). Both are 0 for a log never cut.
public struct LogBase: Sendable, Equatable {
    public var first: Int
    public var notice: Int

    public init(first: Int, notice: Int) {
        self.first = first
        self.notice = notice
    }

    static let noticePrefix = "[spool] log offset "
    /// The longest notice line read.
    public static let noticeLimit = 512

    /// The base a log's first bytes give (a cut's notice line), else 0 0.
    public static func parse(_ head: some Collection<UInt8>) -> LogBase {
        let prefix = Array(noticePrefix.utf8)
        guard head.starts(with: prefix), let newline = head.firstIndex(of: UInt8(ascii: "\n")) else { return LogBase(first: 0, notice: 0) }
        let digits = head.dropFirst(prefix.count).prefix { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
        guard !digits.isEmpty, digits.count <= 15, let first = Int(String(decoding: digits, as: UTF8.self)) else { return LogBase(first: 0, notice: 0) }
        return LogBase(first: first, notice: head.distance(from: head.startIndex, to: newline) + 1)
    }

    /// The base of a log whose first bytes are `head`, given its last cut's notice (`log.cut`,
    /// nil when it was never cut); nil when the two disagree — a cut happened between the two
    /// reads: read both again.
    public static func verified(head: some Collection<UInt8>, cut: [UInt8]?) -> LogBase? {
        guard let cut else { return LogBase(first: 0, notice: 0) }
        guard head.starts(with: cut) else { return nil }
        let base = parse(cut)
        return base.notice == cut.count ? base : nil
    }

    /// The base of the log open at `descriptor` (blocking: one read of its first bytes).
    public static func read(_ descriptor: Int32, cut: [UInt8]?) -> LogBase? {
        var head = [UInt8](repeating: 0, count: noticeLimit)
        let count = head.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, $0.count, 0) }
        return verified(head: head.prefix(max(0, count)), cut: cut)
    }

    /// The offset, among every byte written, just past a log file of `size` bytes.
    public func end(ofFileSized size: Int) -> Int { first + max(0, size - notice) }

    /// Where in the file the byte at `offset` (among every byte written) is; nil when it was cut
    /// away, or lies past `size`. Offset 0 (a reader's first read) is the file's start.
    public func position(of offset: Int, inFileSized size: Int) -> Int? {
        if offset == 0 { return 0 }
        guard offset >= first, offset <= end(ofFileSized: size) else { return nil }
        return offset - first + notice
    }
}
