import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import SpoolCore
import SpoolExecutor
import SpoolScheduler
import SpoolStore

/// Job arrays: `POST /v1/jobs` with `array` makes N tasks (ordinary jobs sharing an array id);
/// `/v1/arrays/{id}` is what they add up to — counts by state, progress, ETA — with its tasks,
/// every task's outputs, a cancel that cancels the rest, and a delete once all have ended;
/// `/v1/arrays` lists them.
extension SpoolAPI {
    /// Checks every task like a job, stores them all in one transaction, and answers 201 with
    /// the array. With an Idempotency-Key the array's id comes from the key (and the owner), so
    /// a repeat answers 200 with the array it made; the first task holds the key, so a job and
    /// an array cannot both be made under one.
    func submitArray(_ spec: ArraySpec, _ submission: Submission, context: SpoolRequestContext) async throws -> Response {
        guard submission.dedup == nil, submission.dedupKey == nil else {
            throw APIError.unprocessable("\"dedup\" and \"dedup_key\" apply to single jobs; an array's tasks are each run")
        }
        // Each task is given the input with its item set: an input that is not an object would be
        // dropped (found by attacking the build: `["a","b"]` went in as `{"item": N}`, said nothing).
        guard submission.input.objectValue != nil else {
            throw APIError.unprocessable("an array's \"input\" must be an object: each task's is it with \"item\" set")
        }
        // Each task stores its own copy: an input of 50 KB in 2,000 tasks wrote 191 MiB in one
        // transaction (found by attacking the build; 10 GB at the limits).
        let inputBytes = submission.input.canonicalText.utf8.count
        let stored = spec.items.reduce(0) { $0 + inputBytes + $1.item.canonicalText.utf8.count }
        guard stored <= ArraySpec.maxStoredInputBytes else {
            throw APIError(status: .unprocessableContent, code: "array-too-large",
                           detail: "an array's tasks each store the submit's input: \(spec.items.count) tasks would store \(stored) bytes of it, "
                               + "over the \(ArraySpec.maxStoredInputBytes >> 20) MiB an array may; pass large inputs by reference (a path or URL), or split the array")
        }
        let items = spec.items.map { (index: $0.index, input: ArraySpec.taskInput(submission.input, item: $0.item)) }
        return try await makeArray(items, submission, failFast: spec.failFast, for: context.principal)
    }

    /// Admits one task per item (its index in the array, its whole input) like a job, from
    /// `submission`'s other fields, and stores them as one array of `principal`'s (its name,
    /// limits and share weight): 201 with the array, or 200 for an idempotent repeat. `id`: the
    /// array's, when the caller names it; else the Idempotency-Key's, or a new one.
    func makeArray(_ items: [(index: Int64, input: JSONValue)], _ submission: Submission, failFast: Bool,
                   for principal: Principal, id named: String? = nil) async throws -> Response {
        let id = named ?? submission.idempotencyKey.map { Self.arrayID(owner: principal.name ?? "", key: $0) } ?? ArraySpec.newID()
        try Self.checkPriority(submission.priority, for: principal)
        let now = WallClock.now()
        var tasks: [Job] = []
        tasks.reserveCapacity(items.count)
        // The key is the request's, not a task's: refused as such.
        if let key = submission.idempotencyKey, key.isEmpty || key.utf8.count > 255 {
            throw APIError.unprocessable("Idempotency-Key must be 1 to 255 characters")
        }
        for (index, input) in items {
            var one = submission
            one.array = nil
            if !tasks.isEmpty { one.idempotencyKey = nil }
            one.input = input
            var task: Job
            do {
                task = try catalog.admit(one, id: .random(at: now), now: now)
            } catch {
                throw APIError(status: .unprocessableContent, code: error.kind.rawValue.replacingOccurrences(of: "_", with: "-"),
                               detail: "array task \(index): " + error.message, errors: error.problems)
            }
            task.array = ArrayMembership(id: id, index: index, failFast: failFast)
            task.owner = principal.name
            task.shareWeight = principal.limits.weight
            tasks.append(task)
        }
        // The first task's fingerprint stands for the request: every item, by a digest.
        if submission.idempotencyKey != nil, !tasks.isEmpty {
            tasks[0].requestExtras["items"] = .string(Self.sha256Hex(JSONValue.array(items.map { .array([.int($0.index), $0.input]) }).canonicalText))
            tasks[0].requestExtras["fail_fast"] = .bool(failFast)
        }
        /// A repeat: the same request (its size, and its first task's fingerprint as stored, which
        /// covers every item) gets the array it made (nil when there is none yet). An id the
        /// caller named (a retry's, from the retried array and the key) is answered by the array
        /// under it, whatever it holds: a retry sent twice at once counts the failed tasks twice,
        /// and more may have failed between.
        func repeated() async throws -> Response? {
            guard let key = submission.idempotencyKey, let existing = try await store.arraySummary(id) else { return nil }
            // Being deleted a chunk at a time (or cut short by a crash until the next start): not
            // the array this request made, nor one it can make yet (found by attacking the build:
            // a 409 that called the same request a different one, the array shrinking meanwhile).
            try await refuseIfBeingDeleted(id, size: existing.size)
            let first = try await store.arrayTasks(id, after: nil, limit: 1).first
            let stored = named == nil ? try await store.requestFingerprint(owner: principal.name, key: key) : nil
            let same = named != nil || (existing.size == items.count && first?.array?.index == tasks.first?.array?.index
                                        && stored.map { tasks.first?.repeats(fingerprint: $0) == true } == true)
            guard same, let first, first.array?.failFast == failFast else {
                throw APIError.conflict("idempotency-conflict",
                                        "the Idempotency-Key \"\(submission.idempotencyKey ?? "")\" was already used for a different request (array \(id))")
            }
            return json(try await arrayResource(existing), status: .ok, headers: [.location: "/v1/arrays/\(id)"])
        }
        if let answer = try await repeated() { return answer }
        if let url = tasks.first?.webhookURL {
            do { try await webhookTargets.check(url) } catch { throw APIError.unprocessable("\"webhook\": \(error)") }
        }
        // All or none: an array larger than a queue limit could never be stored, however long the caller waits.
        for (limit, whose) in [(principal.limits.maxQueued, "this token's"), (access.maxQueued, "the server's")] {
            if let limit, items.count > limit {
                throw APIError.unprocessable("the array has \(items.count) tasks, more than \(whose) max_queued (\(limit)): "
                                             + "it can never be queued whole; submit it as smaller arrays")
            }
        }
        if let rate = principal.limits.rate, let name = principal.name,
           let wait = try await rates.take(name, rate: rate) {
            throw APIError.rateLimited("token rate", detail: "this token may submit \(rate) jobs per second", retryAfter: wait)
        }
        if let first = tasks.first { try await checkDeadline(of: first, tasks: tasks.count) }
        let stored: [Job]
        do {
            stored = try await store.enqueueArray(tasks, limits: QueueLimits(total: access.maxQueued, owner: principal.limits.maxQueued))
        } catch let error as StoreError where error.code == .queueFull {
            // A retry sent twice at once: the other made the array (its tasks filled the queue), and answers for both.
            if named != nil, let answer = try await repeated() { return answer }
            let wait = scheduler.estimate(position: 1, type: submission.type)?.startsIn ?? 5
            let (whose, limit) = error.limit == .server ? ("the server's", access.maxQueued ?? 0) : ("this token's", principal.limits.maxQueued ?? 0)
            throw APIError.rateLimited(error.limit?.rawValue ?? "max_queued",
                                       detail: "the array's \(items.count == 1 ? "one task does" : "\(items.count) tasks do") not fit under \(whose) max_queued (\(limit)) beside the jobs "
                                           + "already queued; try again once some have run",
                                       retryAfter: wait)
        } catch let error as StoreError where error.code == .storageUnavailable {
            scheduler.submitFailed(error)   // the health check says so
            throw error
        } catch let error as StoreError where error.code == .idempotencyConflict {
            // The same request, sent again before this one was stored, made the array meanwhile.
            if let answer = try await repeated() { return answer }
            throw Self.idempotencyConflict(key: submission.idempotencyKey, holder: error.existing)
        }
        scheduler.submitStored()
        scheduler.jobEnqueued(dueBy: stored.compactMap(\.nextTimer).min())
        guard let summary = try await store.arraySummary(id) else { throw APIError.notFound("no array \(id)") }
        return json(try await arrayResource(summary), status: .created, headers: [.location: "/v1/arrays/\(id)"])
    }

    /// 409 `array-being-deleted` when array `id`, which a request's Idempotency-Key names, is
    /// being deleted a chunk at a time (or was cut short by a crash, until the next start).
    func refuseIfBeingDeleted(_ id: String, size: Int) async throws {
        guard try await store.arrayOperations().contains(where: { $0.array == id && $0.kind == .delete }) else { return }
        throw APIError.conflict("array-being-deleted", "array \(id), which this Idempotency-Key names, is being deleted "
                                + "(\(size) tasks left); send the request again once DELETE /v1/arrays/\(id) has answered 204")
    }

    /// 409 for an Idempotency-Key already used for a different request, naming what holds it.
    static func idempotencyConflict(key: String?, holder: Job?) -> APIError {
        let what = holder.map { $0.array.map { "array \($0.id)" } ?? "job \($0.id)" } ?? "another request"
        return APIError.conflict("idempotency-conflict", "the Idempotency-Key \"\(key ?? "")\" was already used for a different request (\(what))")
    }

    /// The same owner and Idempotency-Key always name the same array.
    static func arrayID(owner: String, key: String) -> String {
        let digest = Array(SHA256.hash(data: Array((owner + "\u{0}" + key).utf8)))
        let alphabet = Array("0123456789abcdefghjkmnpqrstvwxyz")
        var bits = 0, value = 0
        var characters: [Character] = []
        for byte in digest where characters.count < 26 {
            value = (value << 8) | Int(byte)
            bits += 8
            while bits >= 5, characters.count < 26 {
                bits -= 5
                characters.append(alphabet[(value >> bits) & 31])
            }
        }
        return "arr_" + String(characters)
    }

    /// The array, if `principal` may see it (another tenant's is a 404, as for jobs).
    func findArray(_ context: SpoolRequestContext) async throws -> ArraySummary {
        let id = context.parameters.get("id") ?? ""
        guard ArraySpec.isValidID(id), let summary = try await store.arraySummary(id), context.principal.canSee(owner: summary.owner) else {
            throw APIError.notFound("no array \(id)")
        }
        return summary
    }

    /// The array's JSON: state, counts, progress, and when its last queued task should start and end.
    func arrayResource(_ summary: ArraySummary) async throws -> JSONValue {
        let base = "/v1/arrays/\(summary.id)"
        var eta: JSONValue = .null
        if let last = summary.lastQueued, let job = try await store.job(last), job.state == .queued, let position = job.position {
            let now = WallClock.now()
            if let start = startEstimate(of: job, position: position, now: now) {
                var fields: [String: JSONValue] = ["last_start_in_s": .double((start.startsIn * 10).rounded() / 10), "method": .string(start.method)]
                if let run = scheduler.typicalRun(type: job.type, input: job.input) {
                    let done = start.startsIn + run
                    fields["done_in_s"] = .double((done * 10).rounded() / 10)
                    fields["done_at"] = .string(now.adding(seconds: done).description)
                }
                eta = .object(fields)
            }
        }
        var counts: [String: JSONValue] = [:]
        for state in JobState.allCases { counts[state.rawValue] = .int(Int64(summary.counts[state, default: 0])) }
        return .object([
            "id": .string(summary.id), "type": .string(summary.type), "state": .string(summary.state.rawValue),
            "size": .int(Int64(summary.size)), "counts": .object(counts), "progress": .double((summary.progress * 10_000).rounded() / 10_000),
            "fail_fast": .bool(summary.failFast), "created_at": .string(summary.createdAt.description),
            "owner": summary.owner.map(JSONValue.string) ?? .null, "eta": eta,
            "links": .object(["self": .string(base), "tasks": .string(base + "/tasks"), "outputs": .string(base + "/outputs"),
                              "cancel": .string(base + "/cancel")]),
        ])
    }

    /// The arrays a token may see, newest first, a page at a time (`cursor` from the previous
    /// page), each as `GET /v1/arrays/{id}` shows it; `type` keeps one job type's, `owner` (an
    /// administrator's) one tenant's.
    @Sendable func listArrays(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let parameters = request.uri.queryParameters
        let query = ArrayQuery(type: parameters.get("type"), owner: try listingOwner(request, context.principal),
                               limit: try pageLimit(request, default: 20), before: try sequenceCursor(request))
        let page = try await store.arrays(query)
        var arrays: [JSONValue] = []
        for summary in page.arrays { arrays.append(try await arrayResource(summary)) }
        return json(.object(["arrays": .array(arrays), "next_cursor": page.nextCursor.map { JSONValue.string(String($0)) } ?? .null]))
    }

    @Sendable func showArray(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        json(try await arrayResource(try await findArray(context)))
    }

    /// The tasks in index order, a page at a time (`cursor`: the last index of the previous page).
    @Sendable func arrayTasks(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let summary = try await findArray(context)
        let parameters = request.uri.queryParameters
        let limit = try pageLimit(request, default: 100)
        var after: Int64?
        if let cursor = parameters.get("cursor") {
            // Any decimal the document allows: one beyond 64 bits is past every task (or before the first).
            let digits = cursor.hasPrefix("-") ? cursor.dropFirst() : Substring(cursor)
            guard !digits.isEmpty, digits.utf8.allSatisfy({ (48...57).contains($0) }) else {
                throw APIError.badRequest("cursor is not one this server handed out")
            }
            after = Int64(cursor) ?? (cursor.hasPrefix("-") ? .min : .max)
        }
        let page = try await store.arrayTasks(summary.id, after: after, limit: limit + 1)
        let tasks = page.prefix(limit)
        return json(.object([
            "array": .string(summary.id), "tasks": .array(tasks.map { JobWire(job: $0).json }),
            "next_cursor": page.count > limit ? (tasks.last?.array).map { .string(String($0.index)) } ?? .null : .null,
        ]))
    }

    /// Every task's outputs, in task order: `{task, index, name, size, url}`.
    @Sendable func arrayOutputs(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let summary = try await findArray(context)
        var list: [JSONValue] = []
        var truncated = false
        var after: Int64?
        while true {
            let page = try await store.arrayTasks(summary.id, after: after, limit: 500)
            for task in page where task.state.isTerminal {
                guard let index = task.array?.index else { continue }
                // At most `arrayListLimit` entries in all (found by attacking the build: 20 tasks
                // of 10,000 outputs each made a 27-MB answer and 100 MB of the server's memory).
                guard list.count < OutputFiles.arrayListLimit else {
                    truncated = true
                    break
                }
                let (files, leftOut) = try await outputFiles(of: task.id)
                // A task with more files than a listing holds (its own list says `truncated`) makes
                // this list some of them too (found by attacking the build: 10,001 of 10,005, nothing said).
                if leftOut > 0 || files.count > OutputFiles.listLimit || list.count + files.count > OutputFiles.arrayListLimit { truncated = true }
                for (name, size) in files.prefix(min(OutputFiles.listLimit, OutputFiles.arrayListLimit - list.count)) {
                    list.append(.object([
                        "task": .string(task.id.rawValue), "index": .int(index), "name": .string(name), "size": .int(size),
                        "url": .string("/v1/jobs/\(task.id)/outputs/" + (name.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? name)),
                    ]))
                }
            }
            guard page.count == 500 else { break }
            if list.count >= OutputFiles.arrayListLimit {
                truncated = true   // later tasks may have outputs too
                break
            }
            after = page.last?.array?.index
        }
        // A task whose listing left files out makes this list some of them (found in review).
        var body: [String: JSONValue] = ["array": .string(summary.id), "outputs": .array(list)]
        if truncated { body["truncated"] = .bool(true) }
        return json(.object(body))
    }

    /// Cancels the tasks that have not finished; answers the array (202 while tasks are stopping).
    @Sendable func cancelArray(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let summary = try await findArray(context)
        guard !summary.state.isTerminal else {
            throw APIError.conflict("already-finished", "array \(summary.id) already finished (\(summary.state.rawValue)); there is nothing to cancel")
        }
        do {
            _ = try await scheduler.cancelArray(summary.id, by: context.principal.name ?? "")
        } catch let interrupted as ArrayCancelInterrupted {
            // Part of it done (those tasks end, or stop, all the same): said in the answer (found by
            // attacking the build: a plain 503 did not say some were canceled).
            guard let error = interrupted.cause as? StoreError, error.code == .storageUnavailable else { throw interrupted.cause }
            context.logger.error("store unavailable", metadata: ["error": "\(error)"])   // the reason is logged, not echoed
            throw APIError(status: .serviceUnavailable, code: "storage-unavailable",
                           detail: "the job store cannot write, or did not answer in time; \(interrupted.canceled.count) of the array's tasks "
                               + "were canceled before it: send the cancel again to finish, later", headers: [.retryAfter: "5"])
        }
        let after = try await store.arraySummary(summary.id) ?? summary
        return json(try await arrayResource(after), status: after.counts[.running, default: 0] > 0 ? .accepted : .ok)
    }

    /// A new array of the tasks that failed or were canceled (those still queued or running are
    /// left to finish): each with its index and input, its array's type, priority, timeout, retry
    /// policy, webhook and fail-fast, starting now, and its owner; 201 with the new array. The
    /// array itself does not change — a job's end is final. With an Idempotency-Key, a repeat
    /// answers 200 with the array it made. Nothing failed or canceled is a 409 `nothing-to-retry`.
    @Sendable func retryArray(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        try checkTakingJobs()
        let summary = try await findArray(context)
        // The owner's array, as if the owner submitted it again (its limits and weight), whoever
        // asks: an administrator's retry of a tenant's frames stays the tenant's. Without a token
        // of that name any more, the caller's.
        let owner = summary.owner.flatMap { $0 == context.principal.name ? nil : tokens.principal(named: $0) } ?? context.principal
        // A key names this array's retry, apart from any submit's or another array's retry: the
        // same request again answers the array it made, even once more tasks have failed since;
        // the key on another request is a conflict (the store holds it for this retry's first task).
        let key = request.headers[.idempotencyKey]
        // Named after the array's owner, not the retry's: the same once that owner's token is gone.
        let retryID = key.map { Self.arrayID(owner: summary.owner ?? "", key: "retry\u{0}" + summary.id + "\u{0}" + $0) }
        if let retryID, let made = try await store.arraySummary(retryID) {
            try await refuseIfBeingDeleted(retryID, size: made.size)
            return json(try await arrayResource(made), status: .ok, headers: [.location: "/v1/arrays/\(retryID)"])
        }
        var again: [Job] = []
        var after: Int64?
        while true {
            let page = try await store.arrayTasks(summary.id, after: after, limit: 500)
            again += page.filter { $0.state == .failed || $0.state == .canceled }
            guard page.count == 500, let last = page.last?.array?.index else { break }
            after = last
        }
        guard let first = again.first else {
            let open = summary.counts[.queued, default: 0] + summary.counts[.running, default: 0]
            throw APIError.conflict("nothing-to-retry", "array \(summary.id) has no failed or canceled task"
                                    + (open > 0 ? " (\(open) still queued or running)" : ": every task succeeded"))
        }
        var submission = Submission(type: first.type, priority: first.priority,
                                    timeoutSeconds: catalog[first.type].map { min($0.timeoutSeconds, first.timeoutSeconds) } ?? first.timeoutSeconds,
                                    idempotencyKey: key)
        submission.webhookURL = first.webhookURL
        submission.webhookEvents = first.webhookEvents
        submission.retry = first.retry
        return try await makeArray(again.map { (index: $0.array?.index ?? 0, input: $0.input) }, submission, failFast: summary.failFast,
                                   for: owner, id: retryID)
    }

    /// Deletes an array whose tasks have all ended, every task with its events, webhook
    /// deliveries, log and outputs, as retention does once its last task is old (204); its
    /// Idempotency-Key is free again. An array with a task queued or running is a 409.
    @Sendable func deleteArray(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let summary = try await findArray(context)
        switch try await store.deleteArray(summary.id) {
        case .notFound:
            throw APIError.notFound("no array \(summary.id)")
        case .notEnded(let open):
            throw APIError.conflict("not-ended", "array \(summary.id) has \(open) task\(open == 1 ? "" : "s") not ended yet (queued, running, "
                                    + "or stopping after a cancel): cancel it (POST /v1/arrays/\(summary.id)/cancel), then delete it once they have ended")
        case .deleted(let tasks):
            // This node's copies of the tasks' files, as for one job (`deleteJob`).
            _ = try? await BlockingIO.run { [dataDirectory] in
                for task in tasks { JobDirectories.remove(task, in: dataDirectory) }
            }
            return Response(status: .noContent)
        }
    }
}
