/// Progress a running job reported about itself.
public struct JobProgress: Sendable, Hashable, Codable {
    /// 0…1.
    public var fraction: Double
    public var message: String?
    public init(fraction: Double, message: String? = nil) {
        self.fraction = min(1, max(0, fraction.isFinite ? fraction : 0))
        self.message = message?.storable
    }
}

extension String {
    /// The text with each NUL character replaced by U+FFFD. PostgreSQL's text cannot hold NUL: a
    /// job's or a worker's free text (an error, a progress message) must never make its job's
    /// record unwritable, where the end of the job would be retried for good.
    public var storable: String {
        guard utf8.contains(0) else { return self }
        return String(String.UnicodeScalarView(unicodeScalars.map { $0 == "\u{0}" ? "\u{FFFD}" : $0 }))
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
    /// When a failing attempt runs again (nil: a failure is the answer).
    public var retry: RetryPolicy?
    /// A queued job is not started before this time (`run_at`, `delay_s`, a retry's back-off).
    public var notBefore: Timestamp?
    /// A queued job not started by this time is canceled with reason `deadline` (`start_within_s`).
    public var startBy: Timestamp?
    /// Every attempt that ended, oldest first.
    public var attemptLog: [AttemptRecord] = []
    /// With result reuse: the hash of its identity (`Dedup.identity`), which stores compare.
    public var dedupHash: String?
    /// The submit's reuse rule: the store's input for `enqueue`, not stored.
    public var dedup: Dedup?
    /// Its array and place in it, for a task of a job array.
    public var array: ArrayMembership?
    /// What a repeat of its request must match that the job does not keep as sent: the schedule
    /// and reuse fields as given (`delay_s` becomes a time), an array's items (a digest, on its
    /// first task). Set at admission, and kept only inside the stored fingerprint: a repeat is
    /// compared with that (`JobStore.requestFingerprint`), never with the job read back.
    public var requestExtras: [String: JSONValue] = [:]

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
    /// Marked `"v": 2` since it covers `requestExtras`: one stored before (`repeats`) is
    /// compared as it was then.
    public var fingerprint: String { fingerprint(version: 2) }

    /// The fingerprint as stored before `requestExtras` (unmarked): what a repeat of a request
    /// stored then is compared with.
    var legacyFingerprint: String { fingerprint(version: 1) }

    /// Whether this request repeats the one whose fingerprint is `stored` (as kept under its
    /// Idempotency-Key): an exact match; or, for one stored before the fingerprint covered the
    /// schedule and an array's items (no `"v"`), a match of what was compared then — so a
    /// client's retry across the upgrade still gets its job back.
    public func repeats(fingerprint stored: String) -> Bool {
        if stored == fingerprint { return true }
        guard !stored.isEmpty, let parsed = try? JSONParser.parse(Array(stored.utf8)), parsed["v"] == nil else { return false }
        return stored == legacyFingerprint
    }

    private func fingerprint(version: Int) -> String {
        var fields: [String: JSONValue] = [
            "type": .string(type), "input": input, "priority": .int(Int64(priority)),
            "timeout_s": .double(timeoutSeconds), "webhook": webhookURL.map(JSONValue.string) ?? .null,
            "webhook_events": .array(webhookEvents.map(JSONValue.string)),
        ]
        // Only when set, so that the fingerprints of jobs stored before retries existed still match.
        if let retry { fields["retry"] = retry.json }
        // A task of a job array holds the array's key; a plain job with its input is another request.
        if let array { fields["array"] = .string(array.id) }
        if version >= 2 {
            fields.merge(requestExtras) { kept, _ in kept }
            fields["v"] = .int(Int64(version))
        }
        return JSONValue.object(fields).canonicalText
    }

    /// What the stores keep in their `fingerprint` column: only an idempotent submit's is ever
    /// compared, so the others keep "" instead of a second copy of the input.
    public var storedFingerprint: String { idempotencyKey == nil ? "" : fingerprint }

    /// Applies an attempt's outcome: the one place that decides the fields a finished attempt sets.
    /// A failure its `retry` policy covers goes back to the queue until `notBefore` (the policy's
    /// back-off); every attempt that was not handed back is added to `attemptLog`.
    public mutating func record(_ outcome: JobOutcome, at now: Timestamp, result: JSONValue? = nil) {
        // The attempt ran: its start met the deadline, and a requeue is not canceled for it. One
        // handed back before it ran (`.returned`: its worker not ready, its files not made) keeps it.
        if case .returned(_, ran: false) = outcome {} else { startBy = nil }
        if outcome.givesAttemptBack {
            // The attempt did not get a fair run; it does not use up the job's budget. One that ran
            // is listed, not counted (found by attacking the build: an hour on a GPU that was then
            // quarantined left no trace among the job's attempts).
            if let why = outcome.handedBackAfterRunning {
                attemptLog.append(AttemptRecord(number: attempts, slot: slot, node: node, startedAt: startedAt, endedAt: now, state: .queued,
                                                reason: nil, error: why.storable, counted: false))
            }
            attempts = max(0, attempts - 1)
            requeue()
            return
        }
        if let retry, retry.retries(outcome, attempt: attempts) {
            let retryAt = now.adding(seconds: retry.backoff(after: attempts, of: id))
            log(outcome, at: now, state: .queued, retryAt: retryAt)
            requeue()
            notBefore = retryAt
            return
        }
        if case .workerLost = outcome, attempts < maxAttempts {
            // The worker died under the job, not the job itself: run it again while attempts remain.
            log(outcome, at: now, state: .queued)
            requeue()
            return
        }
        state = outcome.resultingState
        reason = outcome.reason
        // A stop asked for that came too late (the job ended on its own first): nobody canceled
        // it (found by attacking the build: fail-fast tasks read succeeded, canceled_by fail_fast).
        if state != .canceled { canceledBy = nil }
        finishedAt = now
        exitCode = outcome.exitCode
        signal = outcome.signal
        error = outcome.errorMessage(timeout: timeoutSeconds)
        self.result = outcome == .succeeded ? result : nil
        log(outcome, at: now, state: state)
    }

    private mutating func log(_ outcome: JobOutcome, at now: Timestamp, state: JobState, retryAt: Timestamp? = nil) {
        attemptLog.append(AttemptRecord(number: attempts, slot: slot, node: node, startedAt: startedAt, endedAt: now, state: state,
                                        reason: outcome.reason, exitCode: outcome.exitCode, signal: outcome.signal,
                                        error: outcome.errorMessage(timeout: timeoutSeconds), retryAt: retryAt))
    }

    /// The attempts as they ended, for listing: the last one's retry never comes once the job
    /// ended while waiting for it (canceled during its back-off), so it reads as the failure it
    /// was, with no `retry_at` (found in review: it stayed `queued`, due at a time that passed).
    public var endedAttempts: [AttemptRecord] {
        guard state.isTerminal, var last = attemptLog.last, last.state == .queued, last.counted else { return attemptLog }
        last.state = .failed
        last.retryAt = nil
        return attemptLog.dropLast() + [last]
    }

    /// What the `error` of a queued job canceled at its deadline says.
    public static let deadlineMessage = "the job could not start before its deadline (start_within_s) and was canceled"

    /// A queued job whose `startBy` passed: canceled with reason `deadline`.
    public mutating func expire(at now: Timestamp) {
        state = .canceled
        reason = .deadline
        finishedAt = now
        error = Self.deadlineMessage
        position = nil
    }

    /// Whether a slot may take this queued job at `now` (its `notBefore` has come, its `startBy` has not passed).
    public func isDue(at now: Timestamp) -> Bool {
        (notBefore.map { $0 <= now } ?? true) && (startBy.map { now < $0 } ?? true)
    }

    /// The next time something is due for this queued job: its start becoming allowed, or its deadline.
    public var nextTimer: Timestamp? {
        guard state == .queued else { return nil }
        return [notBefore, startBy].compactMap { $0 }.min()
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

    /// With a shared store, a claim whose answer never reached its node (a timeout, a dropped
    /// connection), given back by that node: the job never ran, so its attempt is not counted —
    /// back to the queue, or canceled when a cancel was asked meanwhile.
    public mutating func releaseUnansweredClaim(at now: Timestamp) {
        record(.returned(message: "its claim's answer never reached its node"), at: now)
        if cancelRequested { cancelWhileQueued(at: now) }
    }

    /// A running job whose attempt ended without a word from it: run it again while attempts
    /// remain, else fail it for `reason`. One whose cancel was under way (asked for, not yet
    /// carried out) ends canceled: the user's word stands, and its side effects are not repeated.
    private mutating func requeueOrFail(because reason: FailureReason, _ message: String, at now: Timestamp) {
        startBy = nil   // it ran: its start met the deadline
        if cancelRequested {
            let error = JobOutcome.canceled.errorMessage(timeout: nil)
            attemptLog.append(AttemptRecord(number: attempts, slot: slot, node: node, startedAt: startedAt, endedAt: now,
                                            state: .canceled, reason: .canceled, error: error))
            state = .canceled
            self.reason = .canceled
            finishedAt = now
            self.error = error
            return
        }
        let last = attempts >= maxAttempts
        attemptLog.append(AttemptRecord(number: attempts, slot: slot, node: node, startedAt: startedAt, endedAt: now,
                                        state: last ? .failed : .queued, reason: reason, error: last ? message : nil))
        guard last else { return requeue() }
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

    /// A running job asked to stop: the fields every store sets (its slot ends it, canceled).
    public mutating func requestCancel(by actor: String?) {
        cancelRequested = true
        canceledBy = actor ?? canceledBy
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
