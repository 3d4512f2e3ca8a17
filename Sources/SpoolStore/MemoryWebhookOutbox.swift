import SpoolCore

/// A `WebhookOutbox` in memory, for unit tests and throwaway runs next to `MemoryJobStore`.
/// A separate actor rather than an extension of `MemoryJobStore`, because an extension cannot
/// add the storage it needs.
public actor MemoryWebhookOutbox: WebhookOutbox {
    private var cursor: Int64 = 0
    private var deliveries: [WebhookDeliveryID: WebhookDelivery] = [:]
    private var attempts: [WebhookDeliveryID: [WebhookAttempt]] = [:]
    private var stored: Set<String> = []
    private var nextID: Int64 = 1

    public init() {}

    public func webhookCursor() async throws -> Int64 { cursor }

    @discardableResult
    public func addDeliveries(_ drafts: [WebhookDelivery.Draft], cursor: Int64) async throws -> [WebhookDelivery] {
        var added: [WebhookDelivery] = []
        for draft in drafts where stored.insert("\(draft.eventID)/\(draft.event.rawValue)").inserted {
            let delivery = WebhookDelivery(id: WebhookDeliveryID(nextID), draft: draft, state: .pending, attempts: 0,
                                           nextAttemptAt: draft.createdAt)
            nextID += 1
            deliveries[delivery.id] = delivery
            added.append(delivery)
        }
        self.cursor = max(self.cursor, cursor)
        return added
    }

    public func dueDeliveries(at now: Timestamp, limit: Int) async throws -> [WebhookDelivery] {
        Array(pending.filter { $0.nextAttemptAt! <= now }.prefix(limit))
    }

    public func nextDeliveryDue() async throws -> Timestamp? { pending.first?.nextAttemptAt }

    public func recordAttempt(_ attempt: WebhookAttempt, of id: WebhookDeliveryID, then next: WebhookDelivery.Next) async throws {
        guard var delivery = deliveries[id], delivery.state == .pending, delivery.attempts == attempt.number - 1 else { return }
        delivery.attempts = attempt.number
        switch next {
        case .delivered: delivery.state = .delivered; delivery.nextAttemptAt = nil
        case .failed: delivery.state = .failed; delivery.nextAttemptAt = nil
        case .retry(let at): delivery.nextAttemptAt = at
        }
        deliveries[id] = delivery
        attempts[id, default: []].append(attempt)
    }

    public func webhookDeliveries(of job: JobID) async throws -> [WebhookDeliveryRecord] {
        deliveries.values.filter { $0.draft.job == job }.sorted { $0.id < $1.id }
            .map { WebhookDeliveryRecord(delivery: $0, attempts: attempts[$0.id] ?? []) }
    }

    private var pending: [WebhookDelivery] {
        deliveries.values.filter { $0.state == .pending }
            .sorted { ($0.nextAttemptAt!, $0.id) < ($1.nextAttemptAt!, $1.id) }
    }
}
