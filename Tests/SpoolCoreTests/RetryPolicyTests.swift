// RetryPolicyTests: which failures retry, the back-off's bounds and spread, the wire form and its
// errors, what `Job.record` does with a policy, and how a submit's run_at / delay_s /
// start_within_s become `notBefore` and `startBy`.

import SpoolCore
import Testing

@Suite struct RetryPolicyTests {
    let now = Timestamp(microseconds: 1_700_000_000_000_000)

    @Test func theDefaultPolicyRetriesFailuresOfTheJobItselfWhileAttemptsRemain() {
        let policy = RetryPolicy(maxAttempts: 3)
        for outcome: JobOutcome in [.exited(code: 1), .signaled(signal: 9), .timedOut, .reportedFailure(message: "x"), .workerLost(message: "x")] {
            #expect(policy.retries(outcome, attempt: 1), "\(outcome)")
            #expect(policy.retries(outcome, attempt: 2), "\(outcome)")
            #expect(!policy.retries(outcome, attempt: 3), "\(outcome): the last attempt's failure is the answer")
        }
        for outcome: JobOutcome in [.succeeded, .canceled, .spawnFailed(message: "x"), .stoppedForShutdown, .returned(message: "x")] {
            #expect(!policy.retries(outcome, attempt: 1), "\(outcome)")
        }
    }

    @Test func exitCodesInOnNarrowExitCodeRetriesToThoseCodes() throws {
        let policy = try RetryPolicy(json: try json(#"{"max_attempts": 4, "on": [75, 111, "timeout"]}"#))
        #expect(policy.retries(.exited(code: 75), attempt: 1) && policy.retries(.exited(code: 111), attempt: 1))
        #expect(!policy.retries(.exited(code: 1), attempt: 1))
        #expect(policy.retries(.timedOut, attempt: 1) && !policy.retries(.signaled(signal: 9), attempt: 1))
        #expect(policy.json["on"] == (try json(#"["timeout", 75, 111]"#)))
        #expect(policy.json["max_attempts"] == .int(4) && policy.json["backoff_s"]?.doubleValue == 1 && policy.json["max_backoff_s"]?.doubleValue == 300)
        #expect(try RetryPolicy(json: policy.json) == policy)
    }

    @Test func theBackoffStaysUnderItsExponentialCapAndSpreadsJobsOverIt() {
        let policy = RetryPolicy(maxAttempts: 10, backoffSeconds: 2, maxBackoffSeconds: 60)
        let jobs = (0..<400).map { _ in JobID.random() }
        for attempt in 1...9 {
            let cap = min(60, 2 * Double(1 << (attempt - 1)))
            let waits = jobs.map { policy.backoff(after: attempt, of: $0) }
            #expect(waits.allSatisfy { $0 >= 0 && $0 < cap }, "attempt \(attempt)")
            // Full jitter: the waits cover the window, not a point in it.
            #expect(waits.min()! < cap * 0.1 && waits.max()! > cap * 0.9, "attempt \(attempt)")
            let mean = waits.reduce(0, +) / Double(waits.count)
            #expect(abs(mean - cap / 2) < cap * 0.1, "attempt \(attempt): mean \(mean) of a uniform [0, \(cap))")
        }
        // The same job and attempt always wait the same: a store and the scheduler agree.
        #expect(policy.backoff(after: 3, of: jobs[0]) == policy.backoff(after: 3, of: jobs[0]))
        #expect(policy.backoff(after: 3, of: jobs[0]) != policy.backoff(after: 4, of: jobs[0]))
    }

    @Test(arguments: [
        (#"[]"#, "must be an object"),
        (#"{"backoff_s": 1}"#, "max_attempts is required"),
        (#"{"max_attempts": 0}"#, "max_attempts must be an integer from 1 to 100 (the attempts in all, counting the first), not 0"),
        (#"{"max_attempts": "3"}"#, "max_attempts must be an integer from 1 to 100 (the attempts in all, counting the first), not \"3\""),
        (#"{"max_attempts": null}"#, "max_attempts is required"),
        (#"{"max_attempts": 101}"#, "from 1 to 100"),
        (#"{"max_attempts": 2, "backoff_s": -1}"#, "backoff_s must be a number of seconds"),
        (#"{"max_attempts": 2, "backoff_s": 10, "max_backoff_s": 5}"#, "max_backoff_s must be at least backoff_s"),
        (#"{"max_attempts": 2, "on": []}"#, "non-empty list"),
        (#"{"max_attempts": 2, "on": ["canceled"]}"#, "\"canceled\" is neither a failure reason"),
        (#"{"max_attempts": 2, "on": [256]}"#, "exit code from 1 to 255"),
        (#"{"max_attempts": 2, "tries": 3}"#, "unknown field(s) tries"),
    ])
    func aBadPolicyIsRefusedWithASentenceNamingTheField(text: String, message: String) throws {
        let value = try json(text)
        #expect(throws: RetryPolicy.Invalid.self) { try RetryPolicy(json: value) }
        do {
            _ = try RetryPolicy(json: value, what: "retry")
            Issue.record("accepted; expected: \(message)")
        } catch {
            #expect(error.description.hasPrefix("\"retry\""))
            #expect(error.description.contains(message), "\(error.description)")
        }
    }

    @Test func recordingARetriedFailureRequeuesWithNotBeforeAndLogsTheAttempt() {
        var job = Job(id: .random(), type: "t", input: .object([:]), priority: 0, timeoutSeconds: 30, maxAttempts: 2, createdAt: now)
        job.retry = RetryPolicy(maxAttempts: 2, backoffSeconds: 5)
        job.start(on: SlotID(1), at: now)
        let ended = now.adding(seconds: 3)
        job.record(.timedOut, at: ended)
        #expect(job.state == .queued && job.reason == nil && job.slot == nil && job.startedAt == nil && job.finishedAt == nil)
        #expect(job.notBefore == ended.adding(seconds: job.retry!.backoff(after: 1, of: job.id)))
        #expect(job.attemptLog == [AttemptRecord(number: 1, slot: SlotID(1), node: nil, startedAt: now, endedAt: ended, state: .queued,
                                                 reason: .timeout, error: "the job ran past its timeout of 30 s and was stopped",
                                                 retryAt: job.notBefore)])
        #expect(!job.isDue(at: Timestamp(microseconds: job.notBefore!.microseconds - 1)) || job.notBefore == ended)
        #expect(job.isDue(at: job.notBefore!))
        job.start(on: SlotID(0), at: job.notBefore!)
        job.record(.succeeded, at: job.notBefore!.adding(seconds: 1))
        #expect(job.state == .succeeded && job.attemptLog.map(\.state) == [.queued, .succeeded])
        #expect(AttemptRecord.decode(AttemptRecord.encode(job.attemptLog)) == job.attemptLog)
    }

    @Test func aRetryThatNeverCameListsItsAttemptAsFailed() {
        var job = Job(id: .random(), type: "t", input: .object([:]), priority: 0, timeoutSeconds: 30, maxAttempts: 3, createdAt: now)
        job.retry = RetryPolicy(maxAttempts: 3, backoffSeconds: 5)
        job.start(on: SlotID(1), at: now)
        job.record(.exited(code: 2), at: now.adding(seconds: 1))
        #expect(job.endedAttempts == job.attemptLog, "while it waits, the retry is due")
        job.cancelWhileQueued(at: now.adding(seconds: 2))
        var expected = job.attemptLog[0]
        expected.state = .failed
        expected.retryAt = nil
        #expect(job.endedAttempts == [expected])
        #expect(job.attemptLog.map(\.state) == [.queued], "the stored log is as written")
    }

    /// A run the server took back (a shutdown, a quarantine) used no attempt, but it is listed —
    /// counted false, why in its error — so a job's history shows where its time went; one handed
    /// back before it ran is not listed. The log keeps `counted` through a store's column.
    @Test func aRunTakenBackIsListedNotCounted() throws {
        var job = Job(id: .random(), type: "t", input: .object([:]), priority: 0, timeoutSeconds: 30, maxAttempts: 1, createdAt: now)
        job.start(on: SlotID(0), at: now)
        job.record(.stoppedForShutdown, at: now.adding(seconds: 5))
        #expect(job.state == .queued && job.attempts == 0)
        #expect(job.attemptLog == [AttemptRecord(number: 1, slot: SlotID(0), node: nil, startedAt: now, endedAt: now.adding(seconds: 5),
                                                 state: .queued, reason: nil, error: "the server shut down while it ran; it runs again",
                                                 counted: false)])
        job.start(on: SlotID(1), at: now.adding(seconds: 6))
        job.record(.returned(message: "its worker is not ready"), at: now.adding(seconds: 6))
        #expect(job.attemptLog.count == 1, "handed back before it ran: not listed")
        job.start(on: SlotID(1), at: now.adding(seconds: 7))
        job.record(.returned(message: "its slot was quarantined while it ran", ran: true), at: now.adding(seconds: 8))
        job.start(on: SlotID(2), at: now.adding(seconds: 9))
        job.record(.succeeded, at: now.adding(seconds: 10))
        #expect(job.attemptLog.map(\.number) == [1, 1, 1] && job.attemptLog.map(\.counted) == [false, false, true] && job.attempts == 1)
        #expect(job.attemptLog.dropFirst().first?.error == "its slot was quarantined while it ran")
        #expect(AttemptRecord.decode(AttemptRecord.encode(job.attemptLog)) == job.attemptLog)
        #expect(job.attemptLog.first?.json["counted"] == .bool(false) && job.attemptLog.last?.json["counted"] == nil)

        // Canceled while queued after a run taken back: that run stays as it was, not made a failure.
        var canceled = Job(id: .random(), type: "t", input: .object([:]), priority: 0, timeoutSeconds: 30, maxAttempts: 1, createdAt: now)
        canceled.start(on: SlotID(0), at: now)
        canceled.record(.stoppedForShutdown, at: now)
        canceled.cancelWhileQueued(at: now.adding(seconds: 1))
        #expect(canceled.endedAttempts == canceled.attemptLog)
    }

    /// A job that ran and was then taken back — its slot quarantined while it ran, or its failure
    /// quarantining the slot — met its start deadline: requeued, it runs again whenever it can
    /// (found by attacking the build: it was canceled for its deadline, work lost). One handed back
    /// before it ran keeps its deadline.
    @Test func aJobTakenBackAfterItRanLosesItsStartDeadline() throws {
        func started() -> Job {
            var job = Job(id: .random(), type: "t", input: .object([:]), priority: 0, timeoutSeconds: 30, maxAttempts: 1, createdAt: now)
            job.startBy = now.adding(seconds: 3)
            job.start(on: SlotID(0), at: now)
            return job
        }
        let stopped = JobOutcome(.signaled(signal: 15), stoppedFor: .quarantine)
        #expect(stopped == .returned(message: "its slot was quarantined while it ran", ran: true))
        var quarantined = started()
        quarantined.record(stopped, at: now.adding(seconds: 2))
        #expect(quarantined.state == .queued && quarantined.attempts == 0 && quarantined.startBy == nil, "\(quarantined)")

        var handedBack = started()
        handedBack.record(.returned(message: "its worker is not ready"), at: now)
        #expect(handedBack.state == .queued && handedBack.startBy == now.adding(seconds: 3))

        var slots = SlotQuarantine(slots: [SlotSpec(id: SlotID(0), gpu: "0"), SlotSpec(id: SlotID(1), gpu: "1")], failureLimit: 1)
        let tripped = slots.judge(.exited(code: 3), of: "t", timeout: 30, on: SlotID(0), at: now)
        guard case .returned(_, let ran) = tripped.outcome, tripped.quarantined else { Issue.record("not returned: \(tripped)"); return }
        #expect(ran, "it ran, and its failure closed the slot")
        let onClosed = slots.judge(.exited(code: 3), of: "t", timeout: 30, on: SlotID(0), at: now)
        guard case .returned(_, let ranToo) = onClosed.outcome else { Issue.record("not returned: \(onClosed)"); return }
        #expect(ranToo, "it ran on a slot closed meanwhile")
    }

    @Test func aSubmitsRunAtDelayAndStartWithinBecomeNotBeforeAndStartBy() throws {
        let catalog = JobCatalog([JobType(name: "t", command: try CommandTemplate(["/bin/true"]), maxAttempts: 2)])
        func admit(_ change: (inout Submission) -> Void) throws -> Job {
            var submission = Submission(type: "t")
            change(&submission)
            return try catalog.admit(submission, id: .random(), now: now)
        }
        #expect(try admit { $0.delaySeconds = 90 }.notBefore == now.adding(seconds: 90))
        #expect(try admit { $0.delaySeconds = 0 }.notBefore == nil)
        #expect(try admit { $0.runAt = now.adding(seconds: 3600) }.notBefore == now.adding(seconds: 3600))
        #expect(try admit { $0.runAt = now.adding(seconds: -5) }.notBefore == nil, "a time already past means now")
        let deadlined = try admit { $0.startWithinSeconds = 30 }
        #expect(deadlined.startBy == now.adding(seconds: 30) && deadlined.nextTimer == now.adding(seconds: 30))
        let both = try admit { $0.delaySeconds = 60; $0.startWithinSeconds = 30 }
        #expect(both.notBefore == now.adding(seconds: 60) && both.startBy == now.adding(seconds: 90) && both.nextTimer == now.adding(seconds: 60))
        #expect(!both.isDue(at: now) && both.isDue(at: now.adding(seconds: 60)) && !both.isDue(at: now.adding(seconds: 90)))
        // A retry policy with more attempts than the type's raises the job's budget.
        #expect(try admit { $0.retry = RetryPolicy(maxAttempts: 5) }.maxAttempts == 5)
        #expect(try admit { $0.retry = RetryPolicy(maxAttempts: 1) }.maxAttempts == 2)

        for (change, message) in [
            ({ (s: inout Submission) in s.runAt = now; s.delaySeconds = 1 }, "give run_at or delay_s, not both"),
            ({ (s: inout Submission) in s.delaySeconds = -1 }, "delay_s must be from 0"),
            ({ (s: inout Submission) in s.runAt = now.adding(seconds: 31 * 86_400) }, "run_at must be at most 30 days ahead"),
            ({ (s: inout Submission) in s.startWithinSeconds = 0 }, "start_within_s must be greater than 0"),
        ] as [((inout Submission) -> Void, String)] {
            do {
                _ = try admit(change)
                Issue.record("accepted; expected: \(message)")
            } catch let error as SubmissionRejection {
                #expect(error.kind == .invalidRequest && error.message.contains(message), "\(error.message)")
            }
        }
    }
}
