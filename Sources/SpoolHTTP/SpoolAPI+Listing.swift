import Hummingbird
import SpoolCore
import SpoolStore

/// `GET /v1/jobs`, newest first, a page at a time; and what every listing shares (`/v1/arrays`
/// and `/v1/arrays/{id}/tasks` too, the global event stream's `owner`): the page size, the
/// cursor, and whose jobs a token may list.
extension SpoolAPI {
    @Sendable func list(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let parameters = request.uri.queryParameters
        var query = JobQuery()
        if let status = parameters.get("status") {
            guard let state = JobState(rawValue: status) else {
                throw APIError.badRequest("status must be one of " + JobState.allCases.map(\.rawValue).joined(separator: ", "))
            }
            query.state = state
        }
        query.type = parameters.get("type")
        query.owner = try listingOwner(request, context.principal)
        if let array = parameters.get("array") {
            // `none`: jobs submitted alone; an array's id: its tasks (another tenant's array lists nothing, as its jobs would).
            guard array == "none" || ArraySpec.isValidID(array) else {
                throw APIError.badRequest("array must be \"none\" (jobs that are not tasks of an array) or an array's id (arr_…)")
            }
            query.array = array == "none" ? .alone : .tasks(of: array)
        }
        query.limit = try pageLimit(request, default: query.limit)
        query.before = try sequenceCursor(request)
        let page = try await store.jobs(query)
        return json(.object(["jobs": .array(page.jobs.map { JobWire(job: $0).json }),
                             "next_cursor": page.nextCursor.map { .string(String($0)) } ?? .null]))
    }

    /// Whose jobs a listing or the global event stream shows: an administrator's pick
    /// (`owner`, a token's name) or everyone's; a tenant's own, whatever it asks for (another
    /// tenant's is a 403, not an empty page that would look like "none").
    func listingOwner(_ request: Request, _ principal: Principal) throws -> String? {
        guard let asked = request.uri.queryParameters.get("owner") else { return principal.ownerFilter }
        guard !asked.isEmpty else { throw APIError.badRequest("owner must be a token's name") }
        guard principal.isAdmin || asked == principal.name else {
            throw APIError(status: .forbidden, code: "forbidden", detail: "this token sees only its own jobs (owner \"\(principal.name ?? "")\")")
        }
        return asked
    }

    /// A page size from the query's `limit`, 1 to the server's largest page.
    func pageLimit(_ request: Request, default fallback: Int) throws -> Int {
        guard let text = request.uri.queryParameters.get("limit") else { return fallback }
        guard let limit = Int(text), (1...limits.maxPageSize).contains(limit) else {
            throw APIError.badRequest("limit must be an integer from 1 to \(limits.maxPageSize)")
        }
        return limit
    }

    /// The `cursor` of a newest-first listing (jobs, arrays): a sequence number the previous page
    /// handed out. Any positive decimal is accepted (the document says so); one past every job —
    /// too large for a sequence number — pages from the newest.
    func sequenceCursor(_ request: Request) throws -> Int64? {
        guard let cursor = request.uri.queryParameters.get("cursor") else { return nil }
        guard !cursor.isEmpty, cursor.utf8.allSatisfy({ (48...57).contains($0) }), cursor.first != "0" else {
            throw APIError.badRequest("cursor is not one this server handed out")
        }
        return Int64(cursor) ?? Int64.max
    }
}
