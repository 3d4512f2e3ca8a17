import Foundation
import SpoolCore
import SpoolExecutor
@testable import SpoolScheduler
import SpoolStore
import SpoolTesting
import Testing

/// GPU quarantine in the real `Scheduler`: two GPU slots, a scripted executor, a manual clock.
/// A slot with two failed attempts in a row, or whose GPU reads unhealthy, takes no job; the job
/// that hit it goes back to the queue without using up an attempt and runs on the other slot;
/// a release (or a passing self-test) opens the slot again. No test sleeps.
@Suite struct QuarantineTests {
    let executor = ScriptedExecutor()

    func rig(startBeforeCommit: Bool) throws -> SchedulerRig {
        let executor = self.executor
        return try SchedulerRig(slots: 2, executor: { _, _, _ in executor }) { configuration in
            configuration.slots = [SlotSpec(id: SlotID(0), gpu: "0"), SlotSpec(id: SlotID(1), gpu: "1")]
            configuration.quarantineAfterFailures = 2
            configuration.startBeforeCommit = startBeforeCommit
        }
    }

    func running(_ rig: SchedulerRig, _ body: @escaping @Sendable () async throws -> Void) async throws {
        try await rig.run({ _ in try await body() }, end: { [executor] in executor.finishAll(.stoppedForShutdown) })
    }

    func next(_ what: String) async throws -> ScriptedExecutor.Attempt { try await executor.attempts.next(what) }

    @Test(arguments: [false, true])
    func failuresInARowQuarantineASlotAndItsJobRunsOnTheOtherOne(startBeforeCommit: Bool) async throws {
        let rig = try rig(startBeforeCommit: startBeforeCommit)
        try await running(rig) {
            let first = try await rig.submit()
            let onZero = try await next("the first job on slot 0")
            #expect(onZero.slot.id == SlotID(0))
            // The type works on slot 1 (else failures on slot 0 would be the type's, not the GPU's).
            let works = try await rig.submit()
            let worked = try await next("a job that succeeds on slot 1")
            #expect(worked.slot.id == SlotID(1))
            worked.finish(.succeeded)
            _ = try await rig.waitFor(works.id, .succeeded)
            let blocker = try await rig.submit()
            let onOne = try await next("a job that keeps slot 1 busy")
            #expect(onOne.slot.id == SlotID(1))

            onZero.finish(.exited(code: 1))
            #expect(try await rig.waitFor(first.id, .failed).reason == .exitCode, "one failure is the job's own")
            let second = try await rig.submit()
            let again = try await next("the second job on slot 0")
            #expect(again.job.id == second.id && again.slot.id == SlotID(0))
            again.finish(.signaled(signal: 11))

            // The second failure in a row closes slot 0; its job goes back, its attempt given back.
            let requeued = try await rig.waitFor(second.id, .queued, after: .running)
            #expect(requeued.attempts == 0)
            // Its run is listed, not counted (found by attacking the build: it left no trace).
            let taken = try #require(requeued.attemptLog.first)
            #expect(requeued.attemptLog.count == 1 && !taken.counted && taken.number == 1 && taken.slot == SlotID(0) && taken.state == .queued
                        && taken.error?.hasPrefix("slot 0 was quarantined: 2 attempts in a row failed") == true, "\(requeued.attemptLog)")
            let quarantined = await rig.scheduler.quarantinedSlots()
            #expect(quarantined.map(\.0.id) == [SlotID(0)])
            #expect(quarantined.first?.1.reasons.first?.hasPrefix("2 attempts in a row failed on this slot, not on others") == true,
                    "\(quarantined.first?.1.reasons ?? [])")
            #expect(executor.quarantinedSlots == [SlotID(0)], "the executor is told before the slot's afterRun")
            #expect(try await rig.job(second.id).state == .queued, "slot 0 takes nothing while slot 1 is busy")

            onOne.finish(.succeeded)
            let moved = try await next("the requeued job, on slot 1")
            #expect(moved.job.id == second.id && moved.slot.id == SlotID(1))
            moved.finish(.succeeded)
            let done = try await rig.waitFor(second.id, .succeeded)
            #expect(done.attempts == 1)
            #expect(done.endedAttempts.map { [$0.number, $0.slot?.rawValue ?? -1, $0.counted ? 1 : 0] } == [[1, 0, 0], [1, 1, 1]],
                    "the run taken back, then the one that counted: \(done.endedAttempts)")
            _ = try await rig.waitFor(blocker.id, .succeeded)

            // Released by an administrator: slot 0 takes jobs again.
            let third = try await rig.submit()
            let busy = try await next("a job on slot 1, the only open slot")
            #expect(busy.job.id == third.id && busy.slot.id == SlotID(1))
            #expect(await rig.scheduler.release(SlotID(0), by: "test") == .released)
            #expect(await rig.scheduler.release(SlotID(0), by: "test") == .notQuarantined)
            let fourth = try await rig.submit()
            let back = try await next("a job on the released slot 0")
            #expect(back.job.id == fourth.id && back.slot.id == SlotID(0))
            #expect(executor.quarantinedSlots.isEmpty && executor.attemptsOnQuarantinedSlots == 0,
                    "the executor hears of the release before the slot is offered a job")
            back.finish(.succeeded)
            busy.finish(.succeeded)
            _ = try await rig.waitFor(fourth.id, .succeeded)
        }
    }

    @Test func aGPUThatReadsUnhealthyStopsItsJobWhichRunsOnAHealthySlot() async throws {
        let rig = try rig(startBeforeCommit: false)
        try await running(rig) {
            let job = try await rig.submit()
            let attempt = try await next("the job on slot 0")
            #expect(attempt.slot.id == SlotID(0))
            await rig.scheduler.read(gpuHealth: ["0": .unhealthy("GPU is lost"), "1": .healthy])
            #expect(await attempt.nextStop() == .quarantine)
            #expect(executor.quarantinedSlots == [SlotID(0)], "the executor is told (a warm worker there goes)")
            attempt.finish(JobOutcome(.signaled(signal: 15), stoppedFor: .quarantine))
            let moved = try await next("the job again, on slot 1")
            #expect(moved.job.id == job.id && moved.slot.id == SlotID(1) && moved.job.attempts == 1, "no attempt used up")
            moved.finish(.succeeded)
            _ = try await rig.waitFor(job.id, .succeeded)
            #expect(await rig.scheduler.release(SlotID(0), by: "test") == .deviceUnhealthy("GPU 0: GPU is lost"))
            await rig.scheduler.read(gpuHealth: ["0": .healthy])
            #expect(await rig.scheduler.quarantinedSlots().map(\.0.id) == [SlotID(0)], "healthy again, but not yet tested")
        }
    }

    /// A release opens the slot once its executor has heard of it (a warm worker may start
    /// there again): a job submitted while the executor is being told is not claimed for it
    /// before then, and starts there after.
    @Test func aReleasedSlotIsOfferedNoJobBeforeItsExecutorHasHeard() async throws {
        let rig = try rig(startBeforeCommit: false)
        try await running(rig) {
            await rig.scheduler.read(gpuHealth: ["0": .unhealthy("GPU is lost")])
            await rig.scheduler.read(gpuHealth: ["0": .healthy])
            _ = try await rig.submit()
            let busy = try await next("a job on slot 1, the only open slot")
            #expect(busy.slot.id == SlotID(1))
            executor.holdSlotReleases()
            let releasing = Task { await rig.scheduler.release(SlotID(0), by: "test") }   // unstructured: awaited below, once the executor may hear
            try await within("the executor told of the release") { [executor] in
                while executor.slotReleasesWaiting == 0 { try await pollingYield() }
            }
            let claims = rig.store.calls(.claim)
            let job = try await rig.submit()
            try await within("the submit's wake-up, taken") { [scheduler = rig.scheduler] in
                while scheduler.wakeQueued { try await pollingYield() }
            }
            _ = await rig.scheduler.quarantinedSlots()   // after the pass the wake-up ran
            #expect(rig.store.calls(.claim) == claims, "a job was claimed for the slot before its executor heard of the release")
            executor.releaseSlotReleases()
            #expect(await releasing.value == .released)
            let started = try await next("the job, on the released slot 0")
            #expect(started.job.id == job.id && started.slot.id == SlotID(0))
            #expect(executor.attemptsOnQuarantinedSlots == 0)
            started.finish(.succeeded)
            busy.finish(.succeeded)
        }
    }

    @Test func selfTestsAreDueAtOnceThenEveryIntervalOnTheSchedulersClock() async throws {
        let rig = try rig(startBeforeCommit: false)
        try await running(rig) {
            await rig.scheduler.read(gpuHealth: ["1": .unhealthy("2 uncorrected ECC error(s) since the driver loaded")])
            #expect(await rig.scheduler.selfTestsDue(every: .seconds(30)).isEmpty, "not while the GPU reads unhealthy")
            await rig.scheduler.read(gpuHealth: ["1": .healthy])
            #expect(await rig.scheduler.selfTestsDue(every: .seconds(30)).map(\.id) == [SlotID(1)])
            #expect(await rig.scheduler.selfTestsDue(every: .seconds(30)).isEmpty)
            #expect(await rig.scheduler.selfTestEnded(on: SlotID(1), passed: false).isEmpty, "a failed test opens nothing")
            rig.manual.advance(by: .seconds(30))
            #expect(await rig.scheduler.selfTestsDue(every: .seconds(30)).map(\.gpu) == ["1"])
            // An administrator's release while the test runs would start a job beside it.
            #expect(await rig.scheduler.release(SlotID(1), by: "an administrator") == .selfTestRunning)
            #expect(await rig.scheduler.selfTestEnded(on: SlotID(1), passed: true) == [SlotID(1)])
            let job = try await rig.submit()
            let first = try await next("a job on slot 0")
            let second = try await rig.submit()
            let other = try await next("a job on the released slot 1")
            #expect(first.job.id == job.id && other.job.id == second.id && other.slot.id == SlotID(1))
            first.finish(.succeeded)
            other.finish(.succeeded)
        }
    }

    /// With several slots on one GPU: its self-test runs one at a time for the GPU, never while a
    /// slot of it runs a job, and a pass opens every slot of it (found by attacking the build: a
    /// second slot's self-test ran beside the job the first, released, had taken); an
    /// administrator's release while the test runs is refused (a job would start beside it).
    @Test func aGPUsSelfTestRunsAloneOnItAndAPassOpensEverySlotOfIt() async throws {
        let executor = self.executor
        let rig = try SchedulerRig(slots: 3, executor: { _, _, _ in executor }) { configuration in
            configuration.slots = [SlotSpec(id: SlotID(0), gpu: "0"), SlotSpec(id: SlotID(1), gpu: "0"), SlotSpec(id: SlotID(2), gpu: "1")]
        }
        try await running(rig) {
            await rig.scheduler.read(gpuHealth: ["0": .unhealthy("GPU requires reset")])
            await rig.scheduler.read(gpuHealth: ["0": .healthy])
            #expect(await rig.scheduler.selfTestsDue(every: .seconds(30)).map(\.id) == [SlotID(0)], "one at a time for the GPU")
            #expect(await rig.scheduler.release(SlotID(0), by: "an administrator") == .selfTestRunning)
            rig.manual.advance(by: .seconds(30))
            #expect(await rig.scheduler.selfTestsDue(every: .seconds(30)).isEmpty, "not beside the test still running")
            #expect(await rig.scheduler.selfTestEnded(on: SlotID(0), passed: true) == [SlotID(0), SlotID(1)], "the GPU's slots, both")

            // Slot 1 alone closed again (its failures), while slot 0 runs a job: no test beside the job.
            let job = try await rig.submit()
            let running = try await next("a job on GPU 0")
            await rig.scheduler.read(gpuHealth: ["0": .unhealthy("GPU requires reset")])
            await rig.scheduler.read(gpuHealth: ["0": .healthy])
            rig.manual.advance(by: .seconds(30))
            #expect(await rig.scheduler.selfTestsDue(every: .seconds(30)).filter { $0.gpu == "0" }.isEmpty, "a job runs on the GPU")
            running.finish(.succeeded)
            _ = try await rig.waitFor(job.id, .succeeded)
        }
    }

    /// While a GPU's self-test runs, an open slot of that GPU takes no job either (found in review:
    /// the test handed out, a sibling slot claimed the next job beside it); it does once the test
    /// has ended.
    @Test func anOpenSlotOfAGPUUnderTestTakesNoJobUntilTheTestEnds() async throws {
        let executor = self.executor
        let rig = try SchedulerRig(slots: 3, executor: { _, _, _ in executor }) { configuration in
            configuration.slots = [SlotSpec(id: SlotID(0), gpu: "0"), SlotSpec(id: SlotID(1), gpu: "0"), SlotSpec(id: SlotID(2), gpu: "1")]
            configuration.quarantineAfterFailures = 1
        }
        try await running(rig) {
            // The type works on GPU 1, then fails on slot 0: slot 0 closes, slot 1 (GPU 0 too) stays open.
            let hold = try await rig.submit()
            let onZero = try await next("a job on slot 0")
            let works = try await rig.submit()
            let onOne = try await next("a job on slot 1")
            let third = try await rig.submit()
            let onTwo = try await next("a job on slot 2")
            #expect([onZero.slot.id, onOne.slot.id, onTwo.slot.id] == [SlotID(0), SlotID(1), SlotID(2)])
            onTwo.finish(.succeeded)
            onOne.finish(.succeeded)
            _ = try await rig.waitFor(third.id, .succeeded)
            _ = try await rig.waitFor(works.id, .succeeded)
            onZero.finish(.exited(code: 1))
            _ = try await rig.waitFor(hold.id, .queued, after: .running)
            let requeued = try await next("the job that closed slot 0, on an open slot")
            requeued.finish(.succeeded)
            _ = try await rig.waitFor(hold.id, .succeeded)
            #expect(await rig.scheduler.quarantinedSlots().map(\.0.id) == [SlotID(0)])

            #expect(await rig.scheduler.selfTestsDue(every: .seconds(30)).map(\.id) == [SlotID(0)])
            let first = try await rig.submit()
            let elsewhere = try await next("a job while GPU 0 is under test")
            #expect(elsewhere.slot.id == SlotID(2), "not on slot 1, beside the test on its GPU")
            let second = try await rig.submit()
            _ = await rig.scheduler.selfTestEnded(on: SlotID(0), passed: false)
            let after = try await next("the job waiting, once the test has ended")
            #expect(after.job.id == second.id && after.slot.id == SlotID(1))
            elsewhere.finish(.succeeded)
            after.finish(.succeeded)
            _ = try await rig.waitFor(first.id, .succeeded)
            _ = try await rig.waitFor(second.id, .succeeded)
        }
    }

    /// The log line of a job handed back says why (found by attacking the build: `why=` was empty,
    /// a returned attempt having no error message).
    @Test func aJobHandedBackSaysWhyInTheLog() {
        #expect(Scheduler.handedBackBecause(.returned(message: "the server is short of processes: fork failed")) == "the server is short of processes: fork failed")
        #expect(Scheduler.handedBackBecause(.returned(message: "its slot was quarantined while it ran", ran: true)) == "its slot was quarantined while it ran")
        #expect(Scheduler.handedBackBecause(.stoppedForShutdown) == "the server is stopping")
    }

    /// A quarantined slot gives up the job it looked up to start next, and a healthy idle slot
    /// that passed it over takes it: not after the next submit.
    @Test func aJobLookedUpAheadByASlotThatIsQuarantinedStartsOnAnIdleSlot() async throws {
        let rig = try rig(startBeforeCommit: true)
        try await running(rig) {
            _ = try await rig.submit()
            let onZero = try await next("a job on slot 0")
            _ = try await rig.submit()
            let onOne = try await next("a job on slot 1")
            try await within("both look-aheads to find the queue empty") { [scheduler = rig.scheduler] in
                for slot in [SlotID(0), SlotID(1)] {
                    while await !scheduler.lookAheadFoundNothing(for: slot) { try await pollingYield() }
                }
            }
            let x = try await rig.submit(), y = try await rig.submit()
            let slot = onOne.slot.id, idle = onZero.slot.id
            onOne.finish(.succeeded)
            let xAttempt = try await next("x, on the slot that ended")
            #expect(xAttempt.job.id == x.id && xAttempt.slot.id == slot)
            try await within("that slot's look-ahead to find y") { [scheduler = rig.scheduler] in
                while await scheduler.upcomingJob(for: slot) != y.id { try await pollingYield() }
            }
            onZero.finish(.succeeded)   // the other slot idles, passing y over
            _ = try await rig.waitFor(onZero.job.id, .succeeded)
            await rig.scheduler.read(gpuHealth: [slot == SlotID(1) ? "1" : "0": .unhealthy("GPU is lost")])
            #expect(await xAttempt.nextStop() == .quarantine)
            xAttempt.finish(.succeeded)   // it finished before the stop took
            let yAttempt = try await next("y, on the healthy idle slot")
            #expect(yAttempt.job.id == y.id && yAttempt.slot.id == idle)
            yAttempt.finish(.succeeded)
            _ = try await rig.waitFor(y.id, .succeeded)
        }
    }

    static let kept = SlotQuarantine.Saved(slot: SlotID(0), gpu: "0", entry: .init(
        reasons: ["2 attempts in a row failed on this slot (the last: exited with code 1)"], since: Timestamp(microseconds: 1_700_000_000_000_000)))
    /// The rig's layout: slot 0 on GPU 0, slot 1 on GPU 1.
    static let layout = [SlotID(0): "0", SlotID(1): "1"]

    /// What an earlier run kept in the data directory closes its slot before the first look at
    /// the queue; a release writes the list without it.
    @Test func aQuarantineKeptFromBeforeARestartClosesItsSlotBeforeTheFirstJob() async throws {
        let rig = try rig(startBeforeCommit: true)
        let file = QuarantineFile(dataDirectory: rig.dataDirectory)
        try await file.save(.init(saved: [Self.kept], layout: Self.layout), version: 1)
        try await running(rig) {
            let job = try await rig.submit()
            let attempt = try await next("the job, on the open slot")
            #expect(attempt.slot.id == SlotID(1))
            #expect(await rig.scheduler.quarantinedSlots().map(\.1) == [Self.kept.entry])
            #expect(executor.quarantinedSlots == [SlotID(0)], "the executor is told, as for any quarantine")
            #expect(await rig.scheduler.release(SlotID(0), by: "test") == .released)
            #expect(try await file.load() == .init(saved: [], layout: Self.layout))
            attempt.finish(.succeeded)
            _ = try await rig.waitFor(job.id, .succeeded)
        }
    }

    /// Whatever looks at the quarantine or changes it first — here a GPU reading the monitor
    /// sends before the scheduler runs — has the kept list restored before it, so the reading
    /// adds to that list and does not write over it.
    @Test func aReadingBeforeTheSchedulerRunsAddsToTheKeptList() async throws {
        let rig = try rig(startBeforeCommit: true)
        let file = QuarantineFile(dataDirectory: rig.dataDirectory)
        try await file.save(.init(saved: [Self.kept], layout: Self.layout), version: 1)
        await rig.scheduler.read(gpuHealth: ["1": .unhealthy("GPU is lost")])
        let both = try #require(try await file.load())
        #expect(both.saved.map(\.slot) == [SlotID(0), SlotID(1)] && both.saved.first == Self.kept)
        try await running(rig) {
            await rig.scheduler.read(gpuHealth: ["1": .healthy])
            #expect(await rig.scheduler.release(SlotID(1), by: "test") == .released)
            #expect(try await file.load()?.saved == [Self.kept])
            _ = try await rig.submit()
            #expect(try await next("the job, on slot 1").slot.id == SlotID(1), "slot 0 is still closed")
            executor.finishAll(.succeeded)
        }
    }

    /// A kept list that cannot be parsed opens its slots (and says so in the log) rather than
    /// stopping the server; the file is set aside for someone to look at, not written over.
    @Test func aDamagedQuarantineFileIsSetAsideAndItsSlotsStartOpen() async throws {
        let rig = try rig(startBeforeCommit: true)
        let path = rig.dataDirectory + "/quarantine.json"
        let damaged = Data("{\"slots\": [{\"slot\": 0".utf8)
        try damaged.write(to: URL(fileURLWithPath: path))
        try await running(rig) {
            _ = try await rig.submit()
            #expect(try await next("the job, on slot 0").slot.id == SlotID(0))
            #expect(await rig.scheduler.quarantinedSlots().isEmpty)
            #expect(FileManager.default.contents(atPath: path + ".bad") == damaged)
            #expect(!FileManager.default.fileExists(atPath: path), "nothing to write until the quarantine changes")
            executor.finishAll(.succeeded)
        }
    }

    /// The file holds the newest list whole: a save that lost a race to a newer one writes nothing.
    @Test func theQuarantineFileKeepsTheNewestList() async throws {
        let directory = NSTemporaryDirectory() + "spool-quarantine-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let file = QuarantineFile(dataDirectory: directory)
        #expect(try await file.load() == nil, "no file: nothing kept")
        let kept = QuarantineFile.Kept(saved: [Self.kept], layout: Self.layout)
        try await file.save(kept, version: 2)
        try await file.save(.init(saved: [], layout: Self.layout), version: 1)
        #expect(try await file.load() == kept)
        #expect(!FileManager.default.fileExists(atPath: directory + "/quarantine.json.tmp"))
        try await file.save(.init(saved: [], layout: [:]), version: 3)
        #expect(try await file.load() == .init(saved: [], layout: [:]))
        try Data("[]".utf8).write(to: URL(fileURLWithPath: file.path))
        do {
            _ = try await file.load()
            Issue.record("a file that is not a quarantine list was read")
        } catch {
            #expect(error.kind == .damaged)
        }
    }
}
