/// Progress a running job reported about itself.
public struct JobProgress: Sendable, Hashable, Codable {
    /// 0…1.
    public var fraction: Double
    public var message: String?
    public init(fraction: Double, message: String? = nil) {
        self.fraction = min(1, max(0, fraction.isFinite ? fraction : 0))
        self.message = message
    }
}

/// Everything recorded about one job. Plain data; stores fill it in, the API shows it.
public struct Job: Sendable, Hashable {
    public var id: JobID
    /// Insertion order, assigned by the store. Breaks priority ties (FIFO) and pages lists.
    public var sequence: Int64
    public var type: String
    public var input: JSONValue
    public var priority: Int
    public var timeoutSeconds: Double
    public var maxAttempts: Int
    public var state: JobState
    public var reason: FailureReason?
    /// How many times a slot has claimed it.
    public var attempts: Int
    public var createdAt: Timestamp
    public var startedAt: Timestamp?
    public var finishedAt: Timestamp?
    public var exitCode: Int32?
    public var signal: Int32?
    public var error: String?
    public var slot: SlotID?
    /// The node whose slot runs (or last ran) the job, with a shared store; nil on one machine.
    public var node: String?
    public var progress: JobProgress?
    /// What a warm worker returned for a succeeded job.
    public var result: JSONValue?
    public var idempotencyKey: String?
    /// Where to POST this job's events (see `webhookEvents`), if anywhere.
    public var webhookURL: String?
    /// Which events go to the webhook: `started`, `progress`, `completed`.
    public var webhookEvents: [String] = []
    /// True when a client asked to cancel while the job ran (the slot stops it).
    public var cancelRequested: Bool
    /// 1-based place in the queue, filled in for queued jobs by `JobStore.job(_:)`.
    public var position: Int?
    /// The token (tenant) that submitted it; nil when authentication is off.
    public var owner: String?
    /// Who asked to cancel it: a token's name, or `""` with authentication off.
    public var canceledBy: String?
    /// Its place in the fair-share order within its priority (`FairShare`), set by the store.
    public var fairTag: Int64 = 0
    /// Its owner's fair-share weight at submit: the store's input for `fairTag`, not stored.
    public var shareWeight: Double = 1

    public init(
        id: JobID, sequence: Int64 = 0, type: String, input: JSONValue, priority: Int,
        timeoutSeconds: Double, maxAttempts: Int, state: JobState = .queued, createdAt: Timestamp,
        idempotencyKey: String? = nil
    ) {
        self.id = id
        self.sequence = sequence
        self.type = type
        self.input = input
        self.priority = priority
        self.timeoutSeconds = timeoutSeconds
        self.maxAttempts = maxAttempts
        self.state = state
        self.reason = nil
        self.attempts = 0
        self.createdAt = createdAt
        self.idempotencyKey = idempotencyKey
        self.cancelRequested = false
    }

    /// What idempotent resubmits compare: the same key with another fingerprint is a conflict.
    public var fingerprint: String {
        JSONValue.object([
            "type": .string(type), "input": input, "priority": .int(Int64(priority)),
            "timeout_s": .double(timeoutSeconds), "webhook": webhookURL.map(JSONValue.string) ?? .null,
            "webhook_events": .array(webhookEvents.map(JSONValue.string)),
        ]).canonicalText
    }

    /// Applies an attempt's outcome: the one place that decides the fields a finished attempt sets.
    public mutating func record(_ outcome: JobOutcome, at now: Timestamp, result: JSONValue? = nil) {
        if outcome.givesAttemptBack {
            // The attempt did not get a fair run; it does not use up the job's budget.
            attempts = max(0, attempts - 1)
            requeue()
            return
        }
        if case .workerLost = outcome, attempts < maxAttempts {
            // The worker died under the job, not the job itself: run it again while attempts remain.
            requeue()
            return
        }
        state = outcome.resultingState
        reason = outcome.reason
        finishedAt = now
        exitCode = outcome.exitCode
        signal = outcome.signal
        error = outcome.errorMessage(timeout: timeoutSeconds)
        self.result = outcome == .succeeded ? result : nil
    }

    /// What the `error` of a job failed by recovery says.
    public static let interruptedMessage = "the server stopped while the job ran and its attempts are used up"

    /// After a crash, for a job still marked running: back to the queue while attempts remain,
    /// else `failed` with reason `interrupted`.
    public mutating func recoverFromInterruption(at now: Timestamp) {
        requeueOrFail(because: .interrupted, Self.interruptedMessage, at: now)
    }

    /// What the `error` of a job failed because its node was lost says.
    public static let nodeLostMessage = "the node running the job stopped renewing its lease and the job's attempts are used up"

    /// With a shared store, for a running job whose node stopped renewing its lease (it died
    /// or lost the database): back to the queue while attempts remain, else `failed` with
    /// reason `node_lost`. The lost attempt counts, as a crash of the job would.
    public mutating func rescueFromLostNode(at now: Timestamp) {
        requeueOrFail(because: .nodeLost, Self.nodeLostMessage, at: now)
    }

    /// A running job whose attempt ended without a word from it: run it again while attempts
    /// remain, else fail it for `reason`.
    private mutating func requeueOrFail(because reason: FailureReason, _ message: String, at now: Timestamp) {
        guard attempts >= maxAttempts else { return requeue() }
        state = .failed
        self.reason = reason
        finishedAt = now
        error = message
    }

    /// A queued job claimed for `slot` at `now`: running, one more attempt, nothing left of an
    /// earlier attempt's progress or result — the fields every store's claim sets.
    public mutating func start(on slot: SlotID, at now: Timestamp) {
        state = .running
        attempts += 1
        self.slot = slot
        startedAt = now
        finishedAt = nil
        progress = nil
        result = nil
        position = nil
    }

    /// A queued job canceled before it ran: the fields every store sets.
    public mutating func cancelWhileQueued(at now: Timestamp, by actor: String? = nil) {
        canceledBy = actor ?? canceledBy
        state = .canceled
        reason = .canceled
        finishedAt = now
        error = JobOutcome.canceled.errorMessage(timeout: nil)
    }

    private mutating func requeue() {
        state = .queued
        reason = nil
        startedAt = nil
        slot = nil
        node = nil
        progress = nil
    }
}

/// Queue ordering: higher priority first, then the fair-share tag (tenants take turns), then
/// first-in first-out.
public struct QueueOrder: Sendable {
    /// Between jobs of one owner (whose fair-share tags grow with submission).
    public static func precedes(_ a: (priority: Int, sequence: Int64), _ b: (priority: Int, sequence: Int64)) -> Bool {
        a.priority != b.priority ? a.priority > b.priority : a.sequence < b.sequence
    }

    public static func precedes(_ a: Job, _ b: Job) -> Bool {
        if a.priority != b.priority { return a.priority > b.priority }
        if a.fairTag != b.fairTag { return a.fairTag < b.fairTag }
        return a.sequence < b.sequence
    }
}
