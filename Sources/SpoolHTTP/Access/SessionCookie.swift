import Crypto
import SpoolCore

/// The dashboard's session: `POST /v1/session` trades a token for a cookie the page's scripts
/// cannot read (HttpOnly, SameSite=Strict, Secure over TLS). Its value names the token by its
/// public id, with an expiry (in milliseconds), signed with HMAC-SHA256 by a key every node
/// shares (kept in the store): any node accepts it; revoking the token ends every session of
/// it, and so does a log out (`TokenRecord.sessionsSince`: sessions that began before it).
enum SessionCookie {
    static let name = "spool_session"
    static let lifetime: Double = 12 * 3600

    /// The cookie's name: over HTTPS `__Host-spool_session`, which browsers let only a secure
    /// page of this host name set, and only with `Path=/` and no `Domain` — so a page on a
    /// subdomain, or served over plain HTTP, cannot plant its own session beside the user's
    /// (found by attacking the build: a sibling page's `spool_session` was taken first, and the
    /// user's next dashboard submit was the other tenant's). Cookies know no ports: a secure page
    /// on another port of the same name still can (README says so).
    static func name(secure: Bool) -> String { secure ? "__Host-" + name : name }

    static func value(tokenID: String, expires: Timestamp, key: [UInt8]) -> String {
        let payload = "\(tokenID).\(expires.microseconds / 1_000)"
        return payload + "." + signature(payload, key: key)
    }

    /// The token id a cookie value names, and when its session began, if its signature holds and
    /// it has not expired.
    static func session(in value: Substring, key: [UInt8], now: Timestamp) -> (tokenID: String, began: Timestamp)? {
        let parts = value.split(separator: ".")
        guard parts.count == 3 else { return nil }
        let payload = "\(parts[0]).\(parts[1])"
        guard TokenText.constantTimeEqual(Array(signature(payload, key: key).utf8), Array(parts[2].utf8)) else { return nil }
        // In milliseconds, as written: any number the server signed compares without overflow
        // (found by attacking the build: `expires * 1_000_000` trapped on a forged value, before the
        // signature was checked, and one request stopped the server).
        // Below 10^11 it is in seconds, as builds before 2026-12-07 wrote it (in milliseconds that
        // is 1973): their sessions last out across an upgrade (found by attacking the build).
        guard let written = Int64(parts[1]) else { return nil }
        let expires = (0..<100_000_000_000).contains(written) ? written * 1_000 : written
        guard expires > now.microseconds / 1_000 else { return nil }
        let began = Timestamp(microseconds: expires.multipliedReportingOverflow(by: 1_000).partialValue).adding(seconds: -lifetime)
        return (String(parts[0]), began)
    }

    static func signature(_ payload: String, key: [UInt8]) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Array(payload.utf8), using: SymmetricKey(data: key))
        return mac.map { String($0, radix: 16).leftPadded(to: 2) }.joined()
    }

    /// `Set-Cookie` for a new session (or, with `value` nil, one that ends it).
    static func header(_ value: String?, secure: Bool) -> String {
        var parts = ["\(name(secure: secure))=\(value ?? "")", "Path=/", "HttpOnly", "SameSite=Strict",
                     value == nil ? "Max-Age=0" : "Max-Age=\(Int(lifetime))"]
        if secure { parts.append("Secure") }
        return parts.joined(separator: "; ")
    }

    /// Every value of the cookie `name` in a `Cookie` header (a browser sends one per path and
    /// domain it was set for: more than one means another page set its own).
    static func values(named name: String, in cookieHeader: String) -> [Substring] {
        cookieHeader.split(separator: ";").compactMap { pair in
            let trimmed = pair.drop { $0 == " " }
            return trimmed.hasPrefix(name + "=") ? trimmed.dropFirst(name.count + 1) : nil
        }
    }
}

extension String {
    func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
