import SpoolCore
import Testing
@testable import SpoolStore

/// The in-memory tail of the event log answers only when it can prove it has every event.
@Suite struct EventNotifierTests {
    let job = JobID.random()

    func event(_ id: Int64) -> JobEvent {
        JobEvent(id: id, job: job, kind: .state, at: Timestamp(microseconds: id), data: .object([:]))
    }

    @Test func answersFromMemoryWhenTheRunOfIdsIsUnbroken() {
        let notifier = EventNotifier()
        notifier.published([event(1), event(2), event(3)])
        #expect(notifier.recent(after: 1, job: nil, limit: 10)?.map(\.id) == [2, 3])
        #expect(notifier.recent(after: 3, job: nil, limit: 10)?.isEmpty == true)
    }

    @Test func outOfOrderPublishesNeverMakeAReaderSkipAnEvent() {
        let notifier = EventNotifier()
        notifier.published([event(1)])
        notifier.published([event(3)])   // 2 committed but not yet published
        #expect(notifier.recent(after: 1, job: nil, limit: 10) == nil, "a gap means: read the store")
        notifier.published([event(2)])
        #expect(notifier.recent(after: 1, job: nil, limit: 10)?.map(\.id) == [2, 3])
    }

    @Test func readersFromBeforeTheMemoryGoToTheStore() {
        let notifier = EventNotifier()
        notifier.published(upTo: 100)   // a restart: ids continue, memory is empty
        notifier.published([event(101)])
        #expect(notifier.recent(after: 50, job: nil, limit: 10) == nil)
        #expect(notifier.recent(after: 100, job: nil, limit: 10)?.map(\.id) == [101])
    }

    @Test func waitReturnsWhenANewerEventIsPublished() async {
        let notifier = EventNotifier()
        notifier.published([event(1)])
        async let woke = notifier.wait(after: 1, timeout: .seconds(10))
        try? await Task.sleep(for: .milliseconds(20))
        notifier.published([event(2)])
        #expect(await woke)
        #expect(await notifier.wait(after: 2, timeout: .milliseconds(20)) == false)
    }

    /// Shutdown: a stream that begins to wait after the server started stopping — it checked
    /// just before — must not sleep until its next keep-alive (seen: shutdown grace + 15 s).
    @Test func afterStopWaitingEveryWaitReturnsAtOnce() async {
        let notifier = EventNotifier()
        notifier.published([event(1)])
        let waiting = Task { await notifier.wait(after: 1, timeout: .seconds(60)) }
        notifier.stopWaiting()
        #expect(await waiting.value == false)
        let started = ContinuousClock.now
        #expect(await notifier.wait(after: 1, timeout: .seconds(60)) == false, "a wait that begins later")
        #expect(ContinuousClock.now - started < .seconds(5))
        #expect(await notifier.wait(after: 0, timeout: .seconds(60)), "an event that is there is still reported")
    }

    @Test func aShortWaitAfterALongOneStillEndsOnTime() async {
        let notifier = EventNotifier()
        notifier.published([event(1)])
        let long = Task { await notifier.wait(after: 1, timeout: .seconds(60)) }
        let registered = ContinuousClock.now + .seconds(10)
        while notifier.waiting == 0, ContinuousClock.now < registered { await Task.yield() }
        #expect(notifier.waiting == 1, "the long wait is registered first")
        let started = ContinuousClock.now
        #expect(await notifier.wait(after: 1, timeout: .milliseconds(50)) == false)
        #expect(ContinuousClock.now - started < .seconds(10), "the one timer wakes for the earliest deadline")
        notifier.published([event(2)])
        #expect(await long.value, "the long wait still sees the event")
    }

    @Test func aCancelledWaitReturnsFalseAtOnce() async {
        let notifier = EventNotifier()
        let waiting = Task { await notifier.wait(after: 0, timeout: .seconds(60)) }
        waiting.cancel()
        #expect(await waiting.value == false)
        #expect(await notifier.wait(after: 0, timeout: .milliseconds(10)) == false, "and the notifier goes on waiting for others")
    }
}
