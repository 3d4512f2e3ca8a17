import Glibc
import SpoolCore
import Synchronization

/// The files a job starts with, in either mode.
///
/// Creating a file is the dearest thing on a job's start path: 0.04–0.5 ms per file, directory
/// or FIFO on this project's build machines (reopening an existing file costs 4 µs, renaming a
/// directory 0.02 ms). Their ext4 has no journal, and then every new inode is looked for past
/// each one deleted in the last minutes, one buffer-cache lookup each: after a large delete a
/// `mkdir` took 0.12 ms and a file 0.26 ms, and in a run of tiny jobs three quarters of the
/// server's CPU went there. So:
/// - `prepareAhead` makes a job's files while the slot's current job still runs: the directory,
///   the outputs folder, `input.json`, an empty log, and in process mode the message FIFO;
/// - a job nothing looked ahead for (the first after the slot was idle) gets one of the slot's
///   spare directories renamed into place: one rename and the input written;
/// - a spare is made while the slot is idle (`keepSpare`), or is the directory of a job that
///   ended leaving nothing in it (`recycle`: an empty log, no outputs), whose inodes the next
///   job then reuses. Jobs that write nothing make no new inode but their FIFO.
public enum JobFiles {
    /// What `prepareAhead` made for a job.
    struct Prepared: Sendable {
        /// The message FIFO is there, fresh (process mode).
        var messages: Bool
        /// The job's directory was there already: an earlier run of the job (a retry, or one
        /// handed back by a shutdown or a quarantine) may have left files in its outputs
        /// (`beginLaterAttempt`).
        var reused = false
    }

    /// Job directories made by `prepareAhead` and not yet taken by a start.
    private static let ready = Mutex([String: Prepared]())

    /// The job's files, ahead of its start: the start then finds them there (`takeReady`). A
    /// failure is left for the start to find and report.
    static func prepareAhead(_ paths: JobPaths, input: JSONValue, slot: SlotID, messages: Bool = false) async {
        guard let reused = try? await make(paths, input: input, slot: slot, messages: messages) else { return }
        ready.withLock { ready in
            // A job looked at but never started (canceled, or overtaken) leaves its name here: bounded.
            if ready.count >= 256 { ready.removeAll() }
            ready[paths.directory] = Prepared(messages: messages, reused: reused)
        }
    }

    /// What `prepareAhead` made for this job, once (a second call says nil). Synchronous: an
    /// async call leaves the caller's actor and comes back, two thread hand-offs on every start.
    static func takeReady(_ paths: JobPaths) -> Prepared? {
        ready.withLock { $0.removeValue(forKey: paths.directory) }
    }

    /// The job's files (on the blocking pool), for a start that found none ready (`takeReady`):
    /// `slot`'s spare renamed into place when it has one that fits. `messages`: with the message
    /// FIFO, fresh (process mode). Whether the job's directory was there already (`Prepared.reused`).
    @discardableResult
    static func make(_ paths: JobPaths, input: JSONValue, slot: SlotID, messages: Bool) async throws -> Bool {
        let key = Spare(jobs: String(paths.directory.prefix(upTo: paths.directory.lastIndex(of: "/")!)), slot: slot)
        let spare = spares.withLock { $0.made[key]?.popLast() }
        let bytes = Array(input.canonicalText.utf8)
        let (placed, existed, failure) = try await BlockingIO.run { () -> (Bool, Bool, ExecutorError?) in
            // Never over an existing directory (an earlier attempt's): that start makes what is
            // missing. (`rename` would replace an empty one: a late look-ahead's, just made in
            // between, whose files then land in the spare; glibc's `renameat2` with
            // RENAME_NOREPLACE, which would refuse, is not in Swift's Glibc module.)
            let existed = access(paths.directory, F_OK) == 0
            let placed = spare.map { !existed && rename($0, paths.directory) == 0 } ?? false
            do throws(ExecutorError) { try makeFiles(paths, input: bytes, messages: messages) } catch { return (placed, existed, error) }   // in a spare: the input, the FIFO
            return (placed, existed, nil)
        }
        if let spare, !placed {
            // Still there: kept for the slot's next start, unless the slot has its fill of newer ones.
            let kept = spares.withLock { state in
                guard state.room(for: key) else { return false }
                state.made[key, default: []].append(spare)
                return true
            }
            if !kept { _ = try? await BlockingIO.run { removeTree(spare) } }
        }
        if let failure { throw failure }
        return existed
    }

    // MARK: - Spare directories

    /// A slot's spare directory (under a data directory's `jobs`).
    private struct Spare: Hashable {
        var jobs: String
        var slot: SlotID
    }

    private struct Spares {
        /// At most `perSlot` per slot, with those being made or recycled.
        var made: [Spare: [String]] = [:]
        var making: Set<Spare> = []
        var recycling: [Spare: Int] = [:]
        /// Data directories whose `jobs/.spare` was emptied of an earlier server's spares, or is
        /// being emptied (`clearing`: no spare is made there until that is done).
        var cleared: Set<String> = []
        var clearing: Set<String> = []
        var count = 0

        /// A slot keeps four: one going idle is made one (`keepSpare`) before its last job's
        /// directory can be recycled (once the job's end is recorded), and quiet jobs back to
        /// back give theirs back while the slot's next ones take them, on a loaded machine two
        /// or three at once (with room for two, a recycle that found two in flight left its
        /// directory on disk: 3 of 40 quiet jobs in two of eight runs beside two busy loops).
        static let perSlot = 4

        func room(for key: Spare) -> Bool {
            (made[key]?.count ?? 0) + (making.contains(key) ? 1 : 0) + recycling[key, default: 0] < Self.perSlot
        }

        /// Whether the spare about to be made in `jobs` is this server's first there, the one that
        /// first removes an earlier server's (left by a crash): then `jobs` is `clearing` until
        /// that is done. Whichever comes first does it: a slot going idle (`keepSpare`), or a
        /// job's directory given back (`recycle`) on a server busy since its start.
        mutating func startClearing(_ jobs: String) -> Bool {
            let clear = cleared.insert(jobs).inserted
            if clear { clearing.insert(jobs) }
            return clear
        }

        /// A new name under `jobs/.spare` (this server's).
        mutating func nextName(in jobs: String) -> String {
            count += 1
            return jobs + "/.spare/\(JobFiles.run)-\(count)"
        }
    }

    private static let spares = Mutex(Spares())
    /// Names this process's spares apart from an earlier server's (a pid repeats in a container).
    private static let run = String(UInt64.random(in: 0...UInt64.max), radix: 36)

    /// Makes `slot`'s spare job directory (`jobs/.spare/…`: the outputs folder, an empty log and
    /// input; the message FIFO is made at the start, in process mode) unless it has one: called
    /// when the slot has nothing started ahead (it went idle, or its next job is a warm
    /// worker's), so that its next plain start finds it. Best effort: a start without one makes
    /// its files itself.
    static func keepSpare(dataDirectory: String, slot: SlotID) async {
        let jobs = dataDirectory + "/jobs"
        let key = Spare(jobs: jobs, slot: slot)
        let claimed = spares.withLock { state -> (path: String, clear: Bool)? in
            guard state.made[key]?.isEmpty ?? true, !state.clearing.contains(jobs), !state.making.contains(key) else { return nil }
            let clear = state.startClearing(jobs)
            state.making.insert(key)
            return (state.nextName(in: jobs), clear)
        }
        guard let (path, clear) = claimed else { return }
        let made = (try? await BlockingIO.run { () -> Bool in
            if clear { removeTree(jobs + "/.spare") }
            guard mkdir(jobs + "/.spare", 0o755) == 0 || errno == EEXIST, mkdir(path, 0o755) == 0 else { return false }
            guard mkdir(path + "/outputs", 0o755) == 0,
                  write([], to: path + "/log.txt", creating: true) == nil, write([], to: path + "/input.json", creating: true) == nil
            else {
                removeTree(path)   // a full disk, say: nothing half-made is left
                return false
            }
            return true
        }) ?? false
        spares.withLock { state in
            state.making.remove(key)
            if clear { state.clearing.remove(jobs) }
            if made { state.made[key, default: []].append(path) }
        }
    }

    /// Makes the directory of a job that has ended for good one of `slot`'s spares, when nothing
    /// in it is worth keeping — an empty log, an empty outputs folder, nothing else written
    /// there, and no other name for its files (a job that linked them elsewhere could read the
    /// next job's) — and the slot has room for one. Its API answers stay the same without it: no
    /// log, no outputs. Its process (and anything it started) is gone by now, and the FIFO with it;
    /// its input is emptied.
    static func recycle(_ paths: JobPaths, slot: SlotID) async {
        let jobs = String(paths.directory.prefix(upTo: paths.directory.lastIndex(of: "/")!))
        let key = Spare(jobs: jobs, slot: slot)
        let claimed = spares.withLock { state -> (path: String, clear: Bool)? in
            guard !state.clearing.contains(jobs), state.room(for: key) else { return nil }
            let clear = state.startClearing(jobs)
            state.recycling[key, default: 0] += 1
            return (state.nextName(in: jobs), clear)
        }
        guard let (target, clear) = claimed else { return }
        let moved = (try? await BlockingIO.run { () -> Bool in
            if clear {
                removeTree(jobs + "/.spare")
                guard mkdir(jobs + "/.spare", 0o755) == 0 || errno == EEXIST else { return false }
            }
            // Its input goes first: a spare keeps nothing of the job it was (found by attacking the
            // build: a deleted job's input stayed readable there until the spare's next job).
            guard reusable(paths) else { return false }
            let input = open(paths.input, O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC)
            guard input >= 0 else { return false }
            close(input)
            return rename(paths.directory, target) == 0
        }) ?? false
        spares.withLock { state in
            state.recycling[key, default: 1] -= 1
            if clear { state.clearing.remove(jobs) }
            if moved { state.made[key, default: []].append(target) }
        }
    }

    /// Whether a job's directory holds nothing but its empty files (blocking).
    private static func reusable(_ paths: JobPaths) -> Bool {
        func kind(_ path: String, links: Int) -> (mode: mode_t, size: Int)? {
            var status = stat()
            guard lstat(path, &status) == 0, Int(status.st_nlink) == links else { return nil }
            return (status.st_mode & S_IFMT, Int(status.st_size))
        }
        guard kind(paths.directory, links: 3)?.mode == S_IFDIR,   // itself, its entry, outputs' ".."
              kind(paths.outputs, links: 2)?.mode == S_IFDIR,
              let log = kind(paths.log, links: 1), log.mode == S_IFREG, log.size == 0,
              kind(paths.input, links: 1)?.mode == S_IFREG else { return false }
        let names = Set([paths.input, paths.log, paths.outputs].map { String($0[$0.index(after: $0.lastIndex(of: "/")!)...]) })
        return entries(of: paths.directory) == names && entries(of: paths.outputs) == []
    }

    /// The names in a directory (not `.` and `..`); nil when it cannot be read.
    public static func entries(of path: String) -> Set<String>? {
        guard let handle = opendir(path) else { return nil }
        defer { closedir(handle) }
        var names = Set<String>()
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.insert(name) }
        }
        return names
    }

    /// Makes whatever of the job's files is missing (blocking). A job runs as the server's user
    /// and may have put links (or files) where its directories and files were: those are
    /// replaced, never followed, so the server writes nothing outside the job's directory.
    private static func makeFiles(_ paths: JobPaths, input bytes: [UInt8], messages: Bool) throws(ExecutorError) {
        for directory in [paths.directory, paths.outputs] where mkdir(directory, 0o755) != 0 {
            guard errno == EEXIST else { throw ExecutorError("cannot create \(directory)", errno: errno, dataDirectory: directory == paths.directory) }
            if !isRealDirectory(directory), unlink(directory) != 0 || mkdir(directory, 0o755) != 0 {
                throw ExecutorError("cannot create \(directory) in place of what the job left there", errno: errno)
            }
        }
        // The log, empty (an earlier attempt's lines stay: the log appends).
        let log = openInJob(paths.log, O_WRONLY | O_CREAT | O_CLOEXEC)
        guard log >= 0 else { throw ExecutorError("cannot create \(paths.log)", errno: errno) }
        close(log)
        if messages { try MessageChannel.makeFIFO(at: paths.messages) }
        // A job's input never changes: a file already holding it is left as it is (a started
        // attempt may be reading it — a look-ahead came late); one cut short by a crash is rewritten.
        if JobFiles.contents(of: paths.input, limit: bytes.count + 1) == bytes { return }
        if let code = write(bytes, to: paths.input, creating: true) { throw ExecutorError("cannot write \(paths.input)", errno: code) }
    }

    /// Removes a directory and everything in it, never following a link (`path` itself
    /// included); true when it is gone. Entries are named by their raw bytes (a job may make
    /// names that are not UTF-8), and a subdirectory that is not empty has its entries moved up
    /// into `path`, so a tree of any depth goes with two descriptors and no recursion (a job's
    /// tree thousands of levels deep would otherwise need a descriptor per level, and exhaust
    /// the server's). A directory the job locked (unreadable or unwritable) is opened up first.
    @discardableResult
    static func removeTree(_ path: String) -> Bool {
        var top = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        if top < 0, errno == EACCES, chmod(path, 0o700) == 0 { top = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        if top >= 0 {
            defer { close(top) }
            // Its entries go only if it is writable: a job may have locked it (a server that is
            // not root is held to permissions).
            fchmod(top, 0o700)
            var hoisted = 0
            while let names = names(in: top), !names.isEmpty {
                var progress = false
                for name in names {
                    if unlinkat(top, name, 0) == 0 || unlinkat(top, name, AT_REMOVEDIR) == 0 {
                        progress = true
                        continue
                    }
                    guard errno == ENOTEMPTY || errno == EEXIST else { continue }
                    // A directory with entries: they move up here (under fresh names), and it goes on a later pass.
                    var sub = openat(top, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                    if sub < 0, errno == EACCES, unlockDirectory(name, in: top) {
                        sub = openat(top, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                    }
                    guard sub >= 0 else { continue }
                    fchmod(sub, 0o700)   // its entries move out only if it is writable
                    for child in self.names(in: sub) ?? [] {
                        var unlocked = false
                        for _ in 0..<8 {
                            hoisted += 1
                            if renameat(sub, child, top, Array(".spool-removing-\(hoisted)".utf8CString)) == 0 { progress = true; break }
                            // A directory moves to another parent only if it is writable itself (its "..").
                            if errno == EACCES, !unlocked, unlockDirectory(child, in: sub) { unlocked = true; continue }
                            guard errno == ENOTEMPTY || errno == EEXIST || errno == ENOTDIR || errno == EISDIR else { break }
                        }
                    }
                    close(sub)
                }
                if !progress { break }   // nothing could go this pass: what is left stays
            }
        }
        return rmdir(path) == 0 || errno == ENOENT
    }

    /// Makes the directory `name` in `parent` readable, writable and searchable by its owner,
    /// when it is a directory (never through a link); whether it did.
    private static func unlockDirectory(_ name: [CChar], in parent: Int32) -> Bool {
        var status = stat()
        guard fstatat(parent, name, &status, AT_SYMLINK_NOFOLLOW) == 0, status.st_mode & S_IFMT == S_IFDIR else { return false }
        return fchmodat(parent, name, 0o700, 0) == 0
    }

    /// The raw names (NUL-terminated) in the directory open as `descriptor`, but "." and "..";
    /// nil when it cannot be read. The descriptor stays open.
    private static func names(in descriptor: Int32) -> [[CChar]]? {
        let copy = dup(descriptor)
        guard copy >= 0 else { return nil }
        guard let handle = fdopendir(copy) else { close(copy); return nil }
        defer { closedir(handle) }   // closes `copy`
        rewinddir(handle)
        var names: [[CChar]] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { bytes in bytes.prefix { $0 != 0 }.map { CChar(bitPattern: $0) } }
            if name != [46], name != [46, 46] { names.append(name + [0]) }   // not "." or ".."
        }
        return names
    }

    /// For tests: writes of job files under `prefix` fail with `code` — a full disk without
    /// filling one (a device node or a link that would answer ENOSPC is replaced, not written).
    static let failingWrites = Mutex<(prefix: String, code: Int32)?>(nil)

    /// Writes `bytes` as the whole of the file at `path`; the system error that stopped it, or nil.
    private static func write(_ bytes: [UInt8], to path: String, creating: Bool) -> Int32? {
        if let failing = failingWrites.withLock({ $0 }), path.hasPrefix(failing.prefix) { return failing.code }
        let descriptor = openInJob(path, O_WRONLY | O_TRUNC | O_CLOEXEC | (creating ? O_CREAT : 0))
        guard descriptor >= 0 else { return errno }
        defer { close(descriptor) }
        var offset = 0
        while offset < bytes.count {
            // A short count is followed by the error that cut it (a full disk: ENOSPC) on the next call.
            let written = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress! + offset, $0.count - offset) }
            if written < 0 {
                if errno == EINTR { continue }
                return errno
            }
            if written == 0 { return EIO }
            offset += written
        }
        return nil
    }
}
