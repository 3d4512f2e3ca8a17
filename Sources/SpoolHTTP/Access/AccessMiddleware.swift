import HTTPTypes
import Hummingbird
import SpoolCore
import SpoolStore

/// Authenticates every request and decides what it may reach:
///
/// - a token in the query string is refused outright (401): URLs end up in logs and histories;
/// - `Authorization: Bearer TOKEN`, or the dashboard's session cookie, names the tenant;
/// - without either, only the open routes answer (401 otherwise), unless no token is needed
///   (`auth: off`, or `auto` with no token ever created in the store — revoking the last one
///   does not open it again) — then the caller is an administrator;
/// - `/metrics` and `/v1/nodes` need an administrator's token (403);
/// - a cookie-authenticated request that changes something must come from this server's own
///   page (`Origin` = the request's own origin; 403 otherwise), so another site cannot make a
///   logged-in browser act (CSRF); one without a token, on a server that needs none, must not
///   come from another site's page (an `Origin` that is neither this server's nor one of
///   `cors_origins`: 403), or any page the local user opens could cancel jobs with a form;
/// - what a route that needs a token answers is `Cache-Control: private, no-cache` unless it
///   says otherwise: no shared cache in front may keep a tenant's outputs, logs or jobs (a
///   request made with the cookie carries no `Authorization` to keep them out).
///
/// Which jobs a tenant sees is the routes' business (`SpoolAPI.find(_:for:)`).
struct AccessMiddleware: RouterMiddleware {
    typealias Context = SpoolRequestContext
    let policy: AccessPolicy
    let tokens: TokenBook
    let sessions: SessionKeys

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        let query = request.uri.queryParameters
        if query.has("token") || query.has("access_token") || query.has("api_key") {
            throw APIError(status: .unauthorized, code: "token-in-url",
                           detail: "tokens are never accepted in a URL: send Authorization: Bearer TOKEN",
                           headers: [.wwwAuthenticate: "Bearer"])
        }
        let path = AccessPolicy.routePath(request.uri.path)
        let open = AccessPolicy.isOpen(request.method, path) || (path == "/metrics" && policy.metricsPublic)
        if let principal = try authenticate(request, context: &context) {
            context.principal = principal
        } else if !policy.requiresToken(tokensExist: tokens.wereCreated) {
            context.principal = .anonymous
        } else if !open {
            throw APIError(status: .unauthorized, code: "unauthorized",
                           detail: "this server needs a token: send Authorization: Bearer TOKEN (an administrator creates one with `spool token create`)",
                           headers: [.wwwAuthenticate: "Bearer"])
        } else {
            context.principal = Principal(name: nil, isAdmin: false)
        }
        if policy.isAdminOnly(path), !context.principal.isAdmin {
            throw APIError(status: .forbidden, code: "admin-only", detail: "\(path) needs an administrator's token")
        }
        if ![.get, .head, .options].contains(request.method) {
            if context.viaCookie, !Self.sameOrigin(request) {
                throw APIError(status: .forbidden, code: "cross-origin",
                               detail: "a request made with the session cookie must come from this server's own page (Origin)")
            }
            // Found by attacking the build: a server with no token obeyed a form posted from any site.
            if !context.viaCookie, request.headers[.authorization] == nil, let origin = request.headers[.origin], !Self.sameOrigin(request),
               !policy.corsOrigins.contains(origin), !policy.corsOrigins.contains("*") {
                throw APIError(status: .forbidden, code: "cross-origin",
                               detail: "a request from another site's page (Origin) changes nothing here without a token")
            }
        }
        var response = try await next(request, context)
        // Found by attacking the build: outputs, logs and jobs fetched with the cookie said nothing.
        if !open, response.headers[.cacheControl] == nil { response.headers[.cacheControl] = "private, no-cache" }
        return response
    }

    /// The bearer token's tenant, or the session cookie's; nil when the request carries neither.
    /// A token or session that is present but not valid is a 401, never a fallback to anonymous.
    private func authenticate(_ request: Request, context: inout Context) throws -> Principal? {
        if let authorization = request.headers[.authorization] {
            guard authorization.lowercased().hasPrefix("bearer "), let principal = tokens.principal(forToken: authorization.dropFirst(7)) else {
                throw APIError(status: .unauthorized, code: "invalid-token", detail: "the token is not valid (revoked, mistyped, or not a Bearer token)",
                               headers: [.wwwAuthenticate: "Bearer error=\"invalid_token\""])
            }
            return principal
        }
        let cookies = request.headers[values: .cookie].joined(separator: "; ")
        let found = SessionCookie.values(named: SessionCookie.name(secure: Self.isSecure(request, policy)), in: cookies).filter { !$0.isEmpty }
        guard let value = found.first else { return nil }
        guard found.count == 1 else {
            // Which is the user's own cannot be told: neither is taken.
            if AccessPolicy.isOpen(request.method, AccessPolicy.routePath(request.uri.path)) { return nil }
            throw APIError(status: .unauthorized, code: "session-ambiguous",
                           detail: "more than one session cookie came with the request (a page on another port or subdomain of this host "
                               + "set one): clear this site's cookies, then log in again",
                           headers: [.wwwAuthenticate: "Bearer"])
        }
        guard let key = sessions.key, let session = SessionCookie.session(in: value, key: key, now: WallClock.now()),
              let principal = tokens.principal(forSessionOf: session.tokenID, began: session.began) else {
            // An expired or revoked session: anonymous on open routes, else a 401 that tells the page to log in again.
            if AccessPolicy.isOpen(request.method, AccessPolicy.routePath(request.uri.path)) { return nil }
            throw APIError(status: .unauthorized, code: "session-expired", detail: "the session has ended: log in again",
                           headers: [.wwwAuthenticate: "Bearer"])
        }
        context.viaCookie = true
        var sessionPrincipal = principal
        sessionPrincipal.sessionBegan = session.began
        return sessionPrincipal
    }

    /// Whether the request came over HTTPS: this server speaks TLS, or a proxy in front says so
    /// (`X-Forwarded-Proto: https`, `Forwarded: proto=https`). Only the session cookie's flags go
    /// by it — a `Secure` cookie a plain request would have had is merely not sent back over
    /// plain HTTP (found by attacking the build: behind a TLS proxy, as README sets one up, the
    /// cookie was never `Secure`).
    static func isSecure(_ request: Request, _ policy: AccessPolicy) -> Bool {
        if policy.secureCookies { return true }
        if request.headers[HTTPField.Name("X-Forwarded-Proto")!]?.split(separator: ",").first?
            .trimmingCharacters(in: .whitespaces).lowercased() == "https" { return true }
        guard let forwarded = request.headers[HTTPField.Name("Forwarded")!]?.split(separator: ",").first else { return false }
        return forwarded.split(separator: ";").contains { $0.trimmingCharacters(in: .whitespaces).lowercased() == "proto=https" }
    }

    /// `Origin` is a web page's (http or https: a TLS proxy may stand in front) on the host the
    /// request was sent to.
    static func sameOrigin(_ request: Request) -> Bool {
        guard let origin = request.headers[.origin], let host = request.head.authority else { return false }
        guard let separator = origin.range(of: "://"), ["http", "https"].contains(origin[..<separator.lowerBound].lowercased()) else { return false }
        return origin[separator.upperBound...].lowercased() == host.lowercased()
    }
}

/// The key that signs session cookies, read from the store at startup.
public final class SessionKeys: Sendable {
    public let key: [UInt8]?
    public init(key: [UInt8]?) { self.key = key }
}

/// Answers requests for a `Host` this server does not serve with 421, before anything else:
/// a page on another site that rebinds its DNS name to 127.0.0.1 sends its own name.
struct HostGuardMiddleware<Context: RequestContext>: RouterMiddleware {
    let policy: AccessPolicy

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let host = request.head.authority
        guard policy.allows(host: host) else {
            throw APIError(status: .misdirectedRequest, code: "unknown-host",
                           detail: "this server does not answer to the host \"\(host ?? "")\" (see allowed_hosts)")
        }
        return try await next(request, context)
    }
}

extension HTTPResponse.Status {
    static let misdirectedRequest = HTTPResponse.Status(code: 421, reasonPhrase: "Misdirected Request")
}
