import NIOCore
import NIOEmbedded
import NIOTLS
@testable import SpoolApp
import Testing

/// The guard in front of TLS (`HandshakeDeadline`), on an embedded channel whose clock the test
/// moves: a connection is counted while open, closed when its handshake takes too long, and
/// closed once it has carried nothing either way for the silence limit after its handshake.
@Suite struct TLSConnectionGuardTests {
    func connection(limit: Int = 10) throws -> (EmbeddedEventLoop, EmbeddedChannel, ConnectionGuard.Count) {
        let loop = EmbeddedEventLoop()
        let channel = EmbeddedChannel(loop: loop)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()   // accepted, as a server's child channel is
        let count = ConnectionGuard.Count(limit: limit)
        let deadline = HandshakeDeadline(timeout: .seconds(1), silenceLimit: .seconds(5), count: count)
        try channel.pipeline.syncOperations.addHandler(deadline)
        try channel.pipeline.syncOperations.addHandler(HandshakeDeadline.Watcher(deadline))
        return (loop, channel, count)
    }

    @Test func aConnectionWhoseHandshakeTakesTooLongIsClosedAndUncounted() throws {
        let (loop, channel, count) = try connection()
        #expect(count.open.load(ordering: .relaxed) == 1)
        loop.advanceTime(by: .milliseconds(900))
        #expect(channel.isActive)
        loop.advanceTime(by: .milliseconds(200))
        #expect(!channel.isActive)
        #expect(count.open.load(ordering: .relaxed) == 0)
    }

    /// Found in review: past its handshake, an HTTP/2 connection that ignored the idle timeout's
    /// request to go away stayed open, and counted, for good.
    @Test func aConnectionSilentBothWaysAfterItsHandshakeIsClosed() throws {
        let (loop, channel, count) = try connection()
        channel.pipeline.fireUserInboundEventTriggered(TLSUserEvent.handshakeCompleted(negotiatedProtocol: "h2"))
        let deadline = try channel.pipeline.syncOperations.handler(type: HandshakeDeadline.self)
        deadline.streamOpened()   // a request is open (a long poll)
        // Bytes each way keep it open past the limit…
        for _ in 0..<4 {
            loop.advanceTime(by: .seconds(2))
            try channel.writeInbound(ByteBuffer(string: "frame"))
            loop.advanceTime(by: .seconds(2))
            try channel.writeOutbound(ByteBuffer(string: "frame"))
        }
        #expect(channel.isActive)
        // …and silence past it closes it.
        loop.advanceTime(by: .seconds(4))
        #expect(channel.isActive)
        loop.advanceTime(by: .seconds(3))
        #expect(!channel.isActive)
        #expect(count.open.load(ordering: .relaxed) == 0)
    }

    /// An HTTP/2 connection with no request open is closed at twice the header timeout, however
    /// many bytes it sends (a PING every 30 s kept one counted for good: found in review); with
    /// one open, and once it has ended, the count starts over. HTTP/1.1 has no streams: bytes keep it.
    @Test func anHTTP2ConnectionWithNoRequestOpenIsClosedWhateverItSends() throws {
        let (loop, channel, count) = try connection()
        channel.pipeline.fireUserInboundEventTriggered(TLSUserEvent.handshakeCompleted(negotiatedProtocol: "h2"))
        let deadline = try channel.pipeline.syncOperations.handler(type: HandshakeDeadline.self)
        deadline.streamOpened()
        for _ in 0..<4 {
            loop.advanceTime(by: .seconds(1))
            try channel.writeInbound(ByteBuffer(string: "ping"))
        }
        #expect(channel.isActive, "a request is open")
        deadline.streamClosed()
        loop.advanceTime(by: .seconds(1))
        try channel.writeInbound(ByteBuffer(string: "ping"))
        #expect(channel.isActive)
        loop.advanceTime(by: .seconds(2))
        try? channel.writeInbound(ByteBuffer(string: "ping"))
        #expect(!channel.isActive, "no request open for twice the header timeout")
        #expect(count.open.load(ordering: .relaxed) == 0)

        let (plainLoop, plain, _) = try connection()
        plain.pipeline.fireUserInboundEventTriggered(TLSUserEvent.handshakeCompleted(negotiatedProtocol: "http/1.1"))
        for _ in 0..<4 {
            plainLoop.advanceTime(by: .seconds(1))
            try plain.writeInbound(ByteBuffer(string: "GET"))
        }
        #expect(plain.isActive, "HTTP/1.1: bytes keep it open")
    }

    @Test func aConnectionOverTheLimitIsClosedAtOnce() throws {
        let (_, first, count) = try connection(limit: 1)
        let second = EmbeddedChannel(loop: EmbeddedEventLoop())
        try second.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try second.pipeline.syncOperations.addHandler(HandshakeDeadline(timeout: .seconds(1), silenceLimit: .seconds(5), count: count))
        #expect(first.isActive && !second.isActive)
    }
}
