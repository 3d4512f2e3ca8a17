// JobStoreConformanceTests: retention (`deleteEnded`). Jobs that ended before the cutoff go,
// oldest end first, with their events; nothing queued, running or recent does; an array goes
// only whole. One job (`delete`) or one array (`deleteArray`) goes on request once it has ended.

import SpoolCore
import SpoolStore
import Testing

extension JobStoreConformanceTests {
    /// Claims and ends `job` (its only attempt) at `end`.
    func end(_ job: Job, in store: any JobStore, outcome: JobOutcome = .succeeded, at end: Int64) async throws {
        let claimed = try #require(try await store.claimNext(for: SlotID(0), now: at(end - 1)))
        #expect(claimed.id == job.id)
        _ = try await store.finish(job.id, attempt: 1, outcome: outcome, now: at(end), claimNextFor: nil)
    }

    @Test(arguments: StoreKind.allCases)
    func jobsThatEndedBeforeTheCutoffAreDeletedOldestEndFirstWithTheirEvents(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            // Ended at 3,000, 2,000 (failed) and 4,000 µs; one canceled in the queue at 2,500;
            // one ended at 9,000 (after the cutoff); one running; one queued.
            let early = try await store.create(makeJob(key: "early"))
            let failed = try await store.create(makeJob())
            let late = try await store.create(makeJob())
            let recent = try await store.create(makeJob())
            try await end(early, in: store, at: 3_000)
            try await end(failed, in: store, outcome: .exited(code: 1), at: 2_000)
            try await end(late, in: store, at: 4_000)
            try await end(recent, in: store, at: 9_000)
            let canceled = try await store.create(makeJob())
            _ = try await store.cancel(canceled.id, now: at(2_500))
            let running = try await store.create(makeJob())
            _ = try await store.claimNext(for: SlotID(1), now: at(1_500))
            let queued = try await store.create(makeJob())
            try await store.appendEvent(.log, job: early.id, data: .object(["line": .string("kept until now")]), now: at(2_900))
            _ = try await store.events(job: early.id) { !$0.isEmpty }

            // Two at a time: the two oldest ends first.
            #expect(try await store.deleteEnded(before: at(5_000), limit: 2) == [failed.id, canceled.id])
            #expect(try await store.deleteEnded(before: at(5_000), limit: 10) == [early.id, late.id])
            #expect(try await store.deleteEnded(before: at(5_000), limit: 10) == [])
            for gone in [early, failed, late, canceled] { #expect(try await store.job(gone.id) == nil) }
            for kept in [recent, running, queued] { #expect(try await store.job(kept.id) != nil) }
            #expect(try await store.events(after: 0, job: early.id, limit: 100).isEmpty)
            #expect(try await store.events(after: 0, job: recent.id, limit: 100).isEmpty == false)

            // Its idempotency key is free again: the same key makes a new job.
            let again = makeJob(key: "early")
            #expect(try await store.enqueue(again).created?.id == again.id)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func anArraysTasksAreDeletedOnlyOnceEveryTaskEndedBeforeTheCutoff(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let id = ArraySpec.newID()
            let stored = try await store.enqueueArray(tasks(id, count: 3), limits: QueueLimits())
            try await end(stored[0], in: store, at: 2_000)
            try await end(stored[1], in: store, at: 3_000)
            // The third still queued: nothing of the array goes.
            #expect(try await store.deleteEnded(before: at(10_000), limit: 10) == [])
            try await end(stored[2], in: store, at: 8_000)
            // All ended, the last after the cutoff: still nothing.
            #expect(try await store.deleteEnded(before: at(5_000), limit: 10) == [])
            #expect(try await store.arraySummary(id)?.size == 3)
            #expect(try await store.deleteEnded(before: at(10_000), limit: 10) == stored.map(\.id))
            #expect(try await store.arraySummary(id) == nil)
        }
    }

    /// A pass's limit never cuts an array: one of its tasks taken takes them all (found by
    /// attacking the build: a 1,200-task array went in pieces of 500, 1200 → 701 → 201).
    @Test(arguments: StoreKind.allCases)
    func aPassLimitNeverCutsAnArray(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let id = ArraySpec.newID()
            let stored = try await store.enqueueArray(tasks(id, count: 5), limits: QueueLimits())
            for (index, task) in stored.enumerated() { try await end(task, in: store, at: 2_000 + Int64(index)) }
            let alone = try await store.create(makeJob())
            try await end(alone, in: store, at: 2_100)
            #expect(try await store.deleteEnded(before: at(5_000), limit: 2) == stored.map(\.id))
            #expect(try await store.arraySummary(id) == nil)
            #expect(try await store.deleteEnded(before: at(5_000), limit: 2) == [alone.id])
        }
    }

    /// An array that cannot go yet (a task ended after the cutoff) does not hold back the jobs
    /// that ended after its tasks, however many of those there are against the pass's limit.
    @Test(arguments: StoreKind.allCases)
    func anArrayThatCannotGoYetDoesNotHoldBackTheJobsBehindIt(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let id = ArraySpec.newID()
            let stored = try await store.enqueueArray(tasks(id, count: 6), limits: QueueLimits())
            for (index, task) in stored.enumerated() { try await end(task, in: store, at: index == 5 ? 9_000 : 2_000 + Int64(index)) }
            var singles: [Job] = []
            for index in 0..<3 {
                let job = try await store.create(makeJob())
                try await end(job, in: store, at: 3_000 + Int64(index))
                singles.append(job)
            }
            #expect(try await store.deleteEnded(before: at(5_000), limit: 2) == Array(singles.prefix(2).map(\.id)))
            #expect(try await store.deleteEnded(before: at(5_000), limit: 2) == [singles[2].id])
            #expect(try await store.arraySummary(id)?.size == 6)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func oneEndedJobIsDeletedOnRequestAndNothingElseIs(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let done = try await store.create(makeJob(key: "again"))
            try await end(done, in: store, at: 2_000)
            try await store.appendEvent(.log, job: done.id, data: .object(["line": .string("x")]), now: at(1_900))
            _ = try await store.events(job: done.id) { $0.count >= 2 }
            let running = try await store.create(makeJob())
            _ = try await store.claimNext(for: SlotID(0), now: at(3_000))
            let queued = try await store.create(makeJob())
            let array = ArraySpec.newID()
            let task = try await store.enqueueArray(tasks(array, count: 1), limits: QueueLimits())[0]
            _ = try await store.cancel(task.id, now: at(3_500))

            guard case .deleted(let deleted) = try await store.delete(done.id) else { Issue.record("not deleted"); return }
            #expect(deleted.id == done.id && deleted.state == .succeeded)
            #expect(try await store.job(done.id) == nil)
            #expect(try await store.events(after: 0, job: done.id, limit: 100).isEmpty)
            // A late event of the deleted job (its outputs, written after its end) is not kept:
            // found by attacking the build, such events outlived their job with links that 404.
            try await store.appendEvent(.outputs, job: done.id, data: .object(["outputs": .array([])]), now: at(3_600))
            try await store.appendEvent(.log, job: done.id, attempt: 1, data: .object(["line": .string("late")]), now: at(3_600))
            #expect(try await store.events(after: 0, job: done.id, limit: 100).isEmpty)
            guard case .notFound = try await store.delete(done.id) else { Issue.record("deleted twice"); return }
            guard case .notEnded(let stillRunning) = try await store.delete(running.id), stillRunning.state == .running else {
                Issue.record("a running job was not refused"); return
            }
            guard case .notEnded = try await store.delete(queued.id) else { Issue.record("a queued job was not refused"); return }
            guard case .arrayTask = try await store.delete(task.id) else { Issue.record("an array's task was not refused"); return }
            for kept in [running.id, queued.id, task.id] { #expect(try await store.job(kept) != nil) }
            let again = makeJob(key: "again")
            #expect(try await store.enqueue(again).created?.id == again.id)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func anArrayIsDeletedWholeOnRequestOnceEveryTaskHasEnded(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let id = ArraySpec.newID(), other = ArraySpec.newID()
            let stored = try await store.enqueueArray(tasks(id, count: 3), limits: QueueLimits())
            let neighbour = try await store.enqueueArray(tasks(other, count: 1), limits: QueueLimits())[0]
            try await end(stored[0], in: store, at: 2_000)
            try await store.appendEvent(.log, job: stored[0].id, data: .object(["line": .string("x")]), now: at(1_900))
            _ = try await store.events(job: stored[0].id) { $0.count >= 2 }
            _ = try await store.claimNext(for: SlotID(0), now: at(3_000))   // the second task runs; the third is queued

            // Two tasks not ended: nothing goes.
            #expect(try await store.deleteArray(id) == .notEnded(2))
            _ = try await store.cancel(stored[2].id, now: at(3_500))
            #expect(try await store.deleteArray(id) == .notEnded(1))
            #expect(try await store.arraySummary(id)?.size == 3)

            _ = try await store.finish(stored[1].id, attempt: 1, outcome: .exited(code: 1), now: at(4_000), claimNextFor: nil)
            #expect(try await store.deleteArray(id) == .deleted(stored.map(\.id)))
            #expect(try await store.arraySummary(id) == nil)
            for task in stored {
                #expect(try await store.job(task.id) == nil)
                #expect(try await store.events(after: 0, job: task.id, limit: 100).isEmpty)
            }
            #expect(try await store.deleteArray(id) == .notFound)
            #expect(try await store.deleteArray(ArraySpec.newID()) == .notFound)
            // Another array, queued, is untouched.
            #expect(try await store.job(neighbour.id)?.state == .queued)
            #expect(try await store.arraySummary(other)?.size == 1)
        }
    }
}
