import SpoolCore
import SpoolStore
import SpoolWebhooks
import Testing

struct WebhookSignatureTests {
    @Test func signatureIsHexHMACSHA256OfTimestampDotBody() {
        // Computed independently: hmac.new(secret, b"1700000000." + body, hashlib.sha256).hexdigest()
        let signature = WebhookSignature.sign(secret: "whsec_0123456789abcdef", timestamp: 1_700_000_000,
                                              body: Array(#"{"event":"job.completed"}"#.utf8))
        #expect(signature == "v1=c54a397be3253430adf427f21d09e6e533abc54ba7447151e46f0a5f3984d2ae")
    }

    /// Each tenant's jobs are signed with a secret of its own, derived from the server's:
    /// one tenant's secret neither is another's nor gives the server's away.
    @Test func eachTenantHasASecretOfItsOwn() {
        let server = "0123456789abcdef", key = (0..<32).map(UInt8.init)
        // Computed independently: hmac.new(b"0123456789abcdef" + bytes(range(32)), b"spool-webhook-secret:alice", hashlib.sha256).hexdigest()
        #expect(WebhookSignature.secret(for: "alice", serverSecret: server, storeKey: key) == "a449eed342cd985ad53f7220ce5e652d780f3e551fed3a0874913b751fc5b555")
        #expect(WebhookSignature.secret(for: "bob", serverSecret: server, storeKey: key) != WebhookSignature.secret(for: "alice", serverSecret: server, storeKey: key))
        // Not computable from webhook_secret alone, which tenants of an older server hold (found in review).
        #expect(WebhookSignature.secret(for: "alice", serverSecret: server, storeKey: key)
                != WebhookSignature.secret(for: "alice", serverSecret: server, storeKey: []))
        #expect(WebhookSignature.secret(for: nil, serverSecret: server, storeKey: key) == server, "jobs without an owner: the server's own")
    }

    @Test func headersCarryIdTimestampAndSignatureOnlyWithASecret() {
        let draft = WebhookDelivery.Draft(job: JobID.random(), event: .completed, eventID: 1, url: "http://x",
                                          payload: .object(["event": "job.completed"]), createdAt: Timestamp(microseconds: 0))
        let delivery = WebhookDelivery(id: WebhookDeliveryID(7), draft: draft, state: .pending, attempts: 0, nextAttemptAt: nil)
        let body = WebhookDeliverer.body(of: delivery)
        #expect(body == #"{"delivery":7,"event":"job.completed"}"#)
        let signed = Dictionary(uniqueKeysWithValues: WebhookDeliverer.headers(for: delivery, body: Array(body.utf8), timestamp: 42,
                                                                               secret: "0123456789abcdef"))
        #expect(signed["Spool-Webhook-Id"] == "7")
        #expect(signed["Spool-Webhook-Timestamp"] == "42")
        #expect(signed["Spool-Webhook-Signature"] == WebhookSignature.sign(secret: "0123456789abcdef", timestamp: 42, body: Array(body.utf8)))
        let unsigned = WebhookDeliverer.headers(for: delivery, body: Array(body.utf8), timestamp: 42, secret: nil)
        #expect(!unsigned.contains { $0.0 == "Spool-Webhook-Signature" })
    }
}

struct WebhookRetryPolicyTests {
    @Test func backoffDoublesFromTheBaseUpToTheCap() {
        let policy = WebhookRetryPolicy()
        #expect((1...11).map { policy.ceiling(afterAttempt: $0) } == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600])
        #expect(policy.ceiling(afterAttempt: 1000) == 600)
    }

    @Test func fullJitterStaysWithinZeroAndTheCeiling() {
        let policy = WebhookRetryPolicy()
        for attempt in 1...11 {
            for unit in [0, 0.25, 0.5, 0.999_999] {
                let delay = policy.delay(afterAttempt: attempt, unit: unit)
                #expect(delay >= 0 && delay <= policy.ceiling(afterAttempt: attempt))
            }
            let random = policy.delay(afterAttempt: attempt, unit: Double.random(in: 0..<1))
            #expect(random >= 0 && random <= policy.ceiling(afterAttempt: attempt))
        }
        #expect(policy.delay(afterAttempt: 3, unit: 0.5) == 2)
    }

    @Test func twelveFailedAttemptsFailTheDeliveryAndA2xxDeliversIt() {
        let policy = WebhookRetryPolicy()
        let now = Timestamp(microseconds: 1_000_000)
        #expect(policy.next(afterAttempt: 1, succeeded: true, now: now, unit: 0.5) == .delivered)
        #expect(policy.next(afterAttempt: 1, succeeded: false, now: now, unit: 0.5) == .retry(at: now.adding(seconds: 0.5)))
        #expect(policy.next(afterAttempt: 11, succeeded: false, now: now, unit: 1) == .retry(at: now.adding(seconds: 600)))
        #expect(policy.next(afterAttempt: 12, succeeded: false, now: now, unit: 0.5) == .failed)
    }

    @Test func aSmallerBaseShortensEveryWait() {
        var policy = WebhookRetryPolicy()
        policy.baseSeconds = 0.1
        #expect(policy.ceiling(afterAttempt: 1) == 0.1)
        #expect(abs(policy.ceiling(afterAttempt: 4) - 0.8) < 1e-9)
    }
}
