import Glibc
import SpoolCore

/// Finds processes a crashed server left behind — a job's process group outlives a
/// `kill -9` of the server, since each job leads its own session — and kills them before
/// their jobs are requeued, so a recovered job never runs twice at once.
///
/// A process belongs to a job of this data directory when its environment holds the job's
/// `SPOOL_MESSAGES` path (every descendant inherits it), which also guards against a recycled
/// pid, and against the processes of another server on the same host (`SPOOL_JOB_ID` alone
/// would name another node's attempt of the same job too). After a crash, a path to the same
/// directory by another name (a symlink) counts too.
public enum OrphanReaper {
    /// Kills each found process and its group (never this server's own), waits up to `patience`
    /// for them to be gone, and returns their pids.
    static func killAll(_ found: [Leftover], patience: Duration) async -> [Int32] {
        signalAll(found)
        let deadline = ContinuousClock.now.advanced(by: patience)
        while ContinuousClock.now < deadline {
            let alive = (try? await BlockingIO.run { found.filter { isRunning($0.pid) } }) ?? []
            if alive.isEmpty { break }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return found.map(\.pid)
    }

    /// SIGKILL to each process and its group (never this process's own group, nor a group id
    /// the scan could not read: -1, 0).
    static func signalAll(_ found: [Leftover]) {
        let own = getpgrp()
        for process in found {
            if process.group > 1, process.group != own { _ = kill(-process.group, SIGKILL) }
            _ = kill(process.pid, SIGKILL)
        }
    }

    /// Kills every job process and warm worker of the data directory, in one scan, and waits
    /// (blocking this thread, at most `patience`) until they are gone; returns their pids. For
    /// the guard (`ServerGuard`), a process with nothing else to do.
    ///
    /// Found by its environment's marker, or by the session it is in: `sessions`, the sessions
    /// the server's children lead, each with its leader's start time as the guard read it (a
    /// session whose leader lives with another start time is someone else's: the number was
    /// reused; one whose start time was never read — the child already gone — is left to the
    /// marker scan, found in review).
    static func killJobsAndWorkers(of dataDirectory: String, sessions: [Int32: UInt64?] = [:], patience: Duration = .seconds(5)) -> [Int32] {
        let jobs = marksUnder(dataDirectory, "jobs"), workers = marksUnder(dataDirectory, "workers")
        var found = scan { jobs($0) || workers($0) }
        let ours = sessions.filter { session, started in
            guard let started else { return false }
            guard let now = startTime(of: session) else { return true }   // the leader is gone: its members are ours
            return now == started
        }
        if !ours.isEmpty {
            let seen = Set(found.map(\.pid)), own = getpid()
            for pid in ProcessTree.numberedEntries(of: "/proc") where pid != own && !seen.contains(pid) {
                if let fields = statFields(of: pid), fields.count > 3, let session = Int32(fields[3]), ours[session] != nil, isRunning(pid) {
                    found.append(Leftover(pid: pid, group: getpgid(pid)))
                }
            }
        }
        signalAll(found)
        let deadline = ContinuousClock.now.advanced(by: patience)
        while ContinuousClock.now < deadline, found.contains(where: { isRunning($0.pid) }) { usleep(20_000) }
        return found.map(\.pid)
    }

    /// Kills warm workers a crashed server of this data directory left behind (they hold
    /// memory, GPU memory included, and may be stuck opening their FIFOs). A worker is
    /// recognised by its `SPOOL_MESSAGES` path under `DATA_DIR/workers/`.
    public static func killLeftoverWorkers(of dataDirectory: String, patience: Duration = .seconds(5)) async throws -> [Int32] {
        let found = try await BlockingIO.run { scan(marksUnder(dataDirectory, "workers")) }
        return await killAll(found, patience: patience)
    }

    /// Kills the job processes a crashed server of this data directory left behind, whatever
    /// their jobs' state now (with a shared store another node may have rescued them). A job
    /// process is recognised by its `SPOOL_MESSAGES` path under `DATA_DIR/jobs/`.
    public static func killLeftoverJobs(of dataDirectory: String, patience: Duration = .seconds(5)) async throws -> [Int32] {
        let found = try await BlockingIO.run { scan(marksUnder(dataDirectory, "jobs")) }
        return await killAll(found, patience: patience)
    }

    /// Whether an environment variable is the `SPOOL_MESSAGES` path of something under
    /// `dataDirectory/folder/`, however the dead server spelled the data directory: the same
    /// text, or a path to the same directory (device and inode) — it may have named it through
    /// a symlink, or this server does. Blocking (a `stat` per other spelling met).
    static func marksUnder(_ dataDirectory: String, _ folder: String) -> ([UInt8].SubSequence) -> Bool {
        let name = Array("SPOOL_MESSAGES=".utf8)
        let prefix = name + Array((dataDirectory + "/" + folder + "/").utf8)
        let separator = Array(("/" + folder + "/").utf8)
        var status = stat()
        let identity = stat(dataDirectory, &status) == 0 ? (status.st_dev, status.st_ino) : nil
        return { variable in
            if variable.starts(with: prefix) { return true }
            guard let identity, variable.starts(with: name) else { return false }
            // DIR/folder/<name>/messages: DIR is what comes before the last "/folder/".
            let path = variable.dropFirst(name.count)
            guard let cut = path.indices.reversed().first(where: { path[$0...].starts(with: separator) }) else { return false }
            var other = stat()
            return stat(String(decoding: path[..<cut], as: UTF8.self), &other) == 0 && (other.st_dev, other.st_ino) == identity
        }
    }

    /// Kills every process (and its group) whose environment holds exactly `marker` (`NAME=value`):
    /// what a child left running outside its own process group, say after a `setsid`. Waits a
    /// moment (at most `patience`) until they are gone; returns their pids.
    ///
    /// `bornAfter`: the process that every marked process descends from, when it was started less
    /// than a second ago, and is gone (reaped). Its descendants were all created after it, so only
    /// the pids handed out since — after it, up to the kernel's last one, read from /proc/loadavg —
    /// are read, instead of every process's environment: this runs after every job, on the slot's
    /// way to its next one. (Pids are handed out in increasing order, wrapping at pid_max; a second
    /// is far too short to wrap past the leader, a long job may have seen it, so those scan
    /// everything.) Of those, the ones `ours` names — children this server started itself, each
    /// supervised on its own — are passed over; when no other pid was handed out since, nothing
    /// is read at all (the common case: a job that started nothing, or whose children are gone
    /// and whose pids were followed only by this server's own next children).
    ///
    /// `session`: the session the leader led — its members are killed too, marked or not (a
    /// process that left the job's group and wiped its environment, a daemon that retitles
    /// itself: found by attacking the build, it outlived its job).
    public static func killMarked(_ marker: String, bornAfter leader: Int32? = nil, session: Int32? = nil,
                                  ours: @Sendable (Int32) -> Bool = { _ in false }, patience: Duration = .seconds(2)) async -> [Int32] {
        let bytes = Array(marker.utf8)
        var pids: [Int32]?
        // /proc/loadavg is made from the kernel's counters as it is read (no disk, no lock another
        // process can hold), so it is read here, not on the blocking pool: this is the slot's path.
        if let leader, let handedOut = pidsHandedOut(since: leader) {
            pids = handedOut.filter { $0 != leader && !ours($0) }
            if pids!.isEmpty { return [] }
        }
        guard let found = (try? await BlockingIO.run({ [pids] in scan(pids: pids, session: session) { $0.elementsEqual(bytes) } }))?.filter({ !ours($0.pid) }),
              !found.isEmpty else { return [] }
        return await killAll(found, patience: patience)
    }

    /// The pids the kernel may have handed out since `leader` (itself included), when that is
    /// a short list; nil when it is not (scan everything).
    static func pidsHandedOut(since leader: Int32) -> [Int32]? {
        guard let loadavg = readFile("/proc/loadavg"), let text = String(validating: loadavg, as: UTF8.self),
              let last = text.split(whereSeparator: \.isWhitespace).last.flatMap({ Int32($0) }) else { return nil }
        guard last >= leader, last - leader <= 4096 else { return nil }   // wrapped (or many): scan everything
        return Array(leader...last)
    }

    /// Kills (SIGKILL, no waiting) every process with an environment variable starting with
    /// `prefix`, e.g. `SPOOL_MESSAGES=DATA_DIR` for all of a data directory's processes.
    public static func killProcesses(withEnvironmentPrefix prefix: String) -> Int {
        let bytes = Array(prefix.utf8)
        let found = scan { variable in variable.starts(with: bytes) }
        for process in found { _ = kill(process.pid, SIGKILL) }
        return found.count
    }

    struct Leftover: Sendable {
        var pid: Int32
        var group: Int32
    }

    /// Processes (other than this one) with an environment variable that `matches`, or in
    /// `session`: among `pids` when given, else among all of /proc.
    static func scan(pids: [Int32]? = nil, session: Int32? = nil, _ matches: ([UInt8].SubSequence) -> Bool) -> [Leftover] {
        let own = getpid()
        var found: [Leftover] = []
        func check(_ pid: Int32) {
            guard pid != own else { return }
            let inSession = session.map { $0 > 1 && getsid(pid) == $0 } ?? false
            guard inSession || environment(of: pid)?.split(separator: 0).contains(where: matches) == true else { return }
            if isRunning(pid) { found.append(Leftover(pid: pid, group: getpgid(pid))) }
        }
        if let pids {
            pids.forEach(check)
            return found
        }
        ProcessTree.numberedEntries(of: "/proc").forEach(check)
        return found
    }

    /// A process's environment (NUL-separated), nil when it is gone. A process inside an exec
    /// has none for a moment: the kernel gives it its new memory (and lets a `posix_spawn` or
    /// `vfork` parent go on) before it copies the environment in, and read then it looks empty
    /// (three reads in four, straight after `posix_spawn` returned). So an empty one of a live
    /// user process is read again, every half millisecond for up to 50 ms; a kernel thread or a
    /// zombie has none to wait for, and a process that really has none costs those 50 ms. It
    /// sleeps in between: the server's scans run it on the blocking pool (`BlockingIO`), never on
    /// an event loop (`killProcesses`, the bench's clean-up, runs where it is called).
    static func environment(of pid: Int32) -> [UInt8]? {
        let path = "/proc/\(pid)/environ"
        guard var bytes = readFile(path) else { return nil }
        var tries = 0
        while bytes.isEmpty, tries < 100, isUserProcess(pid) {
            usleep(500)
            tries += 1
            guard let again = readFile(path) else { return nil }
            bytes = again
        }
        return bytes
    }

    /// Not a kernel thread (`PF_KTHREAD` in its flags), and not a zombie.
    static func isUserProcess(_ pid: Int32) -> Bool {
        guard let status = readFile("/proc/\(pid)/stat"), let close = status.lastIndex(of: UInt8(ascii: ")")),
              close + 2 < status.count else { return false }
        // After the command name: state, ppid, pgrp, session, tty_nr, tpgid, flags, …
        let fields = status[(close + 2)...].split(separator: UInt8(ascii: " "), maxSplits: 7)
        guard fields.count > 6, fields[0].first != UInt8(ascii: "Z"),
              let flags = UInt64(String(decoding: fields[6], as: UTF8.self)) else { return false }
        return flags & 0x0020_0000 == 0
    }

    /// The fields of /proc/PID/stat after the command name (state, ppid, pgrp, session, …); nil
    /// when it is gone.
    public static func statFields(of pid: Int32) -> [Substring]? {
        guard let status = readFile("/proc/\(pid)/stat"), let close = status.lastIndex(of: UInt8(ascii: ")")),
              close + 2 < status.count else { return nil }
        return String(decoding: status[(close + 2)...], as: UTF8.self).split(separator: " ")
    }

    /// When the process started (clock ticks after boot, /proc/PID/stat's field 22); nil when it is gone.
    static func startTime(of pid: Int32) -> UInt64? {
        guard let fields = statFields(of: pid), fields.count > 19 else { return nil }
        return UInt64(fields[19])
    }

    /// Alive and not a zombie.
    static func isRunning(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0, let status = readFile("/proc/\(pid)/stat") else { return false }
        // The state letter follows the ")" that closes the command name.
        guard let close = status.lastIndex(of: UInt8(ascii: ")")), close + 2 < status.count else { return false }
        return status[close + 2] != UInt8(ascii: "Z")
    }

    /// A /proc file's bytes (at most `limit`, a little over when the last read crosses it);
    /// nil when it cannot be opened (the process is gone).
    public static func readFile(_ path: String, limit: Int = 1 << 20) -> [UInt8]? {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count <= 0 { break }
            bytes += buffer[0..<count]
            if bytes.count > limit { break }
        }
        return bytes
    }
}
