// JobLifecycleTests: the state model (JobState), how an attempt's outcome maps onto a job
// (JobOutcome, Job.record) and the queue order every store uses (QueueOrder).

import Testing
import SpoolCore

@Suite struct JobLifecycleTests {
    @Test func onlyFinishedStatesAreTerminal() {
        #expect(JobState.allCases.filter(\.isTerminal) == [.succeeded, .failed, .canceled])
    }

    @Test func canMoveAllowsExactlyTheDocumentedTransitions() {
        let allowed: Set<[JobState]> = [
            [.queued, .running], [.queued, .canceled],
            [.running, .succeeded], [.running, .failed], [.running, .canceled], [.running, .queued],
        ]
        for from in JobState.allCases {
            for to in JobState.allCases {
                #expect(from.canMove(to: to) == allowed.contains([from, to]), "\(from) → \(to)")
            }
        }
    }

    @Test func terminalStatesHaveNoWayOut() {
        for from in JobState.allCases where from.isTerminal {
            #expect(JobState.allCases.allSatisfy { !from.canMove(to: $0) }, "\(from)")
        }
    }

    @Test(arguments: [
        (JobOutcome.succeeded, JobState.succeeded, FailureReason?.none, Int32?.some(0), Int32?.none),
        (.exited(code: 3), .failed, .exitCode, 3, nil),
        (.signaled(signal: 9), .failed, .signal, nil, 9),
        (.timedOut, .failed, .timeout, nil, nil),
        (.canceled, .canceled, .canceled, nil, nil),
        (.stoppedForShutdown, .queued, nil, nil, nil),
        (.spawnFailed(message: "no such file"), .failed, .spawnFailed, nil, nil),
        (.reportedFailure(message: "bad mesh"), .failed, .error, nil, nil),
        (.workerLost(message: "exited"), .failed, .workerLost, nil, nil),
        (.returned(message: "setup failed"), .queued, nil, nil, nil),
    ])
    func outcomeDecidesStateReasonExitCodeAndSignal(
        outcome: JobOutcome, state: JobState, reason: FailureReason?, exitCode: Int32?, signal: Int32?
    ) {
        #expect(outcome.resultingState == state)
        #expect(outcome.reason == reason)
        #expect(outcome.exitCode == exitCode)
        #expect(outcome.signal == signal)
        #expect(JobState.running.canMove(to: outcome.resultingState), "every outcome ends a running attempt legally")
    }

    @Test func errorMessagesDescribeTheOutcome() {
        #expect(JobOutcome.succeeded.errorMessage(timeout: 5) == nil)
        #expect(JobOutcome.stoppedForShutdown.errorMessage(timeout: 5) == nil)
        #expect(JobOutcome.exited(code: 2).errorMessage(timeout: nil) == "the process exited with status 2")
        #expect(JobOutcome.signaled(signal: 11).errorMessage(timeout: nil) == "the process was killed by signal 11")
        #expect(JobOutcome.timedOut.errorMessage(timeout: 30) == "the job ran past its timeout of 30 s and was stopped")
        #expect(JobOutcome.timedOut.errorMessage(timeout: 1.5) == "the job ran past its timeout of 1.5 s and was stopped")
        #expect(JobOutcome.spawnFailed(message: "boom").errorMessage(timeout: nil)?.hasSuffix("boom") == true)
    }

    @Test func recordingAFailureSetsEveryFinishingField() {
        var job = runningJob()
        let end = Timestamp(microseconds: 2_000_000)
        job.record(.exited(code: 4), at: end)
        #expect(job.state == .failed)
        #expect(job.reason == .exitCode)
        #expect(job.exitCode == 4)
        #expect(job.signal == nil)
        #expect(job.finishedAt == end)
        #expect(job.error == "the process exited with status 4")
        #expect(job.attempts == 1, "a finished attempt stays counted")
        #expect(job.slot == SlotID(1), "the slot that ran it stays on record")
    }

    @Test func recordingSuccessClearsTheReasonAndKeepsExitCodeZero() {
        var job = runningJob()
        job.record(.succeeded, at: Timestamp(microseconds: 9))
        #expect(job.state == .succeeded)
        #expect(job.reason == nil)
        #expect(job.exitCode == 0)
        #expect(job.error == nil)
        #expect(job.finishedAt == Timestamp(microseconds: 9))
    }

    /// A cancel asked for while the job ran that it outran (it ended on its own first) leaves
    /// no one named as having canceled it; one carried out does.
    @Test func aCancelTheJobOutranNamesNoOne() {
        var outran = runningJob()
        outran.requestCancel(by: "fail_fast")
        outran.record(.succeeded, at: Timestamp(microseconds: 9))
        #expect(outran.state == .succeeded && outran.canceledBy == nil)
        var stopped = runningJob()
        stopped.requestCancel(by: "alice")
        stopped.record(.canceled, at: Timestamp(microseconds: 9))
        #expect(stopped.state == .canceled && stopped.canceledBy == "alice")
    }

    @Test func recordingATimeoutNamesTheJobsOwnTimeout() {
        var job = runningJob()
        job.record(.timedOut, at: Timestamp(microseconds: 9))
        #expect(job.reason == .timeout)
        #expect(job.error == "the job ran past its timeout of 60 s and was stopped")
    }

    @Test func stoppingForShutdownGivesTheAttemptBackAndRequeues() {
        var job = runningJob()
        job.attempts = 2
        job.progress = JobProgress(fraction: 0.5)
        job.record(.stoppedForShutdown, at: Timestamp(microseconds: 5_000_000))
        #expect(job.state == .queued)
        #expect(job.reason == nil)
        #expect(job.attempts == 1)
        #expect(job.startedAt == nil)
        #expect(job.slot == nil)
        #expect(job.progress == nil)
        #expect(job.finishedAt == nil)
        #expect(job.exitCode == nil)
        #expect(job.error == nil)
    }

    @Test func stoppingForShutdownNeverMakesAttemptsNegative() {
        var job = runningJob()
        job.attempts = 0
        job.record(.stoppedForShutdown, at: Timestamp(microseconds: 1))
        #expect(job.attempts == 0)
    }

    @Test func returnedJobGoesBackToTheQueueWithoutUsingAnAttempt() {
        var job = runningJob()
        job.record(.returned(message: "the worker could not start"), at: Timestamp(microseconds: 9))
        #expect(JobOutcome.returned(message: "x").givesAttemptBack && JobOutcome.stoppedForShutdown.givesAttemptBack)
        #expect(job.state == .queued && job.attempts == 0 && job.reason == nil)
        #expect(job.slot == nil && job.startedAt == nil && job.finishedAt == nil && job.error == nil)
    }

    @Test func lostWorkerRequeuesTheJobWhileAttemptsRemain() {
        var job = runningJob() // attempt 1 of 3
        job.record(.workerLost(message: "killed"), at: Timestamp(microseconds: 9))
        #expect(job.state == .queued && job.attempts == 1 && job.reason == nil, "the lost attempt still counts")
        #expect(job.slot == nil && job.startedAt == nil && job.finishedAt == nil)
        job.attempts = 3
        job.state = .running
        job.record(.workerLost(message: "killed"), at: Timestamp(microseconds: 10))
        #expect(job.state == .failed && job.reason == .workerLost && job.finishedAt == Timestamp(microseconds: 10))
        #expect(job.error == "the worker running the job was lost: killed")
    }

    @Test func reportedFailureKeepsTheWorkersMessage() {
        var job = runningJob()
        job.record(.reportedFailure(message: "mesh has no faces"), at: Timestamp(microseconds: 9))
        #expect(job.state == .failed && job.reason == .error && job.error == "mesh has no faces")
    }

    @Test func resultIsKeptOnlyForASucceededJob() {
        var succeeded = runningJob()
        succeeded.record(.succeeded, at: Timestamp(microseconds: 9), result: .object(["frames": .int(3)]))
        #expect(succeeded.result == .object(["frames": .int(3)]))
        var failed = runningJob()
        failed.record(.exited(code: 1), at: Timestamp(microseconds: 9), result: .object(["frames": .int(3)]))
        #expect(failed.result == nil)
    }

    @Test func progressIsClampedToTheUnitInterval() {
        #expect(JobProgress(fraction: -0.5).fraction == 0)
        #expect(JobProgress(fraction: 1.5).fraction == 1)
        #expect(JobProgress(fraction: .nan).fraction == 0)
        #expect(JobProgress(fraction: .infinity).fraction == 0)
        #expect(JobProgress(fraction: 0.25, message: "x") == JobProgress(fraction: 0.25, message: "x"))
    }

    @Test func higherPriorityPrecedesRegardlessOfAge() {
        #expect(QueueOrder.precedes((priority: 5, sequence: 100), (priority: 1, sequence: 1)))
        #expect(!QueueOrder.precedes((priority: 1, sequence: 1), (priority: 5, sequence: 100)))
        #expect(QueueOrder.precedes((priority: 0, sequence: 7), (priority: -3, sequence: 2)))
    }

    @Test func samePriorityIsFirstInFirstOut() {
        #expect(QueueOrder.precedes((priority: 2, sequence: 3), (priority: 2, sequence: 4)))
        #expect(!QueueOrder.precedes((priority: 2, sequence: 4), (priority: 2, sequence: 3)))
        #expect(!QueueOrder.precedes((priority: 2, sequence: 4), (priority: 2, sequence: 4)), "irreflexive")
    }

    @Test func sortingAShuffledQueueGivesPriorityThenFIFO() {
        var random = SplitMix64(seed: 7)
        var entries: [(priority: Int, sequence: Int64)] = []
        for sequence in 1...300 { entries.append((priority: random.roll(5) - 2, sequence: Int64(sequence))) }
        let sorted = entries.shuffled(using: &random).sorted(by: QueueOrder.precedes)
        for (earlier, later) in zip(sorted, sorted.dropFirst()) {
            #expect(earlier.priority > later.priority || (earlier.priority == later.priority && earlier.sequence < later.sequence))
        }
        #expect(sorted.map(\.sequence).count == Set(sorted.map(\.sequence)).count)
    }

    @Test func fingerprintIgnoresKeyOrderAndSeesEveryRequestField() {
        let base = Job(id: JobID.random(), type: "t", input: .object(["a": .int(1), "b": .string("x")]), priority: 1,
                       timeoutSeconds: 10, maxAttempts: 1, createdAt: Timestamp(microseconds: 0))
        var same = base
        same.id = JobID.random()
        same.input = .object(["b": .string("x"), "a": .int(1)])
        #expect(same.fingerprint == base.fingerprint)
        var other = base
        other.priority = 2
        #expect(other.fingerprint != base.fingerprint)
        other = base
        other.timeoutSeconds = 11
        #expect(other.fingerprint != base.fingerprint)
        other = base
        other.input = .object(["a": .int(2), "b": .string("x")])
        #expect(other.fingerprint != base.fingerprint)
        // A task of a job array is another request than a plain job with its input, or another array's task.
        other = base
        other.array = ArrayMembership(id: "arr_a", index: 0, failFast: false)
        #expect(other.fingerprint != base.fingerprint)
        var sibling = other
        sibling.array = ArrayMembership(id: "arr_b", index: 0, failFast: false)
        #expect(sibling.fingerprint != other.fingerprint)
    }

    /// A fingerprint stored before it covered the request's schedule and an array's items (no
    /// "v") still answers a repeat of that request, as it did then: a client's retry across an
    /// upgrade gets its job back (found in review). Today's fingerprints compare exactly.
    @Test func aFingerprintStoredBeforeTheRequestExtrasStillMatchesARepeat() throws {
        var job = Job(id: JobID.random(), type: "t", input: .object(["a": .int(1)]), priority: 0,
                      timeoutSeconds: 10, maxAttempts: 1, createdAt: Timestamp(microseconds: 0))
        job.requestExtras = ["delay_s": .int(900)]
        // As the previous version stored it: no extras, no "v".
        let legacy = JSONValue.object(["type": .string("t"), "input": .object(["a": .int(1)]), "priority": .int(0), "timeout_s": .double(10),
                                       "webhook": .null, "webhook_events": .array([])]).canonicalText
        #expect(job.repeats(fingerprint: legacy))
        #expect(job.repeats(fingerprint: job.fingerprint))
        var other = job
        other.requestExtras = [:]
        #expect(!other.repeats(fingerprint: job.fingerprint), "today's fingerprints tell a plain request from a delayed one")
        #expect(!job.repeats(fingerprint: other.fingerprint))
        other.input = .object(["a": .int(2)])
        #expect(!other.repeats(fingerprint: legacy))
        #expect(!job.repeats(fingerprint: ""))
    }

    private func runningJob() -> Job {
        var job = Job(id: JobID.random(), sequence: 1, type: "render", input: .object([:]), priority: 0,
                      timeoutSeconds: 60, maxAttempts: 3, createdAt: Timestamp(microseconds: 0))
        job.state = .running
        job.attempts = 1
        job.slot = SlotID(1)
        job.startedAt = Timestamp(microseconds: 1_000_000)
        return job
    }
}
