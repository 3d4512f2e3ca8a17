import Logging
import SpoolCore
import SpoolStore
import SpoolTesting
import SpoolWebhooks
import Synchronization
import Testing

/// A resolver that answers as a test's DNS zone would: each lookup gets the next answer of its
/// script, the last one again once the script is done.
final class ScriptedResolver: WebhookResolver {
    let script: [Result<[IPAddress], WebhookResolutionFailure>]
    private let lookups = Mutex(0)

    init(_ script: [Result<[IPAddress], WebhookResolutionFailure>]) { self.script = script }

    /// How many lookups were made.
    var count: Int { lookups.withLock { $0 } }

    func addresses(of host: String) async throws(WebhookResolutionFailure) -> [IPAddress] {
        let number = lookups.withLock { $0 += 1; return $0 }
        return try script[min(number, script.count) - 1].get()
    }
}

/// Where webhooks may go, and where a delivery connects, with the resolver's answers in the
/// test's hands.
struct WebhookGuardTests {
    static let servfail = WebhookResolutionFailure("Temporary failure in name resolution")

    /// The other ways an IPv4 address rides in IPv6 are refused as the address itself is: 6to4
    /// by its IPv4 address, Teredo and local-use NAT64 whole (found by attacking the build: all
    /// three were accepted, while IPv4-mapped and 64:ff9b::/96 were refused).
    @Test(arguments: ["http://[2002:7f00:1::]/",                         // 6to4 of 127.0.0.1
                      "http://[2002:a9fe:a9fe::1]:8080/",                // 6to4 of 169.254.169.254
                      "http://[2002:c0a8:101::]/",                       // 6to4 of 192.168.1.1
                      "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",  // Teredo
                      "http://[64:ff9b:1::7f00:1]/",                     // local-use NAT64
                      "http://[64:ff9b:1:abcd::5db8:d822]/"])
    func sixToFourOfANonPublicAddressTeredoAndLocalUseNAT64AreRefused(_ url: String) async {
        await #expect(throws: WebhookTarget.Refusal.self) { try await WebhookGuard(allowPrivate: false).check(url) }
    }

    @Test func sixToFourOfAPublicAddressAndAnUpperCaseSchemeAreAccepted() async throws {
        try await WebhookGuard(allowPrivate: false).check("http://[2002:5db8:d822::1]/")   // 93.184.216.34
        try await WebhookGuard(allowPrivate: false).check("HTTPS://[2606:4700::1111]/x")
        #expect(try WebhookTarget.parse("HTTP://203.0.113.7/hook") == ("203.0.113.7", 80))
    }

    /// At submit the submitter is there to see why: a lookup that fails refuses the URL.
    @Test func aHostThatDoesNotResolveIsRefusedAtSubmit() async {
        let target = WebhookGuard(allowPrivate: false, resolver: ScriptedResolver([.failure(Self.servfail)]))
        await #expect(throws: WebhookTarget.Refusal.self) { try await target.check("https://hooks.example.com/spool") }
    }

    /// A deliverer (real clock, no back-off to speak of unless `configure`d) with `drafts` in its
    /// outbox; `body` gets the outbox while it runs.
    static func deliver(_ drafts: [WebhookDelivery.Draft], resolver: ScriptedResolver, allowPrivate: Bool,
                        configure: (inout WebhookDeliverer.Configuration) -> Void = { _ in },
                        _ body: (WebhookRetryTests.RecordingOutbox) async throws -> Void) async throws {
        var configuration = WebhookDeliverer.Configuration()
        configuration.target = WebhookGuard(allowPrivate: allowPrivate, resolver: resolver)
        configuration.coalesce = .zero
        configuration.retry.baseSeconds = 0.05
        configuration.draw = { 1 }
        configure(&configuration)
        let outbox = WebhookRetryTests.RecordingOutbox()
        let deliverer = WebhookDeliverer(store: MemoryJobStore(), outbox: outbox, configuration: configuration,
                                         logger: Logger(label: "test"))
        _ = try await outbox.addDeliveries(drafts, cursor: Int64(drafts.count))
        let running = Task { try await deliverer.run() }
        defer { running.cancel() }
        try await body(outbox)
    }

    /// A lookup that fails (EAI_AGAIN: SERVFAIL, a timeout) is a failed attempt, recorded with
    /// its error and tried again on the back-off, not a refusal (found by attacking the build: a
    /// DNS hiccup of a second as a job ended gave its delivery up for good).
    @Test func aDeliveryWhoseHostDoesNotResolveIsTriedAgainLater() async throws {
        let draft = WebhookRetryTests.draft("https://hooks.example.com/spool", 1)
        try await Self.deliver([draft], resolver: ScriptedResolver([.failure(Self.servfail)]), allowPrivate: false,
                               configure: { $0.retry.baseSeconds = 3600 }) { outbox in
            let attempt = try await outbox.recorded.next("the first attempt")
            #expect(attempt.status == nil)
            #expect(attempt.error == "the webhook's host did not resolve: Temporary failure in name resolution")
            let delivery = try #require(try await outbox.webhookDeliveries(of: draft.job).first).delivery
            #expect(delivery.state == .pending, "a lookup that fails may pass: the delivery is tried again")
            #expect(delivery.nextAttemptAt != nil)
        }
    }

    /// A name that resolves to an address it may not go to is final: no more attempts.
    @Test func aDeliveryWhoseHostResolvesToLoopbackIsRefusedForGood() async throws {
        let draft = WebhookRetryTests.draft("https://hooks.example.com/spool", 1)
        try await Self.deliver([draft], resolver: ScriptedResolver([.success([.v4([127, 0, 0, 1])])]), allowPrivate: false) { outbox in
            let attempt = try await outbox.recorded.next("the refusal")
            #expect(attempt.error?.hasPrefix("refused: ") == true, "\(attempt.error ?? "no error")")
            #expect(try await outbox.webhookDeliveries(of: draft.job).first?.delivery.state == .failed)
        }
    }
}
