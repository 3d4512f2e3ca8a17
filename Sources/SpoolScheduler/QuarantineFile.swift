#if canImport(Glibc)
import Glibc
#endif
import SpoolCore
import SpoolExecutor
import Synchronization

/// The node's GPU quarantine, kept in its data directory (`quarantine.json`) so that a restart —
/// a crash, a deploy — does not put a faulty GPU back to work: the slot stays closed until a
/// self-test passes or an administrator releases it. Node-local on purpose: it is about this
/// machine's devices, whichever store the queue is in. With the list goes the layout it was
/// made under (each GPU slot's device), so that a server whose slots are laid out anew closes
/// the right GPUs (`SlotQuarantine.restore`).
///
/// Written whole, through a temporary file that is synced and renamed over the old one (and the
/// directory synced): a crash leaves the old list or the new one, never half of one.
final class QuarantineFile: Sendable {
    /// What a start finds: the list and the layout it was made under.
    struct Kept: Sendable, Equatable {
        var saved: [SlotQuarantine.Saved]
        var layout: [SlotID: String]
    }

    let path: String
    /// The newest version written: a save that lost a race to a newer one writes nothing.
    private let written = Mutex<Int>(0)

    init(dataDirectory: String) {
        path = dataDirectory + "/quarantine.json"
    }

    /// What the last run kept; nil when there is no file.
    func load() async throws(QuarantineFileError) -> Kept? {
        let path = self.path
        let answer = try? await BlockingIO.run { () -> Result<Kept?, QuarantineFileError> in
            if access(path, F_OK) != 0, errno == ENOENT { return .success(nil) }
            guard let bytes = OrphanReaper.readFile(path) else {
                return .failure(QuarantineFileError(.unreadable, "cannot read \(path): \(String(cString: strerror(errno)))"))
            }
            guard bytes.count <= 1 << 20 else { return .failure(QuarantineFileError(.damaged, "\(path) is larger than 1 MiB")) }
            let document: JSONValue
            do { document = try JSONParser.parse(bytes) } catch {
                return .failure(QuarantineFileError(.damaged, "\(path) is not JSON: \(error)"))
            }
            guard let slots = document["slots"]?.arrayValue, case .object(let gpus)? = document["gpus"] else {
                return .failure(QuarantineFileError(.damaged, "\(path) has no \"slots\" list or \"gpus\" layout"))
            }
            var layout: [SlotID: String] = [:]
            for (slot, gpu) in gpus {
                guard let number = Int(slot), let gpu = gpu.stringValue else {
                    return .failure(QuarantineFileError(.damaged, "\(path) has a layout entry it cannot read: \"\(slot)\""))
                }
                layout[SlotID(number)] = gpu
            }
            var saved: [SlotQuarantine.Saved] = []
            for item in slots {
                guard let entry = SlotQuarantine.Saved(json: item) else {
                    return .failure(QuarantineFileError(.damaged, "\(path) has an entry it cannot read: \(item.canonicalText)"))
                }
                saved.append(entry)
            }
            return .success(Kept(saved: saved, layout: layout))
        }
        guard let answer else { throw QuarantineFileError(.unreadable, "cannot read \(path): the server is shutting down") }
        return try answer.get()
    }

    /// Moves a damaged file aside (`quarantine.json.bad`), for someone to look at; the next
    /// write starts a new one.
    func setAside() async {
        let path = self.path
        _ = try? await BlockingIO.run { rename(path, path + ".bad") }
    }

    /// Writes `kept` as the list, unless a newer `version` was written already.
    func save(_ kept: Kept, version: Int) async throws(QuarantineFileError) {
        let document = JSONValue.object([
            "slots": .array(kept.saved.map(\.json)),
            "gpus": .object(Dictionary(uniqueKeysWithValues: kept.layout.map { (String($0.key.rawValue), JSONValue.string($0.value)) })),
        ])
        let text = Array(document.canonicalText.utf8) + [UInt8(ascii: "\n")]
        let failure = try? await BlockingIO.run { [self] () -> QuarantineFileError? in
            written.withLock { written in
                guard version > written else { return nil }
                if let failure = Self.replace(path, with: text) { return failure }
                written = version
                return nil
            }
        }
        if let failure = failure ?? nil { throw failure }
    }

    /// Writes the file whole, through a synced temporary file and a rename; what went wrong, or nil.
    private static func replace(_ path: String, with bytes: [UInt8]) -> QuarantineFileError? {
        func failed(_ what: String) -> QuarantineFileError { QuarantineFileError(.unwritable, "cannot \(what): \(String(cString: strerror(errno)))") }
        let temporary = path + ".tmp"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { return failed("write \(temporary)") }
        var offset = 0
        while offset < bytes.count {
            let count = bytes[offset...].withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else {
                let failure = count == 0 ? QuarantineFileError(.unwritable, "cannot write \(temporary): a short write") : failed("write \(temporary)")
                close(descriptor)
                unlink(temporary)
                return failure
            }
            offset += count
        }
        if fsync(descriptor) != 0 {
            let failure = failed("sync \(temporary)")
            close(descriptor)
            unlink(temporary)
            return failure
        }
        close(descriptor)
        guard rename(temporary, path) == 0 else {
            let failure = failed("replace \(path)")
            unlink(temporary)
            return failure
        }
        // The rename itself, durable.
        let directory = open(path.lastIndex(of: "/").map { String(path[..<$0]) } ?? ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard directory >= 0 else { return failed("open the directory of \(path) to sync it") }
        defer { close(directory) }
        return fsync(directory) == 0 ? nil : failed("sync the directory of \(path)")
    }
}

/// A quarantine file that could not be read (as it is: damaged, or not at all) or written.
struct QuarantineFileError: Error, CustomStringConvertible {
    enum Kind: Sendable { case unreadable, damaged, unwritable }
    let kind: Kind
    let description: String
    init(_ kind: Kind, _ description: String) { (self.kind, self.description) = (kind, description) }
}
