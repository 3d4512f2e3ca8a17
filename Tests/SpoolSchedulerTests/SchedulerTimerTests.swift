import SpoolCore
import SpoolExecutor
@testable import SpoolScheduler
import SpoolStore
import SpoolTesting
import Testing

/// The scheduler's one timer: a failed attempt runs again once its retry back-off has passed, a
/// delayed job starts when its time comes, a queued job whose start deadline passes is canceled —
/// also for jobs stored before the scheduler started (a restart). The wall clock moves with the
/// manual one; nothing sleeps. Both ways of claiming: first (as with a shared store) and after a
/// start (a local store).
@Suite struct SchedulerTimerTests {
    static let retrying: JobType = {
        var type = JobType(name: "r", command: try! CommandTemplate(["/bin/false"]), timeoutSeconds: 60, maxAttempts: 1)
        type.retry = RetryPolicy(maxAttempts: 3, backoffSeconds: 30, maxBackoffSeconds: 30, reasons: [.exitCode])
        return type
    }()

    let executor = ScriptedExecutor()

    func rig(startBeforeCommit: Bool) throws -> SchedulerRig {
        let executor = self.executor
        return try SchedulerRig(types: [SchedulerRig.processType, Self.retrying], manualWall: true, executor: { _, _, _ in executor }) {
            $0.startBeforeCommit = startBeforeCommit
            $0.shutdownGrace = .seconds(30)
        }
    }

    func running(_ rig: SchedulerRig, _ body: @escaping @Sendable () async throws -> Void) async throws {
        try await rig.run({ _ in try await body() }, end: { [executor] in executor.finishAll(.stoppedForShutdown) })
    }

    /// Moves the clock to `time` (wall), once the scheduler's timer sleeps towards it.
    func advance(_ rig: SchedulerRig, to time: Timestamp) async throws {
        let wait = time.secondsSince1970 - rig.clock.wall().secondsSince1970
        guard wait > 0 else { return }
        let step = Duration.microseconds(Int64((wait * 1_000_000).rounded(.up)))
        try await within("the scheduler's timer") { [manual = rig.manual] in
            await manual.waitForSleeper(within: step)
            return true
        }
        rig.manual.advance(by: step)
    }

    @Test(arguments: [false, true])
    func aFailedAttemptRunsAgainOnceItsBackoffHasPassedAndTheLastFailureIsFinal(startBeforeCommit: Bool) async throws {
        let rig = try rig(startBeforeCommit: startBeforeCommit)
        try await running(rig) {
            let job = try await rig.submit("r")
            for attempt in 1...3 {
                let running = try await executor.attempts.next("attempt \(attempt)")
                #expect(running.job.id == job.id && running.job.attempts == attempt)
                running.finish(.exited(code: 2))
                guard attempt < 3 else { break }
                let waiting = try await rig.waitFor(job.id, .queued, after: .running)
                #expect(waiting.attempts == attempt && waiting.attemptLog.count == attempt)
                let retryAt = try #require(waiting.notBefore)
                #expect(retryAt == waiting.attemptLog.last?.retryAt)
                #expect(executor.startedCount == attempt, "nothing runs while the back-off lasts")
                try await advance(rig, to: retryAt)
            }
            let failed = try await rig.waitFor(job.id, .failed)
            #expect(failed.attempts == 3 && failed.exitCode == 2 && failed.attemptLog.map(\.state) == [.queued, .queued, .failed])
            try await within("the job's directory offered to its slot") { [executor] in
                while executor.endedJobs.isEmpty { try await pollingYield() }
            }
            #expect(executor.endedJobs == [job.id], "once it ended for good: an attempt that goes round again keeps its directory")
        }
    }

    @Test(arguments: [false, true])
    func aDelayedJobStartsWhenItsTimeComesAndNotBefore(startBeforeCommit: Bool) async throws {
        let rig = try rig(startBeforeCommit: startBeforeCommit)
        try await running(rig) {
            let delayed = try await rig.submit { $0.delaySeconds = 60 }
            let now = try await rig.submit()
            let first = try await executor.attempts.next("the job that is due")
            #expect(first.job.id == now.id, "a delayed job does not hold up the one behind it")
            first.finish(.succeeded)
            _ = try await rig.waitFor(now.id, .succeeded)
            #expect(try await rig.job(delayed.id).state == .queued)
            try await advance(rig, to: try #require(delayed.notBefore))
            let second = try await executor.attempts.next("the delayed job")
            #expect(second.job.id == delayed.id)
            #expect(try #require(second.job.startedAt) >= delayed.notBefore!)
            second.finish(.succeeded)
            _ = try await rig.waitFor(delayed.id, .succeeded)
        }
    }

    /// The slot's look-ahead found nothing due; the delayed job comes due while the slot is busy
    /// (its timer finds no idle slot): the slot's end must still look at the queue.
    @Test func aDelayedJobThatComesDueWhileTheSlotIsBusyStartsWhenTheSlotsJobEnds() async throws {
        let rig = try rig(startBeforeCommit: true)
        try await running(rig) {
            let delayed = try await rig.submit { $0.delaySeconds = 60 }
            let now = try await rig.submit()
            let first = try await executor.attempts.next("the job that is due")
            #expect(first.job.id == now.id)
            try await within("the look-ahead to find nothing due") { [scheduler = rig.scheduler] in
                while await !scheduler.lookAheadFoundNothing(for: SlotID(0)) { try await pollingYield() }
            }
            // The timer fires and is held in the store; the job's end queues up behind it, so the
            // timer's pass over the slots finds the only one busy.
            rig.store.hold(.timers)
            try await advance(rig, to: try #require(delayed.notBefore))
            try await within("the timer to fire") { [store = rig.store] in
                while store.waiting(.timers) == 0 { try await pollingYield() }
            }
            first.finish(.succeeded)
            rig.store.release(.timers)
            let second = try await executor.attempts.next("the delayed job, at the busy slot's end")
            #expect(second.job.id == delayed.id)
            second.finish(.succeeded)
            _ = try await rig.waitFor(delayed.id, .succeeded)
        }
    }

    @Test(arguments: [false, true])
    func aQueuedJobIsCanceledWhenItsStartDeadlinePasses(startBeforeCommit: Bool) async throws {
        let rig = try rig(startBeforeCommit: startBeforeCommit)
        try await running(rig) {
            let blocker = try await rig.submit()
            let blocking = try await executor.attempts.next("the blocker")
            let hurried = try await rig.submit { $0.startWithinSeconds = 10 }
            let patient = try await rig.submit { $0.startWithinSeconds = 3600 }
            try await advance(rig, to: try #require(hurried.startBy))
            let canceled = try await rig.waitFor(hurried.id, .canceled)
            #expect(canceled.reason == .deadline && canceled.error == Job.deadlineMessage && canceled.attempts == 0)
            #expect(try await rig.job(patient.id).state == .queued)
            blocking.finish(.succeeded)
            _ = try await rig.waitFor(blocker.id, .succeeded)
            let next = try await executor.attempts.next("the job whose deadline is still ahead")
            #expect(next.job.id == patient.id)
            next.finish(.succeeded)
        }
    }

    @Test func timersOfJobsStoredBeforeTheSchedulerStartedAreKept() async throws {
        let rig = try rig(startBeforeCommit: true)
        var submission = Submission(type: "t")
        submission.delaySeconds = 45
        let stored = try await rig.store.enqueue(try rig.catalog.admit(submission, id: .random(), now: rig.clock.wall())).job
        var late = Submission(type: "t")
        late.startWithinSeconds = 1
        let missed = try await rig.store.enqueue(try rig.catalog.admit(late, id: .random(), now: rig.clock.wall().adding(seconds: -5))).job
        try await running(rig) {
            // Its deadline passed while the server was down: canceled at start, never run.
            #expect(try await rig.waitFor(missed.id, .canceled).reason == .deadline)
            try await advance(rig, to: try #require(stored.notBefore))
            let attempt = try await executor.attempts.next("the job delayed before the restart")
            #expect(attempt.job.id == stored.id)
            attempt.finish(.succeeded)
            _ = try await rig.waitFor(stored.id, .succeeded)
            #expect(executor.startedCount == 1)
        }
    }
}
