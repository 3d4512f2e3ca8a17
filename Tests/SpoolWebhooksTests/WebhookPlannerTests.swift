import Logging
import SpoolCore
import SpoolStore
import SpoolTesting
import SpoolWebhooks
import Testing

struct WebhookPlannerTests {
    let job: Job = {
        var job = Job(id: .random(), type: "render", input: .object([:]), priority: 0, timeoutSeconds: 60, maxAttempts: 1,
                      state: .running, createdAt: Timestamp(microseconds: 0))
        job.webhookURL = "http://127.0.0.1:9/hook"
        job.webhookEvents = ["completed", "progress", "started"]
        return job
    }()

    func progress(_ id: Int64, at seconds: Double) -> JobEvent {
        JobEvent(id: id, job: job.id, kind: .progress, at: Timestamp(secondsSince1970: seconds),
                 data: JobEvent.progressData(of: job.id, JobProgress(fraction: seconds / 10, message: "at \(seconds)")))
    }

    func state(_ id: Int64, _ state: JobState, at seconds: Double, cancelRequested: Bool = false) -> JobEvent {
        var job = self.job
        job.state = state
        job.cancelRequested = cancelRequested
        return JobEvent(id: id, job: job.id, kind: .state, at: Timestamp(secondsSince1970: seconds), data: JobEvent.stateData(of: job))
    }

    @Test func stateEventsMapToStartedAndCompletedOnly() {
        #expect(WebhookPlanner.category(of: state(1, .queued, at: 0)) == nil)
        #expect(WebhookPlanner.category(of: state(2, .running, at: 0)) == .started)
        #expect(WebhookPlanner.category(of: state(3, .running, at: 0, cancelRequested: true)) == nil)
        for terminal in [JobState.succeeded, .failed, .canceled] {
            #expect(WebhookPlanner.category(of: state(4, terminal, at: 0)) == .completed)
        }
        #expect(WebhookPlanner.category(of: progress(5, at: 0)) == .progress)
        #expect(WebhookPlanner.category(of: JobEvent(id: 6, job: job.id, kind: .log, at: Timestamp(microseconds: 0), data: .null)) == nil)
    }

    @Test func progressIsThrottledToOnePerTwoSecondsKeepingTheLatest() {
        var planner = WebhookPlanner(progressInterval: 2)
        #expect(planner.plan(progress(1, at: 100), job: job).map(\.eventID) == [1])
        #expect(planner.plan(progress(2, at: 100.5), job: job).isEmpty)
        #expect(planner.plan(progress(3, at: 101), job: job).isEmpty)
        #expect(planner.nextFlush == Timestamp(secondsSince1970: 102))
        // Past the interval: this one goes, the held one is superseded.
        #expect(planner.plan(progress(4, at: 102.5), job: job).map(\.eventID) == [4])
        #expect(planner.plan(progress(5, at: 103), job: job).isEmpty)
        #expect(planner.flush(now: Timestamp(secondsSince1970: 104)).isEmpty)
        #expect(planner.flush(now: Timestamp(secondsSince1970: 104.6)).map(\.eventID) == [5])
        #expect(planner.nextFlush == nil)
    }

    @Test func theLastHeldProgressGoesOutJustBeforeCompletion() {
        var planner = WebhookPlanner()
        _ = planner.plan(progress(1, at: 100), job: job)
        _ = planner.plan(progress(2, at: 100.1), job: job)
        _ = planner.plan(progress(3, at: 100.2), job: job)
        var finished = job
        finished.state = .succeeded
        finished.result = .object(["ok": true])
        let drafts = planner.plan(state(4, .succeeded, at: 100.3), job: finished)
        #expect(drafts.map(\.event) == [.progress, .completed])
        #expect(drafts.map(\.eventID) == [3, 4])
        #expect(drafts[1].payload["job"]?["result"] == .object(["ok": true]))
        #expect(drafts[1].payload["event"] == "job.completed")
        #expect(planner.nextFlush == nil)
    }

    @Test func onlySubscribedEventsOfJobsWithAWebhookBecomeDeliveries() {
        var planner = WebhookPlanner()
        var completedOnly = job
        completedOnly.webhookEvents = ["completed"]
        #expect(planner.plan(state(1, .running, at: 0), job: completedOnly).isEmpty)
        #expect(planner.plan(progress(2, at: 0), job: completedOnly).isEmpty)
        #expect(planner.plan(state(3, .failed, at: 1), job: completedOnly).map(\.event) == [.completed])
        var none = job
        none.webhookURL = nil
        #expect(planner.plan(state(4, .succeeded, at: 1), job: none).isEmpty)
        #expect(planner.plan(state(5, .succeeded, at: 1), job: nil).isEmpty)
    }

    @Test func aStartedPayloadDescribesTheJobAsItWasThen() {
        var planner = WebhookPlanner()
        var finished = job
        finished.state = .succeeded
        finished.result = .object(["ok": true])
        let draft = planner.plan(state(1, .running, at: 5), job: finished).first
        #expect(draft?.payload["event"] == "job.started")
        #expect(draft?.payload["job"]?["state"] == "running")
        #expect(draft?.payload["job"]?["result"] == .null)
        #expect(draft?.payload["job"]?["id"] == .string(job.id.rawValue))
    }
}

/// The deliverer's planning step over a real (memory) store: events in, deliveries out.
struct WebhookDelivererPlanningTests {
    @Test func aJobsLifecycleBecomesStartedThrottledProgressAndCompleted() async throws {
        let store = MemoryJobStore()
        let outbox = MemoryWebhookOutbox()
        let deliverer = WebhookDeliverer(store: store, outbox: outbox, logger: Logger(label: "test"))
        var job = Job(id: .random(), type: "render", input: .object([:]), priority: 0, timeoutSeconds: 60, maxAttempts: 1,
                      createdAt: WallClock.now())
        job.webhookURL = "http://127.0.0.1:9/hook"
        job.webhookEvents = ["completed", "progress", "started"]
        var quiet = Job(id: .random(), type: "render", input: .object([:]), priority: 0, timeoutSeconds: 60, maxAttempts: 1,
                        createdAt: WallClock.now())
        quiet.webhookURL = nil
        _ = try await store.enqueue(job)
        _ = try await store.enqueue(quiet)
        _ = try await store.claimNext(for: SlotID(0), now: WallClock.now())
        for step in 1...5 { try await store.reportProgress(job.id, attempt: 1, progress: JobProgress(fraction: Double(step) / 5)) }
        _ = try await store.finish(job.id, attempt: 1, outcome: .succeeded, result: .object(["n": 1]), now: WallClock.now(),
                                   claimNextFor: SlotID(0), excluding: [])
        _ = try await store.cancel(quiet.id, now: WallClock.now())

        let (cursor, _) = try await deliverer.planOnce(after: try await outbox.webhookCursor())
        #expect(try await outbox.webhookCursor() == cursor)
        let deliveries = try await outbox.webhookDeliveries(of: job.id).map(\.delivery)
        #expect(deliveries.map(\.draft.event) == [.started, .progress, .progress, .completed])
        #expect(deliveries[1].draft.payload["job"]?["progress"]?["fraction"] == .double(0.2))
        #expect(deliveries[2].draft.payload["job"]?["progress"]?["fraction"] == .double(1.0))
        #expect(deliveries[3].draft.payload["job"]?["state"] == "succeeded")
        #expect(try await outbox.webhookDeliveries(of: quiet.id).isEmpty)

        // Nothing new: planning again adds nothing.
        _ = try await deliverer.planOnce(after: cursor)
        #expect(try await outbox.webhookDeliveries(of: job.id).count == 4)
    }

    /// Events one after another, as a busy server writes them, are read in a few batches: the
    /// planner waits `coalesce` after the first before reading. (It read the log once per event.)
    @Test func eventsInQuickSuccessionAreReadTogether() async throws {
        let store = FlakyStore(MemoryJobStore())
        var configuration = WebhookDeliverer.Configuration()
        configuration.coalesce = .milliseconds(50)
        let deliverer = WebhookDeliverer(store: store, outbox: MemoryWebhookOutbox(), configuration: configuration,
                                         logger: Logger(label: "test"))
        let job = Job(id: .random(), type: "render", input: .object([:]), priority: 0, timeoutSeconds: 60, maxAttempts: 1,
                      createdAt: WallClock.now())
        _ = try await store.enqueue(job)
        let planning = Task { try await deliverer.run() }
        defer { planning.cancel() }
        let clock = ContinuousClock()
        let start = clock.now
        try await store.until("the planner's first read") { $0.calls(.readEvents) > 0 }
        let before = store.calls(.readEvents)
        #expect(before > 0, "the planner read the log once at start")
        // 30 events, 2 ms apart (60 ms at least): read one by one, that is 30 reads.
        for line in 0..<30 {
            try await store.appendEvent(.log, job: job.id, data: .object(["line": .int(Int64(line))]), now: WallClock.now())
            try await Task.sleep(for: .milliseconds(2))
        }
        let end = clock.now
        try await store.until("a read after the events") { $0.calls(.readEvents) > before }
        // The window the reads are counted over: they would go on one by one through it.
        try await Task.sleep(until: end + .milliseconds(120), clock: clock)
        let reads = store.calls(.readEvents) - before
        let spent = (clock.now - start).inSeconds
        #expect(reads <= 2 + Int(spent / 0.05), "\(reads) reads for 30 events over \(spent) s")
    }
}
