import Glibc
import SpoolCore

/// A job's output files (blocking: call on `BlockingIO`).
public enum OutputFiles {
    /// How many files the API lists for one job (`GET /v1/jobs/{id}/outputs`); a job with more
    /// says so (`truncated`).
    public static let listLimit = 10_000
    /// The most entries an array's outputs list (all its tasks') holds.
    public static let arrayListLimit = 100_000

    /// Regular files below `root`, as relative paths with sizes, sorted, at most `limit`;
    /// symlinks are not followed, and names that are not UTF-8 (which no URL of the API can
    /// name) are left out.
    public static func list(under root: String, limit: Int = 10_000) -> [(name: String, size: Int64)] {
        listing(under: root, limit: limit).files
    }

    /// `list`, and how many files it left out that a job may have meant as outputs: names that
    /// are not UTF-8 or longer than a URL may give, files the server cannot read or look at, folders it cannot open (found by attacking
    /// the build: they vanished from the listing without a word, and a file the server could
    /// not read was listed with a URL that answered 404).
    public static func listing(under root: String, limit: Int = 10_000) -> (files: [(name: String, size: Int64)], leftOut: Int) {
        var found: [(name: String, size: Int64)] = []
        var leftOut = 0
        var pending = [""]
        while let relative = pending.popLast(), found.count < limit {
            let directory = relative.isEmpty ? root : root + "/" + relative
            guard let handle = opendir(directory) else {
                if !relative.isEmpty { leftOut += 1 }
                continue
            }
            defer { closedir(handle) }
            while found.count < limit, let entry = readdir(handle) {
                let bytes = withUnsafeBytes(of: entry.pointee.d_name) { Array($0.prefix { $0 != 0 }) }
                guard bytes != [UInt8(ascii: ".")], bytes != [UInt8(ascii: "."), UInt8(ascii: ".")] else { continue }
                guard let name = String(validating: bytes, as: UTF8.self) else {
                    leftOut += 1
                    continue
                }
                let child = relative.isEmpty ? name : relative + "/" + name
                var status = stat()
                // One the server cannot look at (past PATH_MAX, say) is counted, not dropped unsaid.
                guard lstat(root + "/" + child, &status) == 0 else {
                    if errno != ENOENT { leftOut += 1 }   // one renamed or removed meanwhile was not left out
                    continue
                }
                switch status.st_mode & S_IFMT {
                case S_IFDIR: pending.append(child)
                case S_IFREG:
                    // A name no URL may give, and one the server cannot read, are counted (found by
                    // attacking the build: listed, their URLs answered 400 and 404).
                    guard child.utf8.count <= JobPaths.maxOutputNameBytes, access(root + "/" + child, R_OK) == 0 else {
                        leftOut += 1
                        continue
                    }
                    found.append((child, Int64(status.st_size)))
                default: continue
                }
            }
        }
        return (found.sorted { $0.name < $1.name }, leftOut)
    }
}
