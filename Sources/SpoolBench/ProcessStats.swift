#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization

/// Reads what the harness reports about a server process from Linux's /proc, and finds the
/// processes a server started so that none outlives the scenario.
enum ProcessStats {
    /// A process as it was seen: the start time guards against killing a reused PID.
    struct ProcessRef: Hashable, Sendable {
        let pid: pid_t
        let startTime: UInt64
    }

    /// VmRSS of `pid` in bytes (the kernel reports KiB), or nil if the process is gone.
    static func residentBytes(of pid: pid_t) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if fields.count >= 2, let kib = Int(fields[1]) { return kib * 1024 }
        }
        return nil
    }

    /// User + system CPU time `pid` has used, in seconds.
    static func cpuSeconds(of pid: pid_t) -> Double? {
        cpuTimes(of: pid).map { $0.user + $0.system }
    }

    /// User and system CPU time `pid` has used, in seconds (10 ms resolution).
    static func cpuTimes(of pid: pid_t) -> (user: Double, system: Double)? {
        guard let fields = statFields(of: pid), fields.count > 12,
              let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        return (user / ticks, system / ticks)
    }

    /// CPU seconds of processes a server left behind, read just before the harness killed them:
    /// they are reparented away from this process, so their time never reaches its cutime.
    static let leftoverCPUSeconds = Mutex<Double>(0)

    /// CPU seconds this process and its reaped descendants have used (utime + stime + cutime +
    /// cstime): the servers under test once they have been stopped and reaped, and through them
    /// their job children.
    static var ownTreeCPUSeconds: Double? {
        guard let fields = statFields(of: getpid()), fields.count > 14 else { return nil }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let values = fields[11...14].compactMap { Double($0) }
        guard values.count == 4 else { return nil }
        return values.reduce(0, +) / ticks + leftoverCPUSeconds.withLock { $0 }
    }

    /// CPU seconds the whole machine has spent busy (all cores; not idle, not iowait), from /proc/stat.
    static var machineBusySeconds: Double? {
        guard let stat = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
              let line = stat.split(separator: "\n").first, line.hasPrefix("cpu ") else { return nil }
        let values = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard values.count >= 8 else { return nil }
        let busy = values[0] + values[1] + values[2] + values[5] + values[6] + values[7]  // user nice system irq softirq steal
        return busy / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// The 1-minute load average, to show whether something else was running.
    static var loadAverage: String {
        ((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "?")
            .split(separator: " ").prefix(3).joined(separator: " ")
    }

    /// True while `pid` exists and is not a zombie waiting to be reaped.
    static func isAlive(_ pid: pid_t) -> Bool {
        guard let fields = statFields(of: pid), let state = fields.first else { return false }
        return state != "Z" && state != "X"
    }

    /// Every live descendant of `pid` (children, grandchildren, …), found by scanning /proc.
    static func descendants(of pid: pid_t) -> Set<ProcessRef> {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var children: [pid_t: [ProcessRef]] = [:]
        for entry in entries {
            guard let child = pid_t(entry), let fields = statFields(of: child), fields.count > 19,
                  let parent = pid_t(fields[1]), let start = UInt64(fields[19]) else { continue }
            children[parent, default: []].append(ProcessRef(pid: child, startTime: start))
        }
        var found: Set<ProcessRef> = []
        var frontier = [pid]
        while let next = frontier.popLast() {
            for child in children[next] ?? [] where found.insert(child).inserted {
                frontier.append(child.pid)
            }
        }
        return found
    }

    /// SIGKILLs `ref` if that same process (same start time) is still alive.
    static func killIfStillRunning(_ ref: ProcessRef) {
        guard let fields = statFields(of: ref.pid), fields.count > 19, UInt64(fields[19]) == ref.startTime,
              isAlive(ref.pid) else { return }
        kill(ref.pid, SIGKILL)
    }

    /// The fields of /proc/PID/stat after the command name; index 0 is field 3 (state).
    private static func statFields(of pid: pid_t) -> [Substring]? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        return stat[stat.index(after: close)...].split(separator: " ")
    }
}
