import SpoolCore

/// A `JobStore` that keeps jobs in memory: for unit tests and throwaway runs. Same semantics
/// as the durable drivers (the store tests run against both), none of the durability.
public actor MemoryJobStore: LocalJobStore, TokenStore {
    private var jobsByID: [JobID: Job] = [:]
    /// Idempotency keys, per owner: the job each names, and the fingerprint of the request that
    /// used it (a job's own, or that of a request that joined the job through result reuse).
    private var keys: [String: (job: JobID, fingerprint: String)] = [:]
    private var tokensByName: [String: TokenRecord] = [:]
    private var tokenCreated = false
    private var signingKey: [UInt8]?
    private var nextSequence: Int64 = 1
    private let notifier = JobChangeNotifier()
    public nonisolated let eventNotifier = EventNotifier()
    private var eventLog: [JobEvent] = []
    private static let eventLimit = 100_000

    public init() {}

    public func prepare() async throws {}

    public func enqueue(_ job: Job, limits: QueueLimits) async throws -> EnqueueResult {
        let key = job.idempotencyKey.map { (job.owner ?? "") + "\u{0}" + $0 }
        if let key, let held = keys[key], let existing = jobsByID[held.job] {
            guard job.repeats(fingerprint: held.fingerprint) else {
                throw StoreError(.idempotencyConflict, "the Idempotency-Key was already used for a different request", existing: existing)
            }
            return .existing(withPosition(existing))
        }
        if let dedup = job.dedup, let hash = job.dedupHash {
            let cutoff = dedup.succeededWithin.map { job.createdAt.adding(seconds: -$0) }
            let same = jobsByID.values.filter { $0.dedupHash == hash && $0.owner == job.owner }
            if let live = same.filter({ !$0.state.isTerminal && !$0.cancelRequested }).max(by: { $0.sequence < $1.sequence })
                ?? same.filter({ job in job.state == .succeeded && cutoff.map { $0 <= (job.finishedAt ?? $0) } == true })
                    .max(by: { $0.sequence < $1.sequence }) {
                if let key { keys[key] = (live.id, job.fingerprint) }   // a repeat answers the job it joined
                return .duplicate(withPosition(live))
            }
        }
        guard jobsByID[job.id] == nil else { throw StoreError(.other, "a job with id \(job.id) already exists") }
        let queued = jobsByID.values.filter { $0.state == .queued }
        if let total = limits.total, queued.count >= total { throw StoreError.queueFull(.server, total) }
        if let most = limits.owner, queued.count(where: { $0.owner == job.owner }) >= most { throw StoreError.queueFull(.owner, most) }
        var stored = job
        stored.state = .queued
        stored.attempts = 0
        stored.sequence = nextSequence
        stored.dedupHash = job.dedup == nil ? nil : job.dedupHash
        let level = queued.filter { $0.priority == job.priority }
        stored.fairTag = FairShare.tag(ownerLast: level.filter { $0.owner == job.owner }.map(\.fairTag).max(),
                                       head: level.map(\.fairTag).min(), served: served(at: job.priority), weight: job.shareWeight)
        nextSequence += 1
        jobsByID[stored.id] = stored
        if let key { keys[key] = (stored.id, job.fingerprint) }
        record(.state, stored, at: stored.createdAt)
        return .created(withPosition(stored))
    }

    public func enqueueArray(_ tasks: [Job], limits: QueueLimits) async throws -> [Job] {
        let queued = jobsByID.values.filter { $0.state == .queued }
        if let total = limits.total, queued.count + tasks.count > total { throw StoreError.queueFull(.server, total) }
        if let most = limits.owner, queued.count(where: { $0.owner == tasks.first?.owner }) + tasks.count > most {
            throw StoreError.queueFull(.owner, most)
        }
        if let first = tasks.first, let key = first.idempotencyKey,
           let holder = keys[(first.owner ?? "") + "\u{0}" + key].flatMap({ jobsByID[$0.job] }) {
            throw StoreError(.idempotencyConflict, "the Idempotency-Key was already used for a different request", existing: holder)
        }
        var stored: [Job] = []
        for (index, task) in tasks.enumerated() {
            var task = task
            task.dedup = nil
            if index > 0 { task.idempotencyKey = nil }
            stored.append(try await enqueue(task, limits: QueueLimits()).job)
        }
        return stored
    }

    /// The largest fair-share tag among `priority`'s running jobs (`FairShare.tag`).
    private func served(at priority: Int) -> Int64? {
        jobsByID.values.filter { $0.state == .running && $0.priority == priority }.map(\.fairTag).max()
    }

    public func arraySummary(_ id: String) async throws -> ArraySummary? {
        ArraySummary(tasks: jobsByID.values.filter { $0.array?.id == id })
    }

    public func requestFingerprint(owner: String?, key: String) async throws -> String? {
        keys[(owner ?? "") + "\u{0}" + key].flatMap { jobsByID[$0.job] == nil ? nil : $0.fingerprint }
    }

    public func arrayTasks(_ id: String, after index: Int64?, limit: Int) async throws -> [Job] {
        Array(jobsByID.values.filter { job in job.array?.id == id && index.map { job.array!.index > $0 } ?? true }
            .sorted { $0.array!.index < $1.array!.index }.prefix(limit).map(withPosition))
    }

    public func job(_ id: JobID) async throws -> Job? {
        jobsByID[id].map(withPosition)
    }

    public func arrays(_ query: ArrayQuery) async throws -> ArrayPage {
        let heads = Dictionary(grouping: jobsByID.values.filter { $0.array != nil }, by: { $0.array!.id })
            .compactMapValues { tasks in tasks.min { $0.sequence < $1.sequence } }.values
            .filter { head in
                (query.type.map { head.type == $0 } ?? true) && (query.owner.map { head.owner == $0 } ?? true)
                    && (query.before.map { head.sequence < $0 } ?? true)
            }
            .sorted { $0.sequence > $1.sequence }
        let page = heads.prefix(query.limit)
        return ArrayPage(arrays: page.compactMap { head in ArraySummary(tasks: jobsByID.values.filter { $0.array?.id == head.array?.id }) },
                         nextCursor: heads.count > query.limit ? page.last?.sequence : nil)
    }

    public func jobs(_ query: JobQuery) async throws -> JobPage {
        let matching = jobsByID.values
            .filter { job in
                (query.state.map { job.state == $0 } ?? true) && (query.type.map { job.type == $0 } ?? true)
                    && (query.owner.map { job.owner == $0 } ?? true) && (query.before.map { job.sequence < $0 } ?? true)
                    && (query.array.map { $0.contains(job) } ?? true)
            }
            .sorted { $0.sequence > $1.sequence }
        var budget = PageBudget(query)
        var page: [Job] = []
        for job in matching {
            guard budget.take(size: job.input.canonicalText.utf8.count + (job.result?.canonicalText.utf8.count ?? 0)) else {
                return JobPage(jobs: page, nextCursor: page.last?.sequence)
            }
            page.append(job)
        }
        return JobPage(jobs: page, nextCursor: nil)
    }

    public func queuedCount() async throws -> Int {
        jobsByID.values.count { $0.state == .queued }
    }

    public func queuedCount(owner: String) async throws -> Int {
        jobsByID.values.count { $0.state == .queued && $0.owner == owner }
    }

    public func claimNext(for slot: SlotID, excluding: Set<String>, now: Timestamp) async throws -> Job? {
        try await claimNext(for: slot, excluding: excluding, skipping: [], now: now)
    }

    public func claimNext(for slot: SlotID, excluding: Set<String>, skipping: Set<JobID>, now: Timestamp) async throws -> Job? {
        let capped = cappedOwners()
        guard var next = queue.first(where: {
            $0.isDue(at: now) && !excluding.contains($0.type) && !skipping.contains($0.id) && !($0.owner.map(capped.contains) ?? false)
        }) else { return nil }
        next.start(on: slot, at: now)
        jobsByID[next.id] = next
        notifier.publish(next.id)
        record(.state, next, at: now)
        return next
    }

    public func finish(_ id: JobID, attempt: Int, outcome: JobOutcome, result: JSONValue?, now: Timestamp,
                       claimNextFor slot: SlotID?, excluding: Set<String>) async throws -> FinishResult {
        let recorded = record(FinishedAttempt(job: id, attempt: attempt, outcome: outcome, result: result, now: now))
        guard let slot else { return FinishResult(recorded: recorded, next: nil) }
        return FinishResult(recorded: recorded, next: try await claimNext(for: slot, excluding: excluding, now: now))
    }

    @discardableResult
    private func record(_ finished: FinishedAttempt) -> Bool {
        guard var job = jobsByID[finished.job], job.state == .running, job.attempts == finished.attempt else { return false }
        job.record(finished.outcome, at: finished.now, result: finished.result)
        jobsByID[finished.job] = job
        notifier.publish(job)
        record(.state, job, at: finished.now)
        return true
    }

    public func cancel(_ id: JobID, by actor: String?, now: Timestamp) async throws -> CancelResult {
        guard var job = jobsByID[id] else { return .notFound }
        switch job.state {
        case .queued:
            job.cancelWhileQueued(at: now, by: actor)
            jobsByID[id] = job
            notifier.publish(id)
            record(.state, job, at: now)
            return .canceled(job)
        case .running:
            job.requestCancel(by: actor)
            jobsByID[id] = job
            notifier.publish(id)
            record(.state, job, at: now)
            return .stopping(job)
        case .succeeded, .failed, .canceled:
            return .alreadyFinished(job)
        }
    }

    public func reportProgress(_ id: JobID, attempt: Int, progress: JobProgress) async throws {
        guard var job = jobsByID[id], job.state == .running, job.attempts == attempt else { return }
        job.progress = progress
        jobsByID[id] = job
        notifier.publish(id)
        append(JobEvent(id: 0, job: id, owner: job.owner, kind: .progress, at: WallClock.now(), data: JobEvent.progressData(of: id, progress)))
    }

    public func recoverInterrupted(now: Timestamp) async throws -> [Job] {
        let interrupted = jobsByID.values.filter { $0.state == .running }.sorted { $0.sequence < $1.sequence }
        for var job in interrupted {
            job.recoverFromInterruption(at: now)
            jobsByID[job.id] = job
            record(.state, job, at: now)
        }
        notifier.publish(interrupted.map(\.id))
        return interrupted
    }

    public nonisolated func watch(_ id: JobID) -> JobWatch { notifier.watch(id) }

    public func events(after: Int64, job: JobID?, owner: String?, limit: Int) async throws -> [JobEvent] {
        let start = eventLog.firstIndex { $0.id > after } ?? eventLog.endIndex
        return Array(eventLog[start...].lazy.filter { (job == nil || $0.job == job) && (owner == nil || $0.owner == owner) }.prefix(limit))
    }

    public func appendEvent(_ kind: JobEvent.Kind, job: JobID, attempt: Int?, data: JSONValue, now: Timestamp) async throws {
        guard let stored = jobsByID[job] else { return }   // deleted meanwhile: no late event
        if let attempt, stored.attempts > attempt || (stored.attempts == attempt && stored.state != .running) { return }
        append(JobEvent(id: 0, job: job, owner: jobsByID[job]?.owner, kind: kind, at: now, data: data))
    }

    private func record(_ kind: JobEvent.Kind, _ job: Job, at now: Timestamp) {
        append(JobEvent(id: 0, job: job.id, owner: job.owner, kind: kind, at: now, data: JobEvent.stateData(of: job)))
    }

    /// Owners whose token's `max_running` their running jobs have reached.
    public func peekNext(for slot: SlotID, excluding types: Set<String>, skipping: Set<JobID>, now: Timestamp) async throws -> PeekedJob {
        guard tokensByName.values.allSatisfy({ $0.limits.maxRunning == nil }) else { return .claimInStore }
        return queue.first { $0.isDue(at: now) && !types.contains($0.type) && !skipping.contains($0.id) }.map(PeekedJob.job) ?? .none
    }

    public func queuedCount(priorityAtLeast priority: Int, dueBy: Timestamp) async throws -> Int {
        jobsByID.values.count { $0.state == .queued && $0.priority >= priority && ($0.notBefore.map { $0 <= dueBy } ?? true) }
    }

    public func failFastArraysLeftOpen() async throws -> [String] {
        let open = Set(jobsByID.values.filter { !$0.state.isTerminal && $0.array?.failFast == true }.compactMap(\.array?.id))
        return Set(jobsByID.values.filter { $0.state == .failed }.compactMap(\.array?.id)).intersection(open).sorted()
    }

    public func queuedAhead(ofNew job: Job, dueBy: Timestamp) async throws -> Int {
        let due = jobsByID.values.filter { $0.state == .queued && ($0.notBefore.map { $0 <= dueBy } ?? true) }
        let level = jobsByID.values.filter { $0.state == .queued && $0.priority == job.priority }
        let tag = FairShare.tag(ownerLast: level.filter { $0.owner == job.owner }.map(\.fairTag).max(),
                                head: level.map(\.fairTag).min(), served: served(at: job.priority), weight: job.shareWeight)
        return due.count { $0.priority > job.priority || ($0.priority == job.priority && $0.fairTag <= tag) }
    }

    public func expireDeadlines(now: Timestamp) async throws -> [Job] {
        let expired = jobsByID.values.filter { $0.state == .queued && $0.startBy.map { $0 <= now } == true }.sorted { $0.sequence < $1.sequence }
        return expired.map { job in
            var job = job
            job.expire(at: now)
            jobsByID[job.id] = job
            notifier.publish(job.id)
            record(.state, job, at: now)
            return job
        }
    }

    public func nextTimer(after now: Timestamp) async throws -> Timestamp? {
        jobsByID.values.lazy.filter { $0.state == .queued }
            .compactMap { job in [job.notBefore.flatMap { $0 > now ? $0 : nil }, job.startBy].compactMap { $0 }.min() }.min()
    }

    public func commit(claimed: Job?, finished: FinishedAttempt?, started: Job?) async throws -> HandOverCommit {
        let claimHeld = claimed.map(claim) ?? false
        if let finished { record(finished) }
        return HandOverCommit(claimed: claimHeld, started: started.map(claim) ?? false)
    }

    /// Claims `started` (a job `peekNext` returned, after `Job.start(on:at:)`) if it is still queued with one attempt fewer.
    private func claim(_ started: Job) -> Bool {
        guard let slot = started.slot, let startedAt = started.startedAt, let stored = jobsByID[started.id],
              stored.state == .queued, stored.attempts == started.attempts - 1 else {
            return false
        }
        var job = stored
        job.start(on: slot, at: startedAt)
        jobsByID[job.id] = job
        notifier.publish(job.id)
        record(.state, job, at: startedAt)
        return true
    }

    private func cappedOwners() -> Set<String> {
        let caps = tokensByName.values.filter { $0.limits.maxRunning != nil }
        guard !caps.isEmpty else { return [] }
        let running = Dictionary(grouping: jobsByID.values.filter { $0.state == .running }.compactMap(\.owner)) { $0 }.mapValues(\.count)
        return Set(caps.filter { running[$0.name, default: 0] >= $0.limits.maxRunning! }.map(\.name))
    }

    // MARK: - Tokens

    public func createToken(_ token: TokenRecord) async throws {
        guard tokensByName[token.name] == nil else { throw StoreError(.conflict, "a token named \(token.name) already exists") }
        tokensByName[token.name] = token
        tokenCreated = true
    }

    public func tokens() async throws -> [TokenRecord] { tokensByName.values.sorted { $0.name < $1.name } }

    public func deleteEnded(before cutoff: Timestamp, limit: Int) async throws -> [JobID] {
        func gone(_ job: Job) -> Bool { job.state.isTerminal && (job.finishedAt.map { $0 < cutoff } ?? false) }
        var arrays: [String: Bool] = [:]
        for job in jobsByID.values { if let array = job.array?.id { arrays[array] = (arrays[array] ?? true) && gone(job) } }
        let ended = jobsByID.values.filter { gone($0) && ($0.array.map { arrays[$0.id] == true } ?? true) }
            .sorted { ($0.finishedAt!, $0.sequence) < ($1.finishedAt!, $1.sequence) }
        // An array begun goes whole, past the limit, in the place of its first task taken.
        var doomed: [Job] = []
        var arraysTaken: Set<String> = []
        for job in ended.prefix(max(0, limit)) {
            guard let array = job.array?.id else { doomed.append(job); continue }
            if arraysTaken.insert(array).inserted { doomed += ended.filter { $0.array?.id == array } }
        }
        remove(doomed)
        return doomed.map(\.id)
    }

    public func delete(_ id: JobID) async throws -> DeleteResult {
        guard let job = jobsByID[id] else { return .notFound }
        guard job.state.isTerminal else { return .notEnded(job) }
        guard job.array == nil else { return .arrayTask(job) }
        remove([job])
        return .deleted(job)
    }

    public func deleteArray(_ id: String) async throws -> ArrayDeleteResult {
        let tasks = jobsByID.values.filter { $0.array?.id == id }.sorted { $0.array!.index < $1.array!.index }
        guard !tasks.isEmpty else { return .notFound }
        let open = tasks.count { !$0.state.isTerminal }
        guard open == 0 else { return .notEnded(open) }
        remove(tasks)
        return .deleted(tasks.map(\.id))
    }

    /// Forgets `jobs`, the idempotency keys that name them and their events.
    private func remove(_ jobs: [Job]) {
        for job in jobs { jobsByID[job.id] = nil }
        let ids = Set(jobs.map(\.id))
        keys = keys.filter { !ids.contains($0.value.job) }
        eventLog.removeAll { ids.contains($0.job) }
    }

    public func revokeToken(named name: String) async throws -> Bool { tokensByName.removeValue(forKey: name) != nil }
    public func tokensWereCreated() async throws -> Bool { tokenCreated }
    public func endSessions(ofToken id: String, at now: Timestamp) async throws -> Bool {
        guard let name = tokensByName.first(where: { $0.value.id == id })?.key else { return false }
        tokensByName[name]?.sessionsSince = now
        return true
    }

    public func sessionKey() async throws -> [UInt8] {
        if let signingKey { return signingKey }
        var generator = SystemRandomNumberGenerator()
        let key = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        signingKey = key
        return key
    }

    private func append(_ event: JobEvent) {
        var event = event
        event.id = (eventLog.last?.id ?? 0) + 1
        eventLog.append(event)
        if eventLog.count > Self.eventLimit { eventLog.removeFirst(eventLog.count - Self.eventLimit) }
        eventNotifier.published([event])
    }

    private var queue: [Job] {
        jobsByID.values.filter { $0.state == .queued }.sorted(by: QueueOrder.precedes)
    }

    private func withPosition(_ job: Job) -> Job {
        var job = job
        job.position = job.state == .queued ? 1 + jobsByID.values.count { $0.state == .queued && QueueOrder.precedes($0, job) } : nil
        return job
    }
}

public enum RecoveryPolicy {
    public static let interruptedMessage = Job.interruptedMessage
}
