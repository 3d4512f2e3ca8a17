#if canImport(Glibc)
import Glibc
#endif
import SpoolCore
import SpoolExecutor
import Synchronization

/// The node's GPU quarantine, kept in its data directory (`quarantine.json`) so that a restart —
/// a crash, a deploy — does not put a faulty GPU back to work: the slot stays closed until a
/// self-test passes or an administrator releases it. Node-local on purpose: it is about this
/// machine's devices, whichever store the queue is in.
///
/// Written whole, through a temporary file that is synced and renamed over the old one (and the
/// directory synced): a crash leaves the old list or the new one, never half of one.
final class QuarantineFile: Sendable {
    let path: String
    /// The newest version written: a save that lost a race to a newer one writes nothing.
    private let written = Mutex<Int>(0)

    init(dataDirectory: String) {
        path = dataDirectory + "/quarantine.json"
    }

    /// What the last run kept; none when there is no file. A file that cannot be read or parsed
    /// is an error (the caller logs it and goes on with none).
    func load() async throws -> [SlotQuarantine.Saved] {
        try await BlockingIO.run { [path] () throws -> [SlotQuarantine.Saved] in
            if access(path, F_OK) != 0, errno == ENOENT { return [] }
            guard let bytes = OrphanReaper.readFile(path) else { throw StoreFileError("cannot read \(path): \(String(cString: strerror(errno)))") }
            guard bytes.count <= 1 << 20 else { throw StoreFileError("\(path) is larger than 1 MiB") }
            let document: JSONValue
            do { document = try JSONParser.parse(bytes) } catch { throw StoreFileError("\(path) is not JSON: \(error)") }
            guard let slots = document["slots"]?.arrayValue else { throw StoreFileError("\(path) has no \"slots\" list") }
            return try slots.map { item in
                guard let saved = SlotQuarantine.Saved(json: item) else { throw StoreFileError("\(path) has an entry it cannot read: \(item.canonicalText)") }
                return saved
            }
        }
    }

    /// Writes `saved` as the list, unless a newer `version` was written already.
    func save(_ saved: [SlotQuarantine.Saved], version: Int) async throws {
        let text = Array(JSONValue.object(["slots": .array(saved.map(\.json))]).canonicalText.utf8) + [UInt8(ascii: "\n")]
        try await BlockingIO.run { [self] () throws in
            try self.written.withLock { written in
                guard version > written else { return }
                try Self.replace(self.path, with: text)
                written = version
            }
        }
    }

    private static func replace(_ path: String, with bytes: [UInt8]) throws {
        let temporary = path + ".tmp"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw StoreFileError("cannot write \(temporary): \(String(cString: strerror(errno)))") }
        var offset = 0
        while offset < bytes.count {
            let count = bytes[offset...].withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else {
                let problem = String(cString: strerror(errno))
                close(descriptor)
                unlink(temporary)
                throw StoreFileError("cannot write \(temporary): \(problem)")
            }
            offset += count
        }
        let synced = fsync(descriptor) == 0
        let problem = String(cString: strerror(errno))
        close(descriptor)
        guard synced else {
            unlink(temporary)
            throw StoreFileError("cannot sync \(temporary): \(problem)")
        }
        guard rename(temporary, path) == 0 else {
            let problem = String(cString: strerror(errno))
            unlink(temporary)
            throw StoreFileError("cannot replace \(path): \(problem)")
        }
        // The rename itself, durable.
        let directory = open(path.lastIndex(of: "/").map { String(path[..<$0]) } ?? ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directory >= 0 {
            _ = fsync(directory)
            close(directory)
        }
    }
}

/// A quarantine file that could not be read or written.
struct StoreFileError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
