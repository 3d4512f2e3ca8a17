import Foundation
import HTTPTypes
import Hummingbird
import ServiceLifecycle
import SpoolCore
import SpoolExecutor
import SpoolScheduler
import SpoolStore
import SpoolWebhooks

/// The HTTP API, v1. Routes are thin: they parse, call the store or the scheduler, and
/// encode; the rules live in `SpoolCore` and the stores.
public struct SpoolAPI: Sendable {
    public struct Limits: Sendable {
        public var maxBodyBytes = 1 << 20
        public var maxWait: Double = 60
        public var maxPageSize = 500
        /// How long an ended job is kept (`retention_days`); nil: for good. Result reuse takes no
        /// job older than that, which retention deletes, or is about to.
        public var retentionSeconds: Double?
        public init() {}
    }

    let store: any JobStore
    let scheduler: Scheduler
    let catalog: JobCatalog
    let dataDirectory: String
    let limits: Limits
    let storeName: String
    /// This node's name with a shared store.
    let node: String?
    /// When this server started (what `GET /v1/nodes` says of a single node).
    let startedAt = WallClock.now()
    /// Prometheus text for `/metrics`, when the app exports metrics.
    let metrics: (@Sendable () async -> String)?
    let access: AccessPolicy
    let tokens: TokenBook
    let sessions: SessionKeys
    let rates: SubmitRates
    /// Where webhooks may go (checked at submit; the deliverer checks again).
    let webhookTargets: WebhookGuard
    /// `webhook_secret`, from which each tenant's signing secret is derived.
    let webhookServerSecret: String?

    public init(store: any JobStore, scheduler: Scheduler, catalog: JobCatalog, dataDirectory: String,
                limits: Limits = Limits(), storeName: String, node: String? = nil, metrics: (@Sendable () async -> String)? = nil,
                access: AccessPolicy = AccessPolicy(), tokens: TokenBook? = nil, sessionKey: [UInt8]? = nil,
                webhookTargets: WebhookGuard = WebhookGuard(allowPrivate: false), webhookSecret: String? = nil) {
        self.webhookTargets = webhookTargets
        webhookServerSecret = webhookSecret
        self.node = node
        self.metrics = metrics
        self.store = store
        self.scheduler = scheduler
        self.catalog = catalog
        self.dataDirectory = dataDirectory
        self.limits = limits
        self.storeName = storeName
        self.access = access
        self.tokens = tokens ?? TokenBook(store: store as? any TokenStore, logger: .init(label: "spool.tokens"))
        rates = SubmitRates(store: store)
        sessions = SessionKeys(key: sessionKey)
    }

    /// An agent's router: `/metrics` and `/healthz` only, with the same access rules (an
    /// administrator's token for the metrics once tokens exist, unless `metrics_public`).
    public func metricsRouter() -> Router<SpoolRequestContext> {
        let router = Router(context: SpoolRequestContext.self, options: .autoGenerateHeadEndpoints)
        router.add(middleware: ProblemMiddleware())
        router.add(middleware: HostGuardMiddleware(policy: access))
        router.add(middleware: AccessMiddleware(policy: access, tokens: tokens, sessions: sessions))
        router.get("/metrics", use: exportMetrics)
        router.get("/healthz", use: health)
        return router
    }

    /// A router with every route and its middleware: metrics (outermost, so each response is
    /// counted under the status it really has), problem+json, the `Host` guard, CORS, access
    /// (authentication and what a token may reach), then 405s.
    public func router() -> Router<SpoolRequestContext> {
        let router = Router(context: SpoolRequestContext.self, options: .autoGenerateHeadEndpoints)
        router.add(middleware: HTTPMetricsMiddleware())
        router.add(middleware: CompressionMiddleware())
        // Outside ProblemMiddleware: a page of an allowed origin can read the API's errors too.
        router.add(middleware: CORSMiddleware(origins: Set(access.corsOrigins)))
        router.add(middleware: ProblemMiddleware())
        router.add(middleware: HostGuardMiddleware(policy: access))
        router.add(middleware: AccessMiddleware(policy: access, tokens: tokens, sessions: sessions))
        router.add(middleware: MethodNotAllowedMiddleware())
        router.get("/metrics", use: exportMetrics)
        router.get("/healthz", use: health)
        router.get("/v1/types", use: types)
        router.get("/v1/session", use: currentSession)
        router.post("/v1/session", use: startSession)
        router.delete("/v1/session", use: endSession)
        router.post("/v1/jobs", use: submit)
        router.get("/v1/jobs", use: list)
        router.get("/v1/jobs/:id", use: show)
        router.delete("/v1/jobs/:id", use: deleteJob)
        router.post("/v1/jobs/:id/cancel", use: cancel)
        router.get("/v1/jobs/:id/logs", use: logs)
        router.get("/v1/jobs/:id/outputs", use: outputs)
        router.get("/v1/jobs/:id/outputs/**", use: output)
        router.get("/v1/queue", use: queue)
        router.get("/v1/nodes", use: nodes)
        router.post("/v1/slots/:slot/release", use: releaseSlot)
        router.get("/openapi.json", use: openAPI)
        router.get("/v1/events", use: allEvents)
        router.get("/v1/jobs/:id/events", use: jobEvents)
        router.get("/v1/jobs/:id/webhooks", use: webhooks)
        router.get("/v1/webhook-secret", use: webhookSecret)
        router.get("/v1/jobs/:id/attempts", use: attempts)
        router.get("/v1/arrays", use: listArrays)
        router.get("/v1/arrays/:id", use: showArray)
        router.get("/v1/arrays/:id/tasks", use: arrayTasks)
        router.get("/v1/arrays/:id/outputs", use: arrayOutputs)
        router.post("/v1/arrays/:id/cancel", use: cancelArray)
        router.post("/v1/arrays/:id/retry", use: retryArray)
        router.delete("/v1/arrays/:id", use: deleteArray)
        addDashboardRoutes(to: router)
        return router
    }

    // MARK: - Jobs

    @Sendable func show(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let id = try jobID(context)
        let waitText = request.uri.queryParameters.get("wait")
        // With `wait`: subscribe first, then read, so a change in between is not missed — one
        // subscription for the whole wait (it keeps the newest change), and one read per change
        // but the job's end, which comes with the job as stored.
        // `seen`: the state the client last saw. A job that has left it since is answered at
        // once — a wait that counted only changes from its own read would hold a job that
        // started a moment before until its end. (Checked with or without `wait`.)
        var seen: JobState?
        if let text = request.uri.queryParameters.get("seen") {
            guard let state = JobState(rawValue: text) else {
                throw APIError.badRequest("seen must be one of " + JobState.allCases.map(\.rawValue).joined(separator: ", "))
            }
            seen = state
        }
        let watch = waitText == nil ? nil : store.watch(id)
        var job = try await find(id, for: context.principal)
        if let waitText, let watch {
            // A decimal number (an exponent too: 1e-05 is how some clients write a small one);
            // `Double` alone also reads 0x10 (as 16), inf and nan.
            let decimal = waitText.utf8.allSatisfy { "0123456789.eE+-".utf8.contains($0) }
            guard decimal, let seconds = Double(waitText), seconds >= 0, seconds.isFinite else {
                throw APIError.badRequest("wait must be a number of seconds (longer waits are cut to \(Int(limits.maxWait)))")
            }
            let initial = seen ?? job.state
            let deadline = ContinuousClock.now + .milliseconds(Int64(min(seconds, limits.maxWait) * 1000))
            // A shutdown ends the wait: the answer is the job as it is, and the server need not
            // wait out the poll before it stops.
            try await withGracefulShutdownHandler {
                waiting: while job.state == initial, !job.state.isTerminal {
                    let remaining = deadline - ContinuousClock.now
                    guard remaining > .zero, !Task.isShuttingDownGracefully, !Task.isCancelled, !watch.hasEnded else { break }
                    // A second at a time, so that a token revoked meanwhile ends the wait within a
                    // second (found by attacking the build: it answered the job up to a minute later).
                    switch await watch.nextChange(timeout: min(remaining, .seconds(1))) {
                    case nil: break
                    case .ended(let ended): job = ended   // as stored, and final: no second read
                    case .changed: job = try await find(id, for: context.principal)
                    }
                    guard tokens.stillValid(context.principal) else {
                        throw APIError(status: .unauthorized, code: "invalid-token", detail: "the token was revoked while the request waited",
                                       headers: [.wwwAuthenticate: "Bearer error=\"invalid_token\""])
                    }
                }
            } onGracefulShutdown: {
                watch.end()
            }
        }
        return json(resource(job))
    }

    /// A job as the API shows it, with its start estimate while it is queued.
    func resource(_ job: Job) -> JobWire {
        guard job.state == .queued, let position = job.position else { return JobWire(job: job) }
        let now = WallClock.now()
        return JobWire(job: job, estimate: startEstimate(of: job, position: position, now: now), now: now,
                       waitingReason: scheduler.waitingReason(for: job.type))
    }

    @Sendable func cancel(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let id = try jobID(context)
        _ = try await find(id, for: context.principal)
        switch try await store.cancel(id, by: context.principal.name ?? "", now: WallClock.now()) {
        case .notFound:
            throw APIError.notFound("no job \(id)")
        case .canceled(let job):
            SchedulerMetrics.ended([job])
            // A slot may have looked it up as its next job already.
            await scheduler.stop(id, because: .cancel)
            return json(JobWire(job: job))
        case .stopping(let job):
            await scheduler.stop(id, because: .cancel)
            return json(JobWire(job: job), status: .accepted)
        case .alreadyFinished(let job):
            throw APIError.conflict("already-finished", "job \(id) already finished (\(job.state.rawValue)); there is nothing to cancel")
        }
    }

    /// Deletes an ended job with its events, webhook deliveries, log and outputs, as retention
    /// does (204). A queued or running job is a 409 (cancel it first); so is a task of a job
    /// array, which goes with its array.
    @Sendable func deleteJob(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let id = try jobID(context)
        _ = try await find(id, for: context.principal)
        switch try await store.delete(id) {
        case .notFound:
            throw APIError.notFound("no job \(id)")
        case .notEnded(let job):
            throw APIError.conflict("not-ended", "job \(id) is \(job.state.rawValue): cancel it, then delete it once it has ended")
        case .arrayTask(let job):
            let array = job.array?.id ?? ""
            throw APIError.conflict("array-task", "job \(id) is a task of job array \(array): it goes with its array (DELETE /v1/arrays/\(array))")
        case .deleted:
            // This node's copy of its files; another node's goes with that node's next retention
            // pass that finds the directory old.
            _ = try? await BlockingIO.run { [dataDirectory] in JobDirectories.remove(id, in: dataDirectory) }
            return Response(status: .noContent)
        }
    }

    @Sendable func queue(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let occupancy = await scheduler.occupancy()
        let workers = await scheduler.workerStatus()
        let quarantined = Dictionary(uniqueKeysWithValues: await scheduler.quarantinedSlots().map { ($0.0.id, $0.1) })
        var slots: [QueueResource.Slot] = []
        let principal = context.principal
        for (slot, jobID) in occupancy {
            let job = try await jobID.asyncFlatMap { try await store.job($0) }
            // A tenant sees its own jobs; another tenant's only as a busy slot.
            let visible = job.flatMap { principal.canSee(owner: $0.owner) ? $0 : nil }
            var entry = QueueResource.Slot(id: slot.id, gpu: slot.gpu, busy: jobID != nil, job: visible.map { JobWire(job: $0) })
            entry.quarantine = quarantined[slot.id]
            // Nor the warm worker that runs another tenant's job (found by attacking the build: its
            // type, pid, jobs run and memory showed).
            if let worker = workers[slot.id]?.worker, jobID == nil || visible != nil {
                entry.worker = .object([
                    "id": .string(worker.id), "type": .string(worker.type), "phase": .string(worker.phase),
                    "pid": worker.pid.map { .int(Int64($0)) } ?? .null, "jobs_run": .int(Int64(worker.jobsRun)),
                    "rss_mb": worker.usage.rssMegabytes.map { .double(($0 * 10).rounded() / 10) } ?? .null,
                    "vram_mb": worker.usage.vramMegabytes.map(JSONValue.double) ?? .null,
                ])
            }
            entry.unhealthy = (workers[slot.id]?.health ?? []).map { health in
                .object(["type": .string(health.type), "failures": .int(Int64(health.failures)),
                         "unhealthy": .bool(health.unhealthy), "last_error": .string(health.lastError)])
            }
            slots.append(entry)
        }
        let mine = try await principal.ownerFilter.asyncFlatMap { try await store.queuedCount(owner: $0) }
        return json(QueueResource(queued: try await store.queuedCount(), mine: mine, accepting: scheduler.gate.isOpen, slots: slots).json)
    }

    /// The nodes of a shared store with their heartbeats; on one machine, this server.
    @Sendable func nodes(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        var nodes: [JSONValue] = []
        if let shared = store as? any SharedJobStore {
            let lease = Double(shared.leaseDuration.components.seconds) + Double(shared.leaseDuration.components.attoseconds) / 1e18
            for node in try await shared.nodes() {
                // A silent node's last reading is stale: it reads `lost`, not the `ok` it last sent
                // (found by attacking the build: a dead node read "status": "ok", "problems": []).
                // One that stopped cleanly says so (its last heartbeat), however long ago.
                let stopped = node.health.status == .stopped
                let alive = !stopped && node.silentSeconds < lease
                let silent = Int(node.silentSeconds.rounded())
                let problems: [String] = stopped ? ["stopped cleanly \(silent) s ago"]
                    : alive ? node.health.problems
                    : ["no heartbeat for \(silent) s (the lease is \(Int(lease.rounded())) s): its running jobs are rescued by other nodes"]
                nodes.append(.object([
                    "name": .string(node.name), "role": .string(node.role), "slots": .int(Int64(node.slots)),
                    "running": .int(Int64(node.running)), "started_at": .string(node.startedAt.description),
                    "last_seen_s": .double((node.silentSeconds * 10).rounded() / 10), "alive": .bool(alive),
                    "status": .string(stopped || alive ? node.health.status.rawValue : "lost"),
                    "problems": .array(problems.map(JSONValue.string)),
                ]))
            }
        } else {
            let occupancy = await scheduler.occupancy()
            let health = await scheduler.health()
            nodes.append(.object([
                "name": .string("local"), "role": .string("all"), "slots": .int(Int64(occupancy.count)),
                "running": .int(Int64(occupancy.filter { $0.1 != nil }.count)), "started_at": .string(startedAt.description),
                "last_seen_s": .double(0), "alive": .bool(true),
                "status": .string(health.status.rawValue), "problems": .array(health.problems.map(JSONValue.string)),
            ]))
        }
        return json(.object(["nodes": .array(nodes), "this_node": .string(node ?? "local")]))
    }

    /// How long `/healthz` waits for the store's answer.
    static let healthStoreTimeout: Duration = .seconds(3)

    /// For load balancers and people: `ok`; `degraded` (200) while a slot cannot set up a
    /// worker type or a GPU slot is quarantined (the node still serves, and runs jobs on its
    /// other slots, or none: its API still takes jobs, and a 503 would take it out of a load
    /// balancer's rotation, Release button and all); `degraded` (503) while the job store keeps failing (a damaged or full disk,
    /// an unreachable database: submits would fail or jobs would not run); `draining` (503)
    /// while shutting down.
    @Sendable func health(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let accepting = scheduler.gate.isOpen
        let reading = await scheduler.health()
        let unhealthy = await scheduler.workerStatus().flatMap { slot, status in
            status.health.filter(\.unhealthy).map { JSONValue.object(["slot": .int(Int64(slot.rawValue)), "type": .string($0.type),
                                                                       "last_error": .string($0.lastError)]) }
        }
        var problems: [String] = []
        if let trouble = await scheduler.storeProblem() { problems.append(trouble) }
        if let full = await scheduler.dataDirectoryProblem() { problems.append(full) }
        if let full = await store.storageProblem() { problems.append(full) }
        if let submits = scheduler.submitProblem() { problems.append(submits) }
        if let renewals = scheduler.renewalProblem() { problems.append(renewals) }
        var queued: Int?
        // Within a few seconds: a load balancer's probe gives up sooner than the store's operation
        // timeout (found by attacking the build: 15 s to say a refused database was down).
        let store = self.store
        do {
            queued = try await answerWithin(Self.healthStoreTimeout, orThrow: StoreError(.storageUnavailable, "no answer within \(Self.healthStoreTimeout)")) {
                try await store.queuedCount()
            }
        } catch {
            // The reason is logged; the answer names no host, path or credential.
            context.logger.error("health check: the store did not answer", metadata: ["error": "\(error)"])
            problems.append("the job store did not answer (the server's log has the error)")
        }
        let quarantined = await scheduler.quarantinedSlots().map { slot, entry in
            JSONValue.object(["slot": .int(Int64(slot.id.rawValue)), "gpu": slot.gpu.map(JSONValue.string) ?? .null,
                              "reasons": .array(entry.reasons.map(JSONValue.string)), "since": .string(entry.since.description)])
        }
        // The node's own reading (what its heartbeats tell a cluster), and degraded too when the store did not answer here.
        let status = reading.status == .ok && !problems.isEmpty ? NodeHealth.Status.degraded : reading.status
        var fields: [String: JSONValue] = [
            "status": .string(status.rawValue), "store": .string(storeName), "slots": .int(Int64(await scheduler.occupancy().count)),
            "unhealthy_workers": .array(unhealthy), "quarantined_slots": .array(quarantined),
        ]
        // Open to load balancers: with tokens in use it says nothing about jobs.
        if !access.requiresToken(tokensExist: tokens.wereCreated) { fields["queued"] = queued.map { .int(Int64($0)) } ?? .null }
        if !problems.isEmpty { fields["problems"] = .array(problems.map(JSONValue.string)) }
        if let node { fields["node"] = .string(node) }
        return json(.object(fields), status: accepting && problems.isEmpty ? .ok : .serviceUnavailable)
    }

    /// Brings a quarantined slot back (administrators only). Releasing an open slot changes
    /// nothing (200, `released: false`); a slot whose GPU still reads unhealthy stays closed (409).
    @Sendable func releaseSlot(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let text = context.parameters.get("slot") ?? ""
        guard let number = Int(text), number >= 0 else { throw APIError.notFound("no slot \(text) on this node") }
        let slot = SlotID(number)
        guard let spec = await scheduler.occupancy().first(where: { $0.0.id == slot })?.0 else {
            throw APIError.notFound("no slot \(slot) on this node")
        }
        let released: Bool
        switch await scheduler.release(slot, by: context.principal.name ?? "an administrator") {
        case .released: released = true
        case .notQuarantined, .noSuchSlot: released = false
        case .deviceUnhealthy(let reading):
            throw APIError.conflict("gpu-unhealthy", "slot \(slot) stays quarantined: \(reading); release it once nvidia-smi reads the GPU healthy")
        case .selfTestRunning:
            throw APIError.conflict("self-test-running", "slot \(slot)'s GPU self-test runs now (its next job would run beside it); "
                                    + "a pass opens the slot, or release it once the test has ended")
        }
        return json(.object(["slot": .int(Int64(slot.rawValue)), "gpu": spec.gpu.map(JSONValue.string) ?? .null, "released": .bool(released)]))
    }

    @Sendable func types(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let list = catalog.types.values.sorted { $0.name < $1.name }.map { type -> JSONValue in
            .object(["name": .string(type.name), "mode": .string(type.workerPolicy == nil ? "process" : "worker"),
                     "timeout_s": .double(type.timeoutSeconds), "max_attempts": .int(Int64(type.maxAttempts)),
                     "retry": type.retry?.json ?? .null, "dedup": type.dedup?.json ?? .null,
                     "command_input_keys": .array(type.command.referencedKeys.map(JSONValue.string))])
        }
        return json(.object(["types": .array(list)]))
    }

    @Sendable func exportMetrics(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        guard let metrics else { throw APIError.notFound("this server does not export metrics") }
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                        body: .init(byteBuffer: ByteBuffer(string: await metrics())))
    }

    // MARK: - Helpers

    func jobID(_ context: SpoolRequestContext) throws -> JobID {
        let text = context.parameters.get("id") ?? ""
        guard let id = JobID(text) else {
            // A submit with `array` answers with an array's id; say where it goes.
            if ArraySpec.isValidID(text) { throw APIError.notFound("no job \(text): that is a job array's id, under /v1/arrays/\(text)") }
            throw APIError.notFound("no job \(text)")
        }
        return id
    }

    /// The job, if `principal` may see it: another tenant's job is a 404, as if it did not
    /// exist (a 403 would confirm it does).
    func find(_ id: JobID, for principal: Principal) async throws -> Job {
        guard let job = try await store.job(id), principal.canSee(owner: job.owner) else { throw APIError.notFound("no job \(id)") }
        return job
    }

    func json(_ value: JSONValue, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        Self.respond(value, status: status, headers: headers, contentType: "application/json")
    }

    /// One job's JSON, written straight from its fields (`JobWire.canonicalBytes`).
    func json(_ job: JobWire, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        Self.respond(job.canonicalBytes, status: status, headers: headers, contentType: "application/json")
    }

    static func respond(_ value: JSONValue, status: HTTPResponse.Status, headers: HTTPFields, contentType: String) -> Response {
        respond(value.canonicalBytes, status: status, headers: headers, contentType: contentType)
    }

    static func respond(_ bytes: [UInt8], status: HTTPResponse.Status, headers: HTTPFields, contentType: String) -> Response {
        var headers = headers
        headers[.contentType] = contentType
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}

extension HTTPField.Name {
    static let idempotencyKey = HTTPField.Name("Idempotency-Key")!
    static let nextOffset = HTTPField.Name("Spool-Next-Offset")!
    static let logTrimmed = HTTPField.Name("Spool-Log-Trimmed")!
}

extension Optional {
    func asyncFlatMap<T>(_ transform: (Wrapped) async throws -> T?) async rethrows -> T? {
        guard let value = self else { return nil }
        return try await transform(value)
    }
}
