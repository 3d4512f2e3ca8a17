import Glibc
import NIOPosix
import SpoolCore

/// Checks a webhook URL against `WebhookTarget`'s rules, resolving its host (getaddrinfo, on
/// NIO's blocking pool): at submit, and again before every delivery. With `allowPrivate`
/// (`webhook_allow_private: true`) loopback, private and link-local hosts are allowed too; the
/// URL must still be well formed and carry no credentials.
public struct WebhookGuard: Sendable {
    public var allowPrivate: Bool

    public init(allowPrivate: Bool) { self.allowPrivate = allowPrivate }

    public func check(_ url: String) async throws(WebhookTarget.Refusal) {
        let (host, _) = try WebhookTarget.parse(url)
        guard !allowPrivate else { return }
        let addresses = (try? await NIOThreadPool.singleton.runIfActive { Self.resolve(host) }) ?? []
        if let refusal = WebhookTarget.refusal(for: addresses) { throw refusal }
    }

    /// Every address `host` resolves to (numeric forms like 2130706433 or 0x7f.1 included, as
    /// the resolver reads them); empty when it does not resolve.
    static func resolve(_ host: String) -> [IPAddress] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &list) == 0, let first = list else { return [] }
        defer { freeaddrinfo(first) }
        var addresses: [IPAddress] = []
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let info = entry {
            if let address = info.pointee.ai_addr {
                switch Int32(info.pointee.ai_family) {
                case AF_INET:
                    let ipv4 = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr.s_addr }
                    addresses.append(.v4(withUnsafeBytes(of: ipv4) { Array($0) }))
                case AF_INET6:
                    let ipv6 = address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_addr }
                    addresses.append(.v6(withUnsafeBytes(of: ipv6) { Array($0) }))
                default:
                    break
                }
            }
            entry = info.pointee.ai_next
        }
        return addresses
    }
}
