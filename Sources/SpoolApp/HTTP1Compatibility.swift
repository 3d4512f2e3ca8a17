import HTTPTypes
import NIOCore
import NIOHTTP1
import NIOHTTPTypesHTTP1
import SpoolCore
import SpoolHTTP

/// What HTTP/1 clients expect and the version-independent HTTP types lose, handled on the
/// HTTP/1 messages themselves (just before their conversion to HTTP types):
///
/// - `Expect: 100-continue` (RFC 9110 §10.1.1) is answered with `100 Continue` at once, so a
///   client that waits for it (curl does, for a second) sends its body without delay. A body
///   announced larger than the server takes is not invited: the route then answers 413 with no
///   body sent.
/// - An HTTP/1.0 client gets an HTTP/1.0 response: never chunked encoding (which it cannot
///   read), so a response of unknown length — an event stream — ends by closing the connection,
///   as HTTP/1.0 defines.
/// - `Host` as RFC 9112 §3.2 has it: an HTTP/1.1 request with none, more than one, or one that is
///   not a host and an optional port is answered 400 (found by attacking the build: they were
///   served, the host guard reading the first of two). A request in absolute form
///   (`GET http://host:port/path`) is judged by its own authority (§3.2.2): it replaces `Host`,
///   and the path is what is routed.
/// - A request that cannot be read as HTTP/1.1 is answered with a problem+json saying why —
///   headers too large with 431, anything else with 400 — and the connection closed (Hummingbird
///   answers a bare 400 with no body).
final class HTTP1Compatibility: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let maxBodyBytes: Int
    /// The version of the request being answered (requests are answered in order).
    private var versions: [HTTPVersion] = []
    private var closeAfterResponse = false

    init(maxBodyBytes: Int) { self.maxBodyBytes = maxBodyBytes }

    /// Adds a handler just before the HTTP/1 → HTTP types conversion of `pipeline`, if it has one
    /// (an HTTP/2 stream has not).
    static func install(in pipeline: ChannelPipeline.SynchronousOperations, maxBodyBytes: Int) {
        guard let codec = try? pipeline.handler(type: HTTP1ToHTTPServerCodec.self) else { return }
        try? pipeline.addHandler(HTTP1Compatibility(maxBodyBytes: maxBodyBytes), position: .before(codec))
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refusing else { return }   // the rest of a refused request
        if case .head(var head) = unwrapInboundIn(data) {
            if let problem = Self.takeHost(&head) {
                answer(context, version: head.version, status: .badRequest, code: "invalid-host", detail: problem, instance: "")
                return
            }
            if head.version >= .http1_1, head.headers["expect"].contains(where: { $0.lowercased() == "100-continue" }) {
                let length = head.headers["content-length"].first.flatMap(Int.init) ?? 0
                guard length <= maxBodyBytes else {
                    refuse(context, head, length: length)
                    return
                }
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))), promise: nil)
            }
            versions.append(head.version)
            context.fireChannelRead(wrapInboundOut(.head(head)))
            return
        }
        context.fireChannelRead(data)
    }

    /// Checks the request's `Host` (taking an absolute-form target's authority in its place, and
    /// leaving the path as the target); why it cannot be served, or nil.
    static func takeHost(_ head: inout HTTPRequestHead) -> String? {
        if head.method != .CONNECT, !head.uri.hasPrefix("/"), head.uri != "*" {
            guard let separator = head.uri.range(of: "://"),
                  ["http", "https"].contains(head.uri[..<separator.lowerBound].lowercased()) else {
                return "the request target \"\(head.uri.prefix(100))\" is neither a path nor an http(s) URL"
            }
            let rest = head.uri[separator.upperBound...]
            let end = rest.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? rest.endIndex
            let authority = String(rest[..<end])
            guard isHostAndPort(authority) else {
                return "the request target's authority \"\(authority.prefix(100))\" is not a host and port"
            }
            let path = rest[end...]
            head.uri = path.hasPrefix("/") ? String(path) : "/" + path
            head.headers.replaceOrAdd(name: "host", value: authority)
            return nil
        }
        let hosts = head.headers["host"]
        if hosts.count > 1 { return "the request has \(hosts.count) Host headers; send exactly one" }
        guard let host = hosts.first else {
            return head.version >= .http1_1 ? "an HTTP/1.1 request needs a Host header (RFC 9112 §3.2)" : nil
        }
        return isHostAndPort(host) ? nil : "the Host header \"\(host.prefix(100))\" is not a host and port"
    }

    /// `uri-host [":" port]` (RFC 3986 §3.2.2): an IP literal in brackets, or a name or IPv4 address
    /// of unreserved characters, percent escapes and sub-delimiters — no user information, no
    /// space — then digits up to 65535 (or none) after a colon.
    static func isHostAndPort(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        var index = 0
        if bytes.first == UInt8(ascii: "[") {
            guard let close = bytes.firstIndex(of: UInt8(ascii: "]")), close > 1,
                  bytes[1..<close].allSatisfy({ isHexDigit($0) || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: ".") }) else { return false }
            index = close + 1
        } else {
            while index < bytes.count, bytes[index] != UInt8(ascii: ":") {
                guard isNameByte(bytes[index]) else { return false }
                index += 1
            }
            guard index > 0 else { return false }
        }
        guard index < bytes.count else { return true }
        guard bytes[index] == UInt8(ascii: ":") else { return false }
        let port = bytes[(index + 1)...]
        guard port.count <= 5, port.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else { return false }
        return port.isEmpty || Int(String(decoding: port, as: UTF8.self))! <= 65535
    }

    private static func isHexDigit(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte | 0x20)
    }

    /// unreserved / pct-encoded / sub-delims (RFC 3986's reg-name).
    private static func isNameByte(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte | 0x20) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
            || Array("-._~%!$&'()*+,;=".utf8).contains(byte)
    }

    private var refusing = false

    /// 413 before the body is sent (RFC 9110 §10.1.1), and the connection closed: the client
    /// waits for 100 Continue, so it has sent nothing it would have to have read.
    private func refuse(_ context: ChannelHandlerContext, _ request: HTTPRequestHead, length: Int) {
        let path = request.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? request.uri
        answer(context, version: request.version, status: .contentTooLarge, code: "content-too-large",
               detail: "the body would be \(length) bytes; this server takes at most \(maxBodyBytes) (max_body_bytes)", instance: path)
    }

    /// The decoder could not read the request: answered here, and the connection closed.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let error = error as? HTTPParserError, !refusing else {
            context.fireErrorCaught(error)
            return
        }
        if error == .headerOverflow {
            answer(context, version: .http1_1, status: .requestHeaderFieldsTooLarge, code: "header-fields-too-large",
                   detail: "the request's headers are larger than this server reads", instance: "")
        } else {
            answer(context, version: .http1_1, status: .badRequest, code: "bad-request",
                   detail: "the request could not be read as HTTP/1.1 (\(error))", instance: "")
        }
    }

    /// Answers `status` with a problem+json, then closes the connection; what else arrives is dropped.
    private func answer(_ context: ChannelHandlerContext, version: HTTPVersion, status: HTTPTypes.HTTPResponse.Status, code: String,
                        detail: String, instance: String) {
        refusing = true
        var fields = Problem.document(status: status, code: code, detail: detail, instance: instance)
        if instance.isEmpty { fields["instance"] = nil }   // the request's path was never read
        let problem = JSONValue.object(fields).canonicalText
        var headers = HTTPHeaders([("Content-Type", Problem.contentType), ("Content-Length", String(problem.utf8.count)),
                                   ("Connection", "close")])
        headers.add(name: "Server", value: "spool")
        let head = HTTPResponseHead(version: version, status: HTTPResponseStatus(statusCode: status.code, reasonPhrase: status.reasonPhrase),
                                    headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: problem)))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(var head) where head.status.code >= 200:
            let version = versions.isEmpty ? .http1_1 : versions.removeFirst()
            guard version < .http1_1 else { break }
            head.version = version
            head.headers.remove(name: "transfer-encoding")
            // Without a length, the end of the connection is the end of the body; with one, an
            // HTTP/1.0 client still expects the connection to close unless it asked otherwise.
            let keepAlive = head.headers["content-length"].first != nil
                && head.headers["connection"].contains { $0.lowercased() == "keep-alive" }
            if !keepAlive {
                head.headers.replaceOrAdd(name: "connection", value: "close")
                closeAfterResponse = true
            }
            context.write(wrapOutboundOut(.head(head)), promise: promise)
            return
        case .end where closeAfterResponse:
            closeAfterResponse = false
            let channel = context.channel
            let written = context.writeAndFlush(data)
            written.whenComplete { _ in channel.close(promise: nil) }
            if let promise { written.cascade(to: promise) }
            return
        default:
            break
        }
        context.write(data, promise: promise)
    }
}

extension HTTPVersion: @retroactive Comparable {
    public static func < (lhs: HTTPVersion, rhs: HTTPVersion) -> Bool {
        (lhs.major, lhs.minor) < (rhs.major, rhs.minor)
    }
}
