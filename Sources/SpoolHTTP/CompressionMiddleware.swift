import CompressNIO
import HTTPTypes
import Hummingbird
import NIOCore
import NIOPosix

/// gzip for JSON and text answers when the client asks for it (`Accept-Encoding: gzip`): a page
/// of jobs or a log shrinks several times over a slow link. Only complete answers of known
/// length from 1 KiB to 16 MiB are compressed — never an event stream (it must flow as it is
/// written), a range, or anything already encoded; bodies over 64 KiB are compressed on NIO's
/// blocking pool, off the request's task.
struct CompressionMiddleware<Context: RequestContext>: RouterMiddleware {
    static var smallest: Int { 1024 }
    static var largest: Int { 16 << 20 }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response = try await next(request, context)
        // A HEAD answer describes the identity encoding (clients do not expect an empty gzip body).
        guard request.method != .head else { return response }
        guard Self.acceptsGzip(request.headers[.acceptEncoding]) else {
            if Self.compressible(response) { response.headers.append(HTTPField(name: .vary, value: "Accept-Encoding")) }
            return response
        }
        guard Self.compressible(response), let length = response.body.contentLength,
              (Self.smallest...Self.largest).contains(length) else { return response }
        let collector = BodyCollector()
        try await response.body.write(collector)
        let plain = collector.buffer
        @Sendable func gzip() throws -> ByteBuffer {
            var input = plain
            return try input.compress(with: .gzip(), allocator: ByteBufferAllocator())
        }
        let compressed = length > 64 << 10 ? try await NIOThreadPool.singleton.runIfActive(gzip) : try gzip()
        response.body = ResponseBody(byteBuffer: compressed)
        response.headers[.contentEncoding] = "gzip"
        response.headers[.contentLength] = String(compressed.readableBytes)
        response.headers.append(HTTPField(name: .vary, value: "Accept-Encoding"))
        // Another representation, another entity tag (RFC 9110 §8.8.3).
        if let tag = response.headers[.eTag], tag.hasSuffix("\"") { response.headers[.eTag] = String(tag.dropLast()) + "-gzip\"" }
        return response
    }

    /// JSON or text, a complete 200 (or 201) answer, not yet encoded.
    static func compressible(_ response: Response) -> Bool {
        guard response.status == .ok || response.status == .created, response.headers[.contentEncoding] == nil,
              let type = response.headers[.contentType]?.lowercased() else { return false }
        if type.hasPrefix("text/event-stream") { return false }
        return type.hasPrefix("application/json") || type.hasPrefix("application/problem+json") || type.hasPrefix("text/")
            || type.hasPrefix("application/javascript")
    }

    /// `gzip` (or `*`) is listed with a non-zero weight.
    static func acceptsGzip(_ header: String?) -> Bool {
        guard let header else { return false }
        return header.split(separator: ",").contains { item in
            let parts = item.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
            guard let coding = parts.first, coding == "gzip" || coding == "*" else { return false }
            let weight = parts.dropFirst().first { $0.hasPrefix("q=") }.flatMap { Double($0.dropFirst(2)) } ?? 1
            return weight > 0
        }
    }
}

/// Collects a response body into one buffer.
final class BodyCollector: ResponseBodyWriter {
    var buffer = ByteBuffer()
    func write(_ buffer: ByteBuffer) async throws {
        var buffer = buffer
        self.buffer.writeBuffer(&buffer)
    }
    func finish(_ trailingHeaders: HTTPFields?) async throws {}
}
