import NIOConcurrencyHelpers
import NIOCore
import NIOHTTPTypes
import Synchronization

/// Keeps slow or too many clients from locking others out, per HTTP connection:
///
/// - a connection must send a request's headers within `headerTimeout` of opening (or of its
///   previous response ending), and then its body with no pause as long; one that dribbles or
///   stalls — 300 half-open connections, or uploads that stop after their headers — is closed,
///   so it holds no slot for long. Once a request has arrived whole, the server may take as
///   long as it needs to answer (a long poll, an event stream);
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
    /// The current request's response has ended (possibly before the request's own end).
    private var answered = true

    private let maxBodyBytes: Int

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
            answered = false
            arm(context)   // the rest of the request (its body, its end) within the timeout of this part
        case .body:
            arm(context)
        case .end where answered:
            arm(context)   // answered before its body was all in (a refusal): the next request's headers
        case .end:
            timer?.cancel()
            timer = nil
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        // A response ended: the next request's headers must come within the timeout too.
        if case .end = unwrapOutboundIn(data) {
            answered = true
            arm(context)
        }
        context.write(data, promise: promise)
    }

    private func arm(_ context: ChannelHandlerContext) {
        timer?.cancel()
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: headerTimeout) { channel.close(promise: nil) }
    }
}
