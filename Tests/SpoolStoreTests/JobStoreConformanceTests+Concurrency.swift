// JobStoreConformanceTests, continued: change watches and concurrent submits — for every driver.

import SpoolCore
import SpoolStore
import Testing

extension JobStoreConformanceTests {
    // MARK: watches

    @Test(arguments: StoreKind.allCases)
    func watchWakesWhenTheJobChanges(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let job = try await store.create(makeJob())
            let watch = store.watch(job.id)
            async let changed = watch.next(timeout: .seconds(60))
            _ = try await store.cancel(job.id, now: at(2))
            #expect(await changed)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func changeBetweenWatchAndWaitIsNotMissed(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let job = try await store.create(makeJob())
            let watch = store.watch(job.id)
            _ = try await store.claimNext(for: SlotID(0), now: at(2))
            #expect(await watch.next(timeout: .seconds(60)))
        }
    }

    // Regression test for a fixed bug in MemoryJobStore.cancel: the `.running` branch sets `cancelRequested`
    // without `notifier.publish(id)`, so watchers are not told (SQLite publishes).
    @Test(arguments: StoreKind.allCases)
    func watchWakesWhenARunningJobIsAskedToCancel(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let job = try await store.create(makeJob())
            _ = try await store.claimNext(for: SlotID(0), now: at(2))
            let watch = store.watch(job.id)
            _ = try await store.cancel(job.id, now: at(3))
            // The change is already buffered when it was published; the timeout only bounds a miss.
            let woke = await watch.next(timeout: .milliseconds(500))
            #expect(woke)
        }
    }

    /// A job's end wakes its waiters with the job as stored (a local store's; PostgreSQL's nodes
    /// hear of a change by id): `?wait=` answers without reading it again.
    @Test(arguments: StoreKind.allCases)
    func aWatchWokenByTheJobsEndGetsTheJobAsStored(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            func expectEnded(_ watch: JobWatch, _ id: JobID) async throws {
                switch await watch.nextChange(timeout: .seconds(60)) {
                case .ended(let ended)?:
                    #expect(ended == (try await store.require(id)))
                case .changed?:
                    #expect(kind == .postgres, "a local store sends the ended job with the wake-up")
                case nil:
                    Issue.record("no wake-up")
                }
            }
            let job = try await store.create(makeJob())
            let running = try #require(try await store.claimNext(for: SlotID(0), now: at(2)))
            var watch = store.watch(job.id)
            _ = try await store.reportProgress(job.id, attempt: 1, progress: JobProgress(fraction: 0.5, message: "half"))
            #expect(await watch.next(timeout: .seconds(60)))
            _ = try await store.finish(job.id, attempt: 1, outcome: .exited(code: 3), result: .object(["n": .int(1)]), now: at(3),
                                       claimNextFor: nil, excluding: [])
            try await expectEnded(watch, running.id)

            guard let local = store as? any LocalJobStore else { return }
            let other = try await store.create(makeJob())
            var started = other
            started.start(on: SlotID(0), at: at(4))
            watch = store.watch(other.id)
            _ = try await local.commit(claimed: started, finished: FinishedAttempt(job: other.id, attempt: 1, outcome: .succeeded,
                                                                                   result: nil, now: at(5)), started: nil)
            try await expectEnded(watch, other.id)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func watchTimesOutWhenNothingChanges(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let job = try await store.create(makeJob())
            let other = try await store.create(makeJob())
            let watch = store.watch(job.id)
            _ = try await store.cancel(other.id, now: at(2)) // another job's change does not wake it
            #expect(await watch.next(timeout: .milliseconds(50)) == false)
        }
    }

    // MARK: concurrency

    @Test(arguments: StoreKind.allCases)
    func concurrentEnqueuesAllSucceedWithUniqueSequencesAndPositions(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let stored = try await withThrowingTaskGroup(of: Job.self) { group in
                for _ in 0..<200 { group.addTask { try await store.create(makeJob()) } }
                return try await group.reduce(into: [Job]()) { $0.append($1) }
            }
            #expect(stored.count == 200)
            #expect(Set(stored.map(\.sequence)).count == 200)
            // A job's position at enqueue counts the jobs ahead of it whose commit it could see:
            // concurrent submits still committing (on another connection, another node) may be
            // missed, so it is at most its final rank and never below 1.
            var reread: [JobID: Int] = [:]
            for job in stored { reread[job.id] = try await store.require(job.id).position }
            for job in stored {
                #expect((1...(reread[job.id] ?? 0)).contains(job.position ?? 0), "a job at rank \(reread[job.id] ?? 0) was given position \(job.position ?? 0)")
            }
            // Once every submit has committed, each job reads its exact rank, and the queue runs in
            // that order. (Submits that overlap in time have no order of their own to keep.)
            let byPosition = stored.sorted { reread[$0.id, default: 0] < reread[$1.id, default: 0] }
            #expect(byPosition.map { reread[$0.id] ?? 0 } == Array(1...200))
            #expect(try await store.queuedCount() == 200)
            #expect(try await store.drain().map(\.id) == byPosition.map(\.id))
        }
    }

    // Regression test for a fixed bug (SQLite): enqueues share a GroupCommit whose leader commits followers' jobs in
    // its own task; GRDB's async write throws CancellationError in a cancelled task, so one
    // caller's cancelled submit fails the uncancelled submits batched with it. Intermittent
    // because it needs a cancelled caller to lead a batch (GroupCommitTests forces it).
    @Test(arguments: StoreKind.allCases)
    func cancelledSubmitNeverFailsOtherSubmits(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            var failed = 0
            for _ in 0..<10 {
                failed += await withTaskGroup(of: Int.self) { group in
                    for index in 0..<60 {
                        group.addTask {
                            if index.isMultiple(of: 20) {
                                let cancelled = Task { _ = try? await store.enqueue(makeJob()) }
                                cancelled.cancel()
                                return 0
                            }
                            do { _ = try await store.enqueue(makeJob()) } catch { return 1 }
                            return 0
                        }
                    }
                    return await group.reduce(0, +)
                }
            }
            #expect(failed == 0, "\(failed) uncancelled enqueues failed")
        }
    }

    // Slots that finish together share the store's round trip (PostgreSQL commits a node's
    // concurrent steps as one batch): each still gets its own next job, in queue order, and skips
    // exactly the types it excludes, while stale attempts in the same batch are fenced.
    @Test(arguments: StoreKind.allCases)
    func concurrentFinishesEachClaimTheirOwnNextJob(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            // Slots 0-3 take any type; slots 4-7 never take "gpu" jobs.
            var enqueued: [Job] = []
            for index in 0..<120 { enqueued.append(try await store.create(makeJob(type: index.isMultiple(of: 3) ? "gpu" : "render"))) }
            let excluded: @Sendable (Int) -> Set<String> = { $0 >= 4 ? ["gpu"] : [] }
            let runs = try await withThrowingTaskGroup(of: [(slot: Int, job: Job)].self) { group in
                for slot in 0..<8 {
                    group.addTask {
                        var ran: [(slot: Int, job: Job)] = []
                        var job = try await store.claimNext(for: SlotID(slot), excluding: excluded(slot), now: at(2_000))
                        while let current = job {
                            ran.append((slot, current))
                            // A stale attempt of the same job rides along with the real finish: it changes nothing.
                            async let stale = store.finish(current.id, attempt: current.attempts + 1, outcome: .exited(code: 3), now: at(2_500),
                                                           claimNextFor: nil)
                            let finished = try await store.finish(current.id, attempt: current.attempts, outcome: .succeeded, result: nil,
                                                                  now: at(3_000), claimNextFor: SlotID(slot), excluding: excluded(slot))
                            job = finished.next
                            #expect(finished.recorded)
                            let staleAnswer = try await stale
                            #expect(!staleAnswer.recorded && staleAnswer.next == nil)
                        }
                        return ran
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            #expect(runs.count == 120)
            #expect(Set(runs.map(\.job.id)) == Set(enqueued.map(\.id)), "every job ran exactly once")
            for run in runs {
                #expect(run.job.slot == SlotID(run.slot))
                #expect(run.job.attempts == 1)
                if run.slot >= 4 { #expect(run.job.type != "gpu", "slot \(run.slot) was given an excluded type") }
            }
            for job in enqueued {
                let stored = try await store.require(job.id)
                #expect(stored.state == .succeeded)
                #expect(stored.attempts == 1)
            }
            // Each slot ran its jobs in queue order.
            let order = Dictionary(uniqueKeysWithValues: enqueued.enumerated().map { ($1.id, $0) })
            for slot in 0..<8 {
                let ranks = runs.filter { $0.slot == slot }.map { order[$0.job.id]! }
                #expect(ranks == ranks.sorted(), "slot \(slot) ran jobs out of queue order")
            }
            #expect(try await store.queuedCount() == 0)
        }
    }
}
