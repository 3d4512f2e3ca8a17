import SpoolCore
import SpoolStore
import Synchronization

/// A `JobStore` that fails when told to — a full disk, a damaged file, a lost database — and
/// otherwise passes every call to the store it wraps.
public final class FlakyStore: LocalJobStore {
    /// `lookUp` is `peekNext`; `commit` counts as `finish` when it records an attempt's end,
    /// else as `claim`; `timers` is `expireDeadlines`, the first call when the queue's timer fires;
    /// `readEvents` is `events(after:...)`, which `webhookEvents` reads through; `retention` is `deleteEnded`.
    public enum Operation: Sendable, Hashable { case claim, finish, enqueue, appendEvent, queuedCount, lookUp, timers, readEvents, retention }

    /// Where a held call waits: before it reaches the store, or once the store has answered and
    /// before its caller hears the answer (a reply still on its way: what it read may be stale
    /// by the time it arrives). Only claims (`claim`) wait `afterAnswer`.
    public enum HoldPoint: Sendable, Hashable { case beforeStore, afterAnswer }

    private struct Hold: Hashable {
        var operation: Operation
        var point: HoldPoint
    }

    private let base: any JobStore
    private let failures = Mutex<[Operation: Int]>([:])
    private let failureCodes = Mutex<[Operation: StoreError.Code]>([:])
    private let counts = Mutex<[Operation: Int]>([:])
    /// Operations on hold, with the calls waiting on each.
    private let holds = Mutex<[Hold: [CheckedContinuation<Void, Never>]]>([:])

    public init(_ base: any JobStore) { self.base = base }

    /// Calls of `operation` wait from now on until `release` (a slow disk, a stalled network).
    public func hold(_ operation: Operation, at point: HoldPoint = .beforeStore) {
        holds.withLock { $0[Hold(operation: operation, point: point)] = $0[Hold(operation: operation, point: point)] ?? [] }
    }

    /// Lets the held calls of `operation` go on, and later ones pass; returns how many were waiting.
    @discardableResult
    public func release(_ operation: Operation, at point: HoldPoint = .beforeStore) -> Int {
        let waiting = holds.withLock { $0.removeValue(forKey: Hold(operation: operation, point: point)) ?? [] }
        for waiter in waiting { waiter.resume() }
        return waiting.count
    }

    /// The next `times` calls of `operation` fail (`Int.max`: until `heal`).
    /// Calls of `operation` fail from now on (`times` of them), with `code`: a damaged database
    /// by default, or one that cannot write (`.storageUnavailable`: a full disk).
    public func fail(_ operation: Operation, times: Int = .max, as code: StoreError.Code = .corrupt) {
        failures.withLock { $0[operation] = times }
        failureCodes.withLock { $0[operation] = code }
    }
    public func heal() { failures.withLock { $0 = [:] } }

    /// How many calls of `operation` went through so far (failed ones included; a held one once released).
    public func calls(_ operation: Operation) -> Int { counts.withLock { $0[operation] ?? 0 } }

    /// How many calls of `operation` are waiting on a hold.
    public func waiting(_ operation: Operation, at point: HoldPoint = .beforeStore) -> Int {
        holds.withLock { $0[Hold(operation: operation, point: point)]?.count ?? 0 }
    }

    /// Returns once `condition` holds (on `calls` and `waiting`), checked now and after each call
    /// that goes through or starts to wait. Wrap it in `within` for a deadline.
    public func until(_ condition: @escaping @Sendable (FlakyStore) -> Bool) async {
        await withCheckedContinuation { continuation in
            let now = watchers.withLock { watchers -> Bool in
                if condition(self) { return true }
                watchers.append((condition, continuation))
                return false
            }
            if now { continuation.resume() }
        }
    }

    /// `until`, with a deadline: throws when `condition` does not hold within `limit` (`what` says what was awaited).
    public func until(_ what: String, within limit: Duration = .seconds(10), _ condition: @escaping @Sendable (FlakyStore) -> Bool) async throws {
        try await within(limit, what) { await self.until(condition) }
    }

    private let watchers = Mutex<[(condition: @Sendable (FlakyStore) -> Bool, continuation: CheckedContinuation<Void, Never>)]>([])

    /// Wakes the `until` callers whose condition now holds.
    private func changed() {
        let met = watchers.withLock { watchers in
            var met: [CheckedContinuation<Void, Never>] = []
            watchers.removeAll { watcher in
                guard watcher.condition(self) else { return false }
                met.append(watcher.continuation)
                return true
            }
            return met
        }
        for continuation in met { continuation.resume() }
    }

    private func pass(_ operation: Operation) async throws {
        await wait(Hold(operation: operation, point: .beforeStore))
        try check(operation)
    }

    /// The store's answer to a call of `operation`, once any hold after the answer is released.
    private func answered<Answer>(_ operation: Operation, _ answer: Answer) async -> Answer {
        await wait(Hold(operation: operation, point: .afterAnswer))
        return answer
    }

    private func wait(_ hold: Hold) async {
        await withCheckedContinuation { continuation in
            let wait = holds.withLock { holds -> Bool in
                guard holds[hold] != nil else { return false }
                holds[hold]!.append(continuation)
                return true
            }
            if wait { changed() } else { continuation.resume() }
        }
    }

    private func check(_ operation: Operation) throws {
        counts.withLock { $0[operation, default: 0] += 1 }
        changed()
        let fails = failures.withLock { failures -> Bool in
            guard let left = failures[operation], left > 0 else { return false }
            failures[operation] = left == .max ? left : left - 1
            return true
        }
        guard fails else { return }
        if failureCodes.withLock({ $0[operation] }) == .storageUnavailable {
            throw StoreError(.storageUnavailable, "could not \(operation): the disk is full (test)")
        }
        throw StoreError(.corrupt, "could not \(operation): the job database is damaged (test)")
    }

    public func prepare() async throws { try await base.prepare() }
    public func enqueue(_ job: Job, limits: QueueLimits) async throws -> EnqueueResult {
        try check(.enqueue)
        return try await base.enqueue(job, limits: limits)
    }
    public func job(_ id: JobID) async throws -> Job? { try await base.job(id) }
    public func enqueueArray(_ tasks: [Job], limits: QueueLimits) async throws -> [Job] {
        try check(.enqueue)
        return try await base.enqueueArray(tasks, limits: limits)
    }
    public func arraySummary(_ id: String) async throws -> ArraySummary? { try await base.arraySummary(id) }
    public func requestFingerprint(owner: String?, key: String) async throws -> String? { try await base.requestFingerprint(owner: owner, key: key) }
    public func arrayTasks(_ id: String, after index: Int64?, limit: Int) async throws -> [Job] {
        try await base.arrayTasks(id, after: index, limit: limit)
    }
    public func arrays(_ query: ArrayQuery) async throws -> ArrayPage { try await base.arrays(query) }
    public func jobs(_ query: JobQuery) async throws -> JobPage { try await base.jobs(query) }
    public func queuedCount() async throws -> Int {
        try await pass(.queuedCount)
        return try await base.queuedCount()
    }
    public func queuedCount(owner: String) async throws -> Int {
        try check(.queuedCount)
        return try await base.queuedCount(owner: owner)
    }
    public func claimNext(for slot: SlotID, excluding: Set<String>, now: Timestamp) async throws -> Job? {
        try await pass(.claim)
        return await answered(.claim, try await base.claimNext(for: slot, excluding: excluding, now: now))
    }
    public func finish(_ id: JobID, attempt: Int, outcome: JobOutcome, result: JSONValue?, now: Timestamp,
                       claimNextFor slot: SlotID?, excluding: Set<String>) async throws -> FinishResult {
        try await pass(.finish)
        return try await base.finish(id, attempt: attempt, outcome: outcome, result: result, now: now, claimNextFor: slot, excluding: excluding)
    }
    /// A base store that is not local answers `claimInStore`: the scheduler then claims as it
    /// does with a shared store.
    public func peekNext(for slot: SlotID, excluding types: Set<String>, skipping: Set<JobID>, now: Timestamp) async throws -> PeekedJob {
        try await pass(.lookUp)
        guard let local = base as? any LocalJobStore else { return .claimInStore }
        return try await local.peekNext(for: slot, excluding: types, skipping: skipping, now: now)
    }
    public func queuedCount(priorityAtLeast priority: Int, dueBy: Timestamp) async throws -> Int {
        try check(.queuedCount)
        return try await base.queuedCount(priorityAtLeast: priority, dueBy: dueBy)
    }
    public func queuedAhead(ofNew job: Job, dueBy: Timestamp) async throws -> Int {
        try check(.queuedCount)
        return try await base.queuedAhead(ofNew: job, dueBy: dueBy)
    }
    public func failFastArraysLeftOpen() async throws -> [String] { try await base.failFastArraysLeftOpen() }
    public func expireDeadlines(now: Timestamp) async throws -> [Job] {
        try await pass(.timers)
        return try await base.expireDeadlines(now: now)
    }
    public func nextTimer(after now: Timestamp) async throws -> Timestamp? { try await base.nextTimer(after: now) }
    public func deleteEnded(before cutoff: Timestamp, limit: Int) async throws -> [JobID] {
        try await pass(.retention)
        return try await base.deleteEnded(before: cutoff, limit: limit)
    }
    public func delete(_ id: JobID) async throws -> DeleteResult { try await base.delete(id) }
    public func deleteArray(_ id: String) async throws -> ArrayDeleteResult { try await base.deleteArray(id) }
    public func claimNext(for slot: SlotID, excluding types: Set<String>, skipping: Set<JobID>, now: Timestamp) async throws -> Job? {
        try await pass(.claim)
        guard let local = base as? any LocalJobStore else {
            return await answered(.claim, try await base.claimNext(for: slot, excluding: types, now: now))
        }
        return await answered(.claim, try await local.claimNext(for: slot, excluding: types, skipping: skipping, now: now))
    }
    public func commit(claimed: Job?, finished: FinishedAttempt?, started: Job?) async throws -> HandOverCommit {
        try await pass(finished == nil ? .claim : .finish)
        if let local = base as? any LocalJobStore { return try await local.commit(claimed: claimed, finished: finished, started: started) }
        if let finished {
            _ = try await base.finish(finished.job, attempt: finished.attempt, outcome: finished.outcome, result: finished.result,
                                      now: finished.now, claimNextFor: nil, excluding: [])
        }
        return HandOverCommit(claimed: false, started: false)
    }
    public func cancel(_ id: JobID, by actor: String?, now: Timestamp) async throws -> CancelResult { try await base.cancel(id, by: actor, now: now) }
    public func reportProgress(_ id: JobID, attempt: Int, progress: JobProgress) async throws {
        try await base.reportProgress(id, attempt: attempt, progress: progress)
    }
    public func recoverInterrupted(now: Timestamp) async throws -> [Job] { try await base.recoverInterrupted(now: now) }
    public func watch(_ id: JobID) -> JobWatch { base.watch(id) }
    public func events(after: Int64, job: JobID?, owner: String?, limit: Int) async throws -> [JobEvent] {
        try check(.readEvents)
        return try await base.events(after: after, job: job, owner: owner, limit: limit)
    }
    public func appendEvent(_ kind: JobEvent.Kind, job: JobID, attempt: Int?, data: JSONValue, now: Timestamp) async throws {
        try check(.appendEvent)
        try await base.appendEvent(kind, job: job, attempt: attempt, data: data, now: now)
    }
    public var eventNotifier: EventNotifier { base.eventNotifier }
}
