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
    /// A request's parts are arriving (its head came, its end not yet).
    private var receiving = false
    /// Requests that arrived whole, and responses that ended, on this connection: more of the
    /// first means one is being answered (a pipelined one waits its turn behind it).
    private var requestsEnded = 0
    private var responsesEnded = 0

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
            receiving = true
            arm(context)   // the rest of the request (its body, its end) within the timeout of this part
        case .body:
            arm(context)
        case .end:
            receiving = false
            requestsEnded += 1
            settle(context)
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            responsesEnded += 1
            settle(context)
        }
        context.write(data, promise: promise)
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
        timer = context.eventLoop.scheduleTask(in: headerTimeout) { channel.close(promise: nil) }
    }
}
