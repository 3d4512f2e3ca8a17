// JobStoreConformanceTests, continued: idempotency, listing and paging, the queue count,
// crash recovery and progress — for every driver. Watches and concurrency are in
// JobStoreConformanceTests+Concurrency.swift.

import SpoolCore
import SpoolStore
import Testing

extension JobStoreConformanceTests {
    // MARK: idempotency

    @Test(arguments: StoreKind.allCases)
    func sameKeyAndSameRequestReturnsTheOriginalJob(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let original = try await store.create(makeJob(priority: 2, key: "order-17"))
            var repeatJob = makeJob(priority: 2, key: "order-17", createdAt: 99_999)
            repeatJob.input = .object(["size": .int(64)])
            let existing = try #require(try await store.enqueue(repeatJob).existing)
            #expect(existing.id == original.id)
            #expect(existing.sequence == original.sequence)
            #expect(existing.createdAt == original.createdAt)
            #expect(existing.position == 1)
            #expect(try await store.queuedCount() == 1)
            #expect(try await store.job(repeatJob.id) == nil, "the repeat is not stored")
        }
    }

    @Test(arguments: StoreKind.allCases)
    func sameKeyWithADifferentRequestIsAConflict(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let original = try await store.create(makeJob(key: "k"))
            for different in [makeJob(input: .object(["size": .int(65)]), key: "k"), makeJob(priority: 1, key: "k"),
                              makeJob(timeout: 61, key: "k"), makeJob(type: "other", key: "k")] {
                await #expect {
                    try await store.enqueue(different)
                } throws: { error in
                    let error = error as? StoreError
                    return error?.code == .idempotencyConflict && error?.existing?.id == original.id
                }
            }
            #expect(try await store.queuedCount() == 1)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func keyStillMatchesAfterTheJobFinished(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let original = try await store.create(makeJob(key: "k"))
            _ = try await store.claimNext(for: SlotID(0), now: at(2_000))
            _ = try await store.finish(original.id, attempt: 1, outcome: .succeeded, now: at(3_000), claimNextFor: nil)
            let existing = try #require(try await store.enqueue(makeJob(key: "k")).existing)
            #expect(existing.id == original.id && existing.state == .succeeded && existing.position == nil)
        }
    }

    // MARK: listing

    @Test(arguments: StoreKind.allCases)
    func jobsListsNewestFirstAndFiltersByStateAndType(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            var ids: [JobID] = []
            for index in 0..<6 { ids.append(try await store.create(makeJob(type: index.isMultiple(of: 2) ? "render" : "echo")).id) }
            _ = try await store.claimNext(for: SlotID(0), now: at(2_000)) // ids[0] runs
            _ = try await store.cancel(ids[1], now: at(2_000))
            let all = try await store.jobs(JobQuery())
            #expect(all.jobs.map(\.id) == ids.reversed())
            #expect(all.nextCursor == nil)
            #expect(try await store.jobs(JobQuery(state: .queued)).jobs.map(\.id) == [ids[5], ids[4], ids[3], ids[2]])
            #expect(try await store.jobs(JobQuery(state: .running)).jobs.map(\.id) == [ids[0]])
            #expect(try await store.jobs(JobQuery(type: "echo")).jobs.map(\.id) == [ids[5], ids[3], ids[1]])
            #expect(try await store.jobs(JobQuery(state: .queued, type: "render")).jobs.map(\.id) == [ids[4], ids[2]])
            #expect(try await store.jobs(JobQuery(type: "nope")).jobs.isEmpty)
        }
    }

    @Test(arguments: StoreKind.allCases, [1, 4, 7, 23, 24])
    func pagingVisitsEveryJobOnceUntilTheCursorRunsOut(_ kind: StoreKind, limit: Int) async throws {
        try await withStore(kind) { store in
            var ids: [JobID] = []
            for index in 0..<23 { ids.append(try await store.create(makeJob(type: index % 3 == 0 ? "a" : "b")).id) }
            for (filter, expected) in [(nil as String?, ids), ("a", ids.enumerated().filter { $0.offset % 3 == 0 }.map(\.element))] {
                var seen: [JobID] = []
                var cursor: Int64?
                var pages = 0
                repeat {
                    let page = try await store.jobs(JobQuery(type: filter, limit: limit, before: cursor))
                    #expect(page.jobs.count <= limit)
                    seen += page.jobs.map(\.id)
                    cursor = page.nextCursor
                    pages += 1
                } while cursor != nil && pages <= 100
                #expect(seen == expected.reversed(), "filter \(filter ?? "none"), limit \(limit)")
                #expect(Set(seen).count == seen.count)
                #expect(pages == max(1, (expected.count + limit - 1) / limit))
            }
        }
    }

    /// A page stops once the inputs of the jobs in it reach its byte budget (the first job always
    /// comes, however large): fewer jobs than the limit, and the cursor leads on to the rest.
    @Test(arguments: StoreKind.allCases)
    func aPageStopsAtItsByteBudgetAndTheCursorLeadsOn(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            var ids: [JobID] = []
            for size in [1_000, 3_000, 200, 5_000, 10, 2_500, 2_500, 100, 9_000] {
                ids.append(try await store.create(makeJob(input: .object(["pad": .string(String(repeating: "x", count: size))]))).id)
            }
            var pages: [[JobID]] = []
            var cursor: Int64?
            repeat {
                let page = try await store.jobs(JobQuery(limit: 50, before: cursor, maxBytes: 4_000))
                pages.append(page.jobs.map(\.id))
                cursor = page.nextCursor
            } while cursor != nil && pages.count <= 20
            // Newest first: 9,000 alone (over the budget by itself); 100 + 2,500 + 2,500 (the third
            // began under 4,000); 10 + 5,000; 200 + 3,000 + 1,000, the last page.
            #expect(pages == [[ids[8]], [ids[7], ids[6], ids[5]], [ids[4], ids[3]], [ids[2], ids[1], ids[0]]])
            let small = try await store.jobs(JobQuery(limit: 2, maxBytes: 1_000_000))
            #expect(small.jobs.map(\.id) == [ids[8], ids[7]] && small.nextCursor != nil, "the limit still counts")
        }
    }

    @Test(arguments: StoreKind.allCases)
    func pagingIsStableWhileNewJobsArrive(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            var ids: [JobID] = []
            for _ in 0..<10 { ids.append(try await store.create(makeJob()).id) }
            let first = try await store.jobs(JobQuery(limit: 4))
            for _ in 0..<3 { _ = try await store.create(makeJob()) }
            let second = try await store.jobs(JobQuery(limit: 4, before: first.nextCursor))
            #expect((first.jobs + second.jobs).map(\.id) == Array(ids.reversed().prefix(8)))
        }
    }

    @Test(arguments: StoreKind.allCases)
    func queuedCountFollowsEveryStateChange(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let a = try await store.create(makeJob(priority: 1))
            let b = try await store.create(makeJob(priority: 2))
            _ = try await store.create(makeJob(priority: 1))
            #expect(try await store.queuedCount() == 3)
            _ = try await store.cancel(a.id, now: at(2))
            #expect(try await store.queuedCount() == 2)
            let running = try #require(try await store.claimNext(for: SlotID(0), now: at(3)))
            #expect(running.id == b.id)
            #expect(try await store.queuedCount() == 1)
            _ = try await store.finish(b.id, attempt: 1, outcome: .stoppedForShutdown, now: at(4), claimNextFor: nil)
            #expect(try await store.queuedCount() == 2)
            _ = try await store.drain()
            #expect(try await store.queuedCount() == 0)
        }
    }

    // MARK: recovery

    @Test(arguments: StoreKind.allCases)
    func recoverInterruptedRequeuesJobsWithAttemptsLeftAndFailsTheRest(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let retry = try await store.create(makeJob(maxAttempts: 2))
            let spent = try await store.create(makeJob(maxAttempts: 1))
            let done = try await store.create(makeJob())
            _ = try await store.claimNext(for: SlotID(0), now: at(10))
            _ = try await store.claimNext(for: SlotID(1), now: at(10))
            _ = try await store.claimNext(for: SlotID(2), now: at(10))
            _ = try await store.reportProgress(retry.id, attempt: 1, progress: JobProgress(fraction: 0.3))
            _ = try await store.finish(done.id, attempt: 1, outcome: .succeeded, now: at(20), claimNextFor: nil)
            let waiting = try await store.create(makeJob())
            let before = try await [store.require(done.id), store.require(waiting.id)]
            #expect(before[1].position == 1)

            let found = try await store.recoverInterrupted(now: at(30))
            #expect(found.map(\.id) == [retry.id, spent.id])
            #expect(found.allSatisfy { $0.state == .running }, "returned as they were found")

            let requeued = try await store.require(retry.id)
            #expect(requeued.state == .queued && requeued.attempts == 1 && requeued.reason == nil)
            #expect(requeued.slot == nil && requeued.startedAt == nil && requeued.progress == nil && requeued.finishedAt == nil)
            #expect(requeued.position == 1, "it is older than the job that was waiting")
            let failed = try await store.require(spent.id)
            #expect(failed.state == .failed && failed.reason == .interrupted && failed.finishedAt == at(30))
            #expect(failed.error == RecoveryPolicy.interruptedMessage)
            #expect(try await store.require(done.id) == before[0])
            var stillWaiting = before[1]
            stillWaiting.position = 2
            #expect(try await store.require(waiting.id) == stillWaiting, "untouched, now behind the requeued job")

            let again = try #require(try await store.claimNext(for: SlotID(0), now: at(40)))
            #expect(again.id == retry.id && again.attempts == 2)
            #expect(try await store.recoverInterrupted(now: at(50)).map(\.id) == [retry.id])
            #expect(try await store.require(retry.id).reason == .interrupted)
        }
    }

    /// A cancel asked for while the job ran, cut short by a crash before the job stopped: the
    /// job ends canceled, neither run again (its side effects repeated) nor failed as interrupted.
    @Test(arguments: StoreKind.allCases)
    func recoverInterruptedEndsAJobWhoseCancelWasUnderWayAsCanceled(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let retry = try await store.create(makeJob(maxAttempts: 2))
            let spent = try await store.create(makeJob(maxAttempts: 1))
            for slot in [SlotID(0), SlotID(1)] { _ = try await store.claimNext(for: slot, now: at(10)) }
            for job in [retry, spent] {
                guard case .stopping = try await store.cancel(job.id, by: "alice", now: at(15)) else {
                    Issue.record("a running job's cancel is under way")
                    return
                }
            }
            #expect(try await store.recoverInterrupted(now: at(30)).map(\.id) == [retry.id, spent.id])
            for job in [retry, spent] {
                let canceled = try await store.require(job.id)
                #expect(canceled.state == .canceled && canceled.reason == .canceled && canceled.finishedAt == at(30))
                #expect(canceled.canceledBy == "alice" && canceled.attempts == 1)
                #expect(canceled.attemptLog.map(\.state) == [.canceled])
            }
            #expect(try await store.claimNext(for: SlotID(0), now: at(40)) == nil, "not run again")
        }
    }

    @Test(arguments: StoreKind.allCases)
    func recoverInterruptedWithNothingRunningChangesNothing(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let job = try await store.create(makeJob())
            let before = try await store.require(job.id)
            #expect(try await store.recoverInterrupted(now: at(30)).isEmpty)
            #expect(try await store.require(job.id) == before)
        }
    }

    // MARK: progress

    /// A job's or worker's free text with a NUL character in it (PostgreSQL's text cannot hold
    /// one) is stored with U+FFFD in its place: its end is recorded, not retried for good.
    @Test(arguments: StoreKind.allCases)
    func textWithANulCharacterIsStoredWithAReplacement(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let job = try await store.create(makeJob())
            _ = try await store.claimNext(for: SlotID(0), now: at(10))
            try await store.reportProgress(job.id, attempt: 1, progress: JobProgress(fraction: 0.5, message: "frame\u{0}7"))
            #expect(try await store.require(job.id).progress?.message == "frame\u{FFFD}7")
            _ = try await store.finish(job.id, attempt: 1, outcome: .reportedFailure(message: "bad\u{0}input"), now: at(20), claimNextFor: nil)
            let failed = try await store.require(job.id)
            #expect(failed.state == .failed && failed.error == "bad\u{FFFD}input")
        }
    }

    @Test(arguments: StoreKind.allCases)
    func progressIsSavedOnlyForTheCurrentAttempt(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let job = try await store.create(makeJob(maxAttempts: 2))
            try await store.reportProgress(job.id, attempt: 0, progress: JobProgress(fraction: 0.9))
            #expect(try await store.require(job.id).progress == nil, "not while queued")
            _ = try await store.claimNext(for: SlotID(0), now: at(10))
            try await store.reportProgress(job.id, attempt: 1, progress: JobProgress(fraction: 0.25, message: "row 60 of 240"))
            #expect(try await store.require(job.id).progress == JobProgress(fraction: 0.25, message: "row 60 of 240"))
            try await store.reportProgress(job.id, attempt: 2, progress: JobProgress(fraction: 0.75))
            #expect(try await store.require(job.id).progress?.fraction == 0.25, "another attempt's report is ignored")
            _ = try await store.recoverInterrupted(now: at(20))
            _ = try await store.claimNext(for: SlotID(0), now: at(30))
            #expect(try await store.require(job.id).progress == nil, "a new attempt starts without progress")
            try await store.reportProgress(job.id, attempt: 1, progress: JobProgress(fraction: 0.5))
            #expect(try await store.require(job.id).progress == nil, "the previous attempt is fenced out")
            try await store.reportProgress(job.id, attempt: 2, progress: JobProgress(fraction: 0.5))
            _ = try await store.finish(job.id, attempt: 2, outcome: .succeeded, now: at(40), claimNextFor: nil)
            try await store.reportProgress(job.id, attempt: 2, progress: JobProgress(fraction: 0.6))
            #expect(try await store.require(job.id).progress?.fraction == 0.5, "not after it finished")
        }
    }

    // MARK: the event log

    @Test(arguments: StoreKind.allCases)
    func everyChangeIsAnEventCarryingTheJobsState(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let first = try await store.create(makeJob())
            let second = try await store.create(makeJob(type: "other"))
            let claimed = try #require(try await store.claimNext(for: SlotID(2), now: at(10)))
            let progress = JobProgress(fraction: 0.5, message: "half")
            try await store.reportProgress(first.id, attempt: 1, progress: progress)
            let next = try #require(try await store.finish(first.id, attempt: 1, outcome: .succeeded, now: at(20), claimNextFor: SlotID(2)).next)
            let done = try await store.require(first.id)
            // A shared store shows events once every earlier id is committed: allow it a moment.
            var events: [JobEvent] = []
            for _ in 0..<200 where events.count < 6 {
                events = try await store.events(after: 0, job: nil, limit: 100)
                if events.count < 6 { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(events.map(\.kind) == [.state, .state, .state, .progress, .state, .state])
            #expect(events.map(\.data) == [
                JobEvent.stateData(of: first), JobEvent.stateData(of: second), JobEvent.stateData(of: claimed),
                JobEvent.progressData(of: first.id, progress), JobEvent.stateData(of: done), JobEvent.stateData(of: next),
            ])
            #expect(events.map(\.id) == events.map(\.id).sorted() && Set(events.map(\.id)).count == 6)
            #expect(try await store.events(after: events[1].id, job: second.id, limit: 10).map(\.data) == [JobEvent.stateData(of: next)])
        }
    }
}

extension JobStoreConformanceTests {
    // MARK: events for webhooks

    /// Read window by window, the webhook reader gets every event of a job with a webhook, in
    /// order, and its cursor reaches the end of the log; a store that filters in its query
    /// (SQLite) leaves out the events of jobs without one.
    @Test(arguments: StoreKind.allCases)
    func webhookEventsCoverEveryEventOfAJobWithAWebhook(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            var hooked = makeJob()
            hooked.webhookURL = "http://127.0.0.1:9/hook"
            hooked.webhookEvents = ["completed"]
            let quiet = try await store.create(makeJob())
            hooked = try await store.create(hooked)
            let later = try await store.create(makeJob())
            for job in try await store.drain() {
                _ = try await store.finish(job.id, attempt: 1, outcome: .succeeded, now: at(6_000), claimNextFor: nil)
            }
            let all = try await store.events { $0.count >= 9 }
            #expect(all.count == 9)
            var cursor: Int64 = 0
            var seen: [JobEvent] = []
            while true {
                let (events, through) = try await store.webhookEvents(after: cursor, limit: 2)
                #expect(through - cursor <= 2 || kind == .postgres)
                seen += events
                if through == cursor { break }
                cursor = through
            }
            #expect(cursor == all.last?.id)
            #expect(seen.filter { $0.job == hooked.id }.map(\.id) == all.filter { $0.job == hooked.id }.map(\.id))
            #expect(seen.filter { $0.job == hooked.id }.count == 3)
            if kind == .sqlite { #expect(!seen.contains { $0.job == quiet.id || $0.job == later.id }) }
        }
    }
}
