import Hummingbird
import HummingbirdTesting
import Logging
import SpoolCore
import SpoolStore
import SpoolTestSupport
import SpoolTesting
import SpoolWebhooks
import Synchronization
import Testing

/// The deliverer's sending loop on a manual clock, against a real receiver on loopback: a
/// delivery that failed goes out again when its back-off has passed on the deliverer's clock,
/// and what the attempts record is that clock's time.
struct WebhookRetryTests {
    /// A receiver that answers 503 to the first delivery and 204 to the rest, and says the
    /// number of each one it gets.
    static func receiver() -> (Router<BasicRequestContext>, AsyncStream<Int>) {
        let (arrivals, arrived) = AsyncStream.makeStream(of: Int.self)
        let count = Atomic<Int>(0)
        let router = Router()
        router.post("/hook") { _, _ -> HTTPResponse.Status in
            let number = count.add(1, ordering: .relaxed).newValue
            arrived.yield(number)
            return number == 1 ? .serviceUnavailable : .noContent
        }
        return (router, arrivals)
    }

    /// The memory outbox, saying each attempt it has recorded (so the test waits on that, not on a poll).
    struct RecordingOutbox: WebhookOutbox {
        let inner = MemoryWebhookOutbox()
        /// Attempts recorded so far.
        final class Count: Sendable { let value = Mutex(0) }
        let count = Count()
        let recorded: AsyncStream<WebhookAttempt>
        private let record: AsyncStream<WebhookAttempt>.Continuation

        init() { (recorded, record) = AsyncStream.makeStream(of: WebhookAttempt.self) }

        func webhookCursor() async throws -> Int64 { try await inner.webhookCursor() }
        func addDeliveries(_ drafts: [WebhookDelivery.Draft], cursor: Int64) async throws -> [WebhookDelivery] {
            try await inner.addDeliveries(drafts, cursor: cursor)
        }
        func dueDeliveries(at now: Timestamp, limit: Int) async throws -> [WebhookDelivery] { try await inner.dueDeliveries(at: now, limit: limit) }
        func nextDeliveryDue() async throws -> Timestamp? { try await inner.nextDeliveryDue() }
        func recordAttempt(_ attempt: WebhookAttempt, of delivery: WebhookDeliveryID, then next: WebhookDelivery.Next) async throws {
            try await inner.recordAttempt(attempt, of: delivery, then: next)
            count.value.withLock { $0 += 1 }
            record.yield(attempt)
        }
        func webhookDeliveries(of job: JobID) async throws -> [WebhookDeliveryRecord] { try await inner.webhookDeliveries(of: job) }
    }

    @Test func aFailedDeliveryGoesOutAgainOnceItsBackOffHasPassedOnTheDeliverersClock() async throws {
        let manual = ManualClock()
        let origin = Timestamp(secondsSince1970: 1_800_000_000)
        let clock = SpoolClock(manual, wall: { origin.adding(seconds: manual.now.offset.inSeconds) })
        let (router, arrivals) = Self.receiver()
        let application = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await restoringTerminationSignals {
            try await application.test(.live) { client in
                let port = try #require(client.port)
                let outbox = RecordingOutbox()
                var configuration = WebhookDeliverer.Configuration()
                configuration.target = WebhookGuard(allowPrivate: true)
                configuration.retry.baseSeconds = 30
                configuration.draw = { 1 }   // the whole back-off: 30 s after the first failure
                configuration.coalesce = .zero
                configuration.idlePoll = .seconds(3600)   // only the clock wakes the loop for a retry
                let deliverer = WebhookDeliverer(store: MemoryJobStore(), outbox: outbox, configuration: configuration,
                                                 logger: Logger(label: "test"), clock: clock)
                let job = JobID.random()
                let draft = WebhookDelivery.Draft(job: job, event: .completed, eventID: 1, url: "http://127.0.0.1:\(port)/hook",
                                                  payload: .object(["event": "job.completed"]), createdAt: clock.wall())
                _ = try await outbox.addDeliveries([draft], cursor: 1)
                let running = Task { try await deliverer.run() }
                defer { running.cancel() }

                #expect(try await arrivals.next("the first attempt") == 1)
                // The loop sets its timer for the retry once the failure is recorded.
                try await within("the sending loop to sleep until the retry") { await manual.waitForSleeper(within: .seconds(30)) }
                let failed = try #require(try await outbox.webhookDeliveries(of: job).first)
                #expect(failed.delivery.attempts == 1)
                #expect(failed.delivery.state == .pending)
                #expect(failed.delivery.nextAttemptAt == origin.adding(seconds: 30))
                #expect(failed.attempts.first?.at == origin, "the attempt records the deliverer's clock")

                // A second short of the retry the loop still sleeps, and nothing went out.
                manual.advance(by: .seconds(29))
                await manual.waitForSleeper(within: .seconds(1))
                #expect(try await outbox.webhookDeliveries(of: job).first?.delivery.attempts == 1)
                manual.advance(by: .seconds(1))
                #expect(try await arrivals.next("the retry, once its back-off has passed") == 2)
                _ = try await outbox.recorded.next("the first attempt, recorded")
                _ = try await outbox.recorded.next("the retry, recorded")
                let delivered = try #require(try await outbox.webhookDeliveries(of: job).first)
                #expect(delivered.delivery.state == .delivered)
                #expect(delivered.attempts.map(\.at) == [origin, origin.adding(seconds: 30)])
                #expect(delivered.attempts.map(\.status) == [503, 204])
            }
        }
    }

    /// Runs a deliverer (real clock, `configure`d) against `router` on loopback, with `drafts`
    /// added to its outbox (`url(path)` names the receiver's paths); `body` gets the outbox once
    /// the deliverer runs, and when it began.
    static func deliver(_ router: Router<BasicRequestContext>, configure: (inout WebhookDeliverer.Configuration) -> Void = { _ in },
                        drafts: @escaping @Sendable (_ url: (String) -> String) -> [WebhookDelivery.Draft],
                        _ body: @escaping @Sendable (RecordingOutbox, ContinuousClock.Instant) async throws -> Void) async throws {
        var configuration = WebhookDeliverer.Configuration()
        configuration.target = WebhookGuard(allowPrivate: true)
        configuration.coalesce = .zero
        configure(&configuration)
        let settings = configuration
        let application = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await restoringTerminationSignals {
            try await application.test(.live) { client in
                let port = try #require(client.port)
                let outbox = RecordingOutbox()
                let deliverer = WebhookDeliverer(store: MemoryJobStore(), outbox: outbox, configuration: settings,
                                                 logger: Logger(label: "test"), clock: .system)
                let made = drafts { path in path.hasPrefix("//") ? "http:\(path.replacingOccurrences(of: "PORT", with: "\(port)"))"
                                                                  : "http://127.0.0.1:\(port)\(path)" }
                _ = try await outbox.addDeliveries(made, cursor: Int64(made.count))
                let began = ContinuousClock.now
                let running = Task { try await deliverer.run() }
                defer { running.cancel() }
                try await body(outbox, began)
            }
        }
    }

    /// A delivery of job.completed to `url`, made `age` seconds ago.
    static func draft(_ url: String, _ number: Int, age: Double = 0) -> WebhookDelivery.Draft {
        WebhookDelivery.Draft(job: JobID.random(), event: .completed, eventID: Int64(number), url: url,
                              payload: .object(["event": "job.completed"]), createdAt: WallClock.now().adding(seconds: -age))
    }

    /// A receiver that answers at once but sends its body a byte at a time holds a sending lane
    /// only until the request timeout: the attempt is recorded then, with the status it got
    /// (found by attacking the build: the body was read at the receiver's pace, and eight such
    /// receivers stopped every webhook on the server).
    @Test func aReceiverThatTricklesItsBodyIsCutOffAtTheTimeout() async throws {
        let router = Router()
        router.post("/trickle") { _, _ -> Response in
            Response(status: .ok, body: ResponseBody { writer in
                for _ in 0..<200 {
                    try await writer.write(ByteBuffer(string: "x"))
                    try await Task.sleep(for: .milliseconds(200))
                }
                try await writer.finish(nil)
            })
        }
        // A 5-s timeout: long enough for the answer's head to arrive on a loaded test machine
        // (with 1 s, the timeout once fell before it), short against the 40-s body.
        try await Self.deliver(router, configure: { $0.requestTimeout = .seconds(5) }, drafts: { url in [Self.draft(url("/trickle"), 1)] }) { outbox, began in
            let attempt = try await outbox.recorded.next("the attempt", within: .seconds(35))
            #expect(attempt.status == 200)
            #expect(ContinuousClock.now - began < .seconds(30), "cut off at the 5-s timeout, not after the 40-s body")
        }
    }

    /// A receiver that never answers holds at most its host's share of the sending lanes: a
    /// delivery to another host, queued behind eight to it, goes out at once (found by attacking
    /// the build: 32 deliveries to a dead URL delayed another tenant's healthy one by 39 s).
    @Test func aReceiverThatNeverAnswersDoesNotHoldUpOtherHosts() async throws {
        let (arrivals, arrived) = AsyncStream.makeStream(of: String.self)
        let router = Router()
        router.post("/never") { _, _ -> HTTPResponse.Status in
            try await Task.sleep(for: .seconds(11))   // past the deliverer's 10-s timeout
            return .noContent
        }
        router.post("/ok") { _, _ -> HTTPResponse.Status in
            arrived.yield("ok")
            return .noContent
        }
        // The dead receiver by one name, the healthy one by another: two hosts.
        try await Self.deliver(router, drafts: { url in
            (0..<8).map { Self.draft(url("/never"), $0 + 1, age: 10) } + [Self.draft(url("//localhost:PORT/ok"), 9)]
        }) { outbox, _ in
            let got = try await arrivals.next("the healthy receiver's delivery", within: .seconds(20))
            #expect(got == "ok")
            // Not behind the dead receiver's attempts: none of them has ended (at its 10-s timeout).
            #expect(outbox.count.value.withLock { $0 } == 0, "sent once a dead attempt gave its lane up")
        }
    }

    /// A host alone with deliveries due uses every lane (the per-host share holds only while
    /// other hosts' deliveries wait): one receiver does not drop to two at a time.
    @Test func aHostAloneUsesEveryLane() async throws {
        let active = Atomic<Int>(0), most = Atomic<Int>(0)
        let (arrivals, arrived) = AsyncStream.makeStream(of: Int.self)
        let router = Router()
        router.post("/slow") { _, _ -> HTTPResponse.Status in
            let now = active.add(1, ordering: .relaxed).newValue
            _ = most.max(now, ordering: .relaxed)
            try await Task.sleep(for: .milliseconds(500))
            active.subtract(1, ordering: .relaxed)
            arrived.yield(now)
            return .noContent
        }
        try await Self.deliver(router, drafts: { url in (0..<8).map { Self.draft(url("/slow"), $0 + 1) } }) { _, _ in
            for _ in 0..<8 { _ = try await arrivals.next("a delivery", within: .seconds(20)) }
            #expect(most.load(ordering: .relaxed) > 2, "at most \(most.load(ordering: .relaxed)) at once")
        }
    }
}
