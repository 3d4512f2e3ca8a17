import NIOConcurrencyHelpers
import NIOCore
import NIOHTTPTypes
import Synchronization

/// Keeps slow or too many clients from locking others out, per HTTP connection:
///
/// - a connection must send a request's headers within `headerTimeout` of opening (or of its
///   previous response ending); one that dribbles or stalls — 300 half-open connections, say —
///   is closed, so it holds no slot for long;
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
        if case .head = unwrapInboundIn(data) {
            timer?.cancel()
            timer = nil
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        // A response ended: the next request's headers must come within the timeout too.
        if case .end = unwrapOutboundIn(data) { arm(context) }
        context.write(data, promise: promise)
    }

    private func arm(_ context: ChannelHandlerContext) {
        timer?.cancel()
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: headerTimeout) { channel.close(promise: nil) }
    }
}
