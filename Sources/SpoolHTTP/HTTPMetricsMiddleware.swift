import Dispatch
import HTTPTypes
import Hummingbird
import Metrics
import Synchronization

/// Request counts and latencies by route, named as Prometheus expects (`_total`, `_seconds`):
///
/// - `spool_http_requests_total{method, route, status}`: every answer, a 404 as a 404 (one to a
///   client that hung up first, under the status it was to get);
/// - `spool_http_request_duration_seconds{method, route}`: from the request to the end of its
///   body (an event stream's whole life);
/// - `spool_http_requests_in_flight`: requests being answered now.
///
/// `route` is the matched route's pattern (`/v1/jobs/{id}`), or `unmatched`, so ids and typos
/// never become label values. Outermost, so that what it counts is what the client got.
struct HTTPMetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    final class InFlight: Sendable {
        let gauge = Gauge(label: "spool_http_requests_in_flight")
        let count = Atomic<Int>(0)
        func add(_ delta: Int) { gauge.record(count.wrappingAdd(delta, ordering: .relaxed).newValue) }
    }
    let inFlight = InFlight()
    let handles = Handles()

    /// Each label set's counter and timer, made once: making a metric looks it up in the
    /// registry under its lock, with its labels' strings built again, on every request.
    final class Handles: Sendable {
        private struct Key: Hashable {
            var method: String
            var endpoint: String?
            var status: UInt
        }
        /// Label sets kept at most (methods are the client's to choose; past this, made each time).
        private let limit = 1024
        private let made = Mutex<[Key: (Counter, Metrics.Timer)]>([:])

        func metrics(method: String, endpoint: String?, status: HTTPResponse.Status) -> (Counter, Metrics.Timer) {
            let key = Key(method: method, endpoint: endpoint, status: UInt(status.code))
            if let found = made.withLock({ $0[key] }) { return found }
            let route = HTTPMetricsMiddleware.route(endpoint)
            let metrics = (Counter(label: "spool_http_requests_total", dimensions: [("method", method), ("route", route), ("status", String(status.code))]),
                           Metrics.Timer(label: "spool_http_request_duration_seconds", dimensions: [("method", method), ("route", route)]))
            made.withLock { made in if made.count < limit { made[key] = metrics } }
            return metrics
        }
    }

    /// One request's count, duration and place in flight, recorded once: when its body has been
    /// written (or failed to be), when it failed, or — a client gone before its answer could be
    /// written, whose body the server drops unwritten — when the last reference to it goes.
    final class Recording: Sendable {
        private let start = DispatchTime.now().uptimeNanoseconds
        private let method: String
        private let endpoint: String?
        private let handles: Handles
        private let inFlight: InFlight
        private let status = Mutex<HTTPResponse.Status?>(nil)
        private let done = Atomic<Bool>(false)

        init(method: String, endpoint: String?, handles: Handles, inFlight: InFlight) {
            (self.method, self.endpoint, self.handles, self.inFlight) = (method, endpoint, handles, inFlight)
            inFlight.add(1)
        }

        /// The status it answers with, should the body never be written.
        func answers(_ status: HTTPResponse.Status) { self.status.withLock { $0 = status } }

        func record(_ status: HTTPResponse.Status) {
            guard !done.exchange(true, ordering: .acquiringAndReleasing) else { return }
            let (requests, duration) = handles.metrics(method: method, endpoint: endpoint, status: status)
            requests.increment()
            duration.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds - start))
            inFlight.add(-1)
        }

        deinit { record(status.withLock { $0 } ?? .internalServerError) }
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let recording = Recording(method: request.method.rawValue, endpoint: context.endpointPath, handles: handles, inFlight: inFlight)
        do {
            var response = try await next(request, context)
            let status = response.status
            recording.answers(status)
            let body = response.body
            // Recorded once the body is written (or fails to be): a stream's whole life.
            response.body = ResponseBody(contentLength: body.contentLength) { writer in
                defer { recording.record(status) }
                try await body.write(writer)
            }
            return response
        } catch {
            recording.record((error as? any HTTPResponseError)?.status ?? .internalServerError)
            throw error
        }
    }

    /// `/v1/jobs/:id` → `/v1/jobs/{id}`; `unmatched` when no route matched.
    static func route(_ path: String?) -> String {
        guard let path, !path.isEmpty else { return "unmatched" }
        return path.split(separator: "/", omittingEmptySubsequences: false).map { segment in
            segment.hasPrefix(":") ? "{\(segment.dropFirst())}" : segment == "**" ? "{path}" : String(segment)
        }.joined(separator: "/")
    }
}
