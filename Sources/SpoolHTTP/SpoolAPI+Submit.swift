import Crypto
import HTTPTypes
import Hummingbird
import SpoolCore
import SpoolScheduler
import SpoolStore

/// `POST /v1/jobs`: a submit, checked (media type, size, JSON, the job type's rules, the
/// webhook target, the token's rate, a start deadline) and stored; answered 201 for a new job,
/// 200 for an idempotent repeat or a reused result. With `array`, it goes to `submitArray`.
extension SpoolAPI {
    /// SHA-256 of `text`'s UTF-8, in lowercase hex: a result-reuse identity, an array's items.
    static func sha256Hex(_ text: String) -> String {
        SHA256.hash(data: Array(text.utf8)).map { String($0, radix: 16).leftPadded(to: 2) }.joined()
    }

    /// 503 while the server shuts down: it stores no new job.
    func checkTakingJobs() throws {
        guard scheduler.gate.isOpen else {
            throw APIError(status: .serviceUnavailable, code: "shutting-down",
                           detail: "the server is shutting down and takes no new jobs; submit to another node or retry shortly",
                           headers: [.retryAfter: "5"])
        }
    }

    /// A job above its token's `max_priority` is refused, 403, nothing stored (found by
    /// attacking the build: any tenant could submit at priority 1,000,000 and go before every
    /// other tenant's jobs — fair share holds within a priority only).
    static func checkPriority(_ priority: Int, for principal: Principal) throws {
        do {
            try principal.limits.check(priority: priority)
        } catch {
            throw APIError(status: .forbidden, code: "priority-not-allowed", detail: error.description,
                           extra: ["max_priority": .int(Int64(error.maxPriority))])
        }
    }

    @Sendable func submit(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        try checkTakingJobs()
        // The plain header every client sends needs no parsing (parsing it was 0.6 % of a submit).
        let contentType = request.headers[.contentType]
        guard contentType == "application/json" || contentType.flatMap(MediaType.init(from:))?.isType(.applicationJson) == true else {
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
            value = try JSONParser.parse(body.readableBytesView, exactIntegers: true)
        } catch where error.reason == JSONParser.Error.inexactInteger {
            // Well-formed JSON whose value cannot be taken: 422, as for any input refused (found by
            // the contract test: a 400 is for a body that is not JSON).
            throw APIError.unprocessable("the request body has \(error), which would not be kept exactly: send it as a string")
        } catch {
            throw APIError.badRequest("the request body is not valid JSON (\(error))")
        }
        let key = request.headers[.idempotencyKey]
        let submission = try SubmitBody(value, idempotencyKey: key).submission
        if let array = submission.array { return try await submitArray(array, submission, context: context) }
        let now = WallClock.now()
        var job = try catalog.admit(submission, id: .random(at: now), now: now)
        if let url = job.webhookURL {
            do { try await webhookTargets.check(url) } catch { throw APIError.unprocessable("\"webhook\": \(error)") }
        }
        if job.dedup != nil {
            job.dedupHash = Self.sha256Hex(Dedup.identity(type: job.type, input: job.input, key: submission.dedupKey))
            // Not a job past the retention, gone at the next sweep with its outputs (found by
            // attacking the build: reused, then 404). The fingerprint reads the request, not this.
            if let within = job.dedup?.succeededWithin, let retention = limits.retentionSeconds, within > retention {
                job.dedup?.succeededWithin = retention
            }
        }
        let principal = context.principal
        try Self.checkPriority(job.priority, for: principal)
        job.owner = principal.name
        job.shareWeight = principal.limits.weight
        // A repeat of a request stored under its key (or a conflict with it) stores nothing, and
        // takes no turn of the rate (found by attacking the build: a client that lost its 201 and
        // sent the request again got 429s).
        var keyHeld = false
        if let key = job.idempotencyKey, principal.limits.rate != nil || job.startBy != nil {
            keyHeld = try await store.requestFingerprint(owner: principal.name, key: key) != nil
        }
        if !keyHeld, let rate = principal.limits.rate, let name = principal.name,
           let wait = try await rates.take(name, rate: rate) {
            throw APIError.rateLimited("token rate", detail: "this token may submit \(rate) jobs per second", retryAfter: wait)
        }
        if !keyHeld { try await checkDeadline(of: job) }   // only with start_within_s
        let result: EnqueueResult
        do {
            result = try await store.enqueue(job, limits: QueueLimits(total: access.maxQueued, owner: principal.limits.maxQueued))
        } catch let error as StoreError where error.code == .idempotencyConflict {
            throw Self.idempotencyConflict(key: key, holder: error.existing)
        } catch let error as StoreError where error.code == .queueFull {
            // Room comes back as the next queued job starts: when, the ETA says.
            let wait = scheduler.estimate(position: 1, type: job.type)?.startsIn ?? 5
            throw APIError.rateLimited(error.limit?.rawValue ?? "max_queued", detail: error.message, retryAfter: wait)
        } catch let error as StoreError where error.code == .storageUnavailable {
            scheduler.submitFailed(error)   // the health check says so
            throw error
        }
        scheduler.submitStored()
        let ownKey = job.idempotencyKey
        switch result {
        case .created(let job):
            if principal.limits.maxRunning == nil {
                scheduler.jobEnqueued(job)
            } else {
                // Not named: an idle slot does not start it before its claim commits, where a
                // claim elsewhere could not count it against the cap (the store claims it).
                scheduler.jobEnqueued(dueBy: job.nextTimer)
            }
            return json(resource(job), status: .created, headers: [.location: "/v1/jobs/\(job.id)"])
        case .existing(let job) where job.idempotencyKey == ownKey:
            return json(resource(job), status: .ok, headers: [.location: "/v1/jobs/\(job.id)"])
        case .existing(let job), .duplicate(let job):
            // Result reuse: the identical job this request joins (queued or running) or reuses
            // (succeeded); or the one a request with this key joined, which its repeat answers as
            // it did (found in review: without the header, as if it were the request's own job).
            return json(resource(job), status: .ok,
                        headers: [.location: "/v1/jobs/\(job.id)", .spoolDedup: job.state == .succeeded ? "reused" : "joined"])
        }
    }
}
