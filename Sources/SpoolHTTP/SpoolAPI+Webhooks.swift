import Hummingbird
import SpoolCore
import SpoolStore

extension SpoolAPI {
    /// `GET /v1/jobs/{id}/webhooks`: the job's deliveries and their attempts, oldest first.
    @Sendable func webhooks(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let id = try jobID(context)
        _ = try await find(id, for: context.principal)
        let records = try await (store as? any WebhookOutbox)?.webhookDeliveries(of: id) ?? []
        return json(.object(["deliveries": .array(records.map(Self.deliveryJSON))]))
    }

    static func deliveryJSON(_ record: WebhookDeliveryRecord) -> JSONValue {
        let delivery = record.delivery
        return .object([
            "id": .int(delivery.id.rawValue), "event": .string(delivery.draft.event.wireName), "url": .string(delivery.draft.url),
            "state": .string(delivery.state.rawValue), "created_at": .string(delivery.draft.createdAt.description),
            "next_attempt_at": delivery.nextAttemptAt.map { .string($0.description) } ?? .null,
            "attempts": .array(record.attempts.map { attempt in
                var fields: [String: JSONValue] = [
                    "at": .string(attempt.at.description), "duration_ms": .double(attempt.durationMilliseconds),
                ]
                if let status = attempt.status { fields["status"] = .int(Int64(status)) }
                if let error = attempt.error { fields["error"] = .string(error) }
                return .object(fields)
            }),
        ])
    }
}
