import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import NIOPosix
import SpoolCore
import SpoolExecutor
import SpoolStore

/// Logs and outputs: files under the job's directory, read on NIO's blocking-I/O pool.
///
/// With a shared store, a job may have run on another node. Then its files come from the
/// store: the copy its node made as the job ended (up to `shared_file_limit_bytes`), and, for
/// the log of a job still running elsewhere, the log lines it has sent as events so far.
extension SpoolAPI {
    @Sendable func logs(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let id = try jobID(context)
        _ = try await find(id, for: context.principal)
        var offset = 0
        if let text = request.uri.queryParameters.get("offset") {
            guard let value = Int(text), value >= 0 else { throw APIError.badRequest("offset must be a non-negative byte offset") }
            offset = value
        }
        let paths = JobPaths(dataDirectory: dataDirectory, job: id)
        let path = paths.log
        // The log file itself, in the job's own directory: never what a link the job left there
        // points to, never a FIFO it put in its place; served from the descriptor opened here.
        // The base from the same descriptor as the bytes it places, checked against the cut's
        // notice (`LogBase`); read again when a cut came between the two (three times at most,
        // then the log is sent from its start, as one whose place was cut away).
        let (opened, base) = try await NIOThreadPool.singleton.runIfActive { () -> (OpenedFile?, LogBase?) in
            guard JobFiles.isRealDirectory(paths.directory) else { return (nil, nil) }
            var last: OpenedFile?
            for _ in 0..<3 {
                let cut = JobFiles.contents(of: paths.logCut, limit: LogBase.noticeLimit)
                errno = 0
                guard let file = OpenedFile.open(path, singleLink: true) else {
                    try ResourcesShort.check(errno)   // not a log that is not there
                    return (nil, nil)
                }
                // The notice read again after the open: a cut in between (the first one too) is seen.
                if let base = LogBase.read(file.descriptor, cut: cut), JobFiles.contents(of: paths.logCut, limit: LogBase.noticeLimit) == cut {
                    return (file, base)
                }
                last = file
            }
            // Still at odds (a cut that failed, or a crash, between its two renames): counted as
            // never cut, rather than told "cut" at every read (found in review: a follower looped).
            return (last, LogBase(first: 0, notice: 0))
        }
        var headers = Self.untrusted(contentType: "text/plain; charset=utf-8")
        // Offsets count every byte the job wrote (`LogBase`). One whose byte was cut away since
        // (a job run again and again keeps `max_attempts + 2` runs' worth), or past the end, gets
        // what is left from its start, saying so (found by attacking the build: a follower waited
        // for the file to grow past its old offset, then printed a line's tail and lost a run).
        func place(_ base: LogBase?, size: Int) -> Int {
            headers[.nextOffset] = String((base ?? LogBase(first: 0, notice: 0)).end(ofFileSized: size))
            guard let base, let position = base.position(of: offset, inFileSized: size) else {
                headers[.logTrimmed] = "1"
                return 0
            }
            return position
        }
        guard let opened, !(opened.size == 0 && store is any SharedJobStore) else {
            // The shared store's copy begins with the cut's notice too, kept beside it.
            let text = try await sharedLog(of: id)
            let cut = try await (store as? any SharedJobStore)?.storedFile(StoredFile.logCutName, of: id)
            let start = place(LogBase.verified(head: text.prefix(LogBase.noticeLimit), cut: cut), size: text.count)
            guard start < text.count else { return Response(status: .ok, headers: headers) }
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: text[start...])))
        }
        let size = opened.size
        let start = place(base, size: size)
        guard start < size else { return Response(status: .ok, headers: headers) }
        return Response(status: .ok, headers: headers, body: opened.body(start...(size - 1)))
    }

    @Sendable func outputs(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let id = try jobID(context)
        _ = try await find(id, for: context.principal)
        let (files, leftOut) = try await outputFiles(of: id)
        let list = files.prefix(OutputFiles.listLimit).map { name, size -> JSONValue in
            .object(["name": .string(name), "size": .int(size), "content_type": .string(Self.contentType(of: name)),
                     "url": .string("/v1/jobs/\(id)/outputs/" + (name.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? name))])
        }
        // Past the limit the list is some of the files, not all (found by attacking the build: a
        // job's 12,000 outputs listed as 10,000, saying nothing, and the CLI fetched those only).
        var body: [String: JSONValue] = ["outputs": .array(Array(list))]
        // Files left out (a name that is not UTF-8, one the server cannot read) make it some too.
        if files.count > OutputFiles.listLimit || leftOut > 0 { body["truncated"] = .bool(true) }
        return json(.object(body))
    }

    /// A job's output files (name, size) — from its directory here, else from a shared store —
    /// and how many of its directory's files were left out (`OutputFiles.listing`).
    func outputFiles(of id: JobID) async throws -> (files: [(name: String, size: Int64)], leftOut: Int) {
        let paths = JobPaths(dataDirectory: dataDirectory, job: id)
        let local = try await NIOThreadPool.singleton.runIfActive {
            JobFiles.holdsItsOwnOutputs(paths) ? try OutputFiles.listing(under: paths.outputs, limit: OutputFiles.listLimit + 1) : nil
        }
        if let local { return local }
        guard let shared = store as? any SharedJobStore else { return ([], 0) }
        let prefix = StoredFile.outputName("")
        let stored = try await shared.storedFiles(of: id)
        let files = stored.filter { $0.name.hasPrefix(prefix) }.map { (name: String($0.name.dropFirst(prefix.count)), size: Int64($0.size)) }
        // Outputs left on the node that ran the job (past shared_file_limit_bytes): not all of them.
        guard stored.contains(where: { $0.name == StoredFile.outputsLeftName }),
              let left = try await shared.storedFile(StoredFile.outputsLeftName, of: id) else { return (files, 0) }
        return (files, max(1, left.count { $0 == UInt8(ascii: "\n") }))
    }

    @Sendable func output(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let id = try jobID(context)
        let raw = context.parameters.getCatchAll().joined(separator: "/")
        let name = raw.removingPercentEncoding ?? raw
        let paths = JobPaths(dataDirectory: dataDirectory, job: id)
        guard let path = paths.output(named: name) else {
            throw APIError.badRequest("\"\(name)\" is not a valid output name (no \"..\", no absolute paths)")
        }
        _ = try await find(id, for: context.principal)
        // Resolve symlinks and make sure the file is still inside the job's outputs (which must
        // be the folder the server made, not a link the job put in its place).
        let resolved = try await NIOThreadPool.singleton.runIfActive { () -> OpenedFile? in
            guard JobFiles.holdsItsOwnOutputs(paths), let real = Self.realPath(path), let root = Self.realPath(paths.outputs),
                  real.hasPrefix(root + "/") else { return nil }
            errno = 0
            guard let opened = OpenedFile.open(real) else {
                try ResourcesShort.check(errno)   // not an output that is not there
                return nil
            }
            return opened
        }
        let contentType = Self.contentType(of: name)
        guard let resolved else {
            if let shared = store as? any SharedJobStore, let content = try await shared.storedFile(StoredFile.outputName(name), of: id) {
                let digest = SHA256.hash(data: content).prefix(12).map { String(format: "%02x", $0) }.joined()
                let download = Download(etag: "\"\(digest)\"", lastModified: nil, size: content.count)
                return try await Self.answer(request, download, contentType: contentType) { range in
                    ResponseBody(byteBuffer: ByteBuffer(bytes: content[range]))
                }
            }
            if store is any SharedJobStore, let job = try? await store.job(id), let node = job.node, node != self.node {
                throw APIError.notFound("job \(id) has no output \"\(name)\" in the shared store; it ran on node \(node), which "
                                        + "keeps any outputs past shared_file_limit_bytes (the end of the job's log names them)")
            }
            throw APIError.notFound("job \(id) has no output \"\(name)\"")
        }
        return try await Self.answer(request, resolved.download, contentType: contentType) { range in resolved.body(range) }
    }

    /// The answer to a GET or HEAD of a download: 304, 200, 206 or 416 (RFC 9110 §13, §14).
    static func answer(_ request: Request, _ download: Download, contentType: String,
                       body: (ClosedRange<Int>) async throws -> ResponseBody) async throws -> Response {
        var headers = untrusted(contentType: contentType)
        for field in download.headers { headers.append(field) }
        switch download.answer(to: request.headers) {
        case .notModified(let gzip):
            headers[.contentType] = nil
            if gzip { headers[.eTag] = download.gzipETag }
            headers.append(HTTPField(name: .vary, value: "Accept-Encoding"))   // as its 200 would (RFC 9110 §15.4.5)
            return Response(status: .notModified, headers: headers)
        case .unsatisfiable:
            throw APIError(status: .rangeNotSatisfiable, code: "range-not-satisfiable",
                           detail: "the output has \(download.size) bytes; the range asks for none of them",
                           headers: [.contentRange: "bytes */\(download.size)", .acceptRanges: "bytes"])
        case .partial(let range):
            headers[.contentRange] = "bytes \(range.lowerBound)-\(range.upperBound)/\(download.size)"
            headers[.contentLength] = String(range.count)
            return Response(status: .partialContent, headers: headers, body: try await body(range))
        case .whole:
            headers[.contentLength] = String(download.size)
            guard download.size > 0 else { return Response(status: .ok, headers: headers) }
            return Response(status: .ok, headers: headers, body: try await body(0...(download.size - 1)))
        }
    }

    /// The log of a job that ran (or runs) on another node: the copy its node stored as it
    /// ended, else the lines it has sent as events so far (the first 64 KiB).
    func sharedLog(of id: JobID) async throws -> [UInt8] {
        guard let shared = store as? any SharedJobStore else { return [] }
        if let stored = try await shared.storedFile(StoredFile.logName, of: id) { return stored }
        var text: [UInt8] = []
        var after: Int64 = 0
        while true {
            let events = try await store.events(after: after, job: id, limit: 500)
            for event in events where event.kind == .log { text += Array((event.data["text"]?.stringValue ?? "").utf8) }
            guard events.count == 500, let last = events.last else { return text }
            after = last.id
        }
    }

    /// Headers for what a job wrote (its outputs, its log): the browser must take the content
    /// type as given (`nosniff`), and an HTML output runs no script on the API's origin (a
    /// sandboxed document has an origin of its own).
    static func untrusted(contentType: String) -> HTTPFields {
        [.contentType: contentType, .xContentTypeOptions: "nosniff", .contentSecurityPolicy: "sandbox"]
    }

    static func contentType(of name: String) -> String {
        guard let dot = name.lastIndex(of: "."), let type = MediaType.getMediaType(forExtension: String(name[name.index(after: dot)...])) else {
            return "application/octet-stream"
        }
        return type.description
    }

    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}
