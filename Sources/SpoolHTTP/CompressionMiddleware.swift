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
        if let tag = response.headers[.eTag] { response.headers[.eTag] = Download.gzipTag(tag) }
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

    /// `gzip` (or `*`) is listed with a non-zero weight. Read on every request (Python's
    /// clients all send the header), so without Foundation: a field of a few ASCII words.
    static func acceptsGzip(_ header: String?) -> Bool {
        guard let header else { return false }
        return header.utf8.split(separator: UInt8(ascii: ",")).contains { item in
            let parts = item.split(separator: UInt8(ascii: ";"), omittingEmptySubsequences: false).map(trimmed)
            guard let coding = parts.first, equalsIgnoringCase(coding, "gzip") || coding.elementsEqual("*".utf8) else { return false }
            let weight = parts.dropFirst().first { $0.count >= 2 && equalsIgnoringCase($0.prefix(2), "q=") }
                .flatMap { Double(String(decoding: $0.dropFirst(2), as: UTF8.self)) } ?? 1
            return weight > 0
        }
    }

    /// `bytes` without the spaces and tabs around it.
    private static func trimmed(_ bytes: Substring.UTF8View.SubSequence) -> Substring.UTF8View.SubSequence {
        let blank: (UInt8) -> Bool = { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }
        guard let first = bytes.firstIndex(where: { !blank($0) }), let last = bytes.lastIndex(where: { !blank($0) }) else { return bytes[bytes.endIndex...] }
        return bytes[first...last]
    }

    /// Whether `bytes` spell `word` (lower-case ASCII) in any case.
    private static func equalsIgnoringCase(_ bytes: Substring.UTF8View.SubSequence, _ word: StaticString) -> Bool {
        let expected = UnsafeBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount)
        return bytes.elementsEqual(expected) { byte, lower in (byte >= 65 && byte <= 90 ? byte + 32 : byte) == lower }
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
