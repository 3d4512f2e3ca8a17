import SpoolCore
import SpoolStore

/// Decides which events become deliveries — a pure value, fed events in log order.
///
/// - `started`: a state event to `running` (not the one that flags a running job to cancel).
/// - `completed`: a state event to `succeeded`, `failed` or `canceled`.
/// - `progress`: progress events, at most one per job per `progressInterval` (by event
///   time). A report inside the interval is held back, replaced by any later one, and sent
///   when the interval has passed (`flush`) or just before the job's completion, so the last
///   progress a receiver sees is the last the job reported. Held reports live in memory
///   only: a restart may drop one intermediate progress delivery, never a start or completion.
public struct WebhookPlanner: Sendable {
    public var progressInterval: Double
    private var lastProgress: [JobID: Timestamp] = [:]
    private var held: [JobID: WebhookDelivery.Draft] = [:]

    public init(progressInterval: Double = 2) {
        self.progressInterval = progressInterval
    }

    /// The webhook event an event log entry stands for, if any.
    public static func category(of event: JobEvent) -> WebhookEvent? {
        switch event.kind {
        case .progress:
            return .progress
        case .state:
            guard let state = event.data["state"]?.stringValue.flatMap(JobState.init(rawValue:)) else { return nil }
            if state.isTerminal { return .completed }
            if state == .running && event.data["cancel_requested"] != .bool(true) { return .started }
            return nil
        case .log, .outputs:
            return nil
        }
    }

    /// The deliveries for `event`, given its job as stored now (nil if it is gone).
    public mutating func plan(_ event: JobEvent, job: Job?) -> [WebhookDelivery.Draft] {
        guard let category = Self.category(of: event) else { return [] }
        guard let job, let url = job.webhookURL else {
            if category == .completed { forget(event.job) }
            return []
        }
        let subscribed = job.webhookEvents.contains(category.rawValue)
        let draft = WebhookDelivery.Draft(job: job.id, event: category, eventID: event.id, url: url,
                                          payload: Self.payload(category, event: event, job: job), createdAt: event.at)
        switch category {
        case .started:
            return subscribed ? [draft] : []
        case .progress:
            guard subscribed else { return [] }
            if let last = lastProgress[job.id], event.at < last.adding(seconds: progressInterval) {
                held[job.id] = draft
                return []
            }
            lastProgress[job.id] = event.at
            held[job.id] = nil
            return [draft]
        case .completed:
            var drafts = held[job.id].map { [$0] } ?? []
            forget(job.id)
            if subscribed { drafts.append(draft) }
            return drafts
        }
    }

    /// Held progress whose interval has passed by `now`.
    public mutating func flush(now: Timestamp) -> [WebhookDelivery.Draft] {
        let due = held.filter { job, _ in lastProgress[job].map { $0.adding(seconds: progressInterval) <= now } ?? true }
        for job in due.keys {
            held[job] = nil
            lastProgress[job] = now
        }
        return due.values.sorted { $0.eventID < $1.eventID }
    }

    /// When the earliest held progress may go out.
    public var nextFlush: Timestamp? {
        held.keys.compactMap { lastProgress[$0]?.adding(seconds: progressInterval) }.min()
    }

    private mutating func forget(_ job: JobID) {
        held[job] = nil
        lastProgress[job] = nil
    }

    /// The body, less its `delivery` id: the job as it was at the event.
    static func payload(_ category: WebhookEvent, event: JobEvent, job: Job) -> JSONValue {
        func time(_ value: Timestamp?) -> JSONValue { value.map { .string($0.description) } ?? .null }
        var fields: [String: JSONValue] = [
            "id": .string(job.id.rawValue), "type": .string(job.type), "state": .string(job.state.rawValue),
            "reason": job.reason.map { .string($0.rawValue) } ?? .null,
            "attempts": event.data["attempts"] ?? .int(Int64(job.attempts)),
            "progress": job.progress.map { .object(["fraction": .double($0.fraction), "message": $0.message.map(JSONValue.string) ?? .null]) } ?? .null,
            "result": job.result ?? .null, "error": job.error.map(JSONValue.string) ?? .null,
            "exit_code": job.exitCode.map { .int(Int64($0)) } ?? .null,
            "created_at": time(job.createdAt), "started_at": time(job.startedAt), "finished_at": time(job.finishedAt),
            // Whose job: the deliverer signs with this tenant's secret and shares lanes by it.
            "owner": job.owner.map(JSONValue.string) ?? .null,
        ]
        switch category {
        case .started, .progress:
            // The job may have moved on since; describe it as it was at the event.
            fields["state"] = .string(JobState.running.rawValue)
            for key in ["reason", "result", "error", "exit_code", "finished_at"] { fields[key] = .null }
            if category == .started {
                fields["progress"] = .null
                fields["started_at"] = .string(event.at.description)
            } else {
                fields["progress"] = .object(["fraction": event.data["fraction"] ?? .null, "message": event.data["message"] ?? .null])
            }
        case .completed:
            for key in ["state", "reason", "error"] { fields[key] = event.data[key] ?? fields[key] }
        }
        return .object(["event": .string(category.wireName), "job": .object(fields), "at": .string(event.at.description)])
    }
}
