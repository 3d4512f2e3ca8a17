import SpoolCore

/// A store capability: the durable outbox behind webhooks. The deliverer turns events from
/// the event log into delivery rows, and moves its cursor past those events in the same
/// transaction — so a crash between the two neither loses nor repeats a delivery. Each
/// delivery then keeps its attempts (time, HTTP status or error, duration) and, while it is
/// pending, when it is due next.
public protocol WebhookOutbox: Sendable {
    /// The id of the last event already turned into deliveries.
    func webhookCursor() async throws -> Int64

    /// Stores `drafts` and moves the cursor to `cursor` (never backwards) in one transaction.
    /// A draft for an (event, kind) pair already stored is skipped. Returns what was stored.
    @discardableResult
    func addDeliveries(_ drafts: [WebhookDelivery.Draft], cursor: Int64) async throws -> [WebhookDelivery]

    /// Pending deliveries due at `now`, the earliest first.
    func dueDeliveries(at now: Timestamp, limit: Int) async throws -> [WebhookDelivery]

    /// When the earliest pending delivery is due; nil when none is pending.
    func nextDeliveryDue() async throws -> Timestamp?

    /// Records attempt number `attempt.number` of a pending delivery and its consequence.
    /// Fenced: a write for any other attempt number, or for a delivery no longer pending,
    /// changes nothing.
    func recordAttempt(_ attempt: WebhookAttempt, of delivery: WebhookDeliveryID, then next: WebhookDelivery.Next) async throws

    /// A job's deliveries, oldest first, each with its attempts.
    func webhookDeliveries(of job: JobID) async throws -> [WebhookDeliveryRecord]
}

public struct WebhookDeliveryID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let rawValue: Int64
    public init(_ rawValue: Int64) { self.rawValue = rawValue }
    public var description: String { String(rawValue) }
    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// What a webhook subscribes to (`webhook_events`).
public enum WebhookEvent: String, Sendable, CaseIterable {
    /// The job started running.
    case started
    /// The job reported progress (throttled).
    case progress
    /// The job reached a terminal state: succeeded, failed or canceled.
    case completed

    /// The `event` field of the POSTed body.
    public var wireName: String { "job." + rawValue }
}

public enum WebhookDeliveryState: String, Sendable, CaseIterable {
    /// Not yet acknowledged; due again at `nextAttemptAt`.
    case pending
    /// The receiver answered 2xx.
    case delivered
    /// Every attempt failed; no more will be made.
    case failed
}

public struct WebhookDelivery: Sendable, Equatable {
    /// A delivery before it is stored.
    public struct Draft: Sendable, Equatable {
        public var job: JobID
        public var event: WebhookEvent
        /// The event log entry it comes from.
        public var eventID: Int64
        public var url: String
        /// The body without its `delivery` id (added when it is sent).
        public var payload: JSONValue
        public var createdAt: Timestamp

        public init(job: JobID, event: WebhookEvent, eventID: Int64, url: String, payload: JSONValue, createdAt: Timestamp) {
            self.job = job
            self.event = event
            self.eventID = eventID
            self.url = url
            self.payload = payload
            self.createdAt = createdAt
        }
    }

    /// What follows an attempt.
    public enum Next: Sendable, Equatable {
        case delivered
        case retry(at: Timestamp)
        case failed
    }

    public var id: WebhookDeliveryID
    public var draft: Draft
    public var state: WebhookDeliveryState
    /// Attempts made so far.
    public var attempts: Int
    /// Nil once delivered or failed.
    public var nextAttemptAt: Timestamp?

    public init(id: WebhookDeliveryID, draft: Draft, state: WebhookDeliveryState, attempts: Int, nextAttemptAt: Timestamp?) {
        self.id = id
        self.draft = draft
        self.state = state
        self.attempts = attempts
        self.nextAttemptAt = nextAttemptAt
    }
}

public struct WebhookAttempt: Sendable, Equatable {
    /// 1 for the first attempt.
    public var number: Int
    public var at: Timestamp
    /// The receiver's HTTP status, when it answered.
    public var status: Int?
    /// Why there was no answer (connection refused, timeout), when it did not.
    public var error: String?
    public var durationMilliseconds: Double

    public init(number: Int, at: Timestamp, status: Int?, error: String?, durationMilliseconds: Double) {
        self.number = number
        self.at = at
        self.status = status
        self.error = error
        self.durationMilliseconds = durationMilliseconds
    }
}

public struct WebhookDeliveryRecord: Sendable, Equatable {
    public var delivery: WebhookDelivery
    public var attempts: [WebhookAttempt]
    public init(delivery: WebhookDelivery, attempts: [WebhookAttempt]) {
        self.delivery = delivery
        self.attempts = attempts
    }
}
