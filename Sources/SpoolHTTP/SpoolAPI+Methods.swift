import HTTPTypes
import Hummingbird

/// The API's resources and the methods each answers, in the router's path syntax (`:id` is
/// one segment, `**` the rest). `router()` registers the handlers; this table is what a
/// request with another method is told in `Allow`. `OpenAPITests` checks that it, the
/// router and the OpenAPI document name the same paths and methods.
extension SpoolAPI {
    static let resources: [(path: String, methods: [HTTPRequest.Method])] = [
        ("/healthz", [.get]),
        ("/openapi.json", [.get]),
        ("/v1/types", [.get]),
        ("/v1/jobs", [.get, .post]),
        ("/v1/jobs/:id", [.get, .delete]),
        ("/v1/jobs/:id/cancel", [.post]),
        ("/v1/jobs/:id/logs", [.get]),
        ("/v1/jobs/:id/outputs", [.get]),
        ("/v1/jobs/:id/outputs/**", [.get]),
        ("/v1/queue", [.get]),
        ("/v1/nodes", [.get]),
        ("/v1/slots/:slot/release", [.post]),
        ("/v1/events", [.get]),
        ("/v1/jobs/:id/events", [.get]),
        ("/v1/jobs/:id/webhooks", [.get]),
        ("/v1/jobs/:id/attempts", [.get]),
        ("/v1/webhook-secret", [.get]),
        ("/v1/arrays", [.get]),
        ("/v1/arrays/:id", [.get, .delete]),
        ("/v1/arrays/:id/tasks", [.get]),
        ("/v1/arrays/:id/outputs", [.get]),
        ("/v1/arrays/:id/cancel", [.post]),
        ("/v1/arrays/:id/retry", [.post]),
        ("/v1/session", [.get, .post, .delete]),
        ("/metrics", [.get]),
        ("/", [.get]),
        ("/dashboard.js", [.get]),
        ("/dashboard.css", [.get]),
    ]

    /// The methods the resource at `path` answers, or nil when no resource is there.
    static func allowedMethods(forPath path: String) -> [HTTPRequest.Method]? {
        let segments = path.split(separator: "/")
        for resource in resources {
            let pattern = resource.path.split(separator: "/")
            if pattern.last == "**" {
                guard segments.count >= pattern.count, matches(segments.prefix(pattern.count - 1), pattern.dropLast()) else { continue }
            } else {
                guard segments.count == pattern.count, matches(segments[...], pattern[...]) else { continue }
            }
            return resource.methods
        }
        return nil
    }

    private static func matches(_ segments: ArraySlice<Substring>, _ pattern: ArraySlice<Substring>) -> Bool {
        zip(segments, pattern).allSatisfy { segment, part in part.hasPrefix(":") || segment == part }
    }
}

/// RFC 9110 §15.5.6: a request whose path names a resource of the API but whose method that
/// resource does not serve is answered 405 with `Allow`, not 404. The router answers both
/// with its not-found error; this tells them apart (route handlers throw `APIError`, never
/// the router's `HTTPError`, for an unknown job). Sits inside `ProblemMiddleware`, which
/// writes the problem+json.
struct MethodNotAllowedMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound {
            guard var allowed = SpoolAPI.allowedMethods(forPath: request.uri.path), !allowed.contains(request.method) else { throw error }
            // Every GET has its HEAD (the router generates them).
            if let get = allowed.firstIndex(of: .get) { allowed.insert(.head, at: get + 1) }
            throw HTTPError(.methodNotAllowed, headers: [.allow: allowed.map(\.rawValue).joined(separator: ", ")])
        }
    }
}
