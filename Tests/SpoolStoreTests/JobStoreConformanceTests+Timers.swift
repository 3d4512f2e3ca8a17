// JobStoreConformanceTests+Timers: retries with back-off, delayed starts and start deadlines —
// the parts of the contract where the queue depends on the time a claim is made. Every time is
// given to the store, so nothing here sleeps.

import SpoolCore
import SpoolStore
import Testing

extension JobStoreConformanceTests {
    static func seconds(_ value: Double) -> Timestamp { Timestamp(secondsSince1970: 1_000_000 + value) }

    func retryingJob(_ policy: RetryPolicy) -> Job {
        var job = makeJob(maxAttempts: policy.maxAttempts)
        job.retry = policy
        return job
    }

    @Test(arguments: StoreKind.allCases)
    func aFailureTheRetryPolicyCoversRequeuesTheJobUntilItsBackoffHasPassed(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let policy = RetryPolicy(maxAttempts: 3, backoffSeconds: 10, maxBackoffSeconds: 60)
            let job = try await store.create(retryingJob(policy))
            #expect(try await store.require(job.id).retry == policy)

            _ = try #require(try await store.claimNext(for: SlotID(0), now: Self.seconds(1)))
            _ = try await store.finish(job.id, attempt: 1, outcome: .exited(code: 3), now: Self.seconds(2), claimNextFor: nil)
            let waiting = try await store.require(job.id)
            let retryAt = Self.seconds(2).adding(seconds: policy.backoff(after: 1, of: job.id))
            #expect(waiting.state == .queued && waiting.attempts == 1 && waiting.reason == nil && waiting.finishedAt == nil)
            #expect(waiting.notBefore == retryAt)
            #expect(waiting.attemptLog.count == 1)
            let first = try #require(waiting.attemptLog.first)
            #expect(first.number == 1 && first.state == .queued && first.reason == .exitCode && first.exitCode == 3)
            #expect(first.retryAt == retryAt && first.slot == SlotID(0) && first.startedAt == Self.seconds(1) && first.endedAt == Self.seconds(2))
            #expect(try await store.nextTimer(after: Self.seconds(2)) == retryAt)

            // Not before its back-off is over, then at once.
            if retryAt > Self.seconds(2) {
                #expect(try await store.claimNext(for: SlotID(0), now: Timestamp(microseconds: retryAt.microseconds - 1)) == nil)
            }
            let second = try #require(try await store.claimNext(for: SlotID(1), now: retryAt))
            #expect(second.id == job.id && second.attempts == 2 && second.slot == SlotID(1))
            _ = try await store.finish(job.id, attempt: 2, outcome: .timedOut, now: retryAt.adding(seconds: 1), claimNextFor: nil)
            let third = try await store.require(job.id)
            #expect(third.state == .queued && third.attemptLog.map(\.reason) == [.exitCode, .timeout])
            let thirdAt = try #require(third.notBefore)

            // The last attempt's failure is the answer; the log keeps all three.
            _ = try #require(try await store.claimNext(for: SlotID(0), now: thirdAt))
            _ = try await store.finish(job.id, attempt: 3, outcome: .exited(code: 4), now: thirdAt.adding(seconds: 1), claimNextFor: nil)
            let failed = try await store.require(job.id)
            #expect(failed.state == .failed && failed.reason == .exitCode && failed.exitCode == 4 && failed.attempts == 3)
            #expect(failed.attemptLog.map(\.state) == [.queued, .queued, .failed])
            #expect(failed.attemptLog.map(\.number) == [1, 2, 3])
            #expect(failed.attemptLog.last?.retryAt == nil)
            #expect(try await store.nextTimer(after: thirdAt) == nil)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func onlyTheListedReasonsAndExitCodesRetry(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let policy = try RetryPolicy(json: .object(["max_attempts": .int(5), "backoff_s": .int(0), "on": .array([.int(75), .string("signal")])]))
            let temporary = try await store.create(retryingJob(policy))
            let permanent = try await store.create(retryingJob(policy))
            let crashed = try await store.create(retryingJob(policy))
            for (job, outcome) in [(temporary, JobOutcome.exited(code: 75)), (permanent, .exited(code: 1)), (crashed, .signaled(signal: 11))] {
                let claimed = try #require(try await store.claimNext(for: SlotID(0), now: Self.seconds(1)))
                #expect(claimed.id == job.id)
                _ = try await store.finish(job.id, attempt: 1, outcome: outcome, now: Self.seconds(2), claimNextFor: nil)
            }
            #expect(try await store.require(temporary.id).state == .queued)
            #expect(try await store.require(crashed.id).state == .queued)
            let failed = try await store.require(permanent.id)
            #expect(failed.state == .failed && failed.exitCode == 1 && failed.attemptLog.count == 1)
        }
    }

    /// A start deadline's check counts the jobs that can run before the deadline: one delayed
    /// past it cannot hold the new job up (it was counted, and refused jobs that would start in time).
    @Test(arguments: StoreKind.allCases)
    func theJobsAheadOfADeadlineLeaveOutThoseDelayedPastIt(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            for (priority, delay) in [(0, nil), (1, nil), (0, 50.0), (0, 200.0), (2, 300.0)] as [(Int, Double?)] {
                var job = makeJob(priority: priority)
                job.notBefore = delay.map(Self.seconds)
                _ = try await store.create(job)
            }
            #expect(try await store.queuedCount(priorityAtLeast: 0, dueBy: Self.seconds(10)) == 2)
            #expect(try await store.queuedCount(priorityAtLeast: 0, dueBy: Self.seconds(50)) == 3, "due at the deadline: counted")
            #expect(try await store.queuedCount(priorityAtLeast: 0, dueBy: Self.seconds(1000)) == 5)
            #expect(try await store.queuedCount(priorityAtLeast: 1, dueBy: Self.seconds(250)) == 1)
            #expect(try await store.queuedCount(priorityAtLeast: 1, dueBy: Self.seconds(300)) == 2)
        }
    }

    /// What a new job would wait behind follows fair share: an idle tenant's job goes ahead of a
    /// busy tenant's backlog (found by attacking the build: a start_within_s the queue could meet
    /// was refused, counting the whole backlog as ahead).
    @Test(arguments: StoreKind.allCases)
    func aNewJobWaitsBehindWhatFairShareReallyPutsAheadOfIt(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            for _ in 0..<6 {
                var job = makeJob()
                job.owner = "busy"
                _ = try await store.create(job)
            }
            var delayed = makeJob(priority: 1)
            delayed.notBefore = Self.seconds(500)
            _ = try await store.create(delayed)
            var urgent = makeJob(priority: 1)
            urgent.owner = "busy"
            _ = try await store.create(urgent)
            var newcomer = makeJob()
            newcomer.owner = "idle"
            // The urgent job, and the busy tenant's first (the newcomer's tag comes right after the head).
            #expect(try await store.queuedAhead(ofNew: newcomer, dueBy: Self.seconds(100)) == 2)
            #expect(try await store.queuedAhead(ofNew: newcomer, dueBy: Self.seconds(600)) == 3, "the delayed job is due by then")
            var more = makeJob()
            more.owner = "busy"
            #expect(try await store.queuedAhead(ofNew: more, dueBy: Self.seconds(100)) == 7, "behind its own backlog")
        }
    }

    @Test(arguments: StoreKind.allCases)
    func aDelayedJobWaitsWithoutHoldingUpTheJobsBehindIt(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            var delayed = makeJob(priority: 5)
            delayed.notBefore = Self.seconds(100)
            let later = try await store.create(delayed)
            #expect(later.notBefore == Self.seconds(100) && later.position == 1)
            let now = try await store.create(makeJob())
            #expect(try await store.nextTimer(after: Self.seconds(10)) == Self.seconds(100))
            if let local = store as? any LocalJobStore {
                guard case .job(let head) = try await local.peekNext(for: SlotID(0), excluding: [], skipping: [], now: Self.seconds(10)) else {
                    Issue.record("the look-up found nothing due")
                    return
                }
                #expect(head.id == now.id)
                #expect(try await local.peekNext(for: SlotID(0), excluding: [], skipping: [now.id], now: Self.seconds(10)) == PeekedJob.none)
            }
            #expect(try await store.claimNext(for: SlotID(0), now: Self.seconds(10))?.id == now.id)
            #expect(try await store.claimNext(for: SlotID(1), now: Self.seconds(99)) == nil)
            let started = try #require(try await store.claimNext(for: SlotID(1), now: Self.seconds(100)))
            #expect(started.id == later.id && started.attempts == 1)
            #expect(try await store.nextTimer(after: Self.seconds(100)) == nil)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func aQueuedJobPastItsStartDeadlineIsCanceledWithReasonDeadline(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            func deadlined(_ seconds: Double?) -> Job {
                var job = makeJob()
                job.startBy = seconds.map(Self.seconds)
                return job
            }
            let running = try await store.create(deadlined(50))
            #expect(try await store.claimNext(for: SlotID(0), now: Self.seconds(10))?.id == running.id)
            let missed = try await store.create(deadlined(50))
            let pending = try await store.create(deadlined(500))
            let open = try await store.create(deadlined(nil))
            #expect(try await store.require(missed.id).startBy == Self.seconds(50))
            #expect(try await store.nextTimer(after: Self.seconds(20)) == Self.seconds(50))

            // Past its deadline a job is never started, even before the sweep has canceled it.
            #expect(try await store.claimNext(for: SlotID(1), now: Self.seconds(60))?.id == pending.id)

            let expired = try await store.expireDeadlines(now: Self.seconds(60))
            #expect(expired.map(\.id) == [missed.id])
            let canceled = try await store.require(missed.id)
            #expect(canceled.state == .canceled && canceled.reason == .deadline && canceled.finishedAt == Self.seconds(60))
            #expect(canceled.error == Job.deadlineMessage)
            #expect(try await store.require(running.id).state == .running)
            #expect(try await store.require(open.id).state == .queued)
            #expect(try await store.expireDeadlines(now: Self.seconds(61)).isEmpty)
            #expect(try await store.nextTimer(after: Self.seconds(61)) == nil)
            let events = try await store.events(job: missed.id) { events in events.contains { $0.data["state"] == .string("canceled") } }
            #expect(events.last?.data["reason"] == .string("deadline"))
        }
    }

    /// A start deadline is met by the first start: a job that started in time and went back to
    /// the queue (a crash, a retry's back-off, a shutdown) is not canceled as `deadline` later
    /// (found by attacking the build: its retries were thrown away, and a restarted job lost).
    @Test(arguments: StoreKind.allCases)
    func aJobThatStartedInTimeIsNotCanceledForItsDeadlineOnceRequeued(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            var job = retryingJob(RetryPolicy(maxAttempts: 3, backoffSeconds: 0))
            job.startBy = Self.seconds(2)
            let stored = try await store.create(job)
            let claimed = try #require(try await store.claimNext(for: SlotID(0), now: Self.seconds(1)))
            #expect(claimed.id == stored.id)
            _ = try await store.recoverInterrupted(now: Self.seconds(5))
            let requeued = try await store.require(stored.id)
            #expect(requeued.state == .queued && requeued.startBy == nil)
            #expect(try await store.expireDeadlines(now: Self.seconds(6)).isEmpty)
            #expect(try await store.nextTimer(after: Self.seconds(6)) == nil)
            let again = try #require(try await store.claimNext(for: SlotID(0), now: Self.seconds(7)), "it runs again")
            // A retry's back-off after a run: still no deadline.
            _ = try await store.finish(again.id, attempt: again.attempts, outcome: .exited(code: 1), now: Self.seconds(8), claimNextFor: nil)
            #expect(try await store.require(stored.id).state == .queued)
            #expect(try await store.expireDeadlines(now: Self.seconds(100)).isEmpty)
        }
    }

    /// A job handed back before it ran (its worker not ready, its files not made: `.returned`)
    /// has not met its deadline: it keeps it, and is canceled for it if it passes (found in review).
    @Test(arguments: StoreKind.allCases)
    func aJobHandedBackBeforeItRanKeepsItsDeadline(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            var job = makeJob()
            job.startBy = Self.seconds(10)
            let stored = try await store.create(job)
            let claimed = try #require(try await store.claimNext(for: SlotID(0), now: Self.seconds(1)))
            _ = try await store.finish(claimed.id, attempt: claimed.attempts, outcome: .returned(message: "the data directory is full"),
                                       now: Self.seconds(2), claimNextFor: nil)
            let back = try await store.require(stored.id)
            #expect(back.state == .queued && back.attempts == 0 && back.startBy == Self.seconds(10))
            #expect(try await store.expireDeadlines(now: Self.seconds(11)).map(\.id) == [stored.id])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func anInterruptedAttemptIsLoggedAndARequeuedJobStillRetries(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let job = try await store.create(retryingJob(RetryPolicy(maxAttempts: 3, backoffSeconds: 0)))
            _ = try await store.claimNext(for: SlotID(0), now: Self.seconds(1))
            _ = try await store.recoverInterrupted(now: Self.seconds(5))
            let requeued = try await store.require(job.id)
            #expect(requeued.state == .queued && requeued.attempts == 1)
            #expect(requeued.attemptLog.map(\.reason) == [.interrupted])
            #expect(requeued.attemptLog.first?.state == .queued && requeued.attemptLog.first?.error == nil)
            #expect(try await store.queuedCount(priorityAtLeast: 0, dueBy: Self.seconds(5)) == 1)
            #expect(try await store.queuedCount(priorityAtLeast: 1, dueBy: Self.seconds(5)) == 0)
        }
    }
}

// MARK: - Result reuse

extension JobStoreConformanceTests {
    func deduplicated(_ hash: String, _ dedup: Dedup = Dedup(), owner: String? = nil, createdAt: Timestamp = Self.seconds(0)) -> Job {
        var job = makeJob(createdAt: createdAt.microseconds)
        job.dedup = dedup
        job.dedupHash = hash
        job.owner = owner
        return job
    }

    @Test(arguments: StoreKind.allCases)
    func anIdenticalRequestJoinsTheQueuedOrRunningJobInsteadOfRunningTwice(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let first = try await store.create(deduplicated("h1"))
            guard case .duplicate(let joined) = try await store.enqueue(deduplicated("h1")) else {
                Issue.record("a second identical job was stored")
                return
            }
            #expect(joined.id == first.id && joined.state == .queued && joined.position == 1)
            #expect(try await store.queuedCount() == 1)
            // Another owner, another identity, or no dedup asked for: a job of its own.
            #expect(try await store.enqueue(deduplicated("h1", owner: "other")).created != nil)
            #expect(try await store.enqueue(deduplicated("h2")).created != nil)
            var plain = makeJob()
            plain.dedupHash = "h1"
            #expect(try await store.enqueue(plain).created != nil)

            _ = try await store.claimNext(for: SlotID(0), now: Self.seconds(1))
            guard case .duplicate(let running) = try await store.enqueue(deduplicated("h1")) else {
                Issue.record("a job identical to a running one was stored")
                return
            }
            #expect(running.id == first.id && running.state == .running)

            // A running job whose cancel is under way is never joined: it will end canceled
            // (found by attacking the build: the second caller's work never ran).
            _ = try await store.cancel(first.id, by: "alice", now: Self.seconds(2))
            let afterCancel = try await store.enqueue(deduplicated("h1"))
            #expect(afterCancel.created != nil, "\(afterCancel)")
        }
    }

    /// The Idempotency-Key is looked at before result reuse: a key its owner already used for a
    /// different request is a conflict, even when an identical job would be joined (found by
    /// attacking the build: PostgreSQL joined it, answering 200 for the wrong job).
    @Test(arguments: StoreKind.allCases)
    func aKeyUsedForAnotherRequestIsAConflictBeforeAnyJoin(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let joinable = try await store.create(deduplicated("h1"))
            let held = try await store.create(makeJob(input: .object(["other": .int(1)]), key: "k1"))
            var keyed = deduplicated("h1")
            keyed.idempotencyKey = "k1"
            do {
                let result = try await store.enqueue(keyed)
                Issue.record("answered \(result) (joinable \(joinable.id), key held by \(held.id))")
            } catch let error as StoreError {
                #expect(error.code == .idempotencyConflict && error.existing?.id == held.id, "\(error)")
            }
        }
    }

    /// A request that joins a job holds its Idempotency-Key as a stored job would: sent again it
    /// answers that job, even once the job has ended (before, it made a new job); any other
    /// request under the key — a job or an array — is a conflict naming the joined job; and the
    /// key is free again once that job is deleted.
    @Test(arguments: StoreKind.allCases)
    func aRequestThatJoinsAJobHoldsItsIdempotencyKey(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let first = try await store.create(deduplicated("h1"))
            var keyed = deduplicated("h1", createdAt: Self.seconds(1))
            keyed.idempotencyKey = "k1"
            guard case .duplicate(let joined) = try await store.enqueue(keyed), joined.id == first.id else {
                Issue.record("the keyed request did not join \(first.id)")
                return
            }
            _ = try await store.claimNext(for: SlotID(0), now: Self.seconds(2))
            _ = try await store.finish(first.id, attempt: 1, outcome: .exited(code: 1), now: Self.seconds(3), claimNextFor: nil)

            var again = keyed
            again.id = JobID.random()
            again.createdAt = Self.seconds(4)
            let repeated = try await store.enqueue(again)
            #expect(repeated.existing?.id == first.id && repeated.job.state == .failed, "\(repeated)")
            #expect(try await store.queuedCount() == 0)

            func isConflict(_ error: any Error) -> Bool {
                (error as? StoreError)?.code == .idempotencyConflict && (error as? StoreError)?.existing?.id == first.id
            }
            let other = makeJob(input: .object(["other": .int(1)]), key: "k1")
            await #expect(performing: { try await store.enqueue(other) }, throws: isConflict)
            var array = tasks(ArraySpec.newID(), count: 2)
            array[0].idempotencyKey = "k1"
            await #expect(performing: { try await store.enqueueArray(array, limits: QueueLimits()) }, throws: isConflict)
            #expect(try await store.queuedCount() == 0)

            guard case .deleted = try await store.delete(first.id) else {
                Issue.record("the ended job was not deleted")
                return
            }
            #expect(try await store.enqueue(other).created != nil)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func aSucceededJobIsReusedOnlyWithinItsWindowAndFailedOnesNever(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let done = try await store.create(deduplicated("render-a"))
            let broken = try await store.create(deduplicated("render-b"))
            _ = try await store.claimNext(for: SlotID(0), now: Self.seconds(1))
            _ = try await store.finish(done.id, attempt: 1, outcome: .succeeded, result: .int(7), now: Self.seconds(10), claimNextFor: nil, excluding: [])
            _ = try await store.claimNext(for: SlotID(0), now: Self.seconds(11))
            _ = try await store.finish(broken.id, attempt: 1, outcome: .exited(code: 1), now: Self.seconds(12), claimNextFor: nil)

            let window = Dedup(succeededWithin: 60)
            guard case .duplicate(let reused) = try await store.enqueue(deduplicated("render-a", window, createdAt: Self.seconds(70))) else {
                Issue.record("a job that succeeded 60 s before was not reused")
                return
            }
            #expect(reused.id == done.id && reused.state == .succeeded && reused.result == .int(7))
            // Past the window, or only joining queued jobs, or a failed job: a new job.
            #expect(try await store.enqueue(deduplicated("render-a", window, createdAt: Self.seconds(70.5))).created != nil)
            #expect(try await store.enqueue(deduplicated("render-b", window, createdAt: Self.seconds(13))).created != nil)
            #expect(try await store.require(done.id).dedupHash == "render-a")
        }
    }
}

// MARK: - Job arrays

extension JobStoreConformanceTests {
    @Test(arguments: StoreKind.allCases)
    func anArraysTasksAreStoredTogetherAndAddUpToItsSummary(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let id = ArraySpec.newID()
            let stored = try await store.enqueueArray(tasks(id, count: 5, owner: "ann", failFast: true), limits: QueueLimits())
            #expect(stored.map { $0.array?.index } == [0, 1, 2, 3, 4] && stored.map(\.position) == [1, 2, 3, 4, 5])
            #expect(try await store.require(stored[2].id).array == ArrayMembership(id: id, index: 2, failFast: true))
            var summary = try #require(try await store.arraySummary(id))
            #expect(summary.size == 5 && summary.counts == [.queued: 5] && summary.state == .queued && summary.owner == "ann")
            #expect(summary.failFast && summary.type == "render" && summary.lastQueued == stored[4].id && summary.progress == 0)

            _ = try await store.claimNext(for: SlotID(0), now: at(10))
            _ = try await store.finish(stored[0].id, attempt: 1, outcome: .succeeded, now: at(20), claimNextFor: SlotID(0))
            try await store.reportProgress(stored[1].id, attempt: 1, progress: JobProgress(fraction: 0.5))
            summary = try #require(try await store.arraySummary(id))
            #expect(summary.counts == [.succeeded: 1, .running: 1, .queued: 3] && summary.state == .running)
            #expect(abs(summary.progress - 1.5 / 5) < 1e-9)

            let page = try await store.arrayTasks(id, after: 1, limit: 2)
            #expect(page.map { $0.array?.index } == [2, 3])
            let canceled = try await store.cancelArray(id, by: "ann", now: at(30))
            #expect(Set(canceled.map(\.id)) == Set(stored.dropFirst().map(\.id)))
            #expect(canceled.map(\.state) == [.running, .canceled, .canceled, .canceled], "each as the cancel left it")
            // Each as a cancel of its own: the running one asked to stop, the queued ones canceled, with events saying who.
            let running = try await store.require(stored[1].id)
            #expect(running.state == .running && running.cancelRequested && running.canceledBy == "ann")
            let asked = try await store.events(job: stored[1].id) { $0.contains { $0.data["cancel_requested"] == .bool(true) } }
            #expect(asked.last?.data["cancel_requested"] == .bool(true) && asked.last?.data["actor"] == .string("ann"))
            for task in stored.dropFirst(2) {
                #expect(try await store.require(task.id).canceledBy == "ann")
                let events = try await store.events(job: task.id) { $0.contains { $0.data["state"] == .string("canceled") } }
                #expect(events.last?.data["state"] == .string("canceled") && events.last?.data["actor"] == .string("ann"))
            }
            #expect(try await store.cancelArray(id, by: "ann", now: at(40)).map(\.id) == [stored[1].id], "asked again: only the one still running")
            summary = try #require(try await store.arraySummary(id))
            #expect(summary.counts == [.succeeded: 1, .running: 1, .canceled: 3] && summary.lastQueued == nil)
            #expect(try await store.arraySummary(ArraySpec.newID()) == nil)
        }
    }

    /// A task's state events name its array (and its index), from every step; a plain job's do not.
    /// A crash between a fail-fast task's failure and the cancel of the rest leaves the array
    /// with a failed task and others open: the start finds it (found in review).
    @Test(arguments: StoreKind.allCases)
    func failFastArraysLeftOpenAreFound(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let open = ArraySpec.newID(), plain = ArraySpec.newID()
            let stored = try await store.enqueueArray(tasks(open, count: 3, failFast: true), limits: QueueLimits())
            _ = try await store.enqueueArray(tasks(plain, count: 2), limits: QueueLimits())
            #expect(try await store.failFastArraysLeftOpen() == [])
            let first = try #require(try await store.claimNext(for: SlotID(0), now: at(2_000)))
            #expect(first.id == stored[0].id)
            _ = try await store.finish(first.id, attempt: 1, outcome: .exited(code: 1), now: at(2_100), claimNextFor: nil)
            let plainFirst = try #require(try await store.arrayTasks(plain, after: nil, limit: 1).first)
            _ = try await store.claimNext(for: SlotID(0), now: at(2_200))   // the open array's second task
            _ = try await store.cancel(plainFirst.id, now: at(2_300))
            #expect(try await store.failFastArraysLeftOpen() == [open])
            _ = try await store.cancelArray(open, by: "fail_fast", now: at(2_400))
            _ = try await store.finish(stored[1].id, attempt: 1, outcome: .canceled, now: at(2_500), claimNextFor: nil)
            #expect(try await store.failFastArraysLeftOpen() == [])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func aTasksStateEventsNameItsArray(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let id = ArraySpec.newID()
            let task = try await store.enqueueArray(tasks(id, count: 1), limits: QueueLimits())[0]
            let plain = try await store.create(makeJob())
            _ = try await store.claimNext(for: SlotID(0), now: at(2_000))
            _ = try await store.finish(task.id, attempt: 1, outcome: .succeeded, now: at(3_000), claimNextFor: SlotID(0))
            let states = try await store.events(job: task.id) { $0.filter { $0.kind == .state }.count >= 3 }.filter { $0.kind == .state }
            #expect(states.map { $0.data["state"]?.stringValue } == ["queued", "running", "succeeded"])
            #expect(states.allSatisfy { $0.data["array"] == .object(["id": .string(id), "index": .int(0)]) }, "\(states.map(\.data))")
            let plainStates = try await store.events(job: plain.id) { $0.filter { $0.kind == .state }.count >= 2 }
            #expect(plainStates.allSatisfy { $0.data["array"] == nil })
        }
    }

    /// What a request holds that its job does not keep as sent (a `delay_s`, which becomes a
    /// time; an array's items) is compared by the fingerprint stored with the key: the same
    /// request again is a repeat, another one a conflict.
    @Test(arguments: StoreKind.allCases)
    func aRepeatIsComparedWithTheRequestAsSentNotTheJobAsStored(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            var sent = makeJob(key: "as-sent")
            sent.requestExtras = ["delay_s": .int(900)]
            sent.notBefore = Self.seconds(900)
            let stored = try #require(try await store.enqueue(sent).created)
            var again = sent
            again.id = .random()
            again.notBefore = Self.seconds(905)   // the same delay, counted from a later moment
            #expect(try await store.enqueue(again).existing?.id == stored.id)
            var other = again
            other.requestExtras = ["delay_s": .int(60)]
            await #expect(performing: { try await store.enqueue(other) }, throws: { (error: any Error) in
                (error as? StoreError)?.code == .idempotencyConflict && (error as? StoreError)?.existing?.id == stored.id
            })
            #expect(try await store.requestFingerprint(owner: nil, key: "as-sent") == sent.fingerprint)
            #expect(try await store.requestFingerprint(owner: nil, key: "never-used") == nil)
        }
    }

    /// An array's Idempotency-Key is held by its first task: one key never makes both a job and
    /// an array, whichever comes first.
    @Test(arguments: StoreKind.allCases)
    func anArraysIdempotencyKeyIsHeldByItsFirstTask(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            func keyed(_ id: String, _ key: String) -> [Job] {
                var made = tasks(id, count: 3)
                for index in made.indices { made[index].idempotencyKey = key }   // the store keeps the first one's only
                return made
            }
            func isConflict(with holder: JobID) -> @Sendable (any Error) -> Bool {
                { error in (error as? StoreError)?.code == .idempotencyConflict && (error as? StoreError)?.existing?.id == holder }
            }
            let job = try await store.create(makeJob(key: "held-by-a-job"))
            let refused = ArraySpec.newID()
            await #expect(performing: { try await store.enqueueArray(keyed(refused, "held-by-a-job"), limits: QueueLimits()) },
                          throws: isConflict(with: job.id))
            #expect(try await store.arraySummary(refused) == nil, "nothing of it stored")

            let id = ArraySpec.newID()
            let stored = try await store.enqueueArray(keyed(id, "held-by-an-array"), limits: QueueLimits())
            #expect(try await store.require(stored[0].id).idempotencyKey == "held-by-an-array")
            #expect(try await store.require(stored[1].id).idempotencyKey == nil)
            await #expect(performing: { try await store.enqueue(makeJob(key: "held-by-an-array")) }, throws: isConflict(with: stored[0].id))
            // A job with the first task's very input is another request all the same.
            var twin = stored[0]
            twin.id = .random()
            twin.array = nil
            await #expect(performing: { try await store.enqueue(twin) }, throws: isConflict(with: stored[0].id))
            #expect(try await store.queuedCount() == 4)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func anArrayThatWouldOverfillTheQueueStoresNothing(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            _ = try await store.create(makeJob())
            let id = ArraySpec.newID()
            await #expect(throws: StoreError.self) {
                _ = try await store.enqueueArray(tasks(id, count: 4), limits: QueueLimits(total: 4))
            }
            #expect(try await store.arraySummary(id) == nil)
            #expect(try await store.queuedCount() == 1)
            #expect(try await store.enqueueArray(tasks(id, count: 3), limits: QueueLimits(total: 4)).count == 3)
        }
    }
}
