/// Where a webhook may be sent. A webhook URL comes from whoever submits a job, and the server
/// POSTs to it (and shows each attempt's status): left open, that is a way to reach the
/// server's own network — loopback services, cloud metadata at 169.254.169.254, the API
/// itself — or to scan it. So a URL is checked twice, at submit and again before each
/// delivery (DNS answers change): http or https, a host, no credentials in it, and every
/// address its host resolves to must be public. Pure: resolution is the caller's.
public enum WebhookTarget {
    public struct Refusal: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    /// The host (without brackets) and port of a URL fit to be a webhook, or why not.
    public static func parse(_ url: String) throws(Refusal) -> (host: String, port: Int) {
        guard url.utf8.count <= 2048 else { throw Refusal(description: "a webhook URL is at most 2048 bytes") }
        // A control character is never part of a URL (and a NUL cannot even be stored in PostgreSQL).
        guard !url.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }) else {
            throw Refusal(description: "a webhook URL may not contain control characters")
        }
        let scheme: String
        if url.lowercased().hasPrefix("https://") { scheme = "https" } else if url.lowercased().hasPrefix("http://") { scheme = "http" } else {
            throw Refusal(description: "a webhook must be an http:// or https:// URL")
        }
        let rest = url.dropFirst(scheme.count + 3)
        let authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        guard !authority.contains("@") else {
            throw Refusal(description: "a webhook URL may not carry credentials (user:password@); sign deliveries with webhook_secret instead")
        }
        var host = Substring(authority)
        var port = scheme == "https" ? 443 : 80
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { throw Refusal(description: "the webhook URL's IPv6 address is not closed with ]") }
            let after = host[host.index(after: close)...]
            host = host[host.index(after: host.startIndex)..<close]
            if !after.isEmpty {
                guard after.hasPrefix(":"), let number = Int(after.dropFirst()) else { throw Refusal(description: "the webhook URL's port is not a number") }
                port = number
            }
        } else if let colon = host.lastIndex(of: ":") {
            guard let number = Int(host[host.index(after: colon)...]) else { throw Refusal(description: "the webhook URL's port is not a number") }
            port = number
            host = host[..<colon]
        }
        guard !host.isEmpty else { throw Refusal(description: "a webhook URL needs a host") }
        guard (1...65_535).contains(port) else { throw Refusal(description: "the webhook URL's port must be from 1 to 65535") }
        return (String(host), port)
    }

    /// Why `addresses` (the host's, as resolved) may not receive webhooks, or nil when every one
    /// of them is a public unicast address. The address is not named: a tenant would learn what
    /// the server's internal names resolve to (found by attacking the build); its kind is.
    public static func refusal(for addresses: [IPAddress]) -> Refusal? {
        guard !addresses.isEmpty else { return Refusal(description: "the webhook's host does not resolve to an address") }
        for address in addresses {
            if let kind = address.nonPublicKind {
                return Refusal(description: "the webhook's host resolves to an address that is not public (\(kind)); webhooks go only to "
                               + "public addresses (webhook_allow_private allows others)")
            }
        }
        return nil
    }
}

/// An IPv4 or IPv6 address, as bytes.
public enum IPAddress: Sendable, Hashable, CustomStringConvertible {
    case v4([UInt8])
    case v6([UInt8])

    /// What kind of non-public address this is (loopback, private, …), or nil for a public one.
    public var nonPublicKind: String? {
        switch self {
        case .v4(let b):
            switch (b[0], b[1]) {
            case (0, _): return "this network"
            case (10, _): return "private"
            case (100, 64...127): return "shared address space"
            case (127, _): return "loopback"
            case (169, 254): return "link-local"
            case (172, 16...31): return "private"
            case (192, 0) where b[2] == 0: return "IETF protocol assignments"
            case (192, 168): return "private"
            case (198, 18...19): return "benchmarking"
            case (224...239, _): return "multicast"
            case (240...255, _): return "reserved"
            default: return nil
            }
        case .v6(let b):
            if b.allSatisfy({ $0 == 0 }) { return "unspecified" }
            if b[0..<15].allSatisfy({ $0 == 0 }) && b[15] == 1 { return "loopback" }
            // An IPv4 address written as IPv6 (mapped ::ffff:a.b.c.d, compatible ::a.b.c.d, NAT64 64:ff9b::a.b.c.d).
            if b[0..<10].allSatisfy({ $0 == 0 }) && ((b[10] == 0xff && b[11] == 0xff) || (b[10] == 0 && b[11] == 0)) {
                return IPAddress.v4(Array(b[12..<16])).nonPublicKind.map { "IPv4 \($0)" }
            }
            if b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && b[4..<12].allSatisfy({ $0 == 0 }) {
                return IPAddress.v4(Array(b[12..<16])).nonPublicKind.map { "IPv4 \($0)" }
            }
            // IPv4-translated ::ffff:0:a.b.c.d (RFC 2765), judged by a.b.c.d (found in review).
            if b[0..<8].allSatisfy({ $0 == 0 }) && b[8] == 0xff && b[9] == 0xff && b[10] == 0 && b[11] == 0 {
                return IPAddress.v4(Array(b[12..<16])).nonPublicKind.map { "IPv4-translated \($0)" }
            }
            // The other ways an IPv4 address rides in IPv6, where a relay or translator would carry a
            // delivery on to it (found by attacking the build: all three were accepted):
            // local-use NAT64 64:ff9b:1::/48 translates to a network's own addresses, and where
            // within it the IPv4 address sits depends on the prefix length chosen, so all of it.
            if b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && b[4] == 0x00 && b[5] == 0x01 {
                return "local-use NAT64"
            }
            // 6to4 2002:a.b.c.d::/48, judged by its IPv4 address a.b.c.d.
            if b[0] == 0x20 && b[1] == 0x02 {
                return IPAddress.v4(Array(b[2..<6])).nonPublicKind.map { "6to4 of IPv4 \($0)" }
            }
            // Teredo 2001:0::/32 tunnels to an IPv4 client, its address obfuscated: all of it.
            if b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x00 && b[3] == 0x00 { return "Teredo" }
            if b[0] & 0xfe == 0xfc { return "unique local" }
            if b[0] == 0xfe && b[1] & 0xc0 == 0x80 { return "link-local" }
            if b[0] == 0xfe && b[1] & 0xc0 == 0xc0 { return "site-local" }
            if b[0] == 0xff { return "multicast" }
            if b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8 { return "documentation" }
            return nil
        }
    }

    public var description: String {
        switch self {
        case .v4(let b): return b.map(String.init).joined(separator: ".")
        case .v6(let b):
            return stride(from: 0, to: 16, by: 2).map { String(UInt16(b[$0]) << 8 | UInt16(b[$0 + 1]), radix: 16) }.joined(separator: ":")
        }
    }
}
