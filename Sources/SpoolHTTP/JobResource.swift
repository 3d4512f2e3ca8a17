import SpoolCore

/// A job as the API shows it (`snake_case`, explicit nulls, RFC 3339 times).
struct JobResource: Encodable {
    let job: Job

    enum CodingKeys: String, CodingKey {
        case id, type, state, reason, input, priority, attempts, position, progress, error, slot, signal
        case timeoutSeconds = "timeout_s", maxAttempts = "max_attempts", createdAt = "created_at"
        case startedAt = "started_at", finishedAt = "finished_at", exitCode = "exit_code"
        case cancelRequested = "cancel_requested", links = "links", result
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(job.id, forKey: .id)
        try container.encode(job.type, forKey: .type)
        try container.encode(job.state, forKey: .state)
        try container.encode(job.reason, forKey: .reason)
        try container.encode(job.input, forKey: .input)
        try container.encode(job.priority, forKey: .priority)
        try container.encode(job.timeoutSeconds, forKey: .timeoutSeconds)
        try container.encode(job.attempts, forKey: .attempts)
        try container.encode(job.maxAttempts, forKey: .maxAttempts)
        try container.encode(job.position, forKey: .position)
        try container.encode(job.progress, forKey: .progress)
        try container.encode(job.createdAt, forKey: .createdAt)
        try container.encode(job.startedAt, forKey: .startedAt)
        try container.encode(job.finishedAt, forKey: .finishedAt)
        try container.encode(job.exitCode, forKey: .exitCode)
        try container.encode(job.signal, forKey: .signal)
        try container.encode(job.error, forKey: .error)
        try container.encode(job.slot, forKey: .slot)
        try container.encode(job.result, forKey: .result)
        if job.cancelRequested && !job.state.isTerminal { try container.encode(true, forKey: .cancelRequested) }
        let base = "/v1/jobs/\(job.id)"
        try container.encode(["self": base, "cancel": base + "/cancel", "logs": base + "/logs", "outputs": base + "/outputs"],
                             forKey: .links)
    }
}

struct JobPageResource: Encodable {
    let jobs: [JobResource]
    let nextCursor: String?

    enum CodingKeys: String, CodingKey { case jobs, nextCursor = "next_cursor" }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(jobs, forKey: .jobs)
        try container.encode(nextCursor, forKey: .nextCursor)
    }
}

struct OutputResource: Encodable {
    let name: String
    let size: Int64
    let contentType: String
    let url: String
    enum CodingKeys: String, CodingKey { case name, size, contentType = "content_type", url }
}

struct QueueResource: Encodable {
    struct Slot: Encodable {
        let id: SlotID
        let gpu: String?
        let job: JobResource?
        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(id, forKey: .id)
            try container.encode(gpu, forKey: .gpu)
            try container.encode(job == nil ? "idle" : "busy", forKey: .state)
            try container.encode(job, forKey: .job)
        }
        enum CodingKeys: String, CodingKey { case id, gpu, state, job }
    }
    let queued: Int
    let accepting: Bool
    let slots: [Slot]
}

/// The submit body: `{"type", "input"?, "priority"?, "timeout_s"?}`; nothing else.
struct SubmitBody {
    static let fields: Set<String> = ["type", "input", "priority", "timeout_s"]

    let submission: Submission

    init(_ value: JSONValue, idempotencyKey: String?) throws(APIError) {
        guard case .object(let object) = value else {
            throw APIError.unprocessable("the request body must be a JSON object like {\"type\": \"render\", \"input\": {…}}")
        }
        let unknown = object.keys.filter { !Self.fields.contains($0) }.sorted()
        guard unknown.isEmpty else {
            throw APIError.unprocessable("unknown field(s) \(unknown.map { "\"\($0)\"" }.joined(separator: ", ")); "
                                         + "a job takes type, input, priority and timeout_s")
        }
        guard let type = object["type"]?.stringValue else {
            throw APIError.unprocessable("\"type\" is required and must be a string naming a job type")
        }
        var priority = 0
        if let value = object["priority"], value != .null {
            guard let number = value.intValue, let int = Int(exactly: number) else {
                throw APIError.unprocessable("\"priority\" must be an integer")
            }
            priority = int
        }
        var timeout: Double?
        if let value = object["timeout_s"], value != .null {
            guard let number = value.doubleValue else { throw APIError.unprocessable("\"timeout_s\" must be a number of seconds") }
            timeout = number
        }
        let input = object["input"].flatMap { $0 == .null ? nil : $0 } ?? .object([:])
        submission = Submission(type: type, input: input, priority: priority, timeoutSeconds: timeout, idempotencyKey: idempotencyKey)
    }
}
