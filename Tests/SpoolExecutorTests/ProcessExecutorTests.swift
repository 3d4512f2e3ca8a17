import Foundation
import Logging
import SpoolCore
import Synchronization
import Testing
@testable import SpoolExecutor

/// Real child processes: exit codes, signals, timeouts with grandchildren, cancel, stdin,
/// progress messages and the log cap.
@Suite struct ProcessExecutorTests {
    let directory: String
    let executor = ProcessExecutor(logger: Logger(label: "test"))

    init() throws {
        directory = NSTemporaryDirectory() + "spool-executor-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory + "/jobs", withIntermediateDirectories: true)
    }

    func spec(_ argv: [String], input: JSONValue = .object([:]), timeout: Duration = .seconds(30),
              grace: Duration = .seconds(2), logLimit: Int = 1 << 20, env: [String: String] = [:]) throws -> ExecutionSpec {
        let job = Job(id: .random(), type: "t", input: input, priority: 0, timeoutSeconds: 30, maxAttempts: 1,
                      createdAt: Timestamp(microseconds: 0))
        let type = JobType(name: "t", command: try CommandTemplate(argv), environment: env)
        let paths = JobPaths(dataDirectory: directory, job: job.id)
        let plan = try LaunchPlan(job: job, type: type, slot: SlotSpec(id: SlotID(0)), paths: paths)
        return ExecutionSpec(job: job.id, plan: plan, paths: paths, input: input, timeout: timeout, killGrace: grace, logLimitBytes: logLimit)
    }

    func run(_ spec: ExecutionSpec, stops: AsyncStream<StopReason> = AsyncStream { _ in }, observer: ExecutionObserver = ExecutionObserver()) async -> JobOutcome {
        await executor.run(spec, stops: stops, observer: observer)
    }

    func log(of spec: ExecutionSpec) throws -> String { try String(contentsOfFile: spec.paths.log, encoding: .utf8) }

    @Test func exitZeroSucceeds() async throws {
        #expect(await run(try spec(["/bin/sh", "-c", "echo hello; echo oops >&2"])) == .succeeded)
    }

    @Test func stdoutAndStderrGoToTheLog() async throws {
        let job = try spec(["/bin/sh", "-c", "echo to-out; echo to-err >&2"])
        _ = await run(job)
        let text = try log(of: job)
        #expect(text.contains("to-out") && text.contains("to-err"))
    }

    @Test func nonZeroExitIsRecordedWithItsCode() async throws {
        #expect(await run(try spec(["/bin/sh", "-c", "exit 7"])) == .exited(code: 7))
    }

    @Test func deathBySignalIsRecordedWithTheSignal() async throws {
        #expect(await run(try spec(["/bin/sh", "-c", "kill -SEGV $$"])) == .signaled(signal: SIGSEGV))
    }

    @Test func missingExecutableIsASpawnFailure() async throws {
        guard case .spawnFailed = await run(try spec(["/nonexistent/binary"])) else {
            Issue.record("expected spawnFailed")
            return
        }
    }

    @Test func theInputArrivesOnStdinAndInTheInputFile() async throws {
        let input: JSONValue = .object(["size": .int(3), "name": .string("a b")])
        let job = try spec(["/bin/sh", "-c", "cat > \"$SPOOL_OUTPUT_DIR/stdin.json\"; cp \"$SPOOL_INPUT_FILE\" \"$SPOOL_OUTPUT_DIR/file.json\""], input: input)
        #expect(await run(job) == .succeeded)
        let viaStdin = try JSONDecoder().decode(JSONValue.self, from: Data(contentsOf: URL(fileURLWithPath: job.paths.outputs + "/stdin.json")))
        let viaFile = try JSONDecoder().decode(JSONValue.self, from: Data(contentsOf: URL(fileURLWithPath: job.paths.outputs + "/file.json")))
        #expect(viaStdin == input)
        #expect(viaFile == input)
    }

    @Test func theChildSeesTheJobEnvironment() async throws {
        let job = try spec(["/bin/sh", "-c", "echo \"$SPOOL_JOB_ID $SPOOL_SLOT $EXTRA\" > \"$SPOOL_OUTPUT_DIR/env\""], env: ["EXTRA": "yes"])
        #expect(await run(job) == .succeeded)
        let text = try String(contentsOfFile: job.paths.outputs + "/env", encoding: .utf8)
        #expect(text == "\(job.job) 0 yes\n")
    }

    @Test func timeoutKillsTheWholeProcessGroupIncludingGrandchildren() async throws {
        // The leader ignores SIGTERM, so the escalation to SIGKILL is exercised too.
        let job = try spec(["/bin/sh", "-c", "trap '' TERM; sleep 300 & echo $! > \"$SPOOL_OUTPUT_DIR/grandchild\"; wait; wait"],
                           timeout: .milliseconds(500), grace: .milliseconds(300))
        let started = ContinuousClock.now
        #expect(await run(job) == .timedOut)
        #expect(ContinuousClock.now - started < .seconds(10))
        let pid = try #require(Int32(String(contentsOfFile: job.paths.outputs + "/grandchild", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(!OrphanReaper.isRunning(pid), "grandchild \(pid) survived its job's timeout")
        #expect(try log(of: job).contains("ran past its timeout"))
    }

    @Test func aGrandchildLeftBehindByANormalExitIsKilled() async throws {
        let job = try spec(["/bin/sh", "-c", "sleep 300 > /dev/null 2>&1 & echo $! > \"$SPOOL_OUTPUT_DIR/grandchild\""])
        #expect(await run(job) == .succeeded)
        let pid = try #require(Int32(String(contentsOfFile: job.paths.outputs + "/grandchild", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(!OrphanReaper.isRunning(pid))
    }

    @Test func aStopRequestCancelsARunningJob() async throws {
        let job = try spec(["/bin/sh", "-c", "echo ready > \"$SPOOL_OUTPUT_DIR/ready\"; sleep 300"])
        let (stops, continuation) = AsyncStream<StopReason>.makeStream()
        let observer = ExecutionObserver(started: { _ in continuation.yield(.cancel) })
        #expect(await run(job, stops: stops, observer: observer) == .canceled)
    }

    @Test func shutdownStopsAJobForRequeueing() async throws {
        let job = try spec(["/bin/sh", "-c", "sleep 300"])
        let (stops, continuation) = AsyncStream<StopReason>.makeStream()
        let observer = ExecutionObserver(started: { _ in continuation.yield(.shutdown) })
        #expect(await run(job, stops: stops, observer: observer) == .stoppedForShutdown)
    }

    @Test func progressMessagesArriveAndGarbageIsIgnored() async throws {
        let script = """
            echo '{"type":"progress","fraction":0.25,"message":"quarter"}' > "$SPOOL_MESSAGES"
            echo 'not json' > "$SPOOL_MESSAGES"
            echo '{"type":"future-kind"}' > "$SPOOL_MESSAGES"
            echo '{"type":"progress","fraction":1.5}' > "$SPOOL_MESSAGES"
            echo '{"type":"progress","fraction":0.5}' > "$SPOOL_MESSAGES"
            echo done > "$SPOOL_OUTPUT_DIR/wrote"
            # Give the server a moment to read the FIFO before the job ends.
            sleep 0.3
            """
        let received = Mutex<[JobMessage]>([])
        let job = try spec(["/bin/sh", "-c", script])
        let outcome = await run(job, observer: ExecutionObserver(message: { message in received.withLock { $0.append(message) } }))
        #expect(outcome == .succeeded)
        let messages = received.withLock { $0 }
        #expect(messages.first == .progress(JobProgress(fraction: 0.25, message: "quarter")))
        #expect(messages.contains(.unknown(type: "future-kind")))
        #expect(messages.contains(.progress(JobProgress(fraction: 1))), "fractions are clamped to 0…1")
        #expect(messages.last == .progress(JobProgress(fraction: 0.5)))
        #expect(try log(of: job).contains("ignored a message"))
    }

    @Test func theLogIsCappedAndTheJobStillFinishes() async throws {
        let job = try spec(["/usr/bin/python3", "-c", "import sys\nfor i in range(20000): print('x' * 99)"], logLimit: 10_000)
        #expect(await run(job) == .succeeded)
        let size = try FileManager.default.attributesOfItem(atPath: job.paths.log)[.size] as? Int ?? 0
        #expect(size >= 10_000 && size < 10_300)
        #expect(try log(of: job).contains("log truncated"))
    }
}

extension ProcessExecutorTests {
    @Test func aStopThatArrivesBeforeTheSpawnStillStopsTheJob() async throws {
        let job = try spec(["/bin/sh", "-c", "sleep 300"])
        let (stops, continuation) = AsyncStream<StopReason>.makeStream()
        continuation.yield(.cancel)
        let started = ContinuousClock.now
        #expect(await run(job, stops: stops) == .canceled)
        #expect(ContinuousClock.now - started < .seconds(20))
    }
}
