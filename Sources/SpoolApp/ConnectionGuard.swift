import HummingbirdCore
import HummingbirdHTTP2
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTPTypes
import NIOSSL
import NIOTLS
import Synchronization

/// Keeps slow or too many clients from locking others out, per HTTP connection:
///
/// - a connection must send a request's headers within `headerTimeout` of opening (or of its
///   previous response ending), and then its body with no pause as long, and at
///   `minBodyBytesPerSecond` on average (the body's time starts at `headerTimeout` and grows a
///   second for every that many bytes); one that dribbles or stalls — 300 half-open
///   connections, uploads that stop after their headers, or bodies sent a byte every few
///   seconds — is closed, so it holds no slot for long. Once a request has arrived whole, the
///   server may take as long as it needs to answer (a long poll, an event stream);
/// - at most `limit` connections are open at once; one more is closed at once.
final class ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// Open connections, shared by every connection's guard.
    final class Count: Sendable {
        let open = Atomic<Int>(0)
        let limit: Int
        init(limit: Int) { self.limit = limit }
    }

    private let headerTimeout: TimeAmount
    private let count: Count
    private var timer: Scheduled<Void>?
    private var counted = false
    /// A request's parts are arriving (its head came, its end not yet).
    private var receiving = false
    /// Requests that arrived whole, and responses that ended, on this connection: more of the
    /// first means one is being answered (a pipelined one waits its turn behind it).
    private var requestsEnded = 0
    private var responsesEnded = 0

    private let maxBodyBytes: Int
    /// When the body of the request arriving must have arrived whole (grows with what comes).
    private var bodyDeadline: NIODeadline?
    /// The slowest average a request body may arrive at (found by attacking the build: bodies
    /// sent a byte every 4 s, never pausing the 10-s timeout, held 40 connections open for good).
    static let minBodyBytesPerSecond = 500

    init(headerTimeout: TimeAmount, count: Count, maxBodyBytes: Int) {
        self.headerTimeout = headerTimeout
        self.count = count
        self.maxBodyBytes = maxBodyBytes
    }

    func handlerAdded(context: ChannelHandlerContext) {
        HTTP1Compatibility.install(in: context.pipeline.syncOperations, maxBodyBytes: maxBodyBytes)
        let open = count.open.wrappingAdd(1, ordering: .relaxed).newValue
        counted = true
        if open > count.limit {
            context.close(promise: nil)
            return
        }
        arm(context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        if counted {
            count.open.wrappingSubtract(1, ordering: .relaxed)
            counted = false
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            receiving = true
            bodyDeadline = .now() + headerTimeout
            arm(context)   // the rest of the request (its body, its end) within the timeout of this part
        case .body(let part):
            bodyDeadline = bodyDeadline.map { $0 + .nanoseconds(Int64(part.readableBytes) * 1_000_000_000 / Int64(Self.minBodyBytesPerSecond)) }
            arm(context)
        case .end:
            receiving = false
            bodyDeadline = nil
            requestsEnded += 1
            settle(context)
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .end = unwrapOutboundIn(data) else {
            context.write(data, promise: promise)
            return
        }
        // A response has ended once its last bytes are out, not once they are queued: megabytes
        // still on their way to a slow reader are no idle connection (found by attacking the
        // build: a 4.8-MB gzip answer read at 300 KB/s was cut at 3.6 MB, the timeout's worth).
        let written = context.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenComplete { result in
            self.responsesEnded += 1
            if context.channel.isActive { self.settle(context) }
            promise?.completeWith(result)
        }
        context.write(data, promise: written)
    }

    /// After a request or a response ended: a request that arrived whole and is not answered
    /// yet (pipelined ones included) may take as long as the server needs; otherwise the next
    /// request's headers (or the rest of this one, answered early) must come within the timeout.
    private func settle(_ context: ChannelHandlerContext) {
        if !receiving, requestsEnded > responsesEnded {
            timer?.cancel()
            timer = nil
        } else {
            arm(context)
        }
    }

    private func arm(_ context: ChannelHandlerContext) {
        timer?.cancel()
        let channel = context.channel
        var deadline = NIODeadline.now() + headerTimeout
        if receiving, let bodyDeadline { deadline = min(deadline, bodyDeadline) }
        timer = context.eventLoop.scheduleTask(deadline: deadline) { channel.close(promise: nil) }
    }
}

/// `ConnectionGuard` for HTTPS, where a connection reads as HTTP only once its TLS handshake is
/// done: first in the connection's pipeline, it counts the connection against `max_connections`
/// and closes one whose handshake has not completed within the header timeout (found by
/// attacking the build: with TLS, 190 connections that never began a handshake were neither
/// counted nor closed, and held the server's descriptors). Past the handshake the HTTP/1.1
/// guard times the requests, and HTTP/2's idle timeout asks a connection with no stream open
/// to go away; one that sends and receives nothing at all for `silenceLimit` (longer than the
/// longest long poll, where event streams send keep-alives) is closed, so a client that
/// ignores that request cannot hold a counted connection for good (found in review).
struct GuardedTLSChannel: ServerChildChannel {
    typealias Value = HTTP2UpgradeChannel.Value
    let inner: HTTP2UpgradeChannel
    let count: ConnectionGuard.Count
    let handshakeTimeout: TimeAmount
    let silenceLimit: TimeAmount

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let deadline = HandshakeDeadline(timeout: handshakeTimeout, silenceLimit: silenceLimit, count: count)
        do {
            try channel.pipeline.syncOperations.addHandler(deadline, position: .first)
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
        let value = inner.setup(channel: channel, logger: logger)
        do {
            // Right behind TLS (which `inner` just added): it sees the handshake end.
            let tls = try channel.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self)
            try channel.pipeline.syncOperations.addHandler(HandshakeDeadline.Watcher(deadline), position: .after(tls))
            try channel.pipeline.syncOperations.addHandler(PlainHTTPRefusal(), position: .before(tls))
        } catch {
            channel.close(promise: nil)
            return channel.eventLoop.makeFailedFuture(error)
        }
        return value
    }

    func handle(value: Value, logger: Logger) async {
        await inner.handle(value: value, logger: logger)
    }
}

/// In front of TLS: a connection that begins with a plain HTTP request (a letter, where a TLS
/// handshake begins with byte 0x16) gets a readable 400 saying the port speaks HTTPS, then is
/// closed (found by attacking the build: it was closed without a word, and the CLI asked whether
/// the server was running). Anything else goes on to TLS, and this handler leaves the pipeline.
final class PlainHTTPRefusal: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        guard let first = bytes.getInteger(at: bytes.readerIndex, as: UInt8.self) else { return }
        guard (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(first) else {
            context.fireChannelRead(data)
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
            return
        }
        let text = "this port speaks HTTPS: send the request to https:// instead of http://\n"
        let answer = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: \(text.utf8.count)\r\n"
            + "Connection: close\r\n\r\n" + text
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: answer))).whenComplete { _ in
            context.close(promise: nil)
        }
    }
}

/// Counts an HTTPS connection for as long as it is open, and closes it unless its TLS handshake
/// completes in time (`GuardedTLSChannel`).
final class HandshakeDeadline: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let timeout: TimeAmount
    private let silenceLimit: TimeAmount
    private let count: ConnectionGuard.Count
    private var counted = false
    private var timer: Scheduled<Void>?
    /// When the connection last carried a byte either way (past TLS), and its watch for silence.
    private var lastActivity = NIODeadline.uptimeNanoseconds(0)
    private var silenceWatch: RepeatedTask?
    private var loop: (any EventLoop)?
    /// HTTP/2: its streams open now (`StreamTally`), and since when it has had none.
    private var http2 = false
    private var openStreams = 0
    private var idleSince = NIODeadline.uptimeNanoseconds(0)

    init(timeout: TimeAmount, silenceLimit: TimeAmount, count: ConnectionGuard.Count) {
        self.timeout = timeout
        self.silenceLimit = silenceLimit
        self.count = count
    }

    func handlerAdded(context: ChannelHandlerContext) {
        loop = context.eventLoop
        let open = count.open.wrappingAdd(1, ordering: .relaxed).newValue
        counted = true
        if open > count.limit {
            context.close(promise: nil)
            return
        }
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        silenceWatch?.cancel()
        silenceWatch = nil
        if counted {
            count.open.wrappingSubtract(1, ordering: .relaxed)
            counted = false
        }
    }

    /// The handshake completed: the HTTP layer's own timeouts take over, and the watch begins
    /// for a connection silent both ways and, with HTTP/2, for one left with no request open.
    ///
    /// HTTP/2's idle timeout (the header timeout) asks a connection with no stream open to go
    /// away, and closes it once the client answers that request's PING; one that never answers
    /// it is closed here at twice the header timeout. Bytes alone do not keep it: a client may
    /// PING every 30 s without being told it pings too often (found in review: such a client
    /// held a counted connection for good).
    func handshakeCompleted(_ context: ChannelHandlerContext, http2: Bool) {
        timer?.cancel()
        timer = nil
        self.http2 = http2
        lastActivity = context.eventLoop.now
        idleSince = context.eventLoop.now
        let channel = context.channel, limit = silenceLimit, idleLimit = timeout * 2, loop = context.eventLoop
        silenceWatch = loop.scheduleRepeatedTask(initialDelay: timeout, delay: timeout) { [self] task in
            let idle = self.http2 && openStreams == 0 && loop.now - idleSince > idleLimit
            if idle || loop.now - lastActivity > limit {
                task.cancel()
                channel.close(promise: nil)
            }
        }
    }

    /// An HTTP/2 stream (a request) opened or closed on this connection.
    func streamOpened() { openStreams += 1 }
    func streamClosed() {
        openStreams -= 1
        if openStreams == 0, let loop { idleSince = loop.now }
    }

    /// A byte went either way.
    func active() { if let loop { lastActivity = loop.now } }

    /// Sits behind the TLS handler: tells the deadline when the handshake completes, and of the
    /// bytes that go either way after it.
    final class Watcher: ChannelDuplexHandler, RemovableChannelHandler {
        typealias InboundIn = NIOAny
        typealias OutboundIn = NIOAny
        private let deadline: HandshakeDeadline

        init(_ deadline: HandshakeDeadline) { self.deadline = deadline }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            context.fireUserInboundEventTriggered(event)
            guard let event = event as? TLSUserEvent, case .handshakeCompleted(let negotiated) = event else { return }
            deadline.handshakeCompleted(context, http2: negotiated == "h2")
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            deadline.active()
            context.fireChannelRead(data)
        }

        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            deadline.active()
            context.write(data, promise: promise)
        }
    }
}

/// Tells its HTTP/2 connection's `HandshakeDeadline` when a stream (one request) opens and
/// closes: one handler per stream channel, on the connection's event loop. On an HTTP/1.1
/// connection (no parent channel) it does nothing.
final class StreamTally: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    private var deadline: HandshakeDeadline?

    func handlerAdded(context: ChannelHandlerContext) {
        guard let parent = context.channel.parent, parent.eventLoop.inEventLoop,
              let deadline = try? parent.pipeline.syncOperations.handler(type: HandshakeDeadline.self) else { return }
        self.deadline = deadline
        deadline.streamOpened()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.streamClosed()
        deadline = nil
    }
}
