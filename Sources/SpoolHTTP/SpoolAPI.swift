import Foundation
import HTTPTypes
import Hummingbird
import SpoolCore
import SpoolScheduler
import SpoolStore

/// The HTTP API, v1. Routes are thin: they parse, call the store or the scheduler, and
/// encode; the rules live in `SpoolCore` and the stores.
public struct SpoolAPI: Sendable {
    public struct Limits: Sendable {
        public var maxBodyBytes = 1 << 20
        public var maxWait: Double = 60
        public var maxPageSize = 500
        public init() {}
    }

    let store: any JobStore
    let scheduler: Scheduler
    let catalog: JobCatalog
    let dataDirectory: String
    let limits: Limits
    let storeName: String

    public init(store: any JobStore, scheduler: Scheduler, catalog: JobCatalog, dataDirectory: String,
                limits: Limits = Limits(), storeName: String) {
        self.store = store
        self.scheduler = scheduler
        self.catalog = catalog
        self.dataDirectory = dataDirectory
        self.limits = limits
        self.storeName = storeName
    }

    /// A router with every route and the problem+json middleware.
    public func router() -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: ProblemMiddleware())
        router.get("/healthz", use: health)
        router.get("/v1/types", use: types)
        router.post("/v1/jobs", use: submit)
        router.get("/v1/jobs", use: list)
        router.get("/v1/jobs/:id", use: show)
        router.post("/v1/jobs/:id/cancel", use: cancel)
        router.get("/v1/jobs/:id/logs", use: logs)
        router.get("/v1/jobs/:id/outputs", use: outputs)
        router.get("/v1/jobs/:id/outputs/**", use: output)
        router.get("/v1/queue", use: queue)
        return router
    }

    // MARK: - Jobs

    @Sendable func submit(_ request: Request, context: BasicRequestContext) async throws -> Response {
        guard scheduler.gate.isOpen else {
            throw APIError(status: .serviceUnavailable, code: "shutting-down",
                           detail: "the server is shutting down and takes no new jobs; submit to another node or retry shortly",
                           headers: [.retryAfter: "5"])
        }
        let mediaType = request.headers[.contentType].flatMap(MediaType.init(from:))
        guard let mediaType, mediaType.isType(.applicationJson) else {
            throw APIError(status: .unsupportedMediaType, code: "unsupported-media-type",
                           detail: "send the job as JSON with Content-Type: application/json")
        }
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: limits.maxBodyBytes)
        } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
            throw APIError(status: .contentTooLarge, code: "content-too-large",
                           detail: "the request body is over the limit of \(limits.maxBodyBytes) bytes; pass large inputs by reference (a path or URL)")
        }
        let value: JSONValue
        do {
            value = try JSONDecoder().decode(JSONValue.self, from: body)
        } catch {
            throw APIError.badRequest("the request body is not valid JSON")
        }
        let key = request.headers[.idempotencyKey]
        let submission = try SubmitBody(value, idempotencyKey: key).submission
        let job = try catalog.admit(submission, id: .random(), now: WallClock.now())
        let result: EnqueueResult
        do {
            result = try await store.enqueue(job)
        } catch let error as StoreError where error.code == .idempotencyConflict {
            throw APIError.conflict("idempotency-conflict",
                                    "the Idempotency-Key \"\(key ?? "")\" was already used for a different request (job \(error.existing?.id.rawValue ?? "?"))")
        }
        switch result {
        case .created(let job):
            scheduler.jobEnqueued()
            return try json(JobResource(job: job), status: .created, headers: [.location: "/v1/jobs/\(job.id)"])
        case .existing(let job):
            return try json(JobResource(job: job), status: .ok, headers: [.location: "/v1/jobs/\(job.id)"])
        }
    }

    @Sendable func show(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let id = try jobID(context)
        var job = try await find(id)
        if let waitText = request.uri.queryParameters.get("wait") {
            guard let seconds = Double(waitText), seconds >= 0, seconds.isFinite else {
                throw APIError.badRequest("wait must be a number of seconds, at most \(Int(limits.maxWait))")
            }
            let initial = job.state
            let deadline = ContinuousClock.now + .milliseconds(Int64(min(seconds, limits.maxWait) * 1000))
            while job.state == initial, !job.state.isTerminal {
                let remaining = deadline - ContinuousClock.now
                guard remaining > .zero, !Task.isShuttingDownGracefully else { break }
                // Subscribe first, then read: a change in between is not missed.
                let watch = store.watch(id)
                job = try await find(id)
                if job.state != initial { break }
                guard await watch.next(timeout: remaining) else { break }
                job = try await find(id)
            }
        }
        return try json(JobResource(job: job))
    }

    @Sendable func list(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let parameters = request.uri.queryParameters
        var query = JobQuery()
        if let status = parameters.get("status") {
            guard let state = JobState(rawValue: status) else {
                throw APIError.badRequest("status must be one of " + JobState.allCases.map(\.rawValue).joined(separator: ", "))
            }
            query.state = state
        }
        query.type = parameters.get("type")
        if let limitText = parameters.get("limit") {
            guard let limit = Int(limitText), (1...limits.maxPageSize).contains(limit) else {
                throw APIError.badRequest("limit must be an integer from 1 to \(limits.maxPageSize)")
            }
            query.limit = limit
        }
        if let cursor = parameters.get("cursor") {
            guard let before = Int64(cursor), before > 0 else { throw APIError.badRequest("cursor is not one this server handed out") }
            query.before = before
        }
        let page = try await store.jobs(query)
        return try json(JobPageResource(jobs: page.jobs.map(JobResource.init), nextCursor: page.nextCursor.map(String.init)))
    }

    @Sendable func cancel(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let id = try jobID(context)
        switch try await store.cancel(id, now: WallClock.now()) {
        case .notFound:
            throw APIError.notFound("no job \(id)")
        case .canceled(let job):
            return try json(JobResource(job: job))
        case .stopping(let job):
            await scheduler.stop(id, because: .cancel)
            return try json(JobResource(job: job), status: .accepted)
        case .alreadyFinished(let job):
            throw APIError.conflict("already-finished", "job \(id) already finished (\(job.state.rawValue)); there is nothing to cancel")
        }
    }

    @Sendable func queue(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let occupancy = await scheduler.occupancy()
        var slots: [QueueResource.Slot] = []
        for (slot, jobID) in occupancy {
            let job = try await jobID.asyncFlatMap { try await store.job($0) }
            slots.append(QueueResource.Slot(id: slot.id, gpu: slot.gpu, job: job.map(JobResource.init)))
        }
        return try json(QueueResource(queued: try await store.queuedCount(), accepting: scheduler.gate.isOpen, slots: slots))
    }

    @Sendable func health(_ request: Request, context: BasicRequestContext) async throws -> Response {
        struct Health: Encodable { let status: String; let store: String; let slots: Int; let queued: Int }
        let accepting = scheduler.gate.isOpen
        let health = Health(status: accepting ? "ok" : "draining", store: storeName,
                            slots: await scheduler.occupancy().count, queued: try await store.queuedCount())
        return try json(health, status: accepting ? .ok : .serviceUnavailable)
    }

    @Sendable func types(_ request: Request, context: BasicRequestContext) async throws -> Response {
        struct TypeResource: Encodable {
            let name: String
            let timeoutSeconds: Double
            let maxAttempts: Int
            let inputKeys: [String]
            enum CodingKeys: String, CodingKey { case name, timeoutSeconds = "timeout_s", maxAttempts = "max_attempts", inputKeys = "command_input_keys" }
        }
        let list = catalog.types.values.sorted { $0.name < $1.name }.map {
            TypeResource(name: $0.name, timeoutSeconds: $0.timeoutSeconds, maxAttempts: $0.maxAttempts, inputKeys: $0.command.referencedKeys)
        }
        return try json(["types": list])
    }

    // MARK: - Helpers

    func jobID(_ context: BasicRequestContext) throws -> JobID {
        let text = context.parameters.get("id") ?? ""
        guard let id = JobID(text) else { throw APIError.notFound("no job \(text)") }
        return id
    }

    func find(_ id: JobID) async throws -> Job {
        guard let job = try await store.job(id) else { throw APIError.notFound("no job \(id)") }
        return job
    }

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()

    func json(_ value: some Encodable, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) throws -> Response {
        var headers = headers
        headers[.contentType] = "application/json"
        let data = try Self.encoder.encode(value)
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

extension HTTPField.Name {
    static let idempotencyKey = HTTPField.Name("Idempotency-Key")!
    static let nextOffset = HTTPField.Name("Spool-Next-Offset")!
}

extension Optional {
    func asyncFlatMap<T>(_ transform: (Wrapped) async throws -> T?) async rethrows -> T? {
        guard let value = self else { return nil }
        return try await transform(value)
    }
}
