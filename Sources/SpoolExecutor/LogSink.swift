import Dispatch
import Glibc

/// Appends a job's stdout and stderr to its log file, up to a size cap, on a private serial
/// queue: callers hand over bytes and go on (no blocking write on the caller's thread). Past
/// the cap one notice is written and the rest is dropped while the pipes keep being drained,
/// so a chatty job can neither fill the disk nor stall on a full pipe.
final class LogSink: @unchecked Sendable {
    // Mutable state is touched only on `queue`.
    private let queue: DispatchQueue
    private var descriptor: Int32
    private var written: Int
    private let limit: Int

    init(path: String, limit: Int) throws(ExecutorError) {
        descriptor = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw ExecutorError("cannot open the log file \(path): \(String(cString: strerror(errno)))") }
        var status = stat()
        written = fstat(descriptor, &status) == 0 ? Int(status.st_size) : 0
        self.limit = limit
        queue = DispatchQueue(label: "spool.log")
    }

    func write(_ bytes: [UInt8]) {
        queue.async { self.append(bytes) }
    }

    func note(_ text: String) {
        write(Array("[spool] \(text)\n".utf8))
    }

    /// Flushes what was handed over, then closes the file.
    func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            queue.async {
                if self.descriptor >= 0 { _ = Glibc.close(self.descriptor); self.descriptor = -1 }
                continuation.resume()
            }
        }
    }

    private func append(_ bytes: [UInt8]) {
        guard descriptor >= 0, written < limit else { return }
        let room = limit - written
        let chunk = bytes.prefix(room)
        chunk.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let result = Glibc.write(descriptor, raw.baseAddress! + offset, raw.count - offset)
                if result < 0 { if errno == EINTR { continue }; return }
                offset += result
            }
        }
        written += chunk.count
        if chunk.count < bytes.count {
            let notice = Array("\n[spool] log truncated: the job printed more than \(limit) bytes; the rest was dropped\n".utf8)
            notice.withUnsafeBytes { raw in _ = Glibc.write(descriptor, raw.baseAddress!, raw.count) }
        }
    }
}
