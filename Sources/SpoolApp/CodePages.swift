import Glibc
import SpoolExecutor

/// Start-up (the dynamic loader, the Swift runtime's conformance scans, the libraries' set-up)
/// touches far more code than serving does, and the kernel maps neighbouring pages of a file on
/// every fault ("fault-around"). Once the server listens, this unmaps the code pages of the
/// binary and its libraries and asks for no fault-around on them: the pages the server runs
/// come back on first use, one by one, and the rest stay out of its resident set. Only
/// read-and-execute file mappings: code is never written, so nothing is lost — the pages stay
/// in the page cache, and dropping them from this process's page tables is all it does.
/// Measured (`spool bench`, idle server): see BENCHMARKS.md.
public enum CodePages {
    /// Returns the bytes of code unmapped.
    @discardableResult
    public static func trim() -> Int {
        guard let smaps = readSmaps() else { return 0 }
        var total = 0
        for mapping in codeMappings(in: smaps) {
            guard let address = UnsafeMutableRawPointer(bitPattern: mapping.start) else { continue }
            let length = Int(mapping.end - mapping.start)
            guard madvise(address, length, MADV_RANDOM) == 0, madvise(address, length, MADV_DONTNEED) == 0 else { continue }
            total += length
        }
        return total
    }

    struct Mapping: Equatable {
        var start: UInt
        var end: UInt
    }

    /// The read-and-execute mappings of files in `/proc/self/smaps` text that hold no page of
    /// their own (`Private_Dirty: 0 kB`): a code page written to (text relocations, a debugger's
    /// breakpoint) would be lost by unmapping, so such a mapping is left alone.
    static func codeMappings(in smaps: String) -> [Mapping] {
        var found: [Mapping] = []
        var current: Mapping?
        for line in smaps.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard let first = fields.first else { continue }
            if first.hasSuffix(":") {
                if first == "Private_Dirty:", fields.count >= 2, fields[1] != "0" { current = nil }
                continue
            }
            if let current { found.append(current) }
            current = nil
            let bounds = first.split(separator: "-")
            guard fields.count >= 6, fields[1] == "r-xp", fields[5].hasPrefix("/"), bounds.count == 2,
                  let start = UInt(bounds[0], radix: 16), let end = UInt(bounds[1], radix: 16), end > start else { continue }
            current = Mapping(start: start, end: end)
        }
        if let current { found.append(current) }
        return found
    }

    private static func readSmaps() -> String? {
        OrphanReaper.readFile("/proc/self/smaps", limit: 64 << 20).map { String(decoding: $0, as: UTF8.self) }
    }
}
