import Dispatch
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import ServiceLifecycle
import SpoolCore
import SpoolStore
import SpoolTestSupport
import SpoolTesting
@testable import SpoolWebhooks
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

    /// The system resolver waits `deadline` at most for an answer, lets a slow name hold one
    /// thread only (lookups of it wait for the one under way), and fails at once when every
    /// thread waits on other names (found in review: a tenant's DNS that never answered held
    /// every lookup thread, and every other tenant's deliveries waited behind it). Real threads;
    /// the DNS answer is the test's: a lookup of `slow…` blocks until released.
    @Test func aSlowNameHoldsOneLookupThreadAndEachWaitHasADeadline() async throws {
        let release = DispatchSemaphore(value: 0)
        let calls = Mutex([String]())
        let resolver = SystemResolver(deadline: .seconds(1), threads: 2) { host in
            calls.withLock { $0.append(host) }
            if host.hasPrefix("slow") { release.wait() }
            return .success([.v4([93, 184, 216, 34])])
        }
        // Three deliveries to one slow name: one lookup, each wait ends at the deadline (the
        // answer comes only when the test releases it, at the end).
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<3 {
                group.addTask {
                    do { _ = try await resolver.addresses(of: "slow-a.example"); Issue.record("answered") } catch {
                        #expect("\(error)".contains("no DNS answer within"), "\(error)")
                    }
                }
            }
        }
        #expect(calls.withLock { $0 } == ["slow-a.example"])
        // A second slow name takes the other thread; a third name finds none free, and says so
        // without waiting for one (its lookup never runs).
        await #expect(throws: WebhookResolutionFailure.self) { _ = try await resolver.addresses(of: "slow-b.example") }
        await #expect { _ = try await resolver.addresses(of: "fast.example") } throws: { error in
            (error as? WebhookResolutionFailure)?.description.contains("every lookup thread (2) is waiting on another name") == true
        }
        #expect(!calls.withLock { $0 }.contains("fast.example"))
        // Once the slow answers come, names are looked up again.
        release.signal()
        release.signal()
        let answer = try await within(.seconds(60), "the slow lookups to end") {
            while true {
                if let answer = try? await resolver.addresses(of: "fast.example") { return answer }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        #expect(answer == [.v4([93, 184, 216, 34])])
    }

    /// The other ways an IPv4 address rides in IPv6 are refused as the address itself is: 6to4
    /// by its IPv4 address, Teredo and local-use NAT64 whole (found by attacking the build: all
    /// three were accepted, while IPv4-mapped and 64:ff9b::/96 were refused).
    @Test(arguments: ["http://[2002:7f00:1::]/",                         // 6to4 of 127.0.0.1
                      "http://[2002:a9fe:a9fe::1]:8080/",                // 6to4 of 169.254.169.254
                      "http://[2002:c0a8:101::]/",                       // 6to4 of 192.168.1.1
                      "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",  // Teredo
                      "http://[64:ff9b:1::7f00:1]/",                     // local-use NAT64
                      "http://[64:ff9b:1:abcd::5db8:d822]/",
                      "http://[::ffff:0:7f00:1]/",                       // IPv4-translated 127.0.0.1 (RFC 2765)
                      "http://[::ffff:0:a9fe:a9fe]/"])                   // IPv4-translated 169.254.169.254
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

    /// A receiver that says the Host header of each POST it gets, and counts them.
    final class Receiver: Sendable {
        let hosts: AsyncStream<String>
        private let arrived: AsyncStream<String>.Continuation
        let count = Atomic<Int>(0)

        init() { (hosts, arrived) = AsyncStream.makeStream(of: String.self) }

        /// Listens on `address`:`port` (0: any) for the length of `body`, which gets the port.
        /// (`application.test(.live)` always listens on localhost; these tests need other
        /// loopback addresses.)
        func listening<Value: Sendable>(on address: String, port: Int = 0, _ body: (Int) async throws -> Value) async throws -> Value {
            let router = Router()
            router.post("/hook") { request, _ -> HTTPResponse.Status in
                self.count.add(1, ordering: .relaxed)
                self.arrived.yield(request.head.authority ?? "")
                return .noContent
            }
            let (ports, bound) = AsyncStream.makeStream(of: Int.self)
            let application = Application(router: router, configuration: .init(address: .hostname(address, port: port)),
                                          onServerRunning: { bound.yield($0.localAddress?.port ?? 0) })
            let service = ServiceGroup(configuration: .init(services: [application], logger: Logger(label: "test")))
            return try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await service.run() }
                do {
                    let value = try await body(try await ports.next("a receiver to listen on \(address)"))
                    await service.triggerGracefulShutdown()
                    return value
                } catch {
                    await service.triggerGracefulShutdown()
                    throw error
                }
            }
        }
    }

    /// The delivery connects to the address the guard checked, not to what the HTTP client's own
    /// lookup would answer, and keeps the URL's host in its Host header (found by attacking the
    /// build: a name that answered a public address to the check and 127.0.0.1 to the client's
    /// lookup had the signed delivery POSTed to a loopback service). Here the checked address
    /// is 127.0.0.2; the name is "localhost", whose system lookup answers 127.0.0.1, where
    /// another receiver listens on the same port.
    @Test func aDeliveryConnectsToTheAddressItsCheckResolved() async throws {
        let checked = Receiver(), elsewhere = Receiver()
        try await checked.listening(on: "127.0.0.2") { port in
            try await elsewhere.listening(on: "127.0.0.1", port: port) { _ in
                let resolver = ScriptedResolver([.success([.v4([127, 0, 0, 2])])])
                let draft = WebhookRetryTests.draft("http://localhost:\(port)/hook", 1)
                try await Self.deliver([draft], resolver: resolver, allowPrivate: true) { outbox in
                    let attempt = try await outbox.recorded.next("the attempt", within: .seconds(20))
                    #expect(attempt.status == 204, "\(attempt.error ?? "")")
                    #expect(checked.count.load(ordering: .relaxed) == 1, "delivered to the checked address")
                    #expect(elsewhere.count.load(ordering: .relaxed) == 0, "not where a second lookup leads")
                    #expect(try await checked.hosts.next("the Host header", within: .seconds(20)) == "localhost:\(port)")
                    #expect(resolver.count == 1, "one lookup, the checked one")
                }
            }
        }
    }

    /// A receiver that refuses the connection (down, redeploying) fails the attempt at once,
    /// saying so (found by attacking the build: each attempt took the whole 10 s, holding a
    /// lane, and read "IOError: connection reset (error set): Connection refused) (errno: 111)").
    @Test func aRefusedConnectionFailsTheAttemptAtOnce() async throws {
        let port = unusedLoopbackPort()
        let draft = WebhookRetryTests.draft("http://localhost:\(port)/hook", 1)
        try await Self.deliver([draft], resolver: ScriptedResolver([.success([.v4([127, 0, 0, 1])])]), allowPrivate: true,
                               configure: { $0.requestTimeout = .seconds(10); $0.retry.baseSeconds = 3600 }) { outbox in
            let attempt = try await outbox.recorded.next("the attempt", within: .seconds(20))
            // The attempt's own time (its lane's), whatever a loaded machine added before it began.
            #expect(attempt.durationMilliseconds < 5_000, "the attempt took \(attempt.durationMilliseconds) ms")
            #expect(attempt.status == nil && attempt.error == "connection refused", "\(attempt.error ?? "no error")")
        }
    }

    /// Each retry goes to the host's next checked address (attempt n to the n-th, round), so one
    /// that does not answer does not hold the delivery up on every attempt; and a lookup that
    /// failed is followed by one that answers.
    @Test func aRetryGoesToTheHostsNextCheckedAddress() async throws {
        let receiver = Receiver()
        try await receiver.listening(on: "127.0.0.2") { port in
            // Attempt 1: no answer. Attempt 2: the second address, 127.0.0.3, where nothing
            // listens. Attempt 3: the first, 127.0.0.2.
            let resolver = ScriptedResolver([.failure(Self.servfail), .success([.v4([127, 0, 0, 2]), .v4([127, 0, 0, 3])])])
            let draft = WebhookRetryTests.draft("http://localhost:\(port)/hook", 1)
            // A connection to 127.0.0.3 may go unanswered (it does under gVisor) rather than be refused.
            try await Self.deliver([draft], resolver: resolver, allowPrivate: true, configure: { $0.requestTimeout = .seconds(3) }) { outbox in
                for number in 1...3 { _ = try await outbox.recorded.next("attempt \(number)", within: .seconds(20)) }
                let record = try #require(try await outbox.webhookDeliveries(of: draft.job).first)
                #expect(record.delivery.state == .delivered)
                #expect(record.attempts.map(\.status) == [nil, nil, 204])
                #expect(record.attempts[0].error?.contains("did not resolve") == true)
                #expect(record.attempts[1].error != nil)
                #expect(receiver.count.load(ordering: .relaxed) == 1)
            }
        }
    }
}

/// Which client a delivery uses, as a value (`Int`s stand in for the HTTP clients).
struct WebhookClientCacheTests {
    typealias Cache = WebhookClientCache<Int>
    static let a = IPAddress.v4([93, 184, 216, 34]), b = IPAddress.v4([93, 184, 216, 35])

    @Test func aHostsClientIsReusedWhileItResolvesToTheSameAddress() {
        var cache = Cache(capacity: 4)
        var made = 0
        let key = Cache.Key(host: "hooks.example.com", address: Self.a)
        let first = cache.lease(key, current: [Self.a, Self.b]) { made += 1; return made }
        #expect(cache.release(key).isEmpty)
        let second = cache.lease(key, current: [Self.a]) { made += 1; return made }
        #expect(first.client == second.client && made == 1)
        #expect(first.closing.isEmpty && second.closing.isEmpty)
    }

    /// Once the host resolves elsewhere its old client is let go — at once when idle, when
    /// its delivery ends when one uses it.
    @Test func aHostThatResolvesElsewhereLetsItsOldClientGo() {
        var cache = Cache(capacity: 4)
        let old = Cache.Key(host: "hooks.example.com", address: Self.a)
        let new = Cache.Key(host: "hooks.example.com", address: Self.b)
        _ = cache.lease(old, current: [Self.a]) { 1 }
        let moved = cache.lease(new, current: [Self.b]) { 2 }
        #expect(moved.closing.isEmpty, "client 1 is still in use")
        #expect(cache.release(old) == [1], "shut down when its delivery ends")
        #expect(cache.release(new).isEmpty)
        let back = cache.lease(old, current: [Self.a]) { 3 }
        #expect(back.client == 3 && back.closing == [2])
        #expect(cache.count == 1)
    }

    @Test func theLeastRecentlyUsedIdleClientGoesBeyondCapacity() {
        var cache = Cache(capacity: 2)
        let keys = (1...3).map { Cache.Key(host: "h\($0).example.com", address: Self.a) }
        _ = cache.lease(keys[0], current: [Self.a]) { 1 }
        _ = cache.release(keys[0])
        _ = cache.lease(keys[1], current: [Self.a]) { 2 }   // in use: never let go
        let third = cache.lease(keys[2], current: [Self.a]) { 3 }
        #expect(third.closing == [1])
        #expect(cache.removeAll().sorted() == [2, 3])
    }
}
