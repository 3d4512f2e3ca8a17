// The one mapping from how an attempt ended (and why it was stopped) to its outcome, and what a
// child process's environment is made of.
import SpoolCore
import Testing

@Suite struct AttemptOutcomeTests {
    @Test func anAttemptThatEndsOnItsOwnIsJudgedByHowItEnded() {
        #expect(JobOutcome(.exited(code: 0), stoppedFor: nil) == .succeeded)
        #expect(JobOutcome(.exited(code: 3), stoppedFor: nil) == .exited(code: 3))
        #expect(JobOutcome(.signaled(signal: 11), stoppedFor: nil) == .signaled(signal: 11))
        #expect(JobOutcome(.workerSucceeded(result: nil), stoppedFor: nil) == .succeeded)
        #expect(JobOutcome(.workerFailed("bad input"), stoppedFor: nil) == .reportedFailure(message: "bad input"))
        #expect(JobOutcome(.workerLost("it was killed by signal 9"), stoppedFor: nil) == .workerLost(message: "it was killed by signal 9"))
    }

    @Test func aStopDecidesWhateverTheExitStatus() {
        for end: AttemptEnd in [.exited(code: 0), .exited(code: 143), .signaled(signal: 9), .workerFailed("x"), .workerLost("x")] {
            #expect(JobOutcome(end, stoppedFor: .timeout) == .timedOut)
            #expect(JobOutcome(end, stoppedFor: .cancel) == .canceled)
            #expect(JobOutcome(end, stoppedFor: .shutdown) == .stoppedForShutdown)
        }
    }

    @Test func aWorkersReportedSuccessStandsEvenWhenAStopCrossedIt() {
        #expect(JobOutcome(.workerSucceeded(result: .int(1)), stoppedFor: .cancel) == .succeeded)
    }

    @Test func anAttemptThatNeverStartedSaysSoWhateverTheStop() {
        #expect(JobOutcome(.spawnFailed("no such file"), stoppedFor: .cancel) == .spawnFailed(message: "no such file"))
        #expect(JobOutcome(.returned("no worker"), stoppedFor: .shutdown) == .returned(message: "no worker"))
    }

    @Test func aChildInheritsTheServersEnvironmentButNoneOfItsSpoolSettings() {
        let server = ["PATH": "/usr/bin", "HOME": "/root", "SPOOL_WEBHOOK_SECRET": "s", "SPOOL_STORE": "postgres://u:p@h/d", "SPOOL_TOKEN": "t"]
        let plan = ["SPOOL_JOB_ID": "job_1", "CUDA_VISIBLE_DEVICES": "0", "HOME": "/jobs/home"]
        #expect(ChildEnvironment.make(inheriting: server, adding: plan)
            == ["PATH": "/usr/bin", "HOME": "/jobs/home", "SPOOL_JOB_ID": "job_1", "CUDA_VISIBLE_DEVICES": "0"])
        let started = ["PATH": "/usr/bin", "PWD": "/srv", "OLDPWD": "/root", "_": "/usr/bin/spool"]
        #expect(ChildEnvironment.make(inheriting: started, adding: [:], workingDirectory: "/jobs/x") == ["PATH": "/usr/bin", "PWD": "/jobs/x"])
        #expect(ChildEnvironment.make(inheriting: started, adding: ["PWD": "/mine"], workingDirectory: "/jobs/x")["PWD"] == "/mine",
                "a type's own env says what it says")
    }
}
