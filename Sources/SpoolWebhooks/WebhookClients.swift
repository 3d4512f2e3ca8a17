import AsyncHTTPClient
import FoundationEssentials
import NIOCore
import SpoolCore
import Synchronization

/// The HTTP clients deliveries go out on. Each connects one host name to one address the guard
/// checked, and to nothing else: AsyncHTTPClient's `dnsOverride` maps the name to that address,
/// so the client connects there without a lookup of its own, while the name stays in the URL for
/// the Host header, TLS SNI and the certificate check. A client's configuration is fixed once it
/// is made (and it takes no resolver of ours), hence one client per (host, address), kept for
/// reuse by `WebhookClientCache`, all on one event loop group (a client is cheap: a pool, no
/// threads). Making a client per attempt would be as sound, but would open a new connection
/// (and TLS handshake) for every delivery to a busy receiver.
///
/// No client follows a redirect: a receiver could otherwise bounce a signed delivery anywhere,
/// past the guard.
final class WebhookClients: Sendable {
    typealias Key = WebhookClientCache<HTTPClient>.Key

    private let cache: Mutex<WebhookClientCache<HTTPClient>>
    private let eventLoopGroup: any EventLoopGroup

    init(capacity: Int = 64, eventLoopGroup: any EventLoopGroup = HTTPClient.defaultEventLoopGroup) {
        cache = Mutex(WebhookClientCache(capacity: capacity))
        self.eventLoopGroup = eventLoopGroup
    }

    /// The host AsyncHTTPClient reads from `url` — what its `dnsOverride` is looked up by, so
    /// the override is keyed by exactly this — or nil when it reads none. It reads the URL with
    /// Foundation's parser and, on Linux, strips an IPv6 literal's brackets (`trimIPv6Brackets`).
    static func clientHost(of url: String) -> String? {
        guard let parsed = URL(string: url), var host = parsed.host, !host.isEmpty else { return nil }
        if host.hasPrefix("[") { host.removeFirst() }
        if host.hasSuffix("]") { host.removeLast() }
        return host
    }

    /// Runs `body` with a client that connects `host` (as `clientHost(of:)` reads it) only to
    /// `address`; `current` is every address the host resolves to now (clients for others are
    /// let go).
    func withClient<Value: Sendable>(host: String, address: IPAddress, current: [IPAddress],
                                      _ body: (HTTPClient) async throws -> Value) async throws -> Value {
        let key = Key(host: host, address: address)
        let (client, closing) = cache.withLock { cache in
            cache.lease(key, current: Set(current)) { Self.makeClient(key, on: eventLoopGroup) }
        }
        await Self.shutDown(closing)
        do {
            let result = try await body(client)
            await Self.shutDown(cache.withLock { $0.release(key) })
            return result
        } catch {
            await Self.shutDown(cache.withLock { $0.release(key) })
            throw error
        }
    }

    /// Shuts every client down (when no delivery is in flight: the deliverer's end).
    func shutdown() async {
        await Self.shutDown(cache.withLock { $0.removeAll() })
    }

    /// A client that connects `key.host` to `key.address` alone, following no redirect.
    static func makeClient(_ key: Key, on eventLoopGroup: any EventLoopGroup) -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.dnsOverride = [key.host: key.address.description]
        // A refused connection fails the attempt at once: the pool's default tries again until
        // the attempt's deadline, so a receiver that was down held a lane for the whole 10 s.
        configuration.connectionPool.retryConnectionEstablishment = false
        return HTTPClient(eventLoopGroup: eventLoopGroup, configuration: configuration)
    }

    private static func shutDown(_ clients: [HTTPClient]) async {
        for client in clients { try? await client.shutdown() }
    }
}
