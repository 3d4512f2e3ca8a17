import SpoolCore
@testable import SpoolStore
import Testing

/// A job's change watch (`?wait=`): what comes between waits is kept, a wait ends on a change,
/// its time, a cancel or `end()`, and a wait that ends early leaves no timer behind.
@Suite struct JobWatchTests {
    let id = JobID.random()

    @Test func aWaitAnsweredByAChangeLeavesNoDeadlineBehind() async throws {
        let notifier = JobChangeNotifier()
        let watch = notifier.watch(id)
        for round in 0..<200 {
            let change = Task { await watch.nextChange(timeout: .seconds(60)) }
            while !watch.isWaiting { await Task.yield() }   // the wait and its deadline are in place
            notifier.publish(id)
            guard case .changed? = await change.value else { Issue.record("round \(round): no change"); return }
        }
        #expect(notifier.deadlinesWaiting == 0, "each answered wait removed its deadline")
    }

    @Test func aChangeBetweenWaitsIsKeptAndAnEndOverAPlainChange() async throws {
        let notifier = JobChangeNotifier()
        let watch = notifier.watch(id)
        notifier.publish(id)
        guard case .changed? = await watch.nextChange(timeout: .seconds(60)) else { Issue.record("the kept change"); return }
        let ended = Job(id: id, type: "t", input: .object([:]), priority: 0, timeoutSeconds: 60, maxAttempts: 1,
                        state: .succeeded, createdAt: Timestamp(microseconds: 0))
        notifier.publish(ended)
        notifier.publish(id)
        guard case .ended(let job)? = await watch.nextChange(timeout: .seconds(60)) else { Issue.record("the kept end"); return }
        #expect(job.state == .succeeded)
    }

    @Test func aWaitEndsOnItsTimeOnACancelAndOnEnd() async throws {
        let notifier = JobChangeNotifier()
        let watch = notifier.watch(id)
        #expect(await watch.nextChange(timeout: .milliseconds(30)) == nil, "its time ran out")
        let waiting = Task { await watch.nextChange(timeout: .seconds(60)) }
        waiting.cancel()
        #expect(await waiting.value == nil, "cancelled")
        let ending = Task { await watch.nextChange(timeout: .seconds(60)) }
        while notifier.deadlinesWaiting == 0 { await Task.yield() }
        watch.end()
        #expect(await ending.value == nil, "ended")
        #expect(await watch.nextChange(timeout: .seconds(60)) == nil, "and every later wait at once")
        #expect(notifier.deadlinesWaiting == 0)
    }

    @Test func aWatchThatGoesAwayUnregisters() async throws {
        let notifier = JobChangeNotifier()
        do {
            let watch = notifier.watch(id)
            notifier.publish(id)
            _ = watch
        }
        #expect(notifier.watching(id) == 0)
    }
}
