import Crypto
import SpoolCore

/// The dashboard's session: `POST /v1/session` trades a token for a cookie the page's scripts
/// cannot read (HttpOnly, SameSite=Strict, Secure over TLS). Its value names the token by its
/// public id, with an expiry, signed with HMAC-SHA256 by a key every node shares (kept in the
/// store): any node accepts it, and revoking the token ends every session of it.
enum SessionCookie {
    static let name = "spool_session"
    static let lifetime: Double = 12 * 3600

    static func value(tokenID: String, expires: Timestamp, key: [UInt8]) -> String {
        let payload = "\(tokenID).\(expires.microseconds / 1_000_000)"
        return payload + "." + signature(payload, key: key)
    }

    /// The token id a cookie value names, if its signature holds and it has not expired.
    static func tokenID(in value: Substring, key: [UInt8], now: Timestamp) -> String? {
        let parts = value.split(separator: ".")
        guard parts.count == 3 else { return nil }
        let payload = "\(parts[0]).\(parts[1])"
        guard TokenText.constantTimeEqual(Array(signature(payload, key: key).utf8), Array(parts[2].utf8)) else { return nil }
        // In seconds, as written: any number the server signed compares without overflow (found by
        // attacking the build: `expires * 1_000_000` trapped on a forged value, before the signature
        // was checked, and one request stopped the server).
        guard let expires = Int64(parts[1]), expires > now.microseconds / 1_000_000 else { return nil }
        return String(parts[0])
    }

    static func signature(_ payload: String, key: [UInt8]) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Array(payload.utf8), using: SymmetricKey(data: key))
        return mac.map { String($0, radix: 16).leftPadded(to: 2) }.joined()
    }

    /// `Set-Cookie` for a new session (or, with `value` nil, one that ends it).
    static func header(_ value: String?, secure: Bool) -> String {
        var parts = ["\(name)=\(value ?? "")", "Path=/", "HttpOnly", "SameSite=Strict",
                     value == nil ? "Max-Age=0" : "Max-Age=\(Int(lifetime))"]
        if secure { parts.append("Secure") }
        return parts.joined(separator: "; ")
    }

    /// The session cookie's value in a `Cookie` header.
    static func find(in cookieHeader: String) -> Substring? {
        for pair in cookieHeader.split(separator: ";") {
            let trimmed = pair.drop { $0 == " " }
            if trimmed.hasPrefix(name + "=") { return trimmed.dropFirst(name.count + 1) }
        }
        return nil
    }
}

extension String {
    func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
