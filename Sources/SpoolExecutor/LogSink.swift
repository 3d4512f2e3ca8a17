import Dispatch
import Glibc
import Synchronization

/// Appends a job's stdout and stderr to its log file, up to a size cap, on a private serial
/// queue: callers hand over bytes and go on (no blocking write on the caller's thread). Past
/// the cap one notice is written and the rest is dropped while the pipes keep being drained,
/// so a chatty job can neither fill the disk nor stall on a full pipe.
final class LogSink: @unchecked Sendable {
    // `descriptor` and `written` are touched only on `queue` — or by `close` once no write is
    // queued or running and none can start (`traffic`).
    private let queue: DispatchQueue
    private var descriptor: Int32
    private var written: Int
    /// The notice is written: everything after it is dropped.
    private var truncated = false
    private let limit: Int
    /// Writes handed to `queue` and not done yet, and whether the sink is closed (later writes
    /// are dropped, as they always were).
    private let traffic = Mutex<(pending: Int, closed: Bool)>((0, false))

    init(path: String, limit: Int) throws(ExecutorError) {
        descriptor = JobFiles.openInJob(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC)
        guard descriptor >= 0 else { throw ExecutorError("cannot open the log file \(path): \(String(cString: strerror(errno)))") }
        var status = stat()
        written = fstat(descriptor, &status) == 0 ? Int(status.st_size) : 0
        self.limit = limit
        queue = DispatchQueue(label: "spool.log")
    }

    func write(_ bytes: [UInt8]) {
        let accepted = traffic.withLock { traffic in
            guard !traffic.closed else { return false }
            traffic.pending += 1
            return true
        }
        guard accepted else { return }
        queue.async {
            self.append(bytes)
            self.traffic.withLock { $0.pending -= 1 }
        }
    }

    func note(_ text: String) {
        write(Array("[spool] \(text)\n".utf8))
    }

    /// Flushes what was handed over, then closes the file. With nothing in flight (a quiet job,
    /// or one whose output was written by the time it ended) the file is closed right here,
    /// without a round trip through the queue on the path that records the job's end.
    func close() async {
        let (first, idle) = traffic.withLock { traffic in
            defer { traffic.closed = true }
            return (!traffic.closed, traffic.pending == 0)
        }
        if idle {
            // Only the first close touches the file here; a second one has nothing left to wait for.
            if first, descriptor >= 0 { _ = Glibc.close(descriptor); descriptor = -1 }
            return
        }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            queue.async {
                if self.descriptor >= 0 { _ = Glibc.close(self.descriptor); self.descriptor = -1 }
                continuation.resume()
            }
        }
    }

    private func append(_ bytes: [UInt8]) {
        guard descriptor >= 0, !truncated, !bytes.isEmpty else { return }
        let chunk = bytes.prefix(max(0, limit - written))
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
            // Once, whether the cap was passed inside a chunk or reached exactly by the one before.
            truncated = true
            let notice = Array("\n[spool] log truncated: the job printed more than \(limit) bytes; the rest was dropped\n".utf8)
            notice.withUnsafeBytes { raw in _ = Glibc.write(descriptor, raw.baseAddress!, raw.count) }
        }
    }
}
