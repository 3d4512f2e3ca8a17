import Foundation
import Glibc
import Synchronization

/// A TCP proxy on 127.0.0.1 in front of a server, which a test can freeze: from then on nothing
/// goes through, either way, and new connections are accepted and left unanswered — a database
/// behind a link that went dark, or a server stopped with SIGSTOP. Thawed, what waited goes on.
/// Blocking threads: one accepting, two per connection.
final class FreezingProxy: Sendable {
    let port: Int
    private let listener: Int32
    private let upstreamPort: Int
    private let state = Mutex((frozen: false, stopped: false, descriptors: [Int32]()))

    init(toPort upstream: Int) throws {
        upstreamPort = upstream
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = Self.loopback(port: 0)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard listener >= 0, bound == 0, listen(listener, 64) == 0 else { throw POSIXError(.EADDRINUSE) }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) } }
        self.listener = listener
        port = Int(UInt16(bigEndian: address.sin_port))
        Thread.detachNewThread { [self] in accepting() }
    }

    func freeze() { state.withLock { $0.frozen = true } }
    func thaw() { state.withLock { $0.frozen = false } }

    /// Closes every connection and the listener.
    func stop() {
        let descriptors = state.withLock { state in
            state.stopped = true
            return state.descriptors
        }
        for descriptor in descriptors { shutdown(descriptor, Int32(SHUT_RDWR)) }
    }

    private static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }

    private var stopped: Bool { state.withLock { $0.stopped } }
    private var frozen: Bool { state.withLock { $0.frozen } }

    private func accepting() {
        defer { close(listener) }
        while !stopped {
            var poller = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 50) > 0 else { continue }
            let client = accept(listener, nil, nil)
            guard client >= 0 else { continue }
            state.withLock { $0.descriptors.append(client) }
            // Frozen: accepted, and nothing more until thawed.
            while frozen, !stopped { usleep(20_000) }
            let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            var address = Self.loopback(port: upstreamPort)
            let connected = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(server, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            guard connected == 0 else { close(server); shutdown(client, Int32(SHUT_RDWR)); continue }
            state.withLock { $0.descriptors.append(server) }
            Thread.detachNewThread { [self] in pump(from: client, to: server) }
            Thread.detachNewThread { [self] in pump(from: server, to: client) }
        }
    }

    /// Copies `source` to `destination` until either ends or the proxy stops; nothing while frozen.
    private func pump(from source: Int32, to destination: Int32) {
        var buffer = [UInt8](repeating: 0, count: 16 << 10)
        while !stopped {
            if frozen { usleep(20_000); continue }
            var poller = pollfd(fd: source, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 50) > 0 else { continue }
            if frozen { continue }
            let count = buffer.withUnsafeMutableBytes { read(source, $0.baseAddress, $0.count) }
            guard count > 0 else { break }
            var sent = 0
            while sent < count {
                let wrote = buffer.withUnsafeBytes { send(destination, $0.baseAddress! + sent, count - sent, Int32(MSG_NOSIGNAL)) }
                guard wrote > 0 else { return }
                sent += wrote
            }
        }
        shutdown(destination, Int32(SHUT_WR))
    }
}
