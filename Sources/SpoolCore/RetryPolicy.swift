/// When a job that failed on its own runs again: which failures, how many attempts in all, and
/// how long it waits first — exponential back-off with full jitter (the wait before attempt
/// n + 1 is uniform in [0, min(max_backoff_s, backoff_s × 2^(n−1))]).
///
/// The jitter is drawn from the job's id and the attempt number, not from a generator: jobs
/// that failed together spread out over the window, yet the wait of one attempt is a pure
/// function of the job (a store, a test and a restart all compute the same `not_before`).
///
/// Wire form (a submit's `retry`, or a job type's in the configuration):
/// `{"max_attempts": 4, "backoff_s": 2, "max_backoff_s": 60, "on": ["exit_code", "timeout", 75]}`;
/// integers in `on` are exit codes (then only those codes retry, not every non-zero one).
public struct RetryPolicy: Sendable, Hashable {
    /// Attempts in all, counting the first (2…100).
    public var maxAttempts: Int
    public var backoffSeconds: Double
    public var maxBackoffSeconds: Double
    /// The failure reasons that retry.
    public var reasons: Set<FailureReason>
    /// With `exitCode` among the reasons: only these codes retry (every non-zero one when empty).
    public var exitCodes: Set<Int32>

    /// Reasons a job can fail for on its own, which may retry.
    public static let retryable: Set<FailureReason> = [.exitCode, .signal, .timeout, .error, .workerLost, .spawnFailed]
    /// `on` when a policy does not say: every failure of the job itself; a command that cannot
    /// start would fail the same way again.
    public static let defaultReasons: Set<FailureReason> = [.exitCode, .signal, .timeout, .error, .workerLost]
    public static let attemptsRange = 1...100
    /// The longest back-off a policy may ask for: a day.
    public static let longestBackoff = 86_400.0

    public init(maxAttempts: Int, backoffSeconds: Double = 1, maxBackoffSeconds: Double? = nil,
                reasons: Set<FailureReason> = RetryPolicy.defaultReasons, exitCodes: Set<Int32> = []) {
        self.maxAttempts = maxAttempts
        self.backoffSeconds = backoffSeconds
        self.maxBackoffSeconds = maxBackoffSeconds ?? max(backoffSeconds, 300)
        self.reasons = reasons
        self.exitCodes = exitCodes
    }

    /// Whether an attempt that ended with `outcome` — the `attempt`-th — goes round again.
    public func retries(_ outcome: JobOutcome, attempt: Int) -> Bool {
        guard attempt < maxAttempts, let reason = outcome.reason, outcome.resultingState == .failed, reasons.contains(reason) else {
            return false
        }
        if reason == .exitCode, !exitCodes.isEmpty, let code = outcome.exitCode { return exitCodes.contains(code) }
        return true
    }

    /// Seconds to wait after attempt `attempt` (1-based) failed, for job `job`.
    public func backoff(after attempt: Int, of job: JobID) -> Double {
        let exponent = Double(min(max(attempt - 1, 0), 60))
        let cap = min(maxBackoffSeconds, backoffSeconds * Double(sign: .plus, exponent: Int(exponent), significand: 1))
        return cap * Self.unitJitter(job, attempt)
    }

    /// A number in [0, 1) that depends only on the job and the attempt (SplitMix64 over FNV-1a).
    static func unitJitter(_ job: JobID, _ attempt: Int) -> Double {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in job.rawValue.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        var z = hash &+ UInt64(truncatingIfNeeded: attempt) &* 0x9e37_79b9_7f4a_7c15
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        z ^= z >> 31
        return Double(z >> 11) / Double(UInt64(1) << 53)
    }

    // MARK: - Wire form

    public var json: JSONValue {
        var on = reasons.subtracting(exitCodes.isEmpty ? [] : [.exitCode]).map { JSONValue.string($0.rawValue) }
            .sorted { $0.canonicalText < $1.canonicalText }
        on += exitCodes.sorted().map { JSONValue.int(Int64($0)) }
        return .object(["max_attempts": .int(Int64(maxAttempts)), "backoff_s": .double(backoffSeconds),
                        "max_backoff_s": .double(maxBackoffSeconds), "on": .array(on)])
    }

    public struct Invalid: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    public static let fields: Set<String> = ["max_attempts", "backoff_s", "max_backoff_s", "on"]

    /// Reads the wire form; `what` names it in errors (`"retry"`, `"types.render.retry"`).
    public init(json value: JSONValue, what: String = "retry") throws(Invalid) {
        func fail(_ message: String) -> Invalid { Invalid(description: "\"\(what)\"\(message)") }
        guard case .object(let object) = value else {
            throw fail(" must be an object like {\"max_attempts\": 3, \"backoff_s\": 2}")
        }
        let unknown = object.keys.filter { !Self.fields.contains($0) }.sorted()
        guard unknown.isEmpty else {
            throw fail(": unknown field(s) \(unknown.joined(separator: ", ")); it takes max_attempts, backoff_s, max_backoff_s and on")
        }
        guard let given = object["max_attempts"], given != .null else {
            throw fail(".max_attempts is required: the attempts in all, counting the first, from 1 to 100")
        }
        // Given but out of range is not "required" (found by attacking the build: max_attempts 0
        // was told it was missing).
        guard let count = given.intValue, Self.attemptsRange.contains(Int(count)) else {
            throw fail(".max_attempts must be an integer from 1 to 100 (the attempts in all, counting the first), not \(given.canonicalText)")
        }
        func seconds(_ key: String) throws(Invalid) -> Double? {
            guard let field = object[key], field != .null else { return nil }
            guard let number = field.doubleValue, number.isFinite, number >= 0, number <= Self.longestBackoff else {
                throw fail(".\(key) must be a number of seconds from 0 to \(Int(Self.longestBackoff))")
            }
            return number
        }
        let backoff = try seconds("backoff_s") ?? 1
        let most = try seconds("max_backoff_s")
        if let most, most < backoff { throw fail(".max_backoff_s must be at least backoff_s") }
        var reasons: Set<FailureReason> = []
        var codes: Set<Int32> = []
        if let on = object["on"], on != .null {
            guard case .array(let list) = on, !list.isEmpty else {
                throw fail(".on must be a non-empty list of failure reasons (\(Self.retryableNames)) or exit codes")
            }
            for entry in list {
                if let name = entry.stringValue, let reason = FailureReason(rawValue: name), Self.retryable.contains(reason) {
                    reasons.insert(reason)
                } else if let code = entry.intValue, (1...255).contains(code) {
                    codes.insert(Int32(code))
                } else {
                    throw fail(".on: \(entry.canonicalText) is neither a failure reason (\(Self.retryableNames)) nor an exit code from 1 to 255")
                }
            }
            if !codes.isEmpty { reasons.insert(.exitCode) }
        } else {
            reasons = Self.defaultReasons
        }
        self.init(maxAttempts: Int(count), backoffSeconds: backoff, maxBackoffSeconds: most, reasons: reasons, exitCodes: codes)
    }

    static var retryableNames: String { retryable.map(\.rawValue).sorted().joined(separator: ", ") }
}

/// One attempt of a job as it ended: what `GET /v1/jobs/{id}/attempts` lists.
public struct AttemptRecord: Sendable, Hashable {
    public var number: Int
    public var slot: SlotID?
    public var node: String?
    public var startedAt: Timestamp?
    public var endedAt: Timestamp
    /// `succeeded`, `failed`, `canceled`, or `queued` when the job went round again.
    public var state: JobState
    public var reason: FailureReason?
    public var exitCode: Int32?
    public var signal: Int32?
    public var error: String?
    /// When the job may run again, after a failure that retries.
    public var retryAt: Timestamp?
    /// False for a run the server took back through no fault of the job's (its slot was
    /// quarantined, the server shut down): listed, with why in `error`, but it used no attempt —
    /// the next one has its number again.
    public var counted: Bool

    public init(number: Int, slot: SlotID?, node: String?, startedAt: Timestamp?, endedAt: Timestamp, state: JobState,
                reason: FailureReason?, exitCode: Int32? = nil, signal: Int32? = nil, error: String? = nil, retryAt: Timestamp? = nil,
                counted: Bool = true) {
        self.number = number
        self.slot = slot
        self.node = node
        self.startedAt = startedAt
        self.endedAt = endedAt
        self.state = state
        self.reason = reason
        self.exitCode = exitCode
        self.signal = signal
        self.error = error
        self.retryAt = retryAt
        self.counted = counted
    }

    public var json: JSONValue {
        var fields: [String: JSONValue] = ["attempt": .int(Int64(number)), "ended_at": .string(endedAt.description),
                                           "state": .string(state.rawValue)]
        if let slot { fields["slot"] = .int(Int64(slot.rawValue)) }
        if let node { fields["node"] = .string(node) }
        if let startedAt { fields["started_at"] = .string(startedAt.description) }
        if let reason { fields["reason"] = .string(reason.rawValue) }
        if let exitCode { fields["exit_code"] = .int(Int64(exitCode)) }
        if let signal { fields["signal"] = .int(Int64(signal)) }
        if let error { fields["error"] = .string(error) }
        if let retryAt { fields["retry_at"] = .string(retryAt.description) }
        if !counted { fields["counted"] = .bool(false) }
        return .object(fields)
    }

    /// Reads what `json` wrote (a store's column); nil for anything else.
    public init?(json value: JSONValue) {
        guard let number = value["attempt"]?.intValue, let ended = value["ended_at"]?.stringValue.flatMap(Timestamp.init(rfc3339:)),
              let state = value["state"]?.stringValue.flatMap(JobState.init(rawValue:)) else { return nil }
        self.init(number: Int(number), slot: value["slot"]?.intValue.map { SlotID(Int($0)) }, node: value["node"]?.stringValue,
                  startedAt: value["started_at"]?.stringValue.flatMap(Timestamp.init(rfc3339:)), endedAt: ended, state: state,
                  reason: value["reason"]?.stringValue.flatMap(FailureReason.init(rawValue:)),
                  exitCode: value["exit_code"]?.intValue.map { Int32(truncatingIfNeeded: $0) },
                  signal: value["signal"]?.intValue.map { Int32(truncatingIfNeeded: $0) }, error: value["error"]?.stringValue,
                  retryAt: value["retry_at"]?.stringValue.flatMap(Timestamp.init(rfc3339:)), counted: value["counted"]?.boolValue ?? true)
    }

    /// A job's attempt log as a store keeps it (a JSON array), and back.
    public static func encode(_ log: [AttemptRecord]) -> String? {
        log.isEmpty ? nil : JSONValue.array(log.map(\.json)).canonicalText
    }

    public static func decode(_ text: String?) -> [AttemptRecord] {
        guard let text, let value = try? JSONParser.parse(text.utf8), case .array(let list) = value else { return [] }
        return list.compactMap(AttemptRecord.init(json:))
    }
}
