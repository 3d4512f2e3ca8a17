import Glibc
import SpoolCore

/// One server per data directory: an exclusive `flock` on `DATA_DIR/spool.lock`, held for the
/// life of the process (the kernel drops it if the process dies, even by `kill -9`). Two
/// servers on one SQLite file would each "recover" the other's running jobs.
struct DataDirectoryLock: ~Copyable {
    private let descriptor: Int32

    init(directory: String) throws {
        let path = directory + "/spool.lock"
        descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw ConfigurationError("cannot open \(path): \(String(cString: strerror(errno)))")
        }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let owner = Self.readOwner(descriptor)
            close(descriptor)
            throw ConfigurationError("another spool server\(owner.map { " (pid \($0))" } ?? "") is using the data directory \(directory); stop it or pass another --data-dir")
        }
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(descriptor, 0)
        _ = pid.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, 0) }
    }

    func release() {
        flock(descriptor, LOCK_UN)
        close(descriptor)
    }

    static func readOwner(_ descriptor: Int32) -> String? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let count = buffer.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { return nil }
        let text = String(decoding: buffer[0..<count], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return text.isEmpty ? nil : text
    }
}
