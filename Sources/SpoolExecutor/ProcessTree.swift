import Glibc

/// The processes of one process group, read from /proc (blocking: call on `BlockingIO`).
enum ProcessTree {
    static func members(ofGroup group: Int32) -> [Int32] {
        guard let proc = opendir("/proc") else { return [] }
        defer { closedir(proc) }
        var members: [Int32] = []
        while let entry = readdir(proc) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard let pid = Int32(name), getpgid(pid) == group else { continue }
            members.append(pid)
        }
        return members
    }

    /// Sum of resident memory (from /proc/PID/statm), in MiB.
    static func residentMegabytes(of pids: [Int32]) -> Double {
        let page = Double(sysconf(Int32(_SC_PAGESIZE)))
        var pages = 0.0
        for pid in pids {
            guard let text = OrphanReaper.readFile("/proc/\(pid)/statm") else { continue }
            let fields = String(decoding: text, as: UTF8.self).split(separator: " ")
            if fields.count > 1, let resident = Double(fields[1]) { pages += resident }
        }
        return pages * page / 1_048_576
    }
}
