import Glibc
import SpoolCore

/// The server is out of file descriptors or memory just now (EMFILE, ENFILE, ENOMEM): what it
/// could not open is not missing, and is not answered as if it were (found by attacking the
/// build: an empty log, an empty outputs list, a 404 for an output that was there).
public struct ResourcesShort: Error, Sendable, CustomStringConvertible {
    public let code: Int32
    public var description: String { "the server is short of \(code == ENOMEM ? "memory" : "file descriptors") (\(String(cString: strerror(code))))" }

    /// Throws when `code` — `errno`, read right after the call that failed — is a shortage.
    public static func check(_ code: Int32) throws(ResourcesShort) {
        if code == EMFILE || code == ENFILE || code == ENOMEM { throw ResourcesShort(code: code) }
    }
}

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
    public static func list(under root: String, limit: Int = 10_000) throws(ResourcesShort) -> [(name: String, size: Int64)] {
        try listing(under: root, limit: limit).files
    }

    /// `list`, and how many files it left out that a job may have meant as outputs: names that
    /// are not UTF-8 or longer than a URL may give, files the server cannot read or look at, folders it cannot open (found by attacking
    /// the build: they vanished from the listing without a word, and a file the server could
    /// not read was listed with a URL that answered 404).
    /// Throws when the server is short of descriptors to open a folder with.
    public static func listing(under root: String, limit: Int = 10_000) throws(ResourcesShort) -> (files: [(name: String, size: Int64)], leftOut: Int) {
        var found: [(name: String, size: Int64)] = []
        var leftOut = 0
        var pending = [""]
        while let relative = pending.popLast(), found.count < limit {
            let directory = relative.isEmpty ? root : root + "/" + relative
            guard let handle = opendir(directory) else {
                let code = errno
                try ResourcesShort.check(code)
                if !relative.isEmpty || code != ENOENT { leftOut += 1 }
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
