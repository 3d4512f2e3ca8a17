import HTTPTypes
import Hummingbird
import NIOCore

/// The web dashboard: one page (`GET /`) with its script and style sheet, built only on the
/// public v1 API (`/v1/queue`, `/v1/jobs`, `/v1/events`, logs and outputs, `/v1/session` to log
/// in). The assets are plain files in `Resources/` (dashboard.html, .css, .js), embedded in the
/// binary at build time: no build step of their own, nothing fetched from elsewhere.
extension SpoolAPI {
    /// Registers `GET /`, `/dashboard.js` and `/dashboard.css` on `router`.
    func addDashboardRoutes(to router: Router<SpoolRequestContext>) {
        router.get("/", use: dashboardPage)
        router.get("/dashboard.js", use: dashboardScript)
        router.get("/dashboard.css", use: dashboardStyle)
    }

    @Sendable func dashboardPage(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        Self.dashboardAsset(PackageResources.dashboard_html, contentType: "text/html; charset=utf-8")
    }

    @Sendable func dashboardScript(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        Self.dashboardAsset(PackageResources.dashboard_js, contentType: "text/javascript; charset=utf-8")
    }

    @Sendable func dashboardStyle(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        Self.dashboardAsset(PackageResources.dashboard_css, contentType: "text/css; charset=utf-8")
    }

    static func dashboardAsset(_ bytes: [UInt8], contentType: String) -> Response {
        var headers: HTTPFields = [.contentType: contentType, .cacheControl: "no-cache"]
        // Everything comes from this server; no inline script, so injected markup could not run.
        headers[HTTPField.Name("Content-Security-Policy")!] =
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
            + "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        headers[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}
