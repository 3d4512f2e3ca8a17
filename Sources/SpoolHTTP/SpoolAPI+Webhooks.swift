import Hummingbird
import SpoolCore
import SpoolStore
import SpoolWebhooks

extension SpoolAPI {
    /// `GET /v1/webhook-secret`: the secret that signs the caller's jobs' deliveries — each
    /// tenant has its own, derived from `webhook_secret` (an administrator may ask for a
    /// tenant's with `?owner=NAME`; a tenant only for its own). Without tokens, `webhook_secret`
    /// itself, which signs jobs that have no owner.
    @Sendable func webhookSecret(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let principal = context.principal
        var owner = principal.name
        if request.uri.queryParameters.get("owner") != nil { owner = try listingOwner(request, principal) }
        guard let serverSecret = webhookServerSecret else {
            throw APIError(status: .notFound, code: "no-webhook-secret",
                           detail: "this server does not sign webhook deliveries (set webhook_secret in its configuration)")
        }
        return json(.object(["owner": owner.map(JSONValue.string) ?? .null,
                             "secret": .string(WebhookSignature.secret(for: owner, serverSecret: serverSecret, storeKey: sessions.key ?? []))]),
                    headers: [.cacheControl: "no-store"])
    }

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
