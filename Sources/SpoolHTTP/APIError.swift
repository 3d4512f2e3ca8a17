import Foundation
import HTTPTypes
import Hummingbird
import NIOHTTP1
import SpoolCore
import SpoolExecutor
import SpoolStore

/// An error the API answers with. Turned into RFC 9457 `application/problem+json` by
/// `ProblemMiddleware` — the one place where errors become HTTP responses.
struct APIError: Error, Sendable {
    var status: HTTPResponse.Status
    /// Short stable code, also the tail of the problem `type` URI.
    var code: String
    var detail: String
    var errors: [String] = []
    var headers: HTTPFields = [:]
    /// Further members of the problem object (`limit` of a 429, say).
    var extra: [String: JSONValue] = [:]

    static func badRequest(_ detail: String) -> APIError { APIError(status: .badRequest, code: "bad-request", detail: detail) }
    static func unprocessable(_ detail: String, errors: [String] = []) -> APIError {
        APIError(status: .unprocessableContent, code: "invalid-request", detail: detail, errors: errors)
    }
    static func notFound(_ detail: String) -> APIError { APIError(status: .notFound, code: "not-found", detail: detail) }
    static func conflict(_ code: String, _ detail: String) -> APIError { APIError(status: .conflict, code: code, detail: detail) }

    /// 429, naming the limit, with `Retry-After` in whole seconds (at least 1).
    static func rateLimited(_ limit: String, detail: String, retryAfter seconds: Double) -> APIError {
        let wait = max(1, Int(seconds.rounded(.up)))
        return APIError(status: .tooManyRequests, code: "rate-limited", detail: detail + " (\(limit))",
                        headers: [.retryAfter: String(wait)], extra: ["limit": .string(limit), "retry_after_s": .int(Int64(wait))])
    }
}

/// RFC 9457 problem details.
public enum Problem {
    public static let contentType = "application/problem+json"

    /// The problem document: `urn:spool:problem:CODE`, the status's reason as the title, the
    /// request's path as the instance. (Also written by the HTTP/1 layer, for a 413 sent before
    /// a request reaches the router.)
    public static func document(status: HTTPResponse.Status, code: String, detail: String, instance: String) -> [String: JSONValue] {
        ["type": .string("urn:spool:problem:\(code)"), "title": .string(status.reasonPhrase), "status": .int(Int64(status.code)),
         "detail": .string(detail), "instance": .string(instance)]
    }
}

/// Catches every error a route throws (and the router's own 404/405/413) and answers with
/// problem+json; unexpected errors become a 500 with a generic sentence, logged in full.
struct ProblemMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            // A request that makes jobs under an Idempotency-Key: a submit, or an array's retry.
            let path = request.uri.path
            let submit = request.method == .post && (path == "/v1/jobs" || (path.hasPrefix("/v1/arrays/") && path.hasSuffix("/retry")))
            let apiError = Self.translate(error, context: context, submit: submit)
            var problem = Problem.document(status: apiError.status, code: apiError.code, detail: apiError.detail, instance: request.uri.path)
            if !apiError.errors.isEmpty { problem["errors"] = .array(apiError.errors.map(JSONValue.string)) }
            problem.merge(apiError.extra) { current, _ in current }
            return SpoolAPI.respond(.object(problem), status: apiError.status, headers: apiError.headers, contentType: Problem.contentType)
        }
    }

    /// `submit`: the request was a submit, whose retry advice names its Idempotency-Key.
    static func translate(_ error: any Error, context: Context, submit: Bool = false) -> APIError {
        switch error {
        case let error as APIError:
            return error
        case let error as SubmissionRejection:
            return APIError(status: .unprocessableContent, code: error.kind.rawValue.replacingOccurrences(of: "_", with: "-"),
                            detail: error.message, errors: error.problems)
        case let error as StoreError where error.code == .storageUnavailable:
            // The reason (which may name a host or a path) is logged; the answer does not echo it.
            context.logger.error("store unavailable", metadata: ["error": "\(error)"])
            return APIError(status: .serviceUnavailable, code: "storage-unavailable",
                            // The Idempotency-Key advice only where it applies (found by attacking the build: a cancel's 503 said it).
                            detail: "the job store cannot write, or did not answer in time; try again later"
                                + (submit ? ". A submit that timed out may have been stored: retry it with the same Idempotency-Key, and it is stored once" : ""),
                            headers: [.retryAfter: "5"])
        case let error as ResourcesShort:
            context.logger.error("a request could not open a file", metadata: ["error": "\(error)"])
            return APIError(status: .serviceUnavailable, code: "server-short",
                            detail: "\(error) just now, and could not open what was asked for; try again shortly", headers: [.retryAfter: "1"])
        case let error as HTTPError:
            let detail: String = switch error.status {
            case .notFound: "no such resource; the API lives under /v1 (see the README)"
            case .methodNotAllowed: "this resource does not accept that method"
            case .contentTooLarge: "the request body is over the size limit"
            default: error.body ?? error.status.reasonPhrase
            }
            return APIError(status: error.status, code: error.status.reasonPhrase.lowercased().replacingOccurrences(of: " ", with: "-"),
                            detail: detail, headers: error.headers)
        case let error as any HTTPResponseError:
            return APIError(status: error.status, code: "http-\(error.status.code)", detail: error.status.reasonPhrase)
        case let error as HTTPParserError:
            // Malformed framing (a bad chunk size, say) found while reading the body: the client's fault.
            return APIError(status: .badRequest, code: "malformed-request", detail: "the request is not well-formed HTTP/1.1 (\(error))")
        default:
            context.logger.error("unexpected error", metadata: ["error": "\(String(reflecting: error))"])
            return APIError(status: .internalServerError, code: "internal",
                            detail: "the server failed to handle this request; the error is in the server's log")
        }
    }
}
