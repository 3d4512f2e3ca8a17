/// A job as the API shows it — the one definition of that JSON: the server builds it from a
/// `Job` and writes it with `canonicalBytes`, or embeds `json` in a larger document
/// (`snake_case`, explicit nulls, RFC 3339 times; a hand-written serializer, since `JSONEncoder`
/// was the costliest step of a submit — `spool bench --codec` measures the two), and clients —
/// the CLI, the benchmark, the tests — read it with `JSONDecoder` (`Decodable`). The synthesized
/// `Encodable` is there for that comparison (and for clients); the server does not use it. The
/// OpenAPI document's `Job` schema describes the same fields.
public struct JobWire: Codable, Sendable, Equatable {
    public struct Progress: Codable, Sendable, Equatable {
        public var fraction: Double
        public var message: String?
    }

    /// When a queued job should start, and how that was worked out.
    public struct ETA: Codable, Sendable, Equatable {
        public var startInSeconds: Double
        public var startAt: String?
        public var method: String
        /// How long the job itself should run, when its type's run time is learned from inputs.
        public var runSeconds: Double?

        enum CodingKeys: String, CodingKey { case startInSeconds = "start_in_s", startAt = "start_at", method, runSeconds = "run_s" }
    }

    public var id: String
    public var type: String
    public var state: String
    public var reason: String?
    public var input: JSONValue
    public var priority: Int
    public var timeoutSeconds: Double?
    public var attempts: Int
    public var maxAttempts: Int
    public var position: Int?
    public var progress: Progress?
    public var createdAt: String
    public var startedAt: String?
    public var finishedAt: String?
    public var exitCode: Int?
    public var signal: Int?
    public var error: String?
    public var slot: Int?
    public var result: JSONValue?
    public var cancelRequested: Bool?
    /// The node that ran (or runs) it, with a shared store.
    public var node: String?
    /// The token name that submitted it; nil without tokens.
    public var owner: String?
    /// Who asked to cancel it (`anonymous` without tokens); nil when nobody did.
    public var canceledBy: String?
    /// Only for a queued job, when known.
    public var eta: ETA?
    public var webhook: String?
    public var webhookEvents: [String]?
    /// A queued job does not start before this time (`run_at`, `delay_s`, a retry's back-off).
    public var notBefore: String?
    /// A queued job not started by this time is canceled with reason `deadline`.
    public var startBy: String?
    /// The job's retry policy, when it has one.
    public var retry: JSONValue?
    /// For a task of a job array: the array's id and the task's index.
    public var array: ArrayPlace?
    /// Why a queued job cannot start now whatever its place (no slot can set up its worker type).
    public var waitingReason: String?

    public struct ArrayPlace: Codable, Sendable, Equatable {
        public var id: String
        public var index: Int64
    }

    public var isTerminal: Bool { ["succeeded", "failed", "canceled"].contains(state) }

    enum CodingKeys: String, CodingKey {
        case id, type, state, reason, input, priority, timeoutSeconds = "timeout_s", attempts, maxAttempts = "max_attempts", position,
             progress, createdAt = "created_at", startedAt = "started_at", finishedAt = "finished_at", exitCode = "exit_code", signal,
             error, slot, result, cancelRequested = "cancel_requested", node, owner, canceledBy = "canceled_by", eta, webhook,
             webhookEvents = "webhook_events", notBefore = "not_before", startBy = "start_by", retry, array,
             waitingReason = "waiting_reason"
    }

    /// Reads what a server sends; fields a server may leave out (an older one, or the benchmark's
    /// baseline) decode as nil or their zero.
    public init(from decoder: any Decoder) throws {
        let fields = try decoder.container(keyedBy: CodingKeys.self)
        id = try fields.decode(String.self, forKey: .id)
        state = try fields.decode(String.self, forKey: .state)
        type = try fields.decodeIfPresent(String.self, forKey: .type) ?? ""
        reason = try fields.decodeIfPresent(String.self, forKey: .reason)
        input = try fields.decodeIfPresent(JSONValue.self, forKey: .input) ?? .object([:])
        priority = try fields.decodeIfPresent(Int.self, forKey: .priority) ?? 0
        timeoutSeconds = try fields.decodeIfPresent(Double.self, forKey: .timeoutSeconds)
        attempts = try fields.decodeIfPresent(Int.self, forKey: .attempts) ?? 0
        maxAttempts = try fields.decodeIfPresent(Int.self, forKey: .maxAttempts) ?? 1
        position = try fields.decodeIfPresent(Int.self, forKey: .position)
        progress = try fields.decodeIfPresent(Progress.self, forKey: .progress)
        createdAt = try fields.decodeIfPresent(String.self, forKey: .createdAt) ?? ""
        startedAt = try fields.decodeIfPresent(String.self, forKey: .startedAt)
        finishedAt = try fields.decodeIfPresent(String.self, forKey: .finishedAt)
        exitCode = try fields.decodeIfPresent(Int.self, forKey: .exitCode)
        signal = try fields.decodeIfPresent(Int.self, forKey: .signal)
        error = try fields.decodeIfPresent(String.self, forKey: .error)
        slot = try fields.decodeIfPresent(Int.self, forKey: .slot)
        result = try fields.decodeIfPresent(JSONValue.self, forKey: .result).flatMap { $0 == .null ? nil : $0 }
        cancelRequested = try fields.decodeIfPresent(Bool.self, forKey: .cancelRequested)
        node = try fields.decodeIfPresent(String.self, forKey: .node)
        owner = try fields.decodeIfPresent(String.self, forKey: .owner)
        canceledBy = try fields.decodeIfPresent(String.self, forKey: .canceledBy)
        eta = try fields.decodeIfPresent(ETA.self, forKey: .eta)
        webhook = try fields.decodeIfPresent(String.self, forKey: .webhook)
        webhookEvents = try fields.decodeIfPresent([String].self, forKey: .webhookEvents)
        notBefore = try fields.decodeIfPresent(String.self, forKey: .notBefore)
        startBy = try fields.decodeIfPresent(String.self, forKey: .startBy)
        retry = try fields.decodeIfPresent(JSONValue.self, forKey: .retry)
        array = try fields.decodeIfPresent(ArrayPlace.self, forKey: .array)
        waitingReason = try fields.decodeIfPresent(String.self, forKey: .waitingReason)
    }

    /// The job as the server shows it; `estimate` (with `now`) for a queued job's `eta`, and
    /// `waitingReason` when it cannot start now.
    public init(job: Job, estimate: QueueEstimate? = nil, now: Timestamp? = nil, waitingReason: String? = nil) {
        self.waitingReason = job.state == .queued ? waitingReason : nil
        id = job.id.rawValue
        type = job.type
        state = job.state.rawValue
        reason = job.reason?.rawValue
        input = job.input
        priority = job.priority
        timeoutSeconds = job.timeoutSeconds
        attempts = job.attempts
        maxAttempts = job.maxAttempts
        position = job.position
        progress = job.progress.map { Progress(fraction: $0.fraction, message: $0.message) }
        createdAt = job.createdAt.description
        startedAt = job.startedAt?.description
        finishedAt = job.finishedAt?.description
        exitCode = job.exitCode.map(Int.init)
        signal = job.signal.map(Int.init)
        error = job.error
        slot = job.slot.map { Int($0.rawValue) }
        result = job.result
        cancelRequested = job.cancelRequested && !job.state.isTerminal ? true : nil
        node = job.node
        owner = job.owner
        canceledBy = job.canceledBy.map { $0.isEmpty ? "anonymous" : $0 }
        eta = estimate.map { estimate in
            ETA(startInSeconds: (estimate.startsIn * 10).rounded() / 10,
                startAt: now.map { $0.adding(seconds: estimate.startsIn).description }, method: estimate.method,
                runSeconds: estimate.runSeconds)
        }
        webhook = job.webhookURL
        webhookEvents = job.webhookURL == nil ? nil : job.webhookEvents
        notBefore = job.state == .queued ? job.notBefore?.description : nil
        startBy = job.state == .queued ? job.startBy?.description : nil
        retry = job.retry?.json
        array = job.array.map { ArrayPlace(id: $0.id, index: $0.index) }
    }

    /// `json.canonicalBytes`, written straight from the fields in their sorted order, no
    /// dictionary built and sorted on the way, which took twice as long (`spool bench --codec`).
    /// Every submit, status read and cancel answers with it. A test holds the two to the same
    /// bytes for every field present or absent (that is, holds `write(to:)` to sorted order).
    public var canonicalBytes: [UInt8] {
        var object = CanonicalObject(capacity: 640)
        write(to: &object)
        return object.closed()
    }

    /// The JSON the API sends, as a value (a list or the queue embeds it; `canonicalBytes` writes it).
    public var json: JSONValue {
        var object = ValueObject(capacity: 32)
        write(to: &object)
        return .object(object.fields)
    }

    /// The one list of the job's fields, in sorted key order (what `canonicalBytes` relies on).
    private func write<Object: JSONObjectWriter>(to object: inout Object) {
        if let array { object.object("array") { $0.string("id", array.id); $0.value("index", .int(array.index)) } }
        object.value("attempts", .int(Int64(attempts)))
        if cancelRequested == true { object.value("cancel_requested", .bool(true)) }
        if let canceledBy { object.string("canceled_by", canceledBy) }
        object.string("created_at", createdAt)
        object.string("error", error)
        // A queued job always has `eta`: null until some job of its type has run.
        if state == JobState.queued.rawValue {
            if let eta {
                object.object("eta") { fields in
                    fields.string("method", eta.method)
                    if let run = eta.runSeconds { fields.value("run_s", .double(run)) }
                    fields.string("start_at", eta.startAt)
                    fields.value("start_in_s", .double(eta.startInSeconds))
                }
            } else {
                object.value("eta", .null)
            }
        }
        object.value("exit_code", exitCode.map { .int(Int64($0)) } ?? .null)
        object.string("finished_at", finishedAt)
        object.string("id", id)
        object.value("input", input)
        let base = "/v1/jobs/\(id)"
        object.object("links") { links in
            links.string("cancel", base + "/cancel")
            links.string("logs", base + "/logs")
            links.string("outputs", base + "/outputs")
            links.string("self", base)
        }
        object.value("max_attempts", .int(Int64(maxAttempts)))
        if let node { object.string("node", node) }
        if let notBefore { object.string("not_before", notBefore) }
        object.string("owner", owner)   // audit: who submitted it (null without tokens)
        object.value("position", position.map { .int(Int64($0)) } ?? .null)
        object.value("priority", .int(Int64(priority)))
        if let progress {
            object.object("progress") { $0.value("fraction", .double(progress.fraction)); $0.string("message", progress.message) }
        } else {
            object.value("progress", .null)
        }
        object.string("reason", reason)
        object.value("result", result ?? .null)
        if let retry { object.value("retry", retry) }
        object.value("signal", signal.map { .int(Int64($0)) } ?? .null)
        object.value("slot", slot.map { .int(Int64($0)) } ?? .null)
        if let startBy { object.string("start_by", startBy) }
        object.string("started_at", startedAt)
        object.string("state", state)
        object.value("timeout_s", timeoutSeconds.map(JSONValue.double) ?? .null)
        object.string("type", type)
        if let waitingReason { object.string("waiting_reason", waitingReason) }
        if let webhook {
            object.string("webhook", webhook)
            object.value("webhook_events", .array((webhookEvents ?? []).map(JSONValue.string)))
        }
    }
}

/// Where a JSON object's fields go, one by one: bytes (`CanonicalObject`) or a value (`ValueObject`).
protocol JSONObjectWriter {
    mutating func value(_ name: String, _ value: JSONValue)
    /// A string field, `null` when absent.
    mutating func string(_ name: String, _ text: String?)
    mutating func object(_ name: String, _ fields: (inout Self) -> Void)
}

/// A JSON object built as a `JSONValue` dictionary.
struct ValueObject: JSONObjectWriter {
    private(set) var fields: [String: JSONValue]

    init(capacity: Int = 0) { fields = .init(minimumCapacity: capacity) }

    mutating func value(_ name: String, _ value: JSONValue) { fields[name] = value }
    mutating func string(_ name: String, _ text: String?) { fields[name] = text.map(JSONValue.string) ?? .null }
    mutating func object(_ name: String, _ fields: (inout ValueObject) -> Void) {
        var nested = ValueObject()
        fields(&nested)
        self.fields[name] = .object(nested.fields)
    }
}

/// One JSON object written as bytes, its fields in the order they are given: the caller gives
/// them sorted, for canonical JSON (`JSONValue.canonicalBytes` sorts them itself).
struct CanonicalObject: JSONObjectWriter {
    private var bytes: [UInt8] = []
    private var empty = true

    init(capacity: Int) {
        bytes.reserveCapacity(capacity)
        bytes.append(UInt8(ascii: "{"))
    }

    /// A nested object goes on in its parent's buffer, which it takes over until `closed()`.
    private init(continuing parent: inout [UInt8]) {
        swap(&bytes, &parent)
        bytes.append(UInt8(ascii: "{"))
    }

    mutating func value(_ name: String, _ value: JSONValue) {
        key(name)
        value.write(to: &bytes)
    }

    mutating func string(_ name: String, _ text: String?) {
        key(name)
        if let text { JSONValue.writeString(text, to: &bytes) } else { bytes.append(contentsOf: "null".utf8) }
    }

    mutating func object(_ name: String, _ fields: (inout CanonicalObject) -> Void) {
        key(name)
        var nested = CanonicalObject(continuing: &bytes)
        fields(&nested)
        bytes = nested.closed()
    }

    consuming func closed() -> [UInt8] {
        bytes.append(UInt8(ascii: "}"))
        return bytes
    }

    private mutating func key(_ name: String) {
        if !empty { bytes.append(UInt8(ascii: ",")) }
        empty = false
        JSONValue.writeString(name, to: &bytes)
        bytes.append(UInt8(ascii: ":"))
    }
}
