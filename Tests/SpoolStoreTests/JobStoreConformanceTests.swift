// JobStoreConformanceTests: the one suite every JobStore driver must pass (see StoreKind).
// This file: enqueue, positions, claims, finishing with fencing, cancel. The rest of the
// contract (idempotency, listing, recovery, progress, watches, concurrency) is in
// JobStoreConformanceTests+Queries.swift and +Concurrency.swift. A change to store semantics
// changes this suite, not one driver's tests.

import SpoolCore
import SpoolStore
import Testing

@Suite struct JobStoreConformanceTests {
    // MARK: enqueue and positions

    @Test(arguments: StoreKind.allCases)
    func enqueueReturnsCreatedWithAOneBasedPosition(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let submitted = makeJob(priority: 3, input: .object(["size": .int(8), "name": .string("a b")]), maxAttempts: 2,
                                    timeout: 12.5, key: "k1", createdAt: 777)
            let first = try await store.create(submitted)
            #expect(first.id == submitted.id)
            #expect(first.position == 1)
            #expect(first.state == .queued)
            #expect(first.attempts == 0)
            #expect(first.type == "render" && first.input == submitted.input && first.priority == 3)
            #expect(first.timeoutSeconds == 12.5 && first.maxAttempts == 2 && first.idempotencyKey == "k1")
            #expect(first.createdAt == at(777))
            let second = try await store.create(makeJob(priority: 3))
            let third = try await store.create(makeJob(priority: 3))
            #expect([second.position, third.position] == [2, 3])
            #expect(first.sequence < second.sequence && second.sequence < third.sequence)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func higherPriorityJobSubmittedLaterIsAhead(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let low1 = try await store.create(makeJob(priority: 0))
            let low2 = try await store.create(makeJob(priority: 0))
            let high = try await store.create(makeJob(priority: 5))
            #expect(high.position == 1)
            let negative = try await store.create(makeJob(priority: -1))
            #expect(negative.position == 4)
            let high2 = try await store.create(makeJob(priority: 5))
            #expect(high2.position == 2)
            #expect(try await store.require(low1.id).position == 3)
            #expect(try await store.require(low2.id).position == 4)
            #expect(try await store.require(negative.id).position == 5)
            #expect(try await store.require(high.id).position == 1)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func positionsMoveUpAsJobsAheadLeaveTheQueue(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let a = try await store.create(makeJob())
            let b = try await store.create(makeJob())
            let c = try await store.create(makeJob())
            _ = try await store.claimNext(for: SlotID(0), now: at(2_000))
            _ = try await store.cancel(b.id, now: at(2_000))
            #expect(try await store.require(a.id).position == nil, "running jobs have no position")
            #expect(try await store.require(b.id).position == nil, "canceled jobs have no position")
            #expect(try await store.require(c.id).position == 1)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func unknownIDReadsAsNil(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            _ = try await store.create(makeJob())
            #expect(try await store.job(JobID.random()) == nil)
        }
    }

    // MARK: claims

    @Test(arguments: StoreKind.allCases)
    func claimTakesHigherPriorityFirstThenFIFO(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            var random = SplitMix64(seed: 11)
            var submitted: [Job] = []
            for _ in 0..<40 { submitted.append(try await store.create(makeJob(priority: random.roll(4) * 10 - 10))) }
            let expected = submitted.sorted { QueueOrder.precedes(($0.priority, $0.sequence), ($1.priority, $1.sequence)) }
            let claimed = try await store.drain()
            #expect(claimed.map(\.id) == expected.map(\.id))
        }
    }

    @Test(arguments: StoreKind.allCases)
    func claimCountsAnAttemptAndRecordsSlotAndStart(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let job = try await store.create(makeJob(maxAttempts: 3))
            let claimed = try #require(try await store.claimNext(for: SlotID(2), now: at(5_000)))
            #expect(claimed.id == job.id)
            #expect(claimed.state == .running)
            #expect(claimed.attempts == 1)
            #expect(claimed.slot == SlotID(2))
            #expect(claimed.startedAt == at(5_000))
            #expect(claimed.finishedAt == nil)
            #expect(claimed.position == nil)
            let stored = try await store.require(job.id)
            #expect(stored.state == .running && stored.attempts == 1 && stored.slot == SlotID(2) && stored.startedAt == at(5_000))
            #expect(try await store.claimNext(for: SlotID(0), now: at(6_000)) == nil, "a running job is not claimed twice")
        }
    }

    @Test(arguments: StoreKind.allCases)
    func claimSkipsExcludedTypesWhichKeepTheirPlace(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let warm = try await store.create(makeJob(type: "warm", priority: 9))
            let other = try await store.create(makeJob(type: "gpu", priority: 9))
            let plain = try await store.create(makeJob(type: "render"))
            let first = try await store.claimNext(for: SlotID(0), excluding: ["warm", "gpu"], now: at(10))
            #expect(first?.id == plain.id)
            #expect(try await store.claimNext(for: SlotID(0), excluding: ["warm", "gpu"], now: at(10)) == nil)
            #expect(try await store.require(warm.id).position == 1)
            let next = try await store.finish(plain.id, attempt: 1, outcome: .succeeded, result: nil, now: at(20),
                                              claimNextFor: SlotID(0), excluding: ["warm"]).next
            #expect(next?.id == other.id)
            #expect(try await store.claimNext(for: SlotID(1), now: at(30))?.id == warm.id)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func claimOnAnEmptyQueueReturnsNil(_ kind: StoreKind) async throws {
        try await withStore(kind) { store async throws in
            #expect(try await store.claimNext(for: SlotID(0), now: at(1)) == nil)
            #expect(try await store.queuedCount() == 0)
        }
    }

    // MARK: finish

    static let outcomes: [JobOutcome] = [
        .succeeded, .exited(code: 3), .signaled(signal: 9), .timedOut, .canceled, .spawnFailed(message: "no such file"),
        .reportedFailure(message: "bad mesh"), .workerLost(message: "killed"),
    ]

    /// A cancel asked for that the job outran (it ended on its own first) names no one once the
    /// end is stored; a carried-out one names who asked (found by attacking the build: fail-fast
    /// tasks read succeeded, canceled_by fail_fast).
    @Test(arguments: StoreKind.allCases, [JobOutcome.succeeded, .exited(code: 1), .canceled])
    func aStopAskedForThatTheJobOutranNamesNoOne(_ kind: StoreKind, outcome: JobOutcome) async throws {
        try await withStore(kind) { store in
            let job = try await store.create(makeJob())
            let running = try #require(try await store.claimNext(for: SlotID(1), now: at(5_000)))
            _ = try await store.cancel(job.id, by: "fail_fast", now: at(6_000))
            _ = try await store.finish(job.id, attempt: running.attempts, outcome: outcome, now: at(9_000), claimNextFor: nil)
            let stored = try await store.require(job.id)
            #expect(stored.state == outcome.resultingState)
            #expect(stored.canceledBy == (outcome == .canceled ? "fail_fast" : nil))
        }
    }

    @Test(arguments: StoreKind.allCases, outcomes)
    func finishRecordsTheOutcome(_ kind: StoreKind, outcome: JobOutcome) async throws {
        try await withStore(kind) { store in
            let job = try await store.create(makeJob(timeout: 30))
            let running = try #require(try await store.claimNext(for: SlotID(1), now: at(5_000)))
            let answer = try await store.finish(job.id, attempt: running.attempts, outcome: outcome, now: at(9_000), claimNextFor: nil)
            #expect(answer.recorded && answer.next == nil)
            var expected = running
            expected.record(outcome, at: at(9_000))
            let stored = try await store.require(job.id)
            #expect(stored.state == outcome.resultingState)
            #expect(stored.reason == outcome.reason)
            #expect(stored.exitCode == outcome.exitCode)
            #expect(stored.signal == outcome.signal)
            #expect(stored.error == outcome.errorMessage(timeout: 30))
            #expect(stored.finishedAt == at(9_000))
            #expect(stored.startedAt == at(5_000))
            #expect(stored.attempts == 1)
            #expect(stored == expected, "the store applies Job.record and nothing else")
            #expect(try await store.queuedCount() == 0)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func stoppedForShutdownRequeuesWithTheAttemptGivenBack(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let job = try await store.create(makeJob(maxAttempts: 1))
            let later = try await store.create(makeJob())
            _ = try await store.claimNext(for: SlotID(0), now: at(5_000))
            _ = try await store.reportProgress(job.id, attempt: 1, progress: JobProgress(fraction: 0.5))
            _ = try await store.finish(job.id, attempt: 1, outcome: .stoppedForShutdown, now: at(6_000), claimNextFor: nil)
            let stored = try await store.require(job.id)
            #expect(stored.state == .queued)
            #expect(stored.attempts == 0)
            #expect(stored.slot == nil && stored.startedAt == nil && stored.finishedAt == nil && stored.progress == nil)
            #expect(stored.position == 1, "it keeps its place ahead of jobs submitted after it")
            #expect(try await store.queuedCount() == 2)
            #expect(try await store.drain().map(\.id) == [job.id, later.id])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func finishStoresTheResultOfASucceededJobOnly(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let result: JSONValue = .object(["frames": .int(3), "files": .array([.string("a.png")]), "psnr": .double(41.5)])
            let good = try await store.create(makeJob())
            let bad = try await store.create(makeJob())
            _ = try await store.claimNext(for: SlotID(0), now: at(10))
            _ = try await store.claimNext(for: SlotID(1), now: at(10))
            _ = try await store.finish(good.id, attempt: 1, outcome: .succeeded, result: result, now: at(20), claimNextFor: nil, excluding: [])
            _ = try await store.finish(bad.id, attempt: 1, outcome: .reportedFailure(message: "no"), result: result, now: at(20),
                                       claimNextFor: nil, excluding: [])
            #expect(try await store.require(good.id).result == result)
            #expect(try await store.require(bad.id).result == nil)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func lostWorkerRequeuesAJobWithAttemptsLeft(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let job = try await store.create(makeJob(maxAttempts: 2))
            _ = try await store.claimNext(for: SlotID(0), now: at(10))
            _ = try await store.finish(job.id, attempt: 1, outcome: .workerLost(message: "killed"), now: at(20), claimNextFor: nil)
            let requeued = try await store.require(job.id)
            #expect(requeued.state == .queued && requeued.attempts == 1 && requeued.slot == nil && requeued.position == 1)
            let again = try #require(try await store.claimNext(for: SlotID(1), now: at(30)))
            #expect(again.attempts == 2)
            _ = try await store.finish(job.id, attempt: 2, outcome: .workerLost(message: "killed"), now: at(40), claimNextFor: nil)
            let failed = try await store.require(job.id)
            #expect(failed.state == .failed && failed.reason == .workerLost && failed.finishedAt == at(40))
        }
    }

    @Test(arguments: StoreKind.allCases)
    func finishWithAStaleAttemptChangesNothing(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let job = try await store.create(makeJob(maxAttempts: 3))
            _ = try await store.claimNext(for: SlotID(0), now: at(5_000))
            let before = try await store.require(job.id)
            for attempt in [0, 2, 7] {
                let answer = try await store.finish(job.id, attempt: attempt, outcome: .exited(code: 1), now: at(9_000), claimNextFor: nil)
                #expect(!answer.recorded, "attempt \(attempt)'s end is said to be recorded")
                #expect(try await store.require(job.id) == before, "attempt \(attempt) is not the current one")
            }
            #expect(try await store.finish(job.id, attempt: 1, outcome: .succeeded, now: at(9_000), claimNextFor: nil).recorded)
            let finished = try await store.require(job.id)
            let repeated = try await store.finish(job.id, attempt: 1, outcome: .exited(code: 2), now: at(10_000), claimNextFor: nil)
            #expect(!repeated.recorded)
            #expect(try await store.require(job.id) == finished, "a repeated finish is ignored")
            #expect(finished.state == .succeeded)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func finishOfAQueuedJobChangesNothing(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let job = try await store.create(makeJob())
            let before = try await store.require(job.id)
            _ = try await store.finish(job.id, attempt: 0, outcome: .succeeded, now: at(9_000), claimNextFor: nil)
            #expect(try await store.require(job.id) == before)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func finishWithClaimNextForHandsOverTheNextJobInOneCall(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let first = try await store.create(makeJob())
            let second = try await store.create(makeJob())
            _ = try await store.claimNext(for: SlotID(3), now: at(5_000))
            let next = try #require(try await store.finish(first.id, attempt: 1, outcome: .succeeded, now: at(6_000), claimNextFor: SlotID(3)).next)
            #expect(next.id == second.id)
            #expect(next.state == .running && next.slot == SlotID(3) && next.attempts == 1 && next.startedAt == at(6_000))
            #expect(try await store.require(first.id).state == .succeeded)
            #expect(try await store.require(second.id).state == .running)
            #expect(try await store.finish(second.id, attempt: 1, outcome: .succeeded, now: at(7_000), claimNextFor: SlotID(3)).next == nil)
            #expect(try await store.queuedCount() == 0)
        }
    }

    // MARK: cancel

    @Test(arguments: StoreKind.allCases)
    func cancelingAQueuedJobEndsItAndItIsNeverClaimed(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let job = try await store.create(makeJob())
            let other = try await store.create(makeJob())
            guard case .canceled(let canceled) = try await store.cancel(job.id, now: at(3_000)) else {
                Issue.record("expected .canceled")
                return
            }
            #expect(canceled.state == .canceled && canceled.reason == .canceled && canceled.finishedAt == at(3_000))
            let stored = try await store.require(job.id)
            #expect(stored.state == .canceled && stored.reason == .canceled && stored.finishedAt == at(3_000))
            #expect(stored.error == JobOutcome.canceled.errorMessage(timeout: nil))
            #expect(try await store.queuedCount() == 1)
            #expect(try await store.drain().map(\.id) == [other.id])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func cancelingARunningJobAsksItsSlotToStop(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let job = try await store.create(makeJob())
            _ = try await store.claimNext(for: SlotID(0), now: at(2_000))
            guard case .stopping(let stopping) = try await store.cancel(job.id, now: at(3_000)) else {
                Issue.record("expected .stopping")
                return
            }
            #expect(stopping.cancelRequested && stopping.state == .running)
            let stored = try await store.require(job.id)
            #expect(stored.cancelRequested && stored.state == .running && stored.finishedAt == nil)
            _ = try await store.finish(job.id, attempt: 1, outcome: .canceled, now: at(4_000), claimNextFor: nil)
            #expect(try await store.require(job.id).state == .canceled)
        }
    }

    /// A local store's hand-over commit, with a claim that rode with its attempt's end: claim,
    /// end and the next job's claim in one transaction — or, for a job canceled before it, neither.
    @Test(arguments: StoreKind.allCases)
    func aClaimThatRidesWithItsEndCommitsWithItOrNeitherIsRecorded(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            guard let local = store as? any LocalJobStore else { return }   // a shared store claims before a start
            let job = try await store.create(makeJob())
            let next = try await store.create(makeJob())
            var ran = job, following = next
            ran.start(on: SlotID(0), at: at(2_000))
            following.start(on: SlotID(0), at: at(3_000))
            let ended = FinishedAttempt(job: job.id, attempt: 1, outcome: .succeeded, result: .object(["ok": .bool(true)]), now: at(3_000))
            #expect(try await local.commit(claimed: ran, finished: ended, started: following) == HandOverCommit(claimed: true, started: true))
            let done = try await store.require(job.id)
            #expect(done.state == .succeeded && done.attempts == 1 && done.slot == SlotID(0))
            #expect(done.startedAt == at(2_000) && done.finishedAt == at(3_000) && done.result == .object(["ok": .bool(true)]))
            let states = try await store.events(after: 0, job: job.id, limit: 100).filter { $0.kind == .state }.map { $0.data["state"] }
            #expect(states.suffix(2) == [.string("running"), .string("succeeded")], "its start is in the log, before its end")
            #expect(try await store.require(next.id).state == .running)

            let canceled = try await store.create(makeJob())
            _ = try await store.cancel(canceled.id, now: at(4_000))
            var late = canceled
            late.start(on: SlotID(1), at: at(4_000))
            let refused = try await local.commit(claimed: late, finished: FinishedAttempt(job: canceled.id, attempt: 1, outcome: .succeeded,
                                                                                         result: nil, now: at(5_000)), started: nil)
            #expect(refused == HandOverCommit(claimed: false, started: false))
            let still = try await store.require(canceled.id)
            #expect(still.state == .canceled && still.attempts == 0 && still.startedAt == nil && still.finishedAt == at(4_000))
        }
    }

    /// A claim that commits with its end is one write of the row: the job and its events come
    /// out as a claim and then an end committed apart leave them — for a first attempt and a retry.
    @Test(arguments: StoreKind.allCases)
    func aClaimWithItsEndLeavesWhatAClaimThenAnEndLeave(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            guard let local = store as? any LocalJobStore else { return }
            let cases: [(retry: Bool, outcome: JobOutcome)] = [(false, .succeeded), (true, .exited(code: 3)), (true, .succeeded),
                                                                (false, .returned(message: "slot 0 was quarantined"))]
            for (retry, outcome) in cases {
                var seen: [(job: Job, events: [String])] = []
                for together in [true, false] {
                    let job = try await store.create(retryingJob(RetryPolicy(maxAttempts: 3, backoffSeconds: 0.5)))
                    if retry {   // a first attempt that failed: the retry's row has its reason and error
                        #expect(try await store.claimNext(for: SlotID(1), now: at(1_500))?.id == job.id)
                        _ = try await store.finish(job.id, attempt: 1, outcome: .exited(code: 1), now: at(1_800), claimNextFor: nil)
                    }
                    var ran = try await store.require(job.id)
                    try #require(ran.state == .queued)
                    ran.start(on: SlotID(0), at: at(2_000))
                    let ended = FinishedAttempt(job: job.id, attempt: ran.attempts, outcome: outcome, result: .object(["n": .int(1)]), now: at(3_000))
                    if together {
                        #expect(try await local.commit(claimed: ran, finished: ended, started: nil) == HandOverCommit(claimed: true, started: false))
                    } else {
                        #expect(try await local.commit(claimed: ran, finished: nil, started: nil) == HandOverCommit(claimed: true, started: false))
                        _ = try await local.commit(claimed: nil, finished: ended, started: nil)
                    }
                    var stored = try await store.require(job.id)
                    // What tells the two jobs apart, and a retry's back-off (which has jitter).
                    (stored.id, stored.sequence, stored.fairTag, stored.position) = (JobID("job_00000000000000000000000000")!, 0, 0, nil)
                    stored.notBefore = nil
                    for index in stored.attemptLog.indices { stored.attemptLog[index].retryAt = nil }
                    let events = try await store.events(after: 0, job: job.id, limit: 100).map { event in
                        guard case .object(var data) = event.data else { return "\(event.kind) \(event.at) \(event.data.canonicalText)" }
                        (data["job"], data["not_before"]) = (nil, nil)
                        return "\(event.kind) \(event.at) \(JSONValue.object(data).canonicalText)"
                    }
                    seen.append((stored, events))
                }
                #expect(seen[0].job == seen[1].job, "retry \(retry), \(outcome)")
                #expect(seen[0].events == seen[1].events, "retry \(retry), \(outcome)")
                #expect(seen[0].events.count == (retry ? 5 : 3), "\(seen[0].events)")
                if case .returned = outcome { #expect(seen[0].job.state == .queued && seen[0].job.attempts == 0, "given back") }
            }
        }
    }

    @Test(arguments: StoreKind.allCases)
    func cancelingAFinishedOrUnknownJobChangesNothing(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let job = try await store.create(makeJob())
            _ = try await store.claimNext(for: SlotID(0), now: at(2_000))
            _ = try await store.finish(job.id, attempt: 1, outcome: .succeeded, now: at(3_000), claimNextFor: nil)
            let finished = try await store.require(job.id)
            guard case .alreadyFinished(let reported) = try await store.cancel(job.id, now: at(4_000)) else {
                Issue.record("expected .alreadyFinished")
                return
            }
            #expect(reported.state == .succeeded)
            #expect(try await store.require(job.id) == finished)
            guard case .notFound = try await store.cancel(JobID.random(), now: at(4_000)) else {
                Issue.record("expected .notFound")
                return
            }
        }
    }

    @Test(arguments: StoreKind.allCases)
    func anAttemptsLogLinesAreDroppedOnceTheJobHasMovedPastIt(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let job = try await store.create(makeJob())
            func log(_ text: String, attempt: Int?) async throws {
                try await store.appendEvent(.log, job: job.id, attempt: attempt, data: .object(["text": .string(text)]), now: at(2_100))
            }
            // A local store starts a job before its claim commits: the job is still queued.
            try await log("before its claim committed", attempt: 1)
            let first = try #require(try await store.claimNext(for: SlotID(0), now: at(2_000)))
            try await log("while it runs", attempt: first.attempts)
            // Ended: the attempt is past; the job's events still take lines that name no attempt.
            _ = try await store.finish(job.id, attempt: first.attempts, outcome: .succeeded, now: at(3_000), claimNextFor: nil)
            try await log("after its end", attempt: first.attempts)
            try await log("the job's, from no attempt", attempt: nil)
            let events = try await store.events(job: job.id) { $0.contains { $0.data["text"]?.stringValue == "the job's, from no attempt" } }
            #expect(events.filter { $0.kind == .log }.compactMap { $0.data["text"]?.stringValue }
                    == ["before its claim committed", "while it runs", "the job's, from no attempt"])
        }
    }
}
