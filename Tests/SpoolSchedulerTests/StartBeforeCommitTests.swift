import SpoolCore
import SpoolExecutor
@testable import SpoolScheduler
import SpoolStore
import SpoolTesting
import Testing

/// With a store only this server writes, a slot starts its next job before the claim's commit
/// (and its fsync) comes back. What must still hold: the claim is conditional, an attempt's end
/// is handled only after its own claim committed, a job canceled in between is stopped and
/// records nothing, a failing store makes no churn, and no job starts on two slots.
@Suite struct StartBeforeCommitTests {
    let executor = ScriptedExecutor()

    /// `claimDelay`: how long a claim from an idle slot waits for its job's end (the rig's default is none).
    func rig(slots: Int = 1, claimDelay: Duration? = nil) throws -> SchedulerRig {
        let executor = self.executor
        return try SchedulerRig(slots: slots, executor: { _, _, _ in executor }) { configuration in
            configuration.storeRetryDelay = .seconds(1)
            #expect(configuration.startBeforeCommit, "the default with a local store")
            if let claimDelay { configuration.claimDelay = claimDelay }
        }
    }

    @Test func byDefaultAClaimFromAnIdleSlotWaitsAMomentForItsEnd() {
        let configuration = SchedulerConfiguration(slots: [SlotSpec(id: SlotID(0))], dataDirectory: "/tmp")
        #expect(configuration.claimDelay > .zero && configuration.claimDelay <= .milliseconds(10))
    }

    /// The state events of `job`, oldest first.
    func states(_ rig: SchedulerRig, _ job: JobID) async throws -> [JSONValue?] {
        try await rig.memory.events(after: 0, job: job, limit: 100).filter { $0.kind == .state }.map { $0.data["state"] }
    }

    @Test func aJobThatEndsWithinTheClaimDelayCommitsItsClaimAndItsEndTogether() async throws {
        let rig = try rig(claimDelay: .seconds(1))
        try await running(rig) {
            rig.store.hold(.claim)   // a claim committed on its own would wait here
            rig.store.hold(.finish)
            let job = try await rig.submit()
            let attempt = try await executor.attempts.next("the job, its claim waiting for its end")
            #expect(try await rig.job(job.id).state == .queued)
            attempt.finish(.succeeded, result: .object(["n": .int(1)]))
            try await within("the commit of the job's claim with its end") { [store = rig.store] in
                while store.waiting(.finish) == 0 { try await pollingYield() }
            }
            #expect(rig.store.waiting(.claim) == 0, "no claim went on its own")
            #expect(try await rig.job(job.id).state == .queued, "neither is committed before that transaction")
            #expect(rig.store.release(.finish) == 1)
            let done = try await rig.waitFor(job.id, .succeeded)
            #expect(done.attempts == 1 && done.result == .object(["n": .int(1)]) && done.startedAt != nil)
            #expect(try await states(rig, job.id).suffix(2) == [.string("running"), .string("succeeded")])
            #expect(rig.store.release(.claim) == 0)
        }
    }

    /// Progress reported while the job's claim waits (a quick job reporting as it starts) is
    /// saved once the claim has committed — before, the store still holds the job as queued and
    /// takes no progress for it (found in a test run: a job that reported 50% and exited at once
    /// read as never having reported). Whether the job ends within the delay or runs on past it.
    @Test(arguments: [true, false])
    func progressReportedWhileTheClaimWaitsIsSavedOnceTheClaimHasCommitted(endsWithinTheDelay: Bool) async throws {
        let rig = try rig(claimDelay: .seconds(1))
        try await running(rig) {
            let job = try await rig.submit()
            let attempt = try await executor.attempts.next("the job, its claim waiting")
            #expect(try await rig.job(job.id).state == .queued)
            await attempt.observer.message(.progress(JobProgress(fraction: 0.5, message: "halfway")))
            if endsWithinTheDelay {
                attempt.finish(.succeeded)
            } else {
                try await rig.advance(by: .seconds(1), until: "the claim to commit, and the progress after it") {
                    try await rig.job(job.id).progress?.fraction == 0.5
                }
                attempt.finish(.succeeded)
            }
            let done = try await rig.waitFor(job.id, .succeeded)
            #expect(done.progress == JobProgress(fraction: 0.5, message: "halfway"))
        }
    }

    /// The claim that went ahead of such a job's end fails: the claim and the end are committed
    /// together instead (retried until recorded), not voided (found in review: the job, already
    /// ended, went back to the queue and ran again). Its progress is lost then.
    @Test func aFailedClaimAheadOfAnEndWithProgressIsCommittedWithTheEnd() async throws {
        let rig = try rig(claimDelay: .seconds(1))
        try await running(rig) {
            let job = try await rig.submit()
            let attempt = try await executor.attempts.next("the job, its claim waiting")
            await attempt.observer.message(.progress(JobProgress(fraction: 0.5)))
            rig.store.hold(.claim)
            attempt.finish(.succeeded)
            try await within("the claim to go ahead of the end") { [store = rig.store] in
                while store.waiting(.claim) == 0 { try await pollingYield() }
            }
            rig.store.fail(.claim, times: 1)
            rig.store.release(.claim)
            try await rig.advance(by: .seconds(1), until: "the claim and the end to be committed together") {
                try await rig.job(job.id).state == .succeeded
            }
            let done = try await rig.job(job.id)
            #expect(done.attempts == 1 && executor.startedCount == 1, "recorded once it could be, and not run again")
        }
    }

    @Test func aClaimCommitsOnItsOwnOnceTheDelayIsOverAndTheJobStillRuns() async throws {
        let rig = try rig(claimDelay: .seconds(1))
        try await running(rig) {
            let job = try await rig.submit()
            let attempt = try await executor.attempts.next("the job")
            #expect(try await rig.job(job.id).state == .queued, "its claim waits")
            try await rig.advance(by: .seconds(1), until: "the claim to commit") { try await rig.job(job.id).state == .running }
            attempt.finish(.succeeded)
            let done = try await rig.waitFor(job.id, .succeeded)
            #expect(done.attempts == 1)
            #expect(try await states(rig, job.id).suffix(2) == [.string("running"), .string("succeeded")])
        }
    }

    /// A job with a start deadline claims as it starts: the deadline's expiry never finds it queued.
    @Test func aJobWithAStartDeadlineClaimsAtOnce() async throws {
        let rig = try rig(claimDelay: .seconds(1))
        try await running(rig) {
            let job = try await rig.submit { $0.startWithinSeconds = 60 }
            let attempt = try await executor.attempts.next("the job")
            #expect(try await rig.waitFor(job.id, .running).attempts == 1, "claimed without the clock moving")
            attempt.finish(.succeeded)
            _ = try await rig.waitFor(job.id, .succeeded)
        }
    }

    @Test func aJobCanceledWhileItsClaimWaitsIsStoppedAndRecordsNothing() async throws {
        let rig = try rig(claimDelay: .seconds(1))
        try await running(rig) {
            let job = try await rig.submit()
            let attempt = try await executor.attempts.next("the job, its claim waiting")
            guard case .canceled = try await rig.memory.cancel(job.id, now: rig.clock.wall()) else {
                Issue.record("the job was not queued in the store")
                return
            }
            await rig.scheduler.stop(job.id, because: .cancel)   // as the API does after a cancel
            try await expectStoppedRecordingNothing(attempt, of: job, rig)
            #expect(try await states(rig, job.id).last == .string("canceled"))
        }
    }

    @Test func aFailedCommitOfAClaimWithItsEndIsRetriedWithBoth() async throws {
        let rig = try rig(claimDelay: .seconds(1))
        try await running(rig) {
            let job = try await rig.submit()
            let attempt = try await executor.attempts.next("the job")
            rig.store.hold(.finish)
            attempt.finish(.succeeded)
            try await within("the commit of the job's claim with its end") { [store = rig.store] in
                while store.waiting(.finish) == 0 { try await pollingYield() }
            }
            rig.store.fail(.finish, times: 1)
            rig.store.release(.finish)
            try await rig.advance(by: .seconds(1), until: "the claim and the end to be committed again") {
                try await rig.job(job.id).state == .succeeded
            }
            let done = try await rig.job(job.id)
            #expect(done.attempts == 1 && executor.startedCount == 1, "recorded once it could be, and not run again")
        }
    }

    /// Waits until the scheduler's first look at the (empty) queue went through.
    func firstLook(_ rig: SchedulerRig) async throws {
        try await rig.store.until("the first look at the queue") { $0.calls(.lookUp) > 0 }
    }

    /// An idle slot that found the queue empty starts a job submitted alone since without
    /// looking at the queue again: a look would wait on the hold. Nor does its look-ahead read the
    /// queue: nothing came but that job, so nothing is behind it. The slot looks once, after the
    /// job's end (for what comes due without a submit).
    @Test func aJobSubmittedAloneToAnIdleSlotThatFoundTheQueueEmptyStartsWithoutAnotherLook() async throws {
        let rig = try rig()
        try await running(rig) {
            try await firstLook(rig)
            for round in 1...2 {
                let looks = rig.store.calls(.lookUp)
                rig.store.hold(.lookUp)
                let job = try await rig.submit()
                let attempt = try await executor.attempts.next("job \(round), started with every look on hold")
                #expect(attempt.job.id == job.id)
                try await within("the look-ahead to know the queue is empty") { [scheduler = rig.scheduler] in
                    while await !scheduler.lookAheadFoundNothing(for: SlotID(0)) { try await pollingYield() }
                }
                #expect(rig.store.calls(.lookUp) == looks && rig.store.waiting(.lookUp) == 0, "no look went out")
                attempt.finish(.succeeded)
                rig.store.release(.lookUp)   // the look after its end
                _ = try await rig.waitFor(job.id, .succeeded)
                try await rig.store.until("the look after job \(round)'s end") { $0.calls(.lookUp) >= looks + 1 }
            }
        }
    }

    /// A job submitted while the job submitted alone runs is behind it: the slot starts it next.
    @Test func aJobSubmittedWhileTheJobSubmittedAloneRunsStartsNext() async throws {
        let rig = try rig()
        try await running(rig) {
            try await firstLook(rig)
            let first = try await rig.submit()
            let attempt = try await executor.attempts.next("the job submitted alone")
            #expect(attempt.job.id == first.id)
            try await within("the look-ahead to know the queue is empty") { [scheduler = rig.scheduler] in
                while await !scheduler.lookAheadFoundNothing(for: SlotID(0)) { try await pollingYield() }
            }
            let second = try await rig.submit()
            attempt.finish(.succeeded)
            let next = try await executor.attempts.next("the job submitted while it ran")
            #expect(next.job.id == second.id)
            next.finish(.succeeded)
            _ = try await rig.waitFor(second.id, .succeeded)
            #expect(try await rig.job(first.id).state == .succeeded)
        }
    }

    /// Two idle slots: the job submitted alone starts on one of them, once.
    @Test func aJobSubmittedAloneStartsOnOneIdleSlotOnly() async throws {
        let rig = try rig(slots: 2)
        try await running(rig) {
            try await firstLook(rig)
            rig.store.hold(.lookUp)
            let job = try await rig.submit()
            let attempt = try await executor.attempts.next("the job")
            #expect(attempt.job.id == job.id)
            rig.store.release(.lookUp)
            attempt.finish(.succeeded)
            _ = try await rig.waitFor(job.id, .succeeded)
            let other = try await rig.submit()
            let next = try await executor.attempts.next("the next job")
            #expect(next.job.id == other.id, "the first job did not start a second time")
            next.finish(.succeeded)
            _ = try await rig.waitFor(other.id, .succeeded)
            #expect(executor.startedCount == 2)
        }
    }

    /// With anything else since the empty look — a call that names no job (a retry, a requeue,
    /// an array) or a job not due yet — the slot looks at the queue first.
    @Test(arguments: ["unnamed", "delayed"])
    func anIdleSlotLooksAtTheQueueWhenTheSubmitDidNotComeAlone(_ case: String) async throws {
        let rig = try rig()
        try await running(rig) {
            try await firstLook(rig)
            rig.store.hold(.lookUp)
            let job: Job
            if `case` == "unnamed" {
                rig.scheduler.jobEnqueued()
                job = try await rig.submit()
            } else {
                job = try await rig.submit { $0.delaySeconds = 3600 }
            }
            try await rig.store.until("a look at the queue") { $0.waiting(.lookUp) > 0 }
            #expect(executor.startedCount == 0)
            rig.store.release(.lookUp)
            if `case` == "unnamed" {
                let attempt = try await executor.attempts.next("the job, after the look")
                #expect(attempt.job.id == job.id)
                attempt.finish(.succeeded)
                _ = try await rig.waitFor(job.id, .succeeded)
            }
        }
    }

    func running(_ rig: SchedulerRig, _ body: @escaping @Sendable () async throws -> Void) async throws {
        try await rig.run({ _ in try await body() }, end: { [executor] in executor.finishAll(.stoppedForShutdown) })
    }

    @Test func theNextJobStartsWhileTheCommitOfTheHandOverIsStillOnItsWay() async throws {
        let rig = try rig()
        try await running(rig) {
            let first = try await rig.submit()
            let second = try await rig.submit()
            let attempt = try await executor.attempts.next("the first job")
            _ = try await rig.waitFor(first.id, .running)
            rig.store.hold(.finish)
            attempt.finish(.succeeded)
            let next = try await executor.attempts.next("the second job, with the commit held")
            #expect(next.job.id == second.id && next.job.attempts == 1 && next.job.state == .running)
            #expect(try await rig.job(first.id).state == .running, "the first job's end is not committed yet")
            #expect(try await rig.job(second.id).state == .queued, "nor the second job's claim")
            #expect(rig.store.waiting(.finish) == 1, "both in one transaction")
            rig.store.release(.finish)
            #expect(try await rig.waitFor(second.id, .running).startedAt == (try await rig.waitFor(first.id, .succeeded)).finishedAt)
            next.finish(.succeeded)
            _ = try await rig.waitFor(second.id, .succeeded)
        }
    }

    @Test func anEndWhoseLookAheadFoundTheQueueEmptyCommitsWithoutLookingAtTheQueueFirst() async throws {
        let rig = try rig()
        try await running(rig) {
            let job = try await rig.submit()
            let attempt = try await executor.attempts.next("the job")
            _ = try await rig.waitFor(job.id, .running)
            try await within("the look-ahead to find the queue empty") { [scheduler = rig.scheduler] in
                while await !scheduler.lookAheadFoundNothing(for: SlotID(0)) { try await pollingYield() }
            }
            rig.store.hold(.lookUp)
            attempt.finish(.succeeded)
            _ = try await rig.waitFor(job.id, .succeeded)   // while every look at the queue waits
            // The slot still looks at the queue after the end (the slot-filling pass), and starts what it finds.
            try await within("the look at the queue after the end") { [store = rig.store] in
                while store.waiting(.lookUp) == 0 { try await pollingYield() }
            }
            let later = try await rig.submit()
            rig.store.release(.lookUp)
            let next = try await executor.attempts.next("the job submitted after")
            #expect(next.job.id == later.id)
            next.finish(.succeeded)
            _ = try await rig.waitFor(later.id, .succeeded)
        }
    }

    /// Two jobs submitted; returns the first one's attempt once the slot's look-ahead has found
    /// the second.
    func secondLookedUpAhead(_ rig: SchedulerRig) async throws -> (ScriptedExecutor.Attempt, Job) {
        let first = try await rig.submit(), second = try await rig.submit()
        let attempt = try await executor.attempts.next("the first job")
        _ = try await rig.waitFor(first.id, .running)
        try await within("the look-ahead to find the second job") { [scheduler = rig.scheduler] in
            while await scheduler.upcomingJob(for: SlotID(0)) != second.id { try await pollingYield() }
        }
        return (attempt, second)
    }

    /// The slot's next job, looked up while its job ran, stays its next when the jobs submitted
    /// since go after it: the end starts it without another look at the queue.
    @Test func aJobLookedUpAheadStaysNextWhenLaterSubmitsGoAfterIt() async throws {
        let rig = try rig()
        try await running(rig) {
            let (attempt, second) = try await secondLookedUpAhead(rig)
            _ = try await rig.submit()   // after the second, at its priority
            rig.store.hold(.lookUp)
            attempt.finish(.succeeded)
            let next = try await executor.attempts.next("the second job, while every look at the queue waits")
            #expect(next.job.id == second.id)
            rig.store.release(.lookUp)
            next.finish(.succeeded)
            _ = try await rig.waitFor(second.id, .succeeded)
        }
    }

    /// Whether a submit since the look-ahead may go first: a higher priority, an earlier tag at
    /// the same priority, a submit the log knows nothing of, or more submits than it keeps.
    @Test func theSubmissionLogSaysOvertakenWhenItCannotTell() {
        var ahead = Job(id: .random(), type: "t", input: .object([:]), priority: 1, timeoutSeconds: 60, maxAttempts: 1,
                        createdAt: Timestamp(microseconds: 0))
        ahead.fairTag = 10
        var log = Scheduler.SubmissionLog()
        log.add(.init(priority: 0, fairTag: 1))
        let asOf = log.count
        #expect(!log.overtakes(ahead, since: asOf))
        log.add(.init(priority: 1, fairTag: 11))
        log.add(.init(priority: 1, fairTag: 10))
        #expect(!log.overtakes(ahead, since: asOf), "a later or equal tag at its priority goes after it")
        var earlier = log
        earlier.add(.init(priority: 1, fairTag: 9))
        #expect(earlier.overtakes(ahead, since: asOf))
        var higher = log
        higher.add(.init(priority: 2, fairTag: 50))
        #expect(higher.overtakes(ahead, since: asOf))
        var unknown = log
        unknown.add(nil)
        #expect(unknown.overtakes(ahead, since: asOf))
        var many = log
        for _ in 0..<(Scheduler.SubmissionLog.kept * 3) { many.add(.init(priority: 0, fairTag: 1)) }
        #expect(many.overtakes(ahead, since: asOf), "more submits since than the log keeps")
        #expect(!many.overtakes(ahead, since: many.count - 5))
    }

    /// A job of higher priority submitted after the look-ahead goes first.
    @Test func aHigherPrioritySubmitAfterTheLookAheadGoesFirst() async throws {
        let rig = try rig()
        try await running(rig) {
            let (attempt, second) = try await secondLookedUpAhead(rig)
            let urgent = try await rig.submit(priority: 5)
            attempt.finish(.succeeded)
            let next = try await executor.attempts.next("the urgent job")
            #expect(next.job.id == urgent.id)
            next.finish(.succeeded)
            let last = try await executor.attempts.next("the second job")
            #expect(last.job.id == second.id)
            last.finish(.succeeded)
            _ = try await rig.waitFor(second.id, .succeeded)
        }
    }

    @Test func anAttemptThatEndsBeforeItsClaimCommittedIsRecordedAfterIt() async throws {
        let rig = try rig()
        try await running(rig) {
            rig.store.hold(.claim)
            let job = try await rig.submit()
            let attempt = try await executor.attempts.next("the job, its claim held")
            attempt.finish(.succeeded)
            // Give a wrongly early record every chance to happen (it must not).
            let deadline = ContinuousClock.now + .milliseconds(200)
            while ContinuousClock.now < deadline { try await pollingYield() }
            #expect(try await rig.job(job.id).state == .queued)
            #expect(rig.store.release(.claim) == 1)
            let done = try await rig.waitFor(job.id, .succeeded)
            #expect(done.attempts == 1)
        }
    }

    @Test func aJobCanceledBetweenItsLookUpAndItsCommitIsStoppedAndRecordsNothing() async throws {
        let rig = try rig()
        try await running(rig) {
            rig.store.hold(.claim)
            let job = try await rig.submit()
            let attempt = try await executor.attempts.next("the job, its claim held")
            guard case .canceled = try await rig.memory.cancel(job.id, now: rig.clock.wall()) else {
                Issue.record("the job was still queued in the store")
                return
            }
            rig.store.release(.claim)
            try await expectStoppedRecordingNothing(attempt, of: job, rig)
        }
    }

    /// `attempt` of the canceled `job` is stopped; whatever it says as it ends, the store never
    /// saw it (the job stays canceled, no attempt counted); and the slot runs a later job.
    func expectStoppedRecordingNothing(_ attempt: ScriptedExecutor.Attempt, of job: Job, _ rig: SchedulerRig) async throws {
        #expect(await attempt.nextStop() == .cancel, "the claim did not hold: the attempt is stopped")
        attempt.finish(.succeeded)
        let later = try await rig.submit()
        let next = try await executor.attempts.next("the slot's next job")
        #expect(next.job.id == later.id)
        next.finish(.succeeded)
        _ = try await rig.waitFor(later.id, .succeeded)
        let canceled = try await rig.job(job.id)
        #expect(canceled.state == .canceled && canceled.attempts == 0 && canceled.startedAt == nil)
    }

    @Test func aFailedCommitStopsTheStartedJobAndRecordsTheEndOnceTheStoreAnswers() async throws {
        let rig = try rig()
        try await running(rig) {
            let first = try await rig.submit()
            let second = try await rig.submit()
            let attempt = try await executor.attempts.next("the first job")
            _ = try await rig.waitFor(first.id, .running)
            rig.store.fail(.finish, times: 2)
            attempt.finish(.succeeded)
            let early = try await executor.attempts.next("the second job, started before the failed commit")
            #expect(await early.nextStop() == .cancel)
            early.finish(.canceled)
            try await rig.advance(by: .seconds(1), until: "the first job's end to be recorded and the second job claimed") {
                let first = try await rig.job(first.id), second = try await rig.job(second.id)
                return first.state == .succeeded && second.state == .running
            }
            let again = try await executor.attempts.next("the second job, claimed once the store answers")
            #expect(again.job.id == second.id && again.job.attempts == 1)
            again.finish(.succeeded)
            let done = try await rig.waitFor(second.id, .succeeded)
            #expect(done.attempts == 1 && executor.startedCount == 3, "one stopped start, no churn")
        }
    }

    @Test func twoSlotsNeverStartTheSameJob() async throws {
        let rig = try rig(slots: 2)
        try await running(rig) {
            var submitted: [JobID] = []
            for _ in 0..<12 { submitted.append(try await rig.submit().id) }
            var started: [JobID] = []
            while started.count < submitted.count {
                let attempt = try await executor.attempts.next("attempt \(started.count + 1)")
                started.append(attempt.job.id)
                attempt.finish(.succeeded)
            }
            #expect(Set(started).count == started.count, "a job started twice")
            #expect(Set(started) == Set(submitted))
            for id in submitted { #expect(try await rig.waitFor(id, .succeeded).attempts == 1) }
            #expect(executor.startedCount == submitted.count)
        }
    }

    @Test func aJobWhoseStartWasStoppedIsNotClaimedElsewhereUntilThatStartHasEnded() async throws {
        let rig = try rig(slots: 2)
        try await running(rig) {
            let a = try await rig.submit(), b = try await rig.submit()
            let first = try await executor.attempts.next("a"), second = try await executor.attempts.next("b")
            _ = try await rig.waitFor(a.id, .running)
            _ = try await rig.waitFor(b.id, .running)
            let x = try await rig.submit()
            rig.store.fail(.finish, times: 1)
            let (attemptA, attemptB) = first.job.id == a.id ? (first, second) : (second, first)
            attemptA.finish(.succeeded)
            let stopped = try await executor.attempts.next("x, started before the commit that fails")
            #expect(stopped.job.id == x.id)
            #expect(await stopped.nextStop() == .cancel)
            // The other slot frees while that start is still stopping: it must not claim x.
            attemptB.finish(.succeeded)
            _ = try await rig.waitFor(b.id, .succeeded)
            let deadline = ContinuousClock.now + .milliseconds(200)
            while executor.startedCount < 4, ContinuousClock.now < deadline { try await pollingYield() }
            #expect(executor.startedCount == 3, "x started again while its stopped start still ran")
            stopped.finish(.canceled)
            try await rig.advance(by: .seconds(1), until: "x to be claimed once its stopped start ended") {
                try await rig.job(x.id).state == .running
            }
            let again = try await executor.attempts.next("x, claimed")
            #expect(again.job.id == x.id && again.job.attempts == 1)
            again.finish(.succeeded)
            _ = try await rig.waitFor(x.id, .succeeded)
            _ = try await rig.waitFor(a.id, .succeeded)
        }
    }
}

extension StartBeforeCommitTests {
    /// A slot that gives up the job it looked up to start next (the store failing as its job
    /// ends) frees it: the job starts once the store answers again, not after the next submit.
    @Test func aJobLookedUpAheadIsFreedWhenItsSlotClaimsThroughTheStore() async throws {
        let other = JobType(name: "u", command: try CommandTemplate(["/bin/true"]), timeoutSeconds: 60, maxAttempts: 1)
        let executor = self.executor
        let rig = try SchedulerRig(slots: 2, types: [SchedulerRig.processType, other], executor: { _, _, _ in executor }) {
            $0.storeRetryDelay = .seconds(1)
        }
        executor.exclude(["t"], on: SlotID(1))
        try await running(rig) {
            let (attempt, second) = try await secondLookedUpAhead(rig)
            _ = try await rig.submit("u")
            let onOne = try await executor.attempts.next("the other type's job, on slot 1")
            #expect(onOne.slot.id == SlotID(1))
            rig.store.fail(.finish, times: 1)   // slot 1's end fails to commit: the store is in trouble
            let finishes = rig.store.calls(.finish)
            onOne.finish(.succeeded)
            try await rig.store.until("the failed commit of slot 1's end") { $0.calls(.finish) > finishes }
            attempt.finish(.succeeded)   // slot 0 ends while the store is in trouble: it claims through the store
            try await rig.advance(by: .seconds(1), until: "the job slot 0 had looked up ahead to start") {
                executor.startedCount >= 3
            }
            let next = try await executor.attempts.next("the job looked up ahead")
            #expect(next.job.id == second.id)
            next.finish(.succeeded)
            _ = try await rig.waitFor(second.id, .succeeded)
        }
    }
}

extension StartBeforeCommitTests {
    /// A job a busy slot looked up ahead is not kept from an idle slot: the idle slot starts it
    /// (found by attacking the build: with one array task running 15 s, the task its slot had
    /// looked ahead at waited all that time while the other slot sat idle).
    @Test func anIdleSlotTakesAJobABusySlotLookedUpAhead() async throws {
        let executor = self.executor
        let rig = try SchedulerRig(slots: 2, executor: { _, _, _ in executor })
        try await running(rig) {
            let first = try await rig.submit(), second = try await rig.submit(), third = try await rig.submit()
            let a = try await executor.attempts.next("a first job"), b = try await executor.attempts.next("a second job")
            #expect(Set([a.job.id, b.job.id]) == [first.id, second.id])
            let scheduler = rig.scheduler
            let busy = try await within("a slot to look ahead at the third job") { () -> SlotID in
                while true {
                    for slot in [a.slot.id, b.slot.id] where await scheduler.upcomingJob(for: slot) == third.id { return slot }
                    try await pollingYield()
                }
            }
            let (busyAttempt, freed) = busy == a.slot.id ? (a, b) : (b, a)
            freed.finish(.succeeded)
            let next = try await executor.attempts.next("the third job, on the slot that came free")
            #expect(next.job.id == third.id && next.slot.id == freed.slot.id)
            #expect(await scheduler.upcomingJob(for: busy) == nil, "no longer the busy slot's next")
            next.finish(.succeeded)
            busyAttempt.finish(.succeeded)
            for job in [first, second, third] { _ = try await rig.waitFor(job.id, .succeeded) }
        }
    }

    /// A look-ahead's answer can arrive after the job it found has started on another slot and
    /// ended there (no longer running here): that job is not the slot's next, and never starts twice.
    @Test func aLookAheadThatFoundAJobAnotherSlotRanMeanwhileIsRefused() async throws {
        let other = JobType(name: "u", command: try CommandTemplate(["/bin/true"]), timeoutSeconds: 60, maxAttempts: 1)
        let executor = self.executor
        let rig = try SchedulerRig(slots: 2, types: [SchedulerRig.processType, other], executor: { _, _, _ in executor })
        try await running(rig) {
            try await firstLook(rig)
            _ = try await rig.submit("u")
            let u = try await executor.attempts.next("a job on one slot")
            try await within("its look-ahead to find nothing") { [scheduler = rig.scheduler] in
                while await !scheduler.lookAheadFoundNothing(for: u.slot.id) { try await pollingYield() }
            }
            executor.holdPrepares()
            let first = try await rig.submit(), x = try await rig.submit()
            let onOther = try await executor.attempts.next("the first job, on the other slot")
            #expect(onOther.job.id == first.id && onOther.slot.id != u.slot.id)
            try await within("that slot's look-ahead, having found x") { [executor] in
                while executor.preparesWaiting == 0 { try await pollingYield() }
            }
            // The first slot's job ends: that slot looks, takes x, and x ends there.
            u.finish(.succeeded)
            let xAttempt = try await executor.attempts.next("x, where the first job ended")
            #expect(xAttempt.job.id == x.id && xAttempt.slot.id == u.slot.id)
            xAttempt.finish(.succeeded)
            try await within("x's end, handled") { [executor] in
                while !executor.endedJobs.contains(x.id) { try await pollingYield() }
            }
            executor.releasePrepares()   // the other slot's look-ahead answers: x
            let slot = onOther.slot.id
            try await within("that answer, taken") { [scheduler = rig.scheduler] in
                while await scheduler.upcomingJob(for: slot) == nil, await !scheduler.lookAheadFoundNothing(for: slot) { try await pollingYield() }
            }
            #expect(await rig.scheduler.upcomingJob(for: slot) == nil, "x ran on the other slot meanwhile")
            onOther.finish(.succeeded)
            _ = try await rig.waitFor(first.id, .succeeded)
            let last = try await rig.submit()
            let attempt = try await executor.attempts.next("the last job")
            #expect(attempt.job.id == last.id, "x did not start again")
            attempt.finish(.succeeded)
            _ = try await rig.waitFor(last.id, .succeeded)
            #expect(executor.startedCount == 4)
        }
    }
}

extension StartBeforeCommitTests {
    /// An idle slot that found nothing while it refused a type does not start the next job
    /// submitted alone without a look once it takes that type again: a job of that type queued
    /// before it goes first.
    @Test func aTypeBackInServiceIsLookedAtBeforeAJobSubmittedAlone() async throws {
        let rig = try rig()
        executor.exclude(["t"], on: SlotID(0))
        try await running(rig) {
            try await firstLook(rig)
            let looks = rig.store.calls(.lookUp)
            let waiting = try await rig.submit()
            try await rig.store.until("the slot's look, past the job") { $0.calls(.lookUp) > looks }
            executor.exclude([], on: SlotID(0))   // back in service, with no wake-up (yet)
            let later = try await rig.submit()
            let attempt = try await executor.attempts.next("the job queued first")
            #expect(attempt.job.id == waiting.id)
            attempt.finish(.succeeded)
            let next = try await executor.attempts.next("the later job")
            #expect(next.job.id == later.id)
            next.finish(.succeeded)
            _ = try await rig.waitFor(later.id, .succeeded)
        }
    }
}
