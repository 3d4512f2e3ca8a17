import Foundation
import Hummingbird
import NIOPosix
import SpoolCore
import SpoolExecutor

/// Logs and outputs: files under the job's directory, read on NIO's blocking-I/O pool.
extension SpoolAPI {
    @Sendable func logs(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let id = try jobID(context)
        _ = try await find(id)
        var offset = 0
        if let text = request.uri.queryParameters.get("offset") {
            guard let value = Int(text), value >= 0 else { throw APIError.badRequest("offset must be a non-negative byte offset") }
            offset = value
        }
        let path = JobPaths(dataDirectory: dataDirectory, job: id).log
        let size = try await NIOThreadPool.singleton.runIfActive { Self.fileSize(path) ?? 0 }
        var headers: HTTPFields = [.contentType: "text/plain; charset=utf-8"]
        headers[.nextOffset] = String(max(size, offset))
        guard offset < size else { return Response(status: .ok, headers: headers) }
        let body = try await FileIO().loadFile(path: path, range: offset...(size - 1), context: context)
        return Response(status: .ok, headers: headers, body: body)
    }

    @Sendable func outputs(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let id = try jobID(context)
        _ = try await find(id)
        let root = JobPaths(dataDirectory: dataDirectory, job: id).outputs
        let files = try await NIOThreadPool.singleton.runIfActive { OutputFiles.list(under: root) }
        let list = files.map { name, size -> JSONValue in
            .object(["name": .string(name), "size": .int(size), "content_type": .string(Self.contentType(of: name)),
                     "url": .string("/v1/jobs/\(id)/outputs/" + (name.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? name))])
        }
        return json(.object(["outputs": .array(list)]))
    }

    @Sendable func output(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let id = try jobID(context)
        let raw = context.parameters.getCatchAll().joined(separator: "/")
        let name = raw.removingPercentEncoding ?? raw
        let paths = JobPaths(dataDirectory: dataDirectory, job: id)
        guard let path = paths.output(named: name) else {
            throw APIError.badRequest("\"\(name)\" is not a valid output name (no \"..\", no absolute paths)")
        }
        _ = try await find(id)
        // Resolve symlinks and make sure the file is still inside the job's outputs.
        let resolved = try await NIOThreadPool.singleton.runIfActive { () -> String? in
            guard let real = Self.realPath(path), let root = Self.realPath(paths.outputs),
                  real.hasPrefix(root + "/"), Self.isRegularFile(real) else { return nil }
            return real
        }
        guard let resolved else { throw APIError.notFound("job \(id) has no output \"\(name)\"") }
        let body = try await FileIO().loadFile(path: resolved, context: context)
        return Response(status: .ok, headers: [.contentType: Self.contentType(of: name)], body: body)
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
