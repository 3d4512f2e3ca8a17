import SpoolCore
import SpoolExecutor
@testable import SpoolScheduler
import SpoolStore
import SpoolTesting
import Testing

/// Every way a queued job can come to wait beside an idle slot that could run it, each with no
/// wake-up left to come: the submit's wake-up taken while the slot was still busy claiming, a
/// job handed back to the queue, a type one slot refuses and another takes, a back-off that
/// ends with nothing handed back. In each the job must start without another submit.
@Suite struct SlotWakeUpTests {
    let executor = ScriptedExecutor()

    /// A slot whose end claims its next job through the store (after a store failure; with
    /// tenants' running caps) stays busy until that claim answers, and the wake-ups that come
    /// meanwhile find no idle slot. A job submitted after the claim read the queue still starts.
    @Test func aJobSubmittedWhileAnEndsClaimIsOnItsWayStartsWhenThatClaimFoundNothing() async throws {
        let executor = self.executor
        let rig = try SchedulerRig(executor: { _, _, _ in executor }) { $0.storeRetryDelay = .seconds(1) }
        try await rig.run({ _ in
            try await rig.store.until("the first look at the queue") { $0.calls(.lookUp) > 0 }
            // The first job starts without a look, alone in the queue (so no look-ahead reads it).
            // A call that names no job (a retry elsewhere, say) makes its end look at the queue
            // first, and that look fails: the end claims through the store.
            let first = try await rig.submit()
            let attempt = try await executor.attempts.next("the first job")
            try await within("the look-ahead to know the queue is empty") { [scheduler = rig.scheduler] in
                while await !scheduler.lookAheadFoundNothing(for: SlotID(0)) { try await pollingYield() }
            }
            rig.scheduler.jobEnqueued()
            rig.store.fail(.lookUp, times: 1)
            // The end's claim reads an empty queue; its answer is held on the way back.
            rig.store.hold(.claim, at: .afterAnswer)
            attempt.finish(.succeeded)
            try await rig.store.until("the end's claim, answered") { $0.waiting(.claim, at: .afterAnswer) == 1 }
            let second = try await rig.submit()
            try await within("the submit's wake-up, taken while the slot is busy") { [scheduler = rig.scheduler] in
                while scheduler.wakeQueued { try await pollingYield() }
            }
            #expect(try await rig.job(first.id).state == .succeeded)
            #expect(rig.store.release(.claim, at: .afterAnswer) == 1)
            let next = try await executor.attempts.next("the job submitted while the claim was on its way")
            #expect(next.job.id == second.id)
            next.finish(.succeeded)
            _ = try await rig.waitFor(second.id, .succeeded)
        }, end: { [executor] in executor.finishAll(.stoppedForShutdown) })
    }

    /// Every end claims through the store (as with a shared store): the end of an attempt that
    /// puts its job back in the queue at once (its worker was lost) wakes the slots, and an idle
    /// slot takes it when its own slot cannot.
    @Test func aJobBackInTheQueueAfterAnEndThatClaimedThroughTheStoreStartsOnAnIdleSlot() async throws {
        let executor = self.executor
        let type = JobType(name: "t", command: try CommandTemplate(["/bin/true"]), timeoutSeconds: 60, maxAttempts: 2)
        let rig = try SchedulerRig(slots: 2, types: [type], executor: { _, _, _ in executor }) { $0.startBeforeCommit = false }
        try await rig.run({ _ in
            let job = try await rig.submit()
            let first = try await executor.attempts.next("the first attempt")
            executor.exclude(["t"], on: first.slot.id)   // its slot's worker type backs off
            first.finish(.workerLost(message: "the worker died"))
            let second = try await executor.attempts.next("the second attempt, on the other slot")
            #expect(second.job.id == job.id && second.slot.id != first.slot.id)
            second.finish(.succeeded)
            #expect(try await rig.waitFor(job.id, .succeeded).attempts == 2)
        }, end: { [executor] in executor.finishAll(.stoppedForShutdown) })
    }

    /// A slot whose look finds nothing because it excludes the job's type (its worker type backs
    /// off there) says nothing of the other idle slots: one that takes the type starts the job.
    @Test(arguments: [true, false])
    func aJobOfATypeOneIdleSlotExcludesStartsOnAnotherIdleSlot(startBeforeCommit: Bool) async throws {
        let executor = self.executor
        let rig = try SchedulerRig(slots: 2, executor: { _, _, _ in executor }) { $0.startBeforeCommit = startBeforeCommit }
        executor.exclude(["t"], on: SlotID(0))
        try await rig.run({ _ in
            let job = try await rig.submit()
            let attempt = try await executor.attempts.next("the job, on the slot that takes its type")
            #expect(attempt.job.id == job.id && attempt.slot.id == SlotID(1))
            attempt.finish(.succeeded)
            _ = try await rig.waitFor(job.id, .succeeded)
        }, end: { [executor] in executor.finishAll(.stoppedForShutdown) })
    }

    /// A job of a type backing off on the only slot (its warm worker's replacement failed to
    /// start, with no job to hand back) waits for the back-off, then starts: the slot looks again
    /// when the type may be tried again, not at the next submit.
    @Test(arguments: [true, false])
    func aJobOfATypeBackingOffStartsWhenTheBackOffIsOver(startBeforeCommit: Bool) async throws {
        let executor = self.executor
        let rig = try SchedulerRig(executor: { _, _, _ in executor }) { $0.startBeforeCommit = startBeforeCommit }
        executor.exclude(["t"], on: SlotID(0))
        executor.retry(at: rig.clock.now() + .seconds(2))
        try await rig.run({ _ in
            let look: FlakyStore.Operation = startBeforeCommit ? .lookUp : .claim
            try await rig.store.until("the first look at the queue") { $0.calls(look) > 0 }
            let looks = rig.store.calls(look)
            let job = try await rig.submit()
            try await rig.store.until("the slot's look, past the job") { $0.calls(look) > looks }
            try await backOffEnds(rig, then: job, startsAs: 1)
        }, end: { [executor] in executor.finishAll(.stoppedForShutdown) })
    }

    /// The same, for a slot whose job ends while the type backs off there: the end's look finds
    /// nothing it may start, and the slot looks again once the back-off is over.
    @Test(arguments: [true, false])
    func aSlotThatEndsWhileATypeBacksOffLooksAgainWhenTheBackOffIsOver(startBeforeCommit: Bool) async throws {
        let executor = self.executor
        let rig = try SchedulerRig(executor: { _, _, _ in executor }) { $0.startBeforeCommit = startBeforeCommit }
        try await rig.run({ _ in
            let first = try await rig.submit()
            let attempt = try await executor.attempts.next("the first job")
            executor.exclude(["t"], on: SlotID(0))
            executor.retry(at: rig.clock.now() + .seconds(2))
            let second = try await rig.submit()
            attempt.finish(.succeeded)
            _ = try await rig.waitFor(first.id, .succeeded)
            try await backOffEnds(rig, then: second, startsAs: 2)
        }, end: { [executor] in executor.finishAll(.stoppedForShutdown) })
    }

    /// A back-off that ends while the slot's look is on its way: the look, asked with the type
    /// refused, finds nothing, and by its answer no type backs off any more (no retry to wait
    /// for). The slot looks again at once instead of leaving the job for the next submit.
    @Test(arguments: [true, false])
    func aBackOffThatEndsDuringTheSlotsLookStillStartsTheJob(startBeforeCommit: Bool) async throws {
        let executor = self.executor
        let rig = try SchedulerRig(executor: { _, _, _ in executor }) { $0.startBeforeCommit = startBeforeCommit }
        executor.exclude(["t"], on: SlotID(0))
        executor.retry(at: rig.clock.now() + .seconds(2))
        try await rig.run({ _ in
            let look: FlakyStore.Operation = startBeforeCommit ? .lookUp : .claim
            try await rig.store.until("the first look at the queue") { $0.calls(look) > 0 }
            rig.store.hold(look)
            let job = try await rig.submit()
            try await rig.store.until("the slot's look, the type refused") { $0.waiting(look) == 1 }
            executor.exclude([], on: SlotID(0))   // the back-off ends while the look is on its way
            executor.retry(at: nil)
            #expect(rig.store.release(look) == 1)
            let attempt = try await executor.attempts.next("job \(job.id), without another submit or time passing")
            #expect(attempt.job.id == job.id)
            attempt.finish(.succeeded)
            _ = try await rig.waitFor(job.id, .succeeded)
        }, end: { [executor] in executor.finishAll(.stoppedForShutdown) })
    }

    /// The same for the look a slot makes as its job ends (with `startBeforeCommit`, a look at
    /// the queue; without, the claim that goes with the end's record).
    @Test(arguments: [true, false])
    func aBackOffThatEndsDuringAnEndsLookStillStartsTheJob(startBeforeCommit: Bool) async throws {
        let executor = self.executor
        let rig = try SchedulerRig(executor: { _, _, _ in executor }) { $0.startBeforeCommit = startBeforeCommit }
        try await rig.run({ _ in
            let look: FlakyStore.Operation = startBeforeCommit ? .lookUp : .finish
            let first = try await rig.submit()
            let attempt = try await executor.attempts.next("the first job")
            executor.exclude(["t"], on: SlotID(0))
            executor.retry(at: rig.clock.now() + .seconds(2))
            let second = try await rig.submit()
            rig.store.hold(look)
            attempt.finish(.succeeded)
            try await rig.store.until("the end's look, the type refused") { $0.waiting(look) == 1 }
            executor.exclude([], on: SlotID(0))
            executor.retry(at: nil)
            #expect(rig.store.release(look) == 1)
            _ = try await rig.waitFor(first.id, .succeeded)
            let next = try await executor.attempts.next("job \(second.id), without another submit or time passing")
            #expect(next.job.id == second.id)
            next.finish(.succeeded)
            _ = try await rig.waitFor(second.id, .succeeded)
        }, end: { [executor] in executor.finishAll(.stoppedForShutdown) })
    }

    /// Slot 0 takes type `t` again (its back-off is over, with no wake-up of its own): `job`
    /// starts as the `number`th attempt once time moves on, and succeeds.
    func backOffEnds(_ rig: SchedulerRig, then job: Job, startsAs number: Int) async throws {
        executor.exclude([], on: SlotID(0))
        executor.retry(at: nil)
        try await rig.advance(by: .seconds(1), until: "job \(job.id)'s start, once the back-off is over") { [executor] in
            executor.startedCount == number
        }
        let attempt = try await executor.attempts.next("job \(job.id)")
        #expect(attempt.job.id == job.id)
        attempt.finish(.succeeded)
        _ = try await rig.waitFor(job.id, .succeeded)
    }
}
