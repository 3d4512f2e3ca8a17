import Glibc

/// A job's output files (blocking: call on `BlockingIO`).
public enum OutputFiles {
    /// How many files the API lists for one job (`GET /v1/jobs/{id}/outputs`); a job with more
    /// says so (`truncated`).
    public static let listLimit = 10_000

    /// Regular files below `root`, as relative paths with sizes, sorted, at most `limit`;
    /// symlinks are not followed, and names that are not UTF-8 (which no URL of the API can
    /// name) are left out.
    public static func list(under root: String, limit: Int = 10_000) -> [(name: String, size: Int64)] {
        var found: [(name: String, size: Int64)] = []
        var pending = [""]
        while let relative = pending.popLast(), found.count < limit {
            let directory = relative.isEmpty ? root : root + "/" + relative
            guard let handle = opendir(directory) else { continue }
            defer { closedir(handle) }
            while found.count < limit, let entry = readdir(handle) {
                guard let name = withUnsafeBytes(of: entry.pointee.d_name, { String(validating: $0.prefix { $0 != 0 }, as: UTF8.self) }),
                      name != ".", name != ".." else { continue }
                let child = relative.isEmpty ? name : relative + "/" + name
                var status = stat()
                guard lstat(root + "/" + child, &status) == 0 else { continue }
                switch status.st_mode & S_IFMT {
                case S_IFDIR: pending.append(child)
                case S_IFREG: found.append((child, Int64(status.st_size)))
                default: continue
                }
            }
        }
        return found.sorted { $0.name < $1.name }
    }
}
