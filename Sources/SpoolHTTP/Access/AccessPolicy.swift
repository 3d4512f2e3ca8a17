import Foundation
import HTTPTypes
import SpoolCore

/// Who may reach what: the settings behind `AccessMiddleware`, `HostGuardMiddleware` and
/// `CORSMiddleware`.
public struct AccessPolicy: Sendable {
    /// When a token is needed.
    public enum Mode: String, Sendable, CaseIterable {
        /// As soon as a token is created, and from then on, even with every token revoked (a
        /// fresh loopback server works without one).
        case auto
        /// Always: without a token nothing but the open routes answers.
        case required
        /// Never: every caller is an administrator.
        case off
    }

    public var mode: Mode = .auto
    /// `/metrics` without a token (for a scraper on a private network).
    public var metricsPublic = false
    /// The `Host` names (with or without a port) requests must carry; nil accepts any.
    /// Defaults to the loopback names on a loopback server, so a web page cannot reach it by
    /// DNS rebinding.
    public var allowedHosts: [String]?
    /// Origins whose pages may call the API from a browser (CORS), e.g. `https://app.example.com`.
    public var corsOrigins: [String] = []
    /// The session cookie is `Secure` (the server speaks TLS).
    public var secureCookies = false
    /// The server's `max_queued`: most jobs queued in all (429 beyond).
    public var maxQueued: Int?

    public init() {}

    public static let loopbackHosts = ["localhost", "127.0.0.1", "[::1]", "::1"]

    /// Whether a request must carry a token, given whether any token exists or ever did.
    public func requiresToken(tokensExist: Bool) -> Bool {
        switch mode {
        case .off: false
        case .required: true
        case .auto: tokensExist
        }
    }

    /// Whether `host` (a `Host` header: a name or address, with an optional port) may be served.
    public func allows(host: String?) -> Bool {
        guard let allowedHosts, !allowedHosts.contains("*") else { return true }
        guard let host, !host.isEmpty else { return false }
        let name = Self.hostName(host).lowercased()
        return allowedHosts.contains { $0.lowercased() == name || Self.hostName($0).lowercased() == name }
    }

    /// `example.com:8080` → `example.com`, `[::1]:8080` → `[::1]`.
    static func hostName(_ host: String) -> String {
        if host.hasPrefix("["), let close = host.firstIndex(of: "]") { return String(host[...close]) }
        if let colon = host.lastIndex(of: ":"), host.firstIndex(of: ":") == colon { return String(host[..<colon]) }
        return host
    }

    /// `path` as the router matches it: empty segments (`//`, a trailing `/`) do not count, and
    /// percent-encoded letters read as themselves. Every access decision is made on it (found by
    /// attacking the build: `//metrics`, `/v1/nodes/` and `/v1//slots/0/release` reached the
    /// administrator's routes with a tenant's token).
    static func routePath(_ path: String) -> String {
        let segments = path.split(separator: "/", omittingEmptySubsequences: true).map { segment in
            String(segment).removingPercentEncoding ?? String(segment)
        }
        return "/" + segments.joined(separator: "/")
    }

    /// Routes that answer without a token: health for load balancers, the API description, the
    /// dashboard page (its login) and the session itself.
    static func isOpen(_ method: HTTPRequest.Method, _ path: String) -> Bool {
        switch path {
        case "/healthz", "/openapi.json", "/", "/dashboard.js", "/dashboard.css": method == .get || method == .head
        case "/v1/session": method == .post || method == .delete
        default: false
        }
    }

    /// Routes only an administrator may use.
    func isAdminOnly(_ path: String) -> Bool {
        path == "/v1/nodes" || path.hasPrefix("/v1/slots/") || (path == "/metrics" && !metricsPublic)
    }
}
