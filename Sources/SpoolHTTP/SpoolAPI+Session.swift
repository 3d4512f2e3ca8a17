import Hummingbird
import SpoolCore

/// The dashboard's login: `POST /v1/session` with `{"token": "…"}` answers with an HttpOnly,
/// `SameSite=Strict` cookie (`Secure` over TLS) that stands for the token, so the page — and
/// its EventSource — never hold the token where a script could read it, and it never appears
/// in a URL. `DELETE /v1/session` ends it.
extension SpoolAPI {
    @Sendable func startSession(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        // Only the page's own script logs in: JSON (a form on another site can send only form
        // types without asking), and from this server's origin when the browser names one — so
        // another site cannot log a visitor's dashboard in under its own token (found by
        // attacking the build: a text/plain form from another origin got a session).
        let type = request.headers[.contentType]
        guard type == "application/json" || type.flatMap(MediaType.init(from:))?.isType(.applicationJson) == true else {
            throw APIError(status: .unsupportedMediaType, code: "unsupported-media-type",
                           detail: "send the token as JSON (Content-Type: application/json)")
        }
        if request.headers[.origin] != nil, !AccessMiddleware.sameOrigin(request) {
            throw APIError(status: .forbidden, code: "cross-origin", detail: "a session is started from this server's own page (Origin)")
        }
        let body = try await request.body.collect(upTo: 4096)
        guard let value = try? JSONParser.parse(body.readableBytesView), let text = value["token"]?.stringValue,
              value.objectValue?.count == 1 else {
            throw APIError.badRequest("send {\"token\": \"spool_…\"} as JSON, and nothing else")
        }
        guard let id = tokens.tokenID(forToken: text), let principal = tokens.principal(forTokenID: id) else {
            throw APIError(status: .unauthorized, code: "invalid-token", detail: "that token is not valid (revoked or mistyped)",
                           headers: [.wwwAuthenticate: "Bearer error=\"invalid_token\""])
        }
        guard let key = sessions.key else {
            throw APIError(status: .serviceUnavailable, code: "no-sessions", detail: "this server's store keeps no session key")
        }
        let expires = WallClock.now().adding(seconds: SessionCookie.lifetime)
        let cookie = SessionCookie.value(tokenID: id, expires: expires, key: key)
        return json(.object(["name": .string(principal.name ?? ""), "admin": .bool(principal.isAdmin), "expires_at": .string(expires.description)]),
                    headers: [.setCookie: SessionCookie.header(cookie, secure: AccessMiddleware.isSecure(request, access)), .cacheControl: "no-store"])
    }

    /// Who this request acts as: the token's name (null with authentication off), whether it is
    /// an administrator, and whether it came with a session cookie — for the dashboard to say so
    /// after a reload (found by attacking the build: it showed no one, so a page logged in under
    /// another tenant's cookie looked the same). 401 without a token or session.
    @Sendable func currentSession(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let principal = context.principal
        return json(.object(["name": principal.name.map(JSONValue.string) ?? .null, "admin": .bool(principal.isAdmin),
                             "session": .bool(context.viaCookie)]),
                    headers: [.cacheControl: "no-store"])
    }

    /// Log out: the session ends on the server, not only in this browser — every dashboard
    /// session of its token that began before now (found by attacking the build: a copied cookie
    /// went on working for its 12 hours after a log out).
    @Sendable func endSession(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        if context.viaCookie, let id = context.principal.tokenID {
            // To the millisecond, as a cookie says when its session began, and past the session
            // logging out, whatever the clocks (found in review: one begun in the same millisecond,
            // or on a node whose clock runs ahead, went on).
            let now = Timestamp(microseconds: WallClock.now().microseconds / 1_000 * 1_000)
            let past = context.principal.sessionBegan.map { $0.adding(seconds: 0.001) } ?? now
            try await tokens.endSessions(ofToken: id, at: max(now, past))
        }
        return Response(status: .noContent, headers: [.setCookie: SessionCookie.header(nil, secure: AccessMiddleware.isSecure(request, access))])
    }
}
