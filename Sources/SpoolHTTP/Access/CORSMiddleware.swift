import HTTPTypes
import Hummingbird

/// Cross-origin requests from the pages of `cors_origins` (and only those): their requests get
/// `Access-Control-Allow-Origin`, and a preflight (`OPTIONS` with `Access-Control-Request-Method`)
/// is answered 204 with the methods and headers the API takes. Other origins get no CORS
/// headers, so browsers keep their pages out.
struct CORSMiddleware<Context: RequestContext>: RouterMiddleware {
    let origins: Set<String>

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let origin = request.headers[.origin], origins.contains(origin) || origins.contains("*") else {
            return try await next(request, context)
        }
        if request.method == .options, request.headers[.accessControlRequestMethod] != nil {
            return Response(status: .noContent, headers: [
                .accessControlAllowOrigin: origin, .vary: "Origin",
                .accessControlAllowMethods: "GET, HEAD, POST, DELETE, OPTIONS",
                // Every request header the API reads (found by attacking the build: If-Modified-Since was missing).
                .accessControlAllowHeaders: "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, Range, If-None-Match, If-Modified-Since, If-Range",
                .accessControlMaxAge: "600",
            ])
        }
        var response = try await next(request, context)
        response.headers[.accessControlAllowOrigin] = origin
        response.headers.append(HTTPField(name: .vary, value: "Origin"))
        // Every response header the API sets for a client to read (found by attacking the build:
        // Spool-Dedup was missing, so a page could not tell a dedup join from a new job).
        response.headers[.accessControlExposeHeaders] = "Location, Retry-After, Spool-Next-Offset, Spool-Dedup, ETag, Last-Modified, Content-Range, Accept-Ranges"
        return response
    }
}
