import SpoolCore

/// A `JobStore` that keeps jobs in memory: for unit tests and throwaway runs. Same semantics
/// as the durable drivers (the store tests run against both), none of the durability.
public actor MemoryJobStore: JobStore {
    private var jobsByID: [JobID: Job] = [:]
    private var idsByKey: [String: JobID] = [:]
    private var nextSequence: Int64 = 1
    private let notifier = JobChangeNotifier()
    public nonisolated let eventNotifier = EventNotifier()
    private var eventLog: [JobEvent] = []
    private static let eventLimit = 100_000

    public init() {}

    public func prepare() async throws {}

    public func enqueue(_ job: Job) async throws -> EnqueueResult {
        if let key = job.idempotencyKey, let existingID = idsByKey[key], let existing = jobsByID[existingID] {
            guard existing.fingerprint == job.fingerprint else {
                throw StoreError(.idempotencyConflict, "the Idempotency-Key was already used for a different request", existing: existing)
            }
            return .existing(withPosition(existing))
        }
        guard jobsByID[job.id] == nil else { throw StoreError(.other, "a job with id \(job.id) already exists") }
        var stored = job
        stored.state = .queued
        stored.attempts = 0
        stored.sequence = nextSequence
        nextSequence += 1
        jobsByID[stored.id] = stored
        if let key = stored.idempotencyKey { idsByKey[key] = stored.id }
        record(.state, stored, at: stored.createdAt)
        return .created(withPosition(stored))
    }

    public func job(_ id: JobID) async throws -> Job? {
        jobsByID[id].map(withPosition)
    }

    public func jobs(_ query: JobQuery) async throws -> JobPage {
        let matching = jobsByID.values
            .filter { job in
                (query.state.map { job.state == $0 } ?? true) && (query.type.map { job.type == $0 } ?? true)
                    && (query.before.map { job.sequence < $0 } ?? true)
            }
            .sorted { $0.sequence > $1.sequence }
        let page = Array(matching.prefix(query.limit))
        return JobPage(jobs: page, nextCursor: matching.count > query.limit ? page.last?.sequence : nil)
    }

    public func queuedCount() async throws -> Int {
        jobsByID.values.count { $0.state == .queued }
    }

    public func claimNext(for slot: SlotID, excluding: Set<String>, now: Timestamp) async throws -> Job? {
        guard var next = queue.first(where: { !excluding.contains($0.type) }) else { return nil }
        next.state = .running
        next.attempts += 1
        next.slot = slot
        next.startedAt = now
        next.finishedAt = nil
        next.progress = nil
        next.position = nil
        jobsByID[next.id] = next
        notifier.publish(next.id)
        record(.state, next, at: now)
        return next
    }

    public func finish(_ id: JobID, attempt: Int, outcome: JobOutcome, result: JSONValue?, now: Timestamp,
                       claimNextFor slot: SlotID?, excluding: Set<String>) async throws -> Job? {
        if var job = jobsByID[id], job.state == .running, job.attempts == attempt {
            job.record(outcome, at: now, result: result)
            jobsByID[id] = job
            notifier.publish(id)
            record(.state, job, at: now)
        }
        guard let slot else { return nil }
        return try await claimNext(for: slot, excluding: excluding, now: now)
    }

    public func cancel(_ id: JobID, now: Timestamp) async throws -> CancelResult {
        guard var job = jobsByID[id] else { return .notFound }
        switch job.state {
        case .queued:
            job.cancelWhileQueued(at: now)
            jobsByID[id] = job
            notifier.publish(id)
            record(.state, job, at: now)
            return .canceled(job)
        case .running:
            job.cancelRequested = true
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
        append(JobEvent(id: 0, job: id, kind: .progress, at: WallClock.now(), data: JobEvent.progressData(of: id, progress)))
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

    public func events(after: Int64, job: JobID?, limit: Int) async throws -> [JobEvent] {
        let start = eventLog.firstIndex { $0.id > after } ?? eventLog.endIndex
        return Array(eventLog[start...].lazy.filter { job == nil || $0.job == job }.prefix(limit))
    }

    public func appendEvent(_ kind: JobEvent.Kind, job: JobID, data: JSONValue, now: Timestamp) async throws {
        append(JobEvent(id: 0, job: job, kind: kind, at: now, data: data))
    }

    private func record(_ kind: JobEvent.Kind, _ job: Job, at now: Timestamp) {
        append(JobEvent(id: 0, job: job.id, kind: kind, at: now, data: JobEvent.stateData(of: job)))
    }

    private func append(_ event: JobEvent) {
        var event = event
        event.id = (eventLog.last?.id ?? 0) + 1
        eventLog.append(event)
        if eventLog.count > Self.eventLimit { eventLog.removeFirst(eventLog.count - Self.eventLimit) }
        eventNotifier.published([event])
    }

    private var queue: [Job] {
        jobsByID.values.filter { $0.state == .queued }
            .sorted { QueueOrder.precedes(($0.priority, $0.sequence), ($1.priority, $1.sequence)) }
    }

    private func withPosition(_ job: Job) -> Job {
        var job = job
        job.position = job.state == .queued
            ? 1 + jobsByID.values.count { $0.state == .queued && QueueOrder.precedes(($0.priority, $0.sequence), (job.priority, job.sequence)) }
            : nil
        return job
    }
}

public enum RecoveryPolicy {
    public static let interruptedMessage = Job.interruptedMessage
}
