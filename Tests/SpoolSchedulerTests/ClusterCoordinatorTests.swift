import Logging
import SpoolCore
import SpoolExecutor
import SpoolScheduler
import SpoolStore
import SpoolTesting
import Synchronization
import Testing

/// The cluster coordinator's lease keeping, over the scheduler rig's store made "shared" by a
/// stand-in whose lease renewals can hang (a database cut off behind a half-open connection),
/// on the rig's manual clock.
@Suite struct ClusterCoordinatorTests {
    /// A node that cannot renew its leases for longer than a lease stops its jobs then (other
    /// nodes may rescue them from that moment): not when the renewal in flight gives up, which
    /// a half-open connection holds until the store's operation timeout, while the job already
    /// runs again elsewhere.
    @Test func aNodeWhoseRenewalsHangStopsItsJobsOnceALeaseHasPassed() async throws {
        let executor = ScriptedExecutor()
        let rig = try SchedulerRig(executor: { _, _, _ in executor }) { $0.startBeforeCommit = false }
        let shared = LeaseStandIn(rig.store, lease: .seconds(3))
        try await rig.run({ _ in
            _ = try await rig.submit()
            let attempt = try await executor.attempts.next("the job")
            let stopped = Mutex<StopReason?>(nil)
            let watcher = Task { let stop = await attempt.nextStop(); stopped.withLock { $0 = stop } }   // unstructured: awaited below
            // Started now, the coordinator renews the running job's lease at once.
            let coordinating = try await Self.coordinate(rig, through: shared, renewing: attempt.job.id)
            defer { coordinating.cancel() }
            shared.partition()
            // A lease and a half on: the renewal in flight still hangs (it never returns here).
            // The watch that fences runs every tenth of a lease; time moves until it has.
            rig.manual.advance(by: .milliseconds(4500))
            for _ in 0..<50 where stopped.withLock({ $0 == nil }) {
                if await rig.manual.sleeperArrives(patience: .milliseconds(5)) { rig.manual.advance(by: .milliseconds(100)) }
            }
            try await within("the job stopped while the renewal hangs") { await watcher.value }
            #expect(stopped.withLock { $0 } == .shutdown)
            // The node's health says why (found by attacking the build: /healthz read ok meanwhile);
            // a renewal begun before the partition may still go through and clear it once.
            try await rig.advance(by: .milliseconds(100), until: "the node's health to say its renewals fail", limit: 50) {
                await rig.scheduler.health().status == .degraded
            }
            let health = await rig.scheduler.health()
            #expect(health.status == .degraded && health.problems.contains { $0.hasPrefix("no lease renewal has gone through for") },
                    "\(health)")
        }, end: { [executor] in executor.finishAll(.stoppedForShutdown) })
    }

    /// A job a node stopped because it could not renew its lease is left to the cluster's rescue:
    /// its end is not recorded, so its attempt is not given back and the node cannot claim it
    /// again under the same attempt number (found by attacking the build: over a slow link the
    /// node requeued the job with its attempt given back, claimed it again as attempt 1, never
    /// renewed or stopped that copy — its bookkeeping took it for the fenced one — and the job
    /// ran on two nodes at once for 30 s once another node rescued it).
    @Test func aJobStoppedForALostLeaseIsLeftForTheRescueNotRequeuedUnderItsAttempt() async throws {
        try await Self.withACoordinatedJob { rig, shared, executor, job, attempt in
            shared.partition()
            let stopped = Self.firstStop(of: attempt)
            try await rig.advance(by: .milliseconds(100), until: "the job stopped for its lost lease") { stopped.reason != nil }
            attempt.finish(.stoppedForShutdown)
            // Time for the end to be handled, and for the slot to look at the queue again.
            try await rig.advance(by: .milliseconds(100), until: "the slot idle again", limit: 50) {
                await rig.scheduler.occupancy().allSatisfy { $0.1 == nil }
            }
            let stored = try await rig.job(job.id)
            #expect(stored.state == .running && stored.attempts == 1, "left for the rescue: \(stored.state), attempt \(stored.attempts)")
            let again = try? await executor.attempts.next("an attempt of the job claimed here again", within: .milliseconds(300))
            #expect(again == nil, "claimed here again")
            // Nor is it taken for a claim whose answer was lost, to be given back with its attempt.
            #expect(await rig.scheduler.knownJobs().contains(job.id), "the job left for the rescue is known here")
        }
    }

    /// An attempt stopped for a lost lease that ended on its own meanwhile (a result, a failure)
    /// is recorded as any other — the store fences it by attempt — not dropped (found in review:
    /// a finished job would have run again after the rescue).
    @Test func aJobThatEndsOnItsOwnAfterALostLeaseHasItsEndRecorded() async throws {
        try await Self.withACoordinatedJob { rig, shared, _, job, attempt in
            shared.partition()
            let stopped = Self.firstStop(of: attempt)
            try await rig.advance(by: .milliseconds(100), until: "the job stopped for its lost lease") { stopped.reason != nil }
            attempt.finish(.succeeded, result: .object(["frames": .int(3)]))
            let ended = try await rig.waitFor(job.id, .succeeded)
            #expect(ended.attempts == 1 && ended.result == .object(["frames": .int(3)]))
        }
    }

    /// Claims may still go through while renewals hang (on another of the pool's connections):
    /// a job claimed during the outage is stopped too, once its own lease has run out unrenewed,
    /// not left running while other nodes rescue it.
    @Test func aJobClaimedDuringTheOutageIsStoppedOnceItsLeaseHasRunOut() async throws {
        try await Self.withACoordinatedJob(slots: 2) { rig, shared, executor, _, one in
            shared.partition()
            let firstStop = Self.firstStop(of: one)
            try await rig.advance(by: .milliseconds(100), until: "the first job stopped") { firstStop.reason != nil }
            #expect(firstStop.reason == .shutdown)
            _ = try await rig.submit()
            let two = try await executor.attempts.next("a job claimed during the outage")
            let claimedAt = rig.clock.now()
            let secondStop = Self.firstStop(of: two)
            try await rig.advance(by: .milliseconds(100), until: "the job claimed during the outage stopped") { secondStop.reason != nil }
            #expect(secondStop.reason == .shutdown)
            #expect(rig.clock.now() - claimedAt >= .seconds(3), "stopped before its lease ran out")
        }
    }

    /// After an outage of the store that this node saw too, its rescue waits a lease before it
    /// takes any node's jobs: every node's leases ran out meanwhile, and the live ones need that
    /// long to renew them and to record the ends that came during the outage (found by
    /// attacking the build: a job that succeeded a second into a 12-s outage was rescued the
    /// moment the database came back, before its node recorded the success — read as failed,
    /// node_lost, or run a second time).
    @Test func theRescueWaitsALeaseAfterAnOutageOfTheStore() async throws {
        let rig = try SchedulerRig(executor: { _, _, _ in ScriptedExecutor() })
        let shared = LeaseStandIn(rig.store, lease: .seconds(3))
        try await rig.run { _ in
            var configuration = ClusterCoordinator.Configuration()
            configuration.runsJobs = false
            let coordinator = ClusterCoordinator(store: shared, scheduler: rig.scheduler, configuration: configuration, clock: rig.clock,
                                                 logger: SchedulerRig.quiet("cluster-test"))
            let coordinating = Task { try await coordinator.run() }   // unstructured: cancelled below
            defer { coordinating.cancel() }
            // A node that starts may start as an outage ends: it too waits a lease.
            let started = rig.clock.now()
            try await rig.advance(by: .milliseconds(100), until: "a rescue pass") { shared.rescues.passed > 0 }
            #expect(rig.clock.now() - started >= .seconds(3), "the first rescue \(rig.clock.now() - started) after the start")
            shared.setDown(true)
            let down = rig.clock.now()
            try await rig.advance(by: .milliseconds(100), until: "5 s of outage") { rig.clock.now() - down >= .seconds(5) }
            let passed = shared.rescues.passed
            shared.setDown(false)
            let back = rig.clock.now()
            try await rig.advance(by: .milliseconds(100), until: "a rescue pass after the outage") { shared.rescues.passed > passed }
            #expect(rig.clock.now() - back >= .seconds(3), "rescued \(rig.clock.now() - back) after the store came back")
        }
    }

    /// Each heartbeat carries the node's health, so that `GET /v1/nodes` shows an agent (which
    /// answers no `/healthz`) whose data directory is full: found by attacking the build, an
    /// agent that could run nothing read as alive and well in the cluster's view.
    @Test func heartbeatsCarryTheNodesHealth() async throws {
        try await Self.withACoordinatedJob { rig, shared, _, job, attempt in
            try await within("the first heartbeat") { while shared.heartbeats.isEmpty { try await pollingYield() } }
            #expect(shared.heartbeats.first == .ok, "the first heartbeat, while the job runs")
            attempt.finish(ExecutionResult(.returned(message: "the data directory is full: cannot write input.json: No space left on device"),
                                           dataDirectoryUnusable: true))
            _ = try await rig.waitFor(job.id, .queued, after: .running)
            try await rig.advance(by: .milliseconds(100), until: "a heartbeat that says the data directory is full") {
                shared.heartbeats.last?.status == .degraded
            }
            let health = try #require(shared.heartbeats.last)
            #expect(health.problems.count == 1 && health.problems[0].hasPrefix("the data directory has been unusable for"), "\(health)")
        }
    }

    /// A job whose claim's answer came late (a slow database) is fenced counting from when its
    /// claim went out — where its lease began, at the claim's commit — not from when the answer
    /// arrived, by which time the rescue's clock had run that much longer (found in review).
    @Test func aJobWhoseClaimAnsweredLateIsFencedFromItsClaim() async throws {
        try await Self.withACoordinatedJob(slots: 2) { rig, shared, executor, _, one in
            shared.partition()
            rig.store.hold(.claim, at: .afterAnswer)
            _ = try await rig.submit()
            try await within("the second job's claim answered, the answer held") {
                while rig.store.waiting(.claim, at: .afterAnswer) == 0 { try await pollingYield() }
            }
            let sent = rig.manual.now
            rig.manual.advance(by: .seconds(2))   // the answer arrives 2 s late
            rig.store.release(.claim, at: .afterAnswer)
            let two = try await executor.attempts.next("the second job")
            let started = rig.manual.now
            let stop = Self.firstStop(of: two)
            try await rig.advance(by: .milliseconds(100), until: "the late-answered job stopped") { stop.reason != nil }
            #expect(sent.duration(to: rig.manual.now) < .seconds(3) + .milliseconds(600),
                    "fenced \(started.duration(to: rig.manual.now)) after its answer")
            one.finish(.stoppedForShutdown)
            two.finish(.stoppedForShutdown)
        }
    }

    /// A rig (one slot, or `slots`) running one job, with a coordinator over a stand-in (a 3-s lease) that has
    /// renewed its lease: `body` gets the rig, the stand-in, the executor, the job and its attempt.
    static func withACoordinatedJob(slots: Int = 1, _ body: @escaping @Sendable (SchedulerRig, LeaseStandIn, ScriptedExecutor, Job,
                                                                                 ScriptedExecutor.Attempt) async throws -> Void) async throws {
        let executor = ScriptedExecutor()
        let rig = try SchedulerRig(slots: slots, executor: { _, _, _ in executor }) { $0.startBeforeCommit = false }
        let shared = LeaseStandIn(rig.store, lease: .seconds(3))
        try await rig.run({ _ in
            let job = try await rig.submit()
            let attempt = try await executor.attempts.next("the job")
            let coordinating = try await Self.coordinate(rig, through: shared, renewing: job.id)
            defer { coordinating.cancel() }
            try await body(rig, shared, executor, job, attempt)
        }, end: { [executor] in executor.finishAll(.stoppedForShutdown) })
    }

    /// After each renewal the node settles the claims it does not know (their answers lost): it
    /// names every job it runs, and counts a claim unanswerable only once the store's claim
    /// answer limit has passed since, on the wall clock its claims are stamped with.
    @Test func eachRenewalSettlesTheClaimsTheNodeDoesNotKnow() async throws {
        try await Self.withACoordinatedJob { rig, shared, _, job, attempt in
            try await rig.advance(by: .milliseconds(100), until: "a settling after a renewal", limit: 50) { !shared.settled.isEmpty }
            let settling = try #require(shared.settled.last)
            #expect(settling.known == [job.id])
            #expect(settling.answerableSince == settling.now.adding(seconds: -31))
            #expect(settling.now.microseconds <= rig.clock.wall().microseconds)
            attempt.finish(.succeeded)
            _ = try await rig.waitFor(job.id, .succeeded)
            let count = shared.settled.count
            try await rig.advance(by: .milliseconds(100), until: "a settling with the job ended", limit: 50) { shared.settled.count > count + 1 }
            #expect(shared.settled.last?.known == [], "an ended job is no longer known")
        }
    }

    /// A fail-fast array that a node left open — it recorded a task's failure, then stopped
    /// before it canceled the rest — is closed by the cluster's sweep, not only when some node
    /// starts again (found in review: while the cluster ran on, the rest of the array ran).
    @Test func aFailFastArrayLeftOpenIsClosedByTheClustersSweep() async throws {
        let executor = ScriptedExecutor()
        let rig = try SchedulerRig(executor: { _, _, _ in executor }) { $0.startBeforeCommit = false }
        // A lease long past the test's minutes of manual time: no renewal can fall behind it.
        let shared = LeaseStandIn(rig.store, lease: .seconds(3600))
        try await rig.run({ _ in
            let blocker = try await rig.submit()
            let attempt = try await executor.attempts.next("the job holding the slot")
            let array = ArraySpec.newID()
            let tasks = try (0..<3).map { index in
                var task = try rig.catalog.admit(Submission(type: "t", input: .object(["item": .int(Int64(index))])), id: .random(), now: rig.clock.wall())
                task.array = ArrayMembership(id: array, index: Int64(index), failFast: true)
                return task
            }
            _ = try await rig.store.enqueueArray(tasks, limits: QueueLimits())
            // Another node took the first task and recorded its failure, then stopped.
            let first = try #require(try await rig.store.claimNext(for: SlotID(7), excluding: [], now: rig.clock.wall()))
            #expect(first.array?.index == 0)
            _ = try await rig.store.finish(first.id, attempt: 1, outcome: .exited(code: 1), now: rig.clock.wall(), claimNextFor: nil)
            #expect(try await rig.store.failFastArraysLeftOpen() == [array])
            let coordinating = try await Self.coordinate(rig, through: shared, renewing: blocker.id)
            defer { coordinating.cancel() }
            @Sendable func rest() async throws -> [Job] { Array(try await rig.store.arrayTasks(array, after: nil, limit: 10).dropFirst()) }
            try await rig.advance(by: .seconds(1), until: "the rest of the array canceled", limit: 90) {
                try await rest().allSatisfy { $0.state == .canceled }
            }
            #expect(try await rest().allSatisfy { $0.canceledBy == "fail_fast" })
            attempt.finish(.succeeded)
            _ = try await rig.waitFor(blocker.id, .succeeded)
        }, end: { [executor] in executor.finishAll(.stoppedForShutdown) })
    }

    /// Starts a coordinator over `shared` for the rig's scheduler, in the test's graceful-shutdown
    /// context (the caller cancels the task at the end), and waits until it has renewed `job`'s
    /// lease (at once: the first renewal runs as it starts).
    static func coordinate(_ rig: SchedulerRig, through shared: LeaseStandIn, renewing job: JobID) async throws -> Task<Void, any Error> {
        let coordinator = ClusterCoordinator(store: shared, scheduler: rig.scheduler, clock: rig.clock, logger: SchedulerRig.quiet("cluster-test"))
        let coordinating = Task { try await coordinator.run() }   // unstructured: the caller cancels it at the end
        do {
            try await within("job \(job)'s lease renewed") {
                while !shared.renewed.contains(job) { try await pollingYield() }
            }
        } catch {
            coordinating.cancel()
            throw error
        }
        return coordinating
    }

    /// An attempt's first stop request, once it has come.
    final class StopSeen: Sendable {
        private let seen = Mutex<StopReason?>(nil)
        var reason: StopReason? { seen.withLock { $0 } }
        fileprivate func saw(_ reason: StopReason?) { seen.withLock { $0 = reason } }
    }

    static func firstStop(of attempt: ScriptedExecutor.Attempt) -> StopSeen {
        let seen = StopSeen()
        Task { seen.saw(await attempt.nextStop()) }   // unstructured: ends with the attempt's stop stream (at the latest when the attempt ends)
        return seen
    }

    /// A job rescued while it ran here and claimed here again: the earlier attempt, still
    /// running, is stopped at once (the store gave the job to the new one), and the new one
    /// starts once it has ended — not left to run beside a newer attempt that waits for it.
    @Test func aJobClaimedHereAgainStopsItsEarlierAttemptStillRunningHere() async throws {
        let executor = ScriptedExecutor()
        let rig = try SchedulerRig(slots: 2, types: [Self.retried], sharedLease: .seconds(3), executor: { _, _, _ in executor })
        try await rig.run({ _ in
            let job = try await rig.submit()
            let first = try await executor.attempts.next("the first attempt")
            _ = try await rig.memory.recoverInterrupted(now: rig.clock.wall())   // rescued by "another node"
            rig.scheduler.jobEnqueued()
            let stop = try await within("the first attempt asked to stop") { await first.nextStop() }
            #expect(stop == .shutdown)
            await first.observer.output(Array("from the stale attempt\n".utf8))   // not the job's log any more
            first.finish(.stoppedForShutdown)
            let second = try await executor.attempts.next("the second attempt")
            #expect(second.job.id == job.id && second.job.attempts == 2)
            await second.observer.output(Array("from the second attempt\n".utf8))
            second.finish(.succeeded)
            let events = try await Self.finalEvents(of: job.id, in: rig)
            let logged = events.filter { $0.kind == .log }.compactMap { $0.data["text"]?.stringValue }.joined()
            #expect(logged.contains("from the second attempt") && !logged.contains("stale"), "logged: \(logged)")
        }, end: { [executor] in executor.finishAll(.stoppedForShutdown) })
    }

    /// An attempt that ends on its own after its job was rescued (before any renewal noticed):
    /// the store does not record its end, and the scheduler reports nothing of it — no outputs
    /// event for a job that is not its any more — and goes on to the slot's next job.
    @Test func anAttemptThatEndsAfterItsJobWasRescuedReportsNothing() async throws {
        let executor = ScriptedExecutor()
        let rig = try SchedulerRig(types: [Self.retried], sharedLease: .seconds(3), executor: { _, _, _ in executor })
        try await rig.run({ _ in
            let job = try await rig.submit()
            let first = try await executor.attempts.next("the first attempt")
            _ = try await rig.memory.recoverInterrupted(now: rig.clock.wall())   // rescued by "another node"
            first.finish(.succeeded, result: .object(["from": .string("the stale attempt")]))
            // The slot claims the job again (its only queued one): attempt 2 runs it.
            let second = try await executor.attempts.next("the second attempt")
            #expect(second.job.attempts == 2)
            second.finish(.succeeded, result: .object(["from": .string("the second attempt")]))
            let events = try await Self.finalEvents(of: job.id, in: rig)
            #expect(events.filter { $0.kind == .outputs }.count == 1, "the stale attempt reported outputs too")
            #expect(try await rig.job(job.id).result == .object(["from": .string("the second attempt")]))
        }, end: { [executor] in executor.finishAll(.stoppedForShutdown) })
    }

    /// The same when the stale end is recorded only after failing for longer than a lease (the
    /// job may have been rescued meanwhile): not recorded then, it is not taken for its own end
    /// whose first commit's answer was lost.
    @Test func anEndNotRecordedAfterALeaseOfFailuresReportsNothing() async throws {
        let executor = ScriptedExecutor()
        let rig = try SchedulerRig(types: [Self.retried], sharedLease: .seconds(3), executor: { _, _, _ in executor }) {
            $0.storeRetryDelay = .seconds(1)
        }
        try await rig.run({ _ in
            let job = try await rig.submit()
            let first = try await executor.attempts.next("the first attempt")
            _ = try await rig.memory.recoverInterrupted(now: rig.clock.wall())   // rescued by "another node"
            rig.store.fail(.finish, times: 4)
            first.finish(.succeeded, result: .object(["from": .string("the stale attempt")]))
            try await rig.advance(by: .seconds(1), until: "the job claimed again after the failed records") { executor.startedCount == 2 }
            let second = try await executor.attempts.next("the second attempt")
            second.finish(.succeeded, result: .object(["from": .string("the second attempt")]))
            let events = try await Self.finalEvents(of: job.id, in: rig)
            #expect(events.filter { $0.kind == .outputs }.count == 1, "the stale attempt reported outputs too")
        }, end: { [executor] in executor.finishAll(.stoppedForShutdown) })
    }

    /// The job's events once it has succeeded and the `outputs` event of that end is written
    /// (one that comes after its `succeeded` state event; an earlier one is a stale attempt's).
    static func finalEvents(of job: JobID, in rig: SchedulerRig) async throws -> [JobEvent] {
        try await rig.waitFor(job, .succeeded)
        return try await within("the outputs event of the job's end") {
            while true {
                let events = try await rig.memory.events(after: 0, job: job, limit: 1000)
                if let end = events.last(where: { $0.kind == .state && $0.data["state"] == .string("succeeded") }),
                   events.contains(where: { $0.kind == .outputs && $0.id > end.id }) {
                    return events
                }
                try await pollingYield()
            }
        }
    }

    /// A renewal that began before the job was claimed here again finds the attempt it renewed
    /// rescued: it fences that attempt only, not the newer one the store now holds for this node.
    @Test func aRenewalFencesTheStaleAttemptAndNotTheNewerOneClaimedMeanwhile() async throws {
        let executor = ScriptedExecutor()
        let rig = try SchedulerRig(slots: 2, types: [Self.retried], sharedLease: .seconds(3), executor: { _, _, _ in executor })
        let shared = LeaseStandIn(rig.store, lease: .seconds(3))
        try await rig.run({ _ in
            let job = try await rig.submit()
            let first = try await executor.attempts.next("the first attempt")
            let coordinating = try await Self.coordinate(rig, through: shared, renewing: job.id)
            defer { coordinating.cancel() }
            // The next renewal (a third of a lease on) begins and waits with attempt 1 to renew.
            shared.renewals.hold()
            try await rig.advance(by: .milliseconds(100), until: "the next renewal begun") { shared.renewalsBegun == 2 }
            _ = try await rig.memory.recoverInterrupted(now: rig.clock.wall())   // rescued by "another node"
            rig.scheduler.jobEnqueued()
            try await within("the job claimed here again") {
                while await rig.scheduler.heldAttempts()[job.id] != 2 { try await pollingYield() }
            }
            shared.renewals.release()
            // A renewal begins only once the one before has fenced what it found.
            try await rig.advance(by: .milliseconds(100), until: "the renewal after it begun") { shared.renewalsBegun >= 3 }
            first.finish(.stoppedForShutdown)
            let second = try await executor.attempts.next("the second attempt")
            #expect(second.job.attempts == 2)
            await rig.scheduler.stop(job.id, because: .cancel)
            let stop = try await within("the second attempt's first stop") { await second.nextStop() }
            #expect(stop == .cancel, "the fence stopped the newer attempt too")
        }, end: { [executor] in executor.finishAll(.stoppedForShutdown) })
    }

    static let retried = JobType(name: "t", command: try! CommandTemplate(["/bin/true"]), timeoutSeconds: 60, maxAttempts: 3)

    /// A job that ends during a shutdown is recorded through a passing store failure (retried,
    /// its lease renewed meanwhile): its outcome is not given up at the first error, to be
    /// rescued a lease later as `node_lost` with its result lost.
    @Test func aJobThatEndsDuringAShutdownIsRecordedThroughAPassingStoreFailure() async throws {
        let executor = ScriptedExecutor()
        let rig = try SchedulerRig(sharedLease: .seconds(10), executor: { _, _, _ in executor })
        try await rig.run({ trigger in
            let job = try await rig.submit()
            let attempt = try await executor.attempts.next("the job")
            rig.store.fail(.finish, times: 1)
            trigger.triggerGracefulShutdown()
            attempt.finish(.succeeded, result: .object(["frames": .int(24)]))   // within the shutdown's grace
            try await rig.advance(by: .milliseconds(500), until: "the job's end recorded") {
                try await rig.job(job.id).state == .succeeded
            }
            #expect(try await rig.job(job.id).result == .object(["frames": .int(24)]))
        }, end: { [executor] in executor.finishAll(.stoppedForShutdown) })
    }
}

/// A `SharedJobStore` over a local one, for the coordinator: renewals hold an attempt while
/// the local store has it running (a test "rescues" a job by requeueing it there), and hang
/// until cancelled after `partition()`; nothing expires, no other node exists.
final class LeaseStandIn: SharedJobStore {
    let base: any JobStore
    let node = "node-test"
    let leaseDuration: Duration
    let nameProblem: String? = nil
    private let state = Mutex(State())

    /// Renewals, once begun (`holdRenewals`).
    let renewals = CallHold()

    private struct State {
        var partitioned = false
        var down = false
        var rescues = 0
        var failedRescues = 0
        var renewed: Set<JobID> = []
        var renewalsBegun = 0
        var health: [NodeHealth] = []
        var settled: [Settling] = []
    }

    /// What a `settleUnansweredClaims` call was given.
    struct Settling: Sendable {
        var known: Set<JobID>
        var answerableSince: Timestamp
        var now: Timestamp
    }

    init(_ base: any JobStore, lease: Duration) {
        self.base = base
        leaseDuration = lease
    }

    func partition() { state.withLock { $0.partitioned = true } }
    /// The store out of reach for everyone (`down`): rescue passes and heartbeats fail.
    func setDown(_ down: Bool) { state.withLock { $0.down = down } }
    /// Rescue passes that went through, and those that failed.
    var rescues: (passed: Int, failed: Int) { state.withLock { ($0.rescues, $0.failedRescues) } }
    /// The jobs whose leases were renewed.
    var renewed: Set<JobID> { state.withLock { $0.renewed } }
    /// The health each heartbeat carried, oldest first.
    var heartbeats: [NodeHealth] { state.withLock { $0.health } }
    /// How many renewals have begun (a coordinator begins one once its last one is done with).
    var renewalsBegun: Int { state.withLock { $0.renewalsBegun } }

    func renewLeases(of attempts: [JobID: Int]) async throws -> [LeaseHolding] {
        state.withLock { $0.renewalsBegun += 1 }
        await renewals.pass()
        if state.withLock({ $0.partitioned }) { try await Task.sleep(for: .seconds(3600)) }   // real time: only cancellation ends it
        var holdings: [LeaseHolding] = []
        for (id, attempt) in attempts {
            guard let job = try await base.job(id), job.state == .running, job.attempts == attempt else { continue }
            holdings.append(LeaseHolding(job: id, attempt: attempt, cancelRequested: job.cancelRequested))
        }
        state.withLock { $0.renewed.formUnion(holdings.map(\.job)) }
        return holdings
    }
    func rescueExpired(now: Timestamp) async throws -> [Job] {
        try state.withLock { state in
            guard !state.down else {
                state.failedRescues += 1
                throw StoreError(.other, "the job store did not answer")
            }
            state.rescues += 1
        }
        return []
    }
    let claimAnswerLimit: Duration = .seconds(31)
    /// The `settleUnansweredClaims` calls, oldest first (no job is ever given back here).
    var settled: [Settling] { state.withLock { $0.settled } }
    func settleUnansweredClaims(known: Set<JobID>, answerableSince: Timestamp, now: Timestamp) async throws -> [Job] {
        state.withLock { $0.settled.append(Settling(known: known, answerableSince: answerableSince, now: now)) }
        return []
    }
    func heartbeat(role: String, slots: Int, health: NodeHealth) async throws {
        try state.withLock { state in
            guard !state.down else { throw StoreError(.other, "the job store did not answer") }
            state.health.append(health)
        }
    }
    func nodes() async throws -> [NodeStatus] { [] }
    func signals() -> AsyncStream<ClusterSignal> { AsyncStream { _ in } }
    func storeFiles(_ files: [StoredFile], of job: JobID, attempt: Int) async throws -> Bool { true }
    func storedFiles(of job: JobID) async throws -> [StoredFileInfo] { [] }
    func storedFile(_ name: String, of job: JobID) async throws -> [UInt8]? { nil }

    func prepare() async throws { try await base.prepare() }
    func enqueue(_ job: Job, limits: QueueLimits) async throws -> EnqueueResult { try await base.enqueue(job, limits: limits) }
    func enqueueArray(_ tasks: [Job], limits: QueueLimits) async throws -> [Job] { try await base.enqueueArray(tasks, limits: limits) }
    func arraySummary(_ id: String) async throws -> ArraySummary? { try await base.arraySummary(id) }
    func requestFingerprint(owner: String?, key: String) async throws -> String? { try await base.requestFingerprint(owner: owner, key: key) }
    func arrays(_ query: ArrayQuery) async throws -> ArrayPage { try await base.arrays(query) }
    func arrayTasks(_ id: String, after index: Int64?, limit: Int) async throws -> [Job] {
        try await base.arrayTasks(id, after: index, limit: limit)
    }
    func job(_ id: JobID) async throws -> Job? { try await base.job(id) }
    func jobs(_ query: JobQuery) async throws -> JobPage { try await base.jobs(query) }
    func queuedCount() async throws -> Int { try await base.queuedCount() }
    func queuedCount(owner: String) async throws -> Int { try await base.queuedCount(owner: owner) }
    func queuedCount(priorityAtLeast priority: Int, dueBy: Timestamp) async throws -> Int {
        try await base.queuedCount(priorityAtLeast: priority, dueBy: dueBy)
    }
    func queuedAhead(ofNew job: Job, dueBy: Timestamp) async throws -> Int { try await base.queuedAhead(ofNew: job, dueBy: dueBy) }
    func failFastArraysLeftOpen() async throws -> [String] { try await base.failFastArraysLeftOpen() }
    func claimNext(for slot: SlotID, excluding: Set<String>, now: Timestamp) async throws -> Job? {
        try await base.claimNext(for: slot, excluding: excluding, now: now)
    }
    func finish(_ id: JobID, attempt: Int, outcome: JobOutcome, result: JSONValue?, now: Timestamp,
                claimNextFor slot: SlotID?, excluding: Set<String>) async throws -> FinishResult {
        try await base.finish(id, attempt: attempt, outcome: outcome, result: result, now: now, claimNextFor: slot, excluding: excluding)
    }
    func cancel(_ id: JobID, by actor: String?, now: Timestamp) async throws -> CancelResult { try await base.cancel(id, by: actor, now: now) }
    func reportProgress(_ id: JobID, attempt: Int, progress: JobProgress) async throws {
        try await base.reportProgress(id, attempt: attempt, progress: progress)
    }
    func recoverInterrupted(now: Timestamp) async throws -> [Job] { try await base.recoverInterrupted(now: now) }
    func expireDeadlines(now: Timestamp) async throws -> [Job] { try await base.expireDeadlines(now: now) }
    func nextTimer(after now: Timestamp) async throws -> Timestamp? { try await base.nextTimer(after: now) }
    func deleteEnded(before cutoff: Timestamp, limit: Int) async throws -> [JobID] { try await base.deleteEnded(before: cutoff, limit: limit) }
    func delete(_ id: JobID) async throws -> DeleteResult { try await base.delete(id) }
    func deleteArray(_ id: String) async throws -> ArrayDeleteResult { try await base.deleteArray(id) }
    func watch(_ id: JobID) -> JobWatch { base.watch(id) }
    func events(after: Int64, job: JobID?, owner: String?, limit: Int) async throws -> [JobEvent] {
        try await base.events(after: after, job: job, owner: owner, limit: limit)
    }
    func webhookEvents(after: Int64, limit: Int) async throws -> (events: [JobEvent], through: Int64) {
        try await base.webhookEvents(after: after, limit: limit)
    }
    func appendEvent(_ kind: JobEvent.Kind, job: JobID, attempt: Int?, data: JSONValue, now: Timestamp) async throws {
        try await base.appendEvent(kind, job: job, attempt: attempt, data: data, now: now)
    }
    var eventNotifier: EventNotifier { base.eventNotifier }
}
