import Glibc

/// The processes of one process group, read from /proc (blocking: call on `BlockingIO`).
public enum ProcessTree {
    static func members(ofGroup group: Int32) -> [Int32] {
        numberedEntries(of: "/proc").filter { getpgid($0) == group }
    }

    /// The entries of `directory` whose names are numbers: the pids in /proc, the descriptors
    /// in /proc/self/fd (that one includes the descriptor the listing itself used, closed by then).
    public static func numberedEntries(of directory: String) -> [Int32] {
        guard let handle = opendir(directory) else { return [] }
        defer { closedir(handle) }
        var numbers: [Int32] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if let number = Int32(name) { numbers.append(number) }
        }
        return numbers
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
