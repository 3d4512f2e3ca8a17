import Foundation
import Logging
import ServiceLifecycle
import ServiceLifecycleTestKit
import SpoolCore
import SpoolExecutor
import SpoolScheduler
import SpoolStore
import SpoolTestSupport
import SpoolTesting

/// The real `Scheduler` over a `MemoryJobStore` (behind a `FlakyStore` that fails or stalls on
/// demand), any executor, and a manual clock: nothing sleeps, time moves when a test says.
final class SchedulerRig: Sendable {
    let manual: ManualClock
    let clock: SpoolClock
    let memory = MemoryJobStore()
    let store: FlakyStore
    let catalog: JobCatalog
    let scheduler: Scheduler
    let configuration: SchedulerConfiguration
    let dataDirectory: String
    /// Owns `dataDirectory`: removed when the rig goes.
    let scratch: ScratchDirectory

    /// Warnings and worse only: the tests' own expectations say what happened.
    static func quiet(_ label: String) -> Logger {
        var logger = Logger(label: label)
        logger.logLevel = .warning
        return logger
    }

    static let processType = JobType(name: "t", command: try! CommandTemplate(["/bin/true"]), timeoutSeconds: 60, maxAttempts: 1)

    /// `manualWall`: the wall clock moves with the manual one (for timers set in wall time:
    /// retries' back-off, delayed starts, deadlines); otherwise it is the real time of day.
    /// `sharedLease`: the store is a shared one's stand-in (`LeaseStandIn`) with this lease.
    init(slots: Int = 1, types: [JobType] = [SchedulerRig.processType], manualWall: Bool = false, sharedLease: Duration? = nil,
         executor: (JobCatalog, SpoolClock, String) -> any JobExecutor,
         configure: (inout SchedulerConfiguration) -> Void = { _ in }) throws {
        let manual = ManualClock(), start = WallClock.now()
        self.manual = manual
        var wall: @Sendable () -> Timestamp = WallClock.now
        if manualWall {
            wall = {
                let (seconds, attoseconds) = manual.now.offset.components
                return Timestamp(microseconds: start.microseconds + seconds * 1_000_000 + attoseconds / 1_000_000_000_000)
            }
        }
        clock = SpoolClock(manual, wall: wall)
        store = FlakyStore(memory)
        catalog = JobCatalog(types)
        scratch = try ScratchDirectory("spool-scheduler", subdirectories: ["jobs"])
        dataDirectory = scratch.path
        var configuration = SchedulerConfiguration(slots: (0..<slots).map { SlotSpec(id: SlotID($0)) }, dataDirectory: dataDirectory)
        // A claim commits as its job starts, unless a test says otherwise: with the manual
        // clock, one that waits (`claimDelay`) would wait until the test moves time.
        configuration.claimDelay = .zero
        configure(&configuration)
        self.configuration = configuration
        let flaky = store
        let scheduled: any JobStore = sharedLease.map { LeaseStandIn(flaky, lease: $0) } ?? flaky
        scheduler = Scheduler(store: scheduled, executor: executor(catalog, clock, dataDirectory), catalog: catalog,
                              configuration: configuration, clock: clock, logger: Self.quiet("scheduler-test"))
    }

    /// Stores a job and tells the scheduler, as a submit does.
    @discardableResult
    func submit(_ type: String = "t", input: JSONValue = .object([:]), priority: Int = 0,
                _ change: (inout Submission) -> Void = { _ in }) async throws -> Job {
        var submission = Submission(type: type, input: input, priority: priority)
        submission.timeoutSeconds = nil
        change(&submission)
        let job = try catalog.admit(submission, id: .random(), now: clock.wall())
        let stored = try await store.enqueue(job).job
        scheduler.jobEnqueued(stored)
        return stored
    }

    func job(_ id: JobID) async throws -> Job {
        guard let job = try await memory.job(id) else { throw WaitTimedOut(description: "no job \(id)") }
        return job
    }

    /// Waits (in real time, at most 10 s) until the job is in `state` — with `after`, once it
    /// has been in that state first (a job that goes back to the queue is queued twice).
    @discardableResult
    func waitFor(_ id: JobID, _ state: JobState, after earlier: JobState? = nil) async throws -> Job {
        try await untilJob(id, in: memory, "job \(id) to be \(state)") { [memory] job in
            guard job.state == state else { return false }
            guard let earlier, job.state != earlier, job.attempts == 0 else { return true }
            // A state the job left before this look (a start and its end committed one right
            // after the other) is still in its events.
            return try await memory.events(after: 0, job: id, limit: 1000)
                .contains { $0.kind == .state && $0.data["state"] == .string(earlier.rawValue) }
        }
    }

    /// Moves the clock on by `step` — whenever some task sleeps on it, however far off — until `condition`
    /// holds: for deadlines the test does not know to the millisecond (periodic ticks, retries).
    /// The condition is checked after each step and every few milliseconds of real time while no
    /// task sleeps (the system may still be working its way to the result).
    func advance(by step: Duration, until what: String, limit: Int = 400, _ condition: @escaping @Sendable () async throws -> Bool) async throws {
        let manual = self.manual
        try await within(what) {
            var steps = 0
            while steps < limit {
                if try await condition() { return true }
                if await manual.sleeperArrives(patience: .milliseconds(5)) {
                    manual.advance(by: step)
                    steps += 1
                }
            }
            if try await condition() { return true }
            throw WaitTimedOut(description: "\(what): not after \(limit) steps of \(step)")
        }
    }

    /// Runs the scheduler as a service for `body`, then shuts it down gracefully (`end` runs
    /// in between, to finish whatever the test left running) and waits for it to stop.
    func run(_ body: @escaping @Sendable (GracefulShutdownTestTrigger) async throws -> Void,
             end: @escaping @Sendable () async -> Void = {}) async throws {
        let scheduler = self.scheduler
        try await testGracefulShutdown { trigger in
            // Inherits the test's graceful-shutdown context; awaited below, cancelled on failure.
            let running = Task { try await scheduler.run() }
            do {
                try await body(trigger)
            } catch {
                trigger.triggerGracefulShutdown()
                await end()
                running.cancel()
                throw error
            }
            trigger.triggerGracefulShutdown()
            await end()
            try await within("the scheduler to stop") {
                try await withTaskCancellationHandler { try await running.value } onCancel: { running.cancel() }
            }
        }
    }
}
