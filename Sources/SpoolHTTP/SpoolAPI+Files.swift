import Foundation
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
        let path = JobPaths(dataDirectory: dataDirectory, job: id).log
        let localSize = try await NIOThreadPool.singleton.runIfActive { Self.fileSize(path) }
        var headers = Self.untrusted(contentType: "text/plain; charset=utf-8")
        guard let size = localSize, !(size == 0 && store is any SharedJobStore) else {
            let text = try await sharedLog(of: id)
            headers[.nextOffset] = String(max(text.count, offset))
            guard offset < text.count else { return Response(status: .ok, headers: headers) }
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: text[offset...])))
        }
        headers[.nextOffset] = String(max(size, offset))
        guard offset < size else { return Response(status: .ok, headers: headers) }
        let body = try await FileIO().loadFile(path: path, range: offset...(size - 1), context: context)
        return Response(status: .ok, headers: headers, body: body)
    }

    @Sendable func outputs(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let id = try jobID(context)
        _ = try await find(id, for: context.principal)
        let root = JobPaths(dataDirectory: dataDirectory, job: id).outputs
        var files = try await NIOThreadPool.singleton.runIfActive { Self.isDirectory(root) ? OutputFiles.list(under: root) : nil }
        if files == nil, let shared = store as? any SharedJobStore {
            let prefix = StoredFile.outputName("")
            files = try await shared.storedFiles(of: id).filter { $0.name.hasPrefix(prefix) }
                .map { (String($0.name.dropFirst(prefix.count)), Int64($0.size)) }
        }
        let list = (files ?? []).map { name, size -> JSONValue in
            .object(["name": .string(name), "size": .int(size), "content_type": .string(Self.contentType(of: name)),
                     "url": .string("/v1/jobs/\(id)/outputs/" + (name.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? name))])
        }
        return json(.object(["outputs": .array(list)]))
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
        // Resolve symlinks and make sure the file is still inside the job's outputs.
        let resolved = try await NIOThreadPool.singleton.runIfActive { () -> String? in
            guard let real = Self.realPath(path), let root = Self.realPath(paths.outputs),
                  real.hasPrefix(root + "/"), Self.isRegularFile(real) else { return nil }
            return real
        }
        guard let resolved else {
            if let shared = store as? any SharedJobStore, let content = try await shared.storedFile(StoredFile.outputName(name), of: id) {
                return Response(status: .ok, headers: Self.untrusted(contentType: Self.contentType(of: name)),
                                body: ResponseBody(byteBuffer: ByteBuffer(bytes: content)))
            }
            throw APIError.notFound("job \(id) has no output \"\(name)\"")
        }
        let body = try await FileIO().loadFile(path: resolved, context: context)
        return Response(status: .ok, headers: Self.untrusted(contentType: Self.contentType(of: name)), body: body)
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

    static func isDirectory(_ path: String) -> Bool {
        var status = stat()
        return stat(path, &status) == 0 && (status.st_mode & S_IFMT) == S_IFDIR
    }

    static func contentType(of name: String) -> String {
        guard let dot = name.lastIndex(of: "."), let type = MediaType.getMediaType(forExtension: String(name[name.index(after: dot)...])) else {
            return "application/octet-stream"
        }
        return type.description
    }

    static func fileSize(_ path: String) -> Int? {
        var status = stat()
        return stat(path, &status) == 0 ? Int(status.st_size) : nil
    }

    static func isRegularFile(_ path: String) -> Bool {
        var status = stat()
        return stat(path, &status) == 0 && (status.st_mode & S_IFMT) == S_IFREG
    }

    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}
