/// A kind of job the server accepts: how to run it and what input it takes.
public struct JobType: Sendable {
    public var name: String
    public var command: CommandTemplate
    /// The longest an attempt may run; a submit may ask for less, never more.
    public var timeoutSeconds: Double
    /// Total attempts, counting the first. A server crash mid-run uses a further attempt; a job
    /// that fails on its own is retried only under a `retry` policy (its type's or its submit's).
    public var maxAttempts: Int
    /// The retry policy of jobs of this type that do not bring their own.
    public var retry: RetryPolicy?
    /// The result-reuse rule of jobs of this type that do not bring their own.
    public var dedup: Dedup?
    public var inputSchema: InputSchema?
    /// Extra environment for the child (on top of the server's own and the `SPOOL_*` variables).
    public var environment: [String: String]
    /// Working directory of the child; the job's own directory when nil.
    public var workingDirectory: String?
    /// A fresh process per job (default) or a warm worker per slot.
    public var mode: ExecutionMode = .process

    public var workerPolicy: WorkerPolicy? { if case .worker(let policy) = mode { policy } else { nil } }

    public init(
        name: String, command: CommandTemplate, timeoutSeconds: Double = 600, maxAttempts: Int = 1,
        inputSchema: InputSchema? = nil, environment: [String: String] = [:], workingDirectory: String? = nil,
        mode: ExecutionMode = .process
    ) {
        self.mode = mode
        self.name = name
        self.command = command
        self.timeoutSeconds = timeoutSeconds
        self.maxAttempts = maxAttempts
        self.inputSchema = inputSchema
        self.environment = environment
        self.workingDirectory = workingDirectory
    }

    public static let namePattern = "letters, digits, '-', '_' and '.', up to 64 characters"

    public static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 64 && name.utf8.allSatisfy { byte in
            (byte >= 48 && byte <= 57) || (byte >= 65 && byte <= 90) || (byte >= 97 && byte <= 122)
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".")
        }
    }
}

/// A client's request to run a job, before it is checked.
public struct Submission: Sendable {
    public var type: String
    public var input: JSONValue
    public var priority: Int
    public var timeoutSeconds: Double?
    public var idempotencyKey: String?
    public var webhookURL: String?
    public var webhookEvents: [String] = []
    /// Overrides the type's retry policy.
    public var retry: RetryPolicy?
    /// Not before this time (`run_at`), or this many seconds after the submit (`delay_s`).
    public var runAt: Timestamp?
    public var delaySeconds: Double?
    /// Cancel it (reason `deadline`) if it has not started this many seconds after it could first start.
    public var startWithinSeconds: Double?
    /// Overrides the type's result-reuse rule.
    public var dedup: Dedup?
    /// The identity for result reuse, in place of the type and input (implies `dedup` "queued").
    public var dedupKey: String?
    /// Makes a job array of N tasks instead of one job.
    public var array: ArraySpec?

    public init(type: String, input: JSONValue = .object([:]), priority: Int = 0, timeoutSeconds: Double? = nil, idempotencyKey: String? = nil) {
        self.type = type
        self.input = input
        self.priority = priority
        self.timeoutSeconds = timeoutSeconds
        self.idempotencyKey = idempotencyKey
    }
}

/// Why a submission was refused (HTTP 422 / a CLI error). `problems` lists each issue.
public struct SubmissionRejection: Error, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable { case unknownType = "unknown_type", invalidInput = "invalid_input", invalidRequest = "invalid_request" }
    public var kind: Kind
    public var message: String
    public var problems: [String]
    public var description: String { ([message] + problems).joined(separator: "; ") }
}

/// The job types a server knows, and the rules for turning a submission into a job.
public struct JobCatalog: Sendable {
    public private(set) var types: [String: JobType]

    public init(_ types: [JobType]) {
        self.types = Dictionary(types.map { ($0.name, $0) }, uniquingKeysWith: { _, last in last })
    }

    public subscript(name: String) -> JobType? { types[name] }

    public static let priorityRange = -1_000_000...1_000_000
    /// The furthest ahead a job may be scheduled (`run_at`, `delay_s`) or given to start (`start_within_s`): 30 days.
    public static let longestWait = 30 * 86_400.0

    /// Checks a submission and builds the job to store. Pure: the id and time come in.
    public func admit(_ submission: Submission, id: JobID, now: Timestamp) throws(SubmissionRejection) -> Job {
        guard let type = types[submission.type] else {
            let known = types.keys.sorted().joined(separator: ", ")
            throw SubmissionRejection(kind: .unknownType, message: "unknown job type \"\(submission.type)\"",
                                      problems: ["known types: \(known.isEmpty ? "none" : known)"])
        }
        guard Self.priorityRange.contains(submission.priority) else {
            throw SubmissionRejection(kind: .invalidRequest, message: "priority must be between -1000000 and 1000000", problems: [])
        }
        var timeout = type.timeoutSeconds
        if let requested = submission.timeoutSeconds {
            guard requested > 0, requested.isFinite, requested <= type.timeoutSeconds else {
                throw SubmissionRejection(kind: .invalidRequest,
                    message: "timeout_s must be greater than 0 and at most \(InputSchema.format(type.timeoutSeconds)) (the \(type.name) type's limit)", problems: [])
            }
            timeout = requested
        }
        if let key = submission.idempotencyKey, key.isEmpty || key.utf8.count > 255 {
            throw SubmissionRejection(kind: .invalidRequest, message: "Idempotency-Key must be 1 to 255 characters", problems: [])
        }
        var problems = type.inputSchema?.violations(of: submission.input).map(\.description) ?? []
        if problems.isEmpty, type.workerPolicy == nil {
            do { _ = try type.command.render(input: submission.input) } catch { problems.append(error.description) }
        }
        guard problems.isEmpty else {
            throw SubmissionRejection(kind: .invalidInput, message: "the input does not fit the \(type.name) type", problems: problems)
        }
        let retry = submission.retry ?? type.retry
        var job = Job(id: id, type: type.name, input: submission.input, priority: submission.priority,
                      timeoutSeconds: timeout, maxAttempts: max(type.maxAttempts, retry?.maxAttempts ?? 1), createdAt: now,
                      idempotencyKey: submission.idempotencyKey)
        job.webhookURL = submission.webhookURL
        job.webhookEvents = submission.webhookEvents
        job.retry = retry
        (job.notBefore, job.startBy) = try Self.schedule(submission, now: now)
        if let key = submission.dedupKey, key.isEmpty || key.utf8.count > 255 {
            throw SubmissionRejection(kind: .invalidRequest, message: "dedup_key must be 1 to 255 characters", problems: [])
        }
        // The request's rule, else the type's; a key alone joins queued or running jobs under it.
        job.dedup = submission.dedup ?? type.dedup ?? (submission.dedupKey != nil ? Dedup() : nil)
        // As sent: a repeat of a request with `delay_s` makes another `notBefore`, and is the same request.
        if let runAt = submission.runAt { job.requestExtras["run_at"] = .int(runAt.microseconds) }
        if let delay = submission.delaySeconds { job.requestExtras["delay_s"] = .double(delay) }
        if let within = submission.startWithinSeconds { job.requestExtras["start_within_s"] = .double(within) }
        if let dedup = submission.dedup { job.requestExtras["dedup"] = dedup.json }
        if let key = submission.dedupKey { job.requestExtras["dedup_key"] = .string(key) }
        return job
    }

    /// `notBefore` and `startBy` from `run_at`/`delay_s` and `start_within_s`: the deadline
    /// counts from when the job may first start.
    static func schedule(_ submission: Submission, now: Timestamp) throws(SubmissionRejection) -> (Timestamp?, Timestamp?) {
        func refuse(_ message: String) -> SubmissionRejection { SubmissionRejection(kind: .invalidRequest, message: message, problems: []) }
        let days = Int(longestWait / 86_400)
        var notBefore: Timestamp?
        switch (submission.runAt, submission.delaySeconds) {
        case (_?, _?):
            throw refuse("give run_at or delay_s, not both")
        case (let runAt?, nil):
            guard runAt.secondsSince1970 - now.secondsSince1970 <= longestWait else { throw refuse("run_at must be at most \(days) days ahead") }
            notBefore = runAt > now ? runAt : nil   // a time already past: as soon as possible
        case (nil, let delay?):
            guard delay >= 0, delay.isFinite, delay <= longestWait else { throw refuse("delay_s must be from 0 to \(Int(longestWait)) seconds") }
            notBefore = delay > 0 ? now.adding(seconds: delay) : nil
        case (nil, nil):
            break
        }
        guard let within = submission.startWithinSeconds else { return (notBefore, nil) }
        guard within > 0, within.isFinite, within <= longestWait else {
            throw refuse("start_within_s must be greater than 0 and at most \(Int(longestWait)) seconds")
        }
        return (notBefore, (notBefore ?? now).adding(seconds: within))
    }
}
