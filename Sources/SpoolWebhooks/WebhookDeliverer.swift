import AsyncHTTPClient
import Glibc
import Logging
import NIOCore
import ServiceLifecycle
import SpoolCore
import SpoolStore
import Synchronization

/// Sends webhooks: a `Service` with two loops in one task group.
///
/// - **Planning** reads the event log after the outbox cursor (woken by the store's
///   `eventNotifier`), asks `WebhookPlanner` which events become deliveries, and stores them
///   with the new cursor in one transaction — a restart neither loses nor repeats one.
/// - **Sending** POSTs due deliveries, at most `maxInFlight` at once, each to an address its
///   host resolves to at that moment and that the guard checked (`WebhookGuard`,
///   `WebhookClients`), and records each attempt with what follows it (`WebhookRetryPolicy`).
///
/// It only reads the event log and writes its own tables, so a slow or dead receiver never
/// holds up the scheduler. Delivery is at least once: a crash after a receiver answered but
/// before the answer was recorded sends it again, with the same `Spool-Webhook-Id`.
///
/// Time is read from the injected clock: when a delivery is due (a timer on the clock wakes the
/// sending loop for the earliest), what its attempts record, how long planning waits to coalesce.
public final class WebhookDeliverer: Service, Sendable {
    public struct Configuration: Sendable {
        /// Signs each delivery when set (`Spool-Webhook-Signature`): a job's deliveries with its
        /// owner's secret derived from it (`WebhookSignature.secret(for:serverSecret:)`).
        public var secret: String?
        /// The store's own random key, in every tenant's secret (`WebhookSignature.secret`).
        public var storeKey: [UInt8] = []
        public var retry = WebhookRetryPolicy()
        public var maxInFlight = 8
        /// Most deliveries in flight to one host (whatever the port) while another host's wait: a receiver
        /// that never answers holds this many lanes, not all of them (found by attacking the
        /// build: 32 deliveries to a dead URL delayed another tenant's healthy one by 39 s). Lanes
        /// no other host needs go to whoever has deliveries due.
        public var maxInFlightPerHost = 2
        /// Most deliveries in flight for one tenant's jobs, over all its hosts, while others wait
        /// (found by attacking the build: a tenant with dead receivers on several host names took
        /// a share for each, so every lane).
        public var maxInFlightPerOwner = 4
        public var requestTimeout: TimeAmount = .seconds(10)
        public var progressInterval: Double = 2
        /// Longest sleep between checks when nothing wakes the loops.
        public var idlePoll: Duration = .seconds(2)
        public var batchSize = 500
        /// How long planning waits, once an event has woken it, for the events that follow
        /// (a job's claim, its end, its outputs), so that one read of the log takes them all:
        /// without it a busy server read the log after every event, webhooks or not.
        public var coalesce: Duration = .milliseconds(10)
        /// Where deliveries may go: checked again before each one (DNS answers change), which
        /// then connects to an address from that check's answer.
        public var target = WebhookGuard(allowPrivate: false)
        /// The random draw in 0..<1 that places a retry within its back-off (`WebhookRetryPolicy`).
        public var draw: @Sendable () -> Double = { Double.random(in: 0..<1) }
        public init() {}
    }

    let store: any JobStore
    let outbox: any WebhookOutbox
    let configuration: Configuration
    let logger: Logger
    /// The HTTP clients, one per (host, checked address): see `WebhookClients`.
    let clients = WebhookClients()
    let clock: SpoolClock
    private let planner: Mutex<WebhookPlanner>
    /// Rung when deliveries become due (planned, or an attempt finished); reuses the
    /// notifier's wait-after-a-number shape.
    private let doorbell = EventNotifier()
    private let rings = Atomic<Int64>(0)
    /// The deliveries being attempted, with the host each goes to and the owner of its job.
    private let inFlight = Mutex([WebhookDeliveryID: WebhookLanes.Lane]())
    /// The cursor as last saved by this deliverer (see `planOnce`).
    private let savedCursor = Atomic<Int64>(0)
    /// How far past the saved cursor planning may read, producing nothing, before saving it.
    static let cursorSaveInterval: Int64 = 10_000

    public init(store: any JobStore, outbox: any WebhookOutbox, configuration: Configuration = Configuration(),
                logger: Logger, clock: SpoolClock = .system) {
        self.store = store
        self.clock = clock
        self.outbox = outbox
        self.configuration = configuration
        self.logger = logger
        planner = Mutex(WebhookPlanner(progressInterval: configuration.progressInterval))
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask { await self.planLoop() }
                group.addTask { await self.sendLoop() }
            }
        }
        // Every attempt has ended with the loops: no client is in use.
        await clients.shutdown()
    }

    // MARK: - Planning

    func planLoop() async {
        var cursor: Int64 = -1
        while !Task.isCancelled {
            do {
                if cursor < 0 { cursor = try await outbox.webhookCursor() }
                let (next, read) = try await planOnce(after: cursor)
                cursor = next
                if read < configuration.batchSize {
                    var timeout = configuration.idlePoll
                    if let flush = planner.withLock({ $0.nextFlush }) {
                        let wait = Double(flush.microseconds - clock.wall().microseconds) / 1_000_000
                        timeout = min(timeout, .milliseconds(Int64(max(wait, 0.01) * 1000)))
                    }
                    if await store.eventNotifier.wait(after: cursor, timeout: timeout), configuration.coalesce > .zero {
                        try? await clock.sleep(for: configuration.coalesce)
                    }
                }
            } catch {
                // Cut short by the shutdown: not a failure (found by attacking the build: every clean
                // stop logged "webhook planning failed … CancellationError()").
                if Task.isCancelled { return }
                logger.warning("webhook planning failed; retrying", metadata: ["error": "\(error)"])
                try? await clock.sleep(for: .seconds(1))
            }
        }
    }

    /// Turns the events after `cursor` (one batch) and any held progress now due into
    /// deliveries. Returns the new cursor and how many events were read.
    @discardableResult
    public func planOnce(after cursor: Int64) async throws -> (cursor: Int64, read: Int) {
        let (events, through) = try await store.webhookEvents(after: cursor, limit: configuration.batchSize)
        var jobs: [JobID: Job?] = [:]
        var drafts: [WebhookDelivery.Draft] = []
        for event in events where WebhookPlanner.category(of: event) != nil {
            if jobs[event.job] == nil { jobs[event.job] = .some(try await store.job(event.job)) }
            let job = jobs[event.job] ?? nil
            drafts += planner.withLock { $0.plan(event, job: job) }
        }
        drafts += planner.withLock { $0.flush(now: clock.wall()) }
        // The cursor is saved with the deliveries it produced (one transaction). Past events that
        // produced none it is saved only now and then: a restart re-reads them, and they again
        // produce nothing — a write (and an fsync) per batch of events is not needed for that.
        let next = through
        if !drafts.isEmpty || next - savedCursor.load(ordering: .relaxed) >= Self.cursorSaveInterval {
            let added = try await outbox.addDeliveries(drafts, cursor: next)
            savedCursor.store(next, ordering: .relaxed)
            if !added.isEmpty { ring() }
        }
        return (next, Int(through - cursor))
    }

    // MARK: - Sending

    func sendLoop() async {
        await withDiscardingTaskGroup { group in
            // When the doorbell is set to ring for the earliest delivery due (a timer on the clock).
            var armedFor: Timestamp?
            // When a delivery to each host last started (`WebhookLanes.pick`): hosts in flight or due
            // are kept, the others forgotten once there are many.
            var lastStarted: [String: UInt64] = [:]
            var startedCount: UInt64 = 0
            while !Task.isCancelled {
                let seen = doorbell.latest
                do {
                    let busy = inFlight.withLock { $0 }
                    let free = configuration.maxInFlight - busy.count
                    if free > 0 {
                        // A few more are read than lanes are free, so that one host's backlog does not hide another's.
                        let due = try await outbox.dueDeliveries(at: clock.wall(), limit: configuration.maxInFlight * 64 + busy.count)
                            .filter { busy[$0.id] == nil }
                        if lastStarted.count > 4096 {
                            let kept = Set(due.map { WebhookLanes.Lane($0).host }).union(busy.values.map(\.host))
                            lastStarted = lastStarted.filter { kept.contains($0.key) }
                        }
                        let shares = WebhookLanes(perHost: configuration.maxInFlightPerHost, perOwner: configuration.maxInFlightPerOwner)
                        for (delivery, lane) in shares.pick(from: due, busy: Array(busy.values), free: free, lastStarted: lastStarted) {
                            inFlight.withLock { $0[delivery.id] = lane }
                            startedCount += 1
                            lastStarted[lane.host] = startedCount
                            group.addTask {
                                await self.attempt(delivery)
                                self.inFlight.withLock { _ = $0.removeValue(forKey: delivery.id) }
                                self.ring()
                            }
                        }
                    }
                    let now = clock.wall()
                    if let next = try await outbox.nextDeliveryDue(), next > now,
                       armedFor.map({ $0 <= now || next < $0 }) ?? true {
                        armedFor = next
                        ring(after: .microseconds(next.microseconds - now.microseconds), in: &group)
                    }
                } catch is CancellationError where Task.isCancelled {
                    // The server is going down (a start that could not bind its port, say): not a
                    // failure to report (found by attacking the build: a server that never had a
                    // webhook logged that sending failed).
                    break
                } catch {
                    logger.warning("webhook sending failed; retrying", metadata: ["error": "\(error)"])
                    ring(after: .seconds(1), in: &group)
                }
                _ = await doorbell.wait(after: seen, timeout: configuration.idlePoll)
            }
        }
    }

    /// Rings the doorbell once `wait` has passed on the clock.
    private func ring(after wait: Duration, in group: inout DiscardingTaskGroup) {
        group.addTask { [clock] in
            do { try await clock.sleep(for: wait) } catch { return }
            self.ring()
        }
    }

    /// One attempt of `delivery`: where it may go (a fresh lookup, checked), a POST to that
    /// address, and the attempt recorded with what follows it.
    func attempt(_ delivery: WebhookDelivery) async {
        let number = delivery.attempts + 1
        let at = clock.wall()
        let start = clock.now()
        let outcome: (status: Int?, error: String?)
        do throws(WebhookGuard.Failure) {
            let destination = try await destination(of: delivery.draft.url)
            // Cut short by shutdown: not an attempt; it stays due and goes out after the restart.
            guard let sent = await post(delivery, number: number, at: at, to: destination) else { return }
            outcome = sent
        } catch {
            switch error {
            case .refused(let refusal):
                await refuse(delivery, number: number, at: at, because: refusal)
                return
            case .unresolved(let failure):
                if Task.isCancelled { return }
                // A lookup that fails may pass (EAI_AGAIN, a timeout, SERVFAIL): tried again, as
                // when a receiver is down (found by attacking the build: a DNS hiccup of a second
                // as a job ended was taken as a refusal, and the delivery given up for good).
                outcome = (nil, "the webhook's host did not resolve: \(failure)")
            }
        }
        await record(delivery, number: number, at: at, status: outcome.status, error: outcome.error, took: clock.now() - start)
    }

    /// Where `url` may be delivered now (`WebhookGuard.destination(of:)`), its host as the HTTP
    /// client reads it — provided that is the host the guard read: the connection is pinned by
    /// that name (`WebhookClients`), and a URL read two ways would reach a lookup of the client's own.
    func destination(of url: String) async throws(WebhookGuard.Failure) -> WebhookDestination {
        var destination = try await configuration.target.destination(of: url)
        guard let host = WebhookClients.clientHost(of: url), host.lowercased() == destination.host.lowercased() else {
            throw .refused(WebhookTarget.Refusal(description: "the webhook URL's host cannot be read unambiguously"))
        }
        destination.host = host
        return destination
    }

    /// POSTs `delivery` to the checked address of `destination` for attempt `number`. Its HTTP
    /// status, or why it got none; nil when shutdown cut it short.
    func post(_ delivery: WebhookDelivery, number: Int, at: Timestamp, to destination: WebhookDestination) async -> (status: Int?, error: String?)? {
        let request = request(for: delivery, at: at)
        let start = clock.now()
        do {
            return try await clients.withClient(host: destination.host, address: destination.address(forAttempt: number), current: destination.addresses) { client in
                let response = try await client.execute(request, timeout: configuration.requestTimeout, logger: logger)
                // Its body is read (to reuse the connection) within what is left of the timeout, which
                // covers only the answer's head: a receiver that sent its body a byte a second held
                // one of the few sending lanes for as long as it liked (found by attacking the build:
                // eight such receivers stopped every webhook on the server).
                let left = Duration.nanoseconds(configuration.requestTimeout.nanoseconds) - (clock.now() - start)
                await Self.drain(response.body, within: max(left, .milliseconds(100)))
                return (Int(response.status.code), nil)
            }
        } catch {
            if Task.isCancelled { return nil }
            return (nil, Self.describe(error))
        }
    }

    /// The POST of `delivery`, its headers signed for an attempt at `at`.
    func request(for delivery: WebhookDelivery, at: Timestamp) -> HTTPClientRequest {
        let body = Array(Self.body(of: delivery).utf8)
        var request = HTTPClientRequest(url: delivery.draft.url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "User-Agent", value: "spool-webhooks")
        let secret = configuration.secret.map {
            WebhookSignature.secret(for: WebhookLanes.owner(of: delivery), serverSecret: $0, storeKey: configuration.storeKey)
        }
        for (name, value) in Self.headers(for: delivery, body: body, timestamp: at.microseconds / 1_000_000, secret: secret) {
            request.headers.add(name: name, value: value)
        }
        request.body = .bytes(ByteBuffer(bytes: body))
        return request
    }

    /// Records that `delivery` may not go where its URL leads (now): no more attempts.
    func refuse(_ delivery: WebhookDelivery, number: Int, at: Timestamp, because refusal: WebhookTarget.Refusal) async {
        let record = WebhookAttempt(number: number, at: at, status: nil, error: "refused: \(refusal)", durationMilliseconds: 0)
        try? await outbox.recordAttempt(record, of: delivery.id, then: .failed)
        logger.warning("refused a webhook delivery", metadata: ["delivery": "\(delivery.id)", "job": "\(delivery.draft.job)", "reason": "\(refusal)"])
    }

    /// Records attempt `number` of `delivery` with what follows it (`WebhookRetryPolicy`).
    func record(_ delivery: WebhookDelivery, number: Int, at: Timestamp, status: Int?, error: String?, took elapsed: Duration) async {
        let milliseconds = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
        let succeeded = status.map { (200..<300).contains($0) } ?? false
        let next = configuration.retry.next(afterAttempt: number, succeeded: succeeded, now: clock.wall(),
                                            unit: configuration.draw())
        let record = WebhookAttempt(number: number, at: at, status: status, error: error,
                                    durationMilliseconds: (milliseconds * 10).rounded() / 10)
        do {
            try await outbox.recordAttempt(record, of: delivery.id, then: next)
        } catch {
            logger.warning("could not record a webhook attempt", metadata: ["delivery": "\(delivery.id)", "error": "\(error)"])
        }
        if next == .failed {
            logger.warning("webhook delivery failed for good", metadata: [
                "delivery": "\(delivery.id)", "job": "\(delivery.draft.job)", "attempts": "\(number)",
            ])
        }
    }

    /// Reads up to 64 KiB of an answer's body, giving up (and so dropping the connection) after `limit`.
    static func drain(_ body: HTTPClientResponse.Body, within limit: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { _ = try? await body.collect(upTo: 64 << 10) }
            group.addTask { try? await Task.sleep(for: limit) }
            await group.next()
            group.cancelAll()
        }
    }

    /// The exact bytes POSTed (and signed): the stored payload plus the delivery id.
    public static func body(of delivery: WebhookDelivery) -> String {
        guard case .object(var fields) = delivery.draft.payload else { return delivery.draft.payload.canonicalText }
        fields["delivery"] = .int(delivery.id.rawValue)
        return JSONValue.object(fields).canonicalText
    }

    /// The `Spool-Webhook-*` headers for one attempt.
    public static func headers(for delivery: WebhookDelivery, body: [UInt8], timestamp: Int64, secret: String?) -> [(String, String)] {
        var headers = [("Spool-Webhook-Id", String(delivery.id.rawValue)), ("Spool-Webhook-Timestamp", String(timestamp))]
        if let secret { headers.append(("Spool-Webhook-Signature", WebhookSignature.sign(secret: secret, timestamp: timestamp, body: body))) }
        return headers
    }

    /// An error as recorded on the attempt: its kind, never the URL (it may carry credentials).
    static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError {
            if error == .deadlineExceeded || error == .readTimeout || error == .connectTimeout { return "timeout" }
            return "\(error)"
        }
        // The connection's own failure, as the system names it ("connection refused", "no route
        // to host"), not NIO's wrapping of it.
        if let error = error as? IOError {
            return String(cString: strerror(error.errnoCode)).lowercased()
        }
        return String(describing: type(of: error)) + ": " + "\(error)".prefix(200)
    }

    private func ring() {
        doorbell.published(upTo: rings.add(1, ordering: .relaxed).newValue)
    }
}
