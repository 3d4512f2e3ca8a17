import Glibc
import NIOPosix
import SpoolCore
import SpoolStore
import Synchronization

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
///
/// A lookup is waited for `deadline` at most (the delivery then fails as a DNS failure does and is
/// tried again later), and a slow name holds one thread at most: lookups of a name already being
/// looked up wait for that one, and with every thread held by another name, a lookup fails at
/// once (found in review: a tenant's DNS that never answers held every lookup thread, and every
/// other tenant's deliveries waited behind it).
public struct SystemResolver: WebhookResolver {
    public typealias Answer = Result<[IPAddress], WebhookResolutionFailure>

    /// How long a delivery waits for an answer.
    public var deadline: Duration
    /// The lookup itself (getaddrinfo; a test's stand-in for a DNS server that takes its time).
    private let lookUp: @Sendable (String) -> Answer
    private let lookups: Lookups

    public init(deadline: Duration = .seconds(10)) {
        self.init(deadline: deadline, threads: 4, lookUp: Self.lookUp)
    }

    init(deadline: Duration, threads: Int, lookUp: @escaping @Sendable (String) -> Answer) {
        self.deadline = deadline
        self.lookUp = lookUp
        lookups = threads == 4 ? Self.shared : Lookups(threads: threads)
    }

    /// The server's lookups, on 4 threads of their own, not on NIO's shared blocking pool, which
    /// serves logs and outputs (one thread per core).
    static let shared = Lookups(threads: 4)

    /// Lookups under way, one per name, on a pool of `threads` threads.
    final class Lookups: Sendable {
        let threads: Int
        let pool: NIOThreadPool
        let running = Mutex<[String: Task<Answer, Never>]>([:])

        init(threads: Int) {
            self.threads = threads
            pool = NIOThreadPool(numberOfThreads: threads)
            pool.start()
        }
    }

    public func addresses(of host: String) async throws(WebhookResolutionFailure) -> [IPAddress] {
        let key = host.lowercased()
        let lookups = lookups, lookUp = lookUp
        let lookup = lookups.running.withLock { running -> Task<Answer, Never>? in
            if let under = running[key] { return under }
            guard running.count < lookups.threads else { return nil }
            // Its entry goes when it ends (after this insert: the removal takes the same lock).
            let task = Task<Answer, Never> {   // unstructured: one lookup shared by every caller for the name, outliving their deadlines
                let answer = (try? await lookups.pool.runIfActive { lookUp(host) })
                    ?? .failure(WebhookResolutionFailure("the resolver's thread pool is not running"))
                lookups.running.withLock { $0[key] = nil }
                return answer
            }
            running[key] = task
            return task
        }
        guard let lookup else {
            throw WebhookResolutionFailure("every lookup thread (\(lookups.threads)) is waiting on another name's DNS answer")
        }
        // The lookup goes on past the deadline (getaddrinfo cannot be stopped); its answer still
        // ends its entry.
        let timedOut = WebhookResolutionFailure("no DNS answer within \(deadline)")
        let answer: Answer
        do { answer = try await answerWithin(deadline, orThrow: timedOut) { await lookup.value } } catch {
            throw (error as? WebhookResolutionFailure) ?? timedOut
        }
        return try answer.get()
    }

    /// One getaddrinfo call: its addresses in its order, or its error in words.
    @Sendable static func lookUp(_ host: String) -> Answer {
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
