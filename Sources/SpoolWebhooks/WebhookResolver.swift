import Glibc
import NIOPosix
import SpoolCore

/// Looks up the addresses a webhook's host name stands for. The guard asks it once per
/// delivery and the delivery then connects to an address from that very answer (a second
/// lookup by the HTTP client could answer otherwise: DNS rebinding). A protocol so that tests
/// can answer as an attacker's DNS zone would; the server uses `SystemResolver`.
public protocol WebhookResolver: Sendable {
    /// Every address `host` stands for, most preferred first. Throws when the lookup itself
    /// fails — no answer, a timeout, SERVFAIL, no such name — which may pass: the delivery is
    /// tried again later, whereas an answer naming a forbidden address is final.
    func addresses(of host: String) async throws(WebhookResolutionFailure) -> [IPAddress]
}

/// Why a lookup gave no address (the resolver's words, e.g. "Temporary failure in name
/// resolution"; never an address).
public struct WebhookResolutionFailure: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The system's resolver: getaddrinfo, on threads of its own (it blocks for as long as the DNS
/// servers take). It reads numeric forms too (2130706433, 0x7f.1), as the HTTP client would.
public struct SystemResolver: WebhookResolver {
    public init() {}

    /// Lookups wait on these threads, not on NIO's shared blocking pool, which serves logs and
    /// outputs (one thread per core): a tenant's DNS that takes its time holds one of these
    /// (found in review: webhook retries now look a failing name up again and again).
    static let threads: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 4)
        pool.start()
        return pool
    }()

    public func addresses(of host: String) async throws(WebhookResolutionFailure) -> [IPAddress] {
        let answer: Result<[IPAddress], WebhookResolutionFailure>
        do {
            answer = try await Self.threads.runIfActive { Self.lookUp(host) }
        } catch {
            throw WebhookResolutionFailure("the resolver's thread pool is not running")
        }
        return try answer.get()
    }

    /// One getaddrinfo call: its addresses in its order, or its error in words.
    static func lookUp(_ host: String) -> Result<[IPAddress], WebhookResolutionFailure> {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, nil, &hints, &list)
        guard status == 0, let first = list else {
            let words = status == EAI_SYSTEM ? String(cString: strerror(errno)) : String(cString: gai_strerror(status))
            return .failure(WebhookResolutionFailure(words))
        }
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
        return .success(addresses)
    }
}

extension IPAddress {
    /// The address `text` spells in the strict dotted-quad or IPv6 form (inet_pton), which the
    /// HTTP client connects to without a lookup; nil for anything else (names, 127.1, 0x7f.1).
    init?(literal text: String) {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self = .v4(withUnsafeBytes(of: v4) { Array($0) })
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            self = .v6(withUnsafeBytes(of: v6) { Array($0) })
            return
        }
        return nil
    }
}
