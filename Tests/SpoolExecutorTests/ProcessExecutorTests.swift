import Foundation
import Logging
import SpoolCore
import SpoolTestSupport
import SpoolTesting
import Synchronization
import Testing
@testable import SpoolExecutor

/// Process mode with real child processes: exit codes, signals, timeouts with grandchildren
/// (those that left the group too), cancel, stdin, the environment, progress messages and the
/// log cap. Timeouts run on a manual clock where the test is about the escalation.
@Suite struct ProcessExecutorTests {
    let scratch: ScratchDirectory
    var directory: String { scratch.path }

    init() throws {
        scratch = try ScratchDirectory("spool-executor", subdirectories: ["jobs"])
    }

    struct Run {
        var job: Job
        var paths: JobPaths
        var executor: ProcessJobExecutor
    }

    func prepare(_ argv: [String], input: JSONValue = .object([:]), timeout: Double = 30, grace: Duration = .seconds(2),
                 logLimit: Int = 1 << 20, env: [String: String] = [:], serverEnvironment: [String: String]? = nil,
                 clock: SpoolClock = .system, startAhead: Bool = true) throws -> Run {
        let type = JobType(name: "t", command: try CommandTemplate(argv), timeoutSeconds: timeout, environment: env)
        let job = Job(id: .random(), type: "t", input: input, priority: 0, timeoutSeconds: timeout, maxAttempts: 1,
                      createdAt: Timestamp(microseconds: 0))
        var configuration = ProcessJobExecutor.Configuration(dataDirectory: directory)
        configuration.killGrace = grace
        configuration.logLimitBytes = logLimit
        configuration.startAhead = startAhead
        let launcher = serverEnvironment.map { SubprocessLauncher(logger: Logger(label: "test"), serverEnvironment: $0) }
            ?? SubprocessLauncher(logger: Logger(label: "test"))
        return Run(job: job, paths: JobPaths(dataDirectory: directory, job: job.id),
                   executor: ProcessJobExecutor(catalog: JobCatalog([type]), configuration: configuration, launcher: launcher, clock: clock))
    }

    func run(_ run: Run, stops: AsyncStream<StopReason> = AsyncStream { _ in }, observer: ExecutionObserver = ExecutionObserver()) async -> JobOutcome {
        await run.executor.run(run.job, on: SlotSpec(id: SlotID(0)), stops: stops, observer: observer).outcome
    }

    func log(of run: Run) throws -> String { try String(contentsOfFile: run.paths.log, encoding: .utf8) }

    /// Starts `argv` with exactly `environment` (`NAME=value`) and, if given, `stdin`; reaped by
    /// the caller. posix_spawn, not Foundation's `Process`, whose SIGCHLD machinery in the test
    /// process is more than these need.
    func spawn(_ argv: [String], environment: [String], stdin: Int32? = nil) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let stdin { posix_spawn_file_actions_adddup2(&actions, stdin, 0) }
        let arguments = argv.map { strdup($0) } + [nil]
        let variables = environment.map { strdup($0) } + [nil]
        defer { for pointer in arguments + variables { free(pointer) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, argv[0], &actions, nil, arguments, variables)
        guard result == 0 else { throw ExecutorError("posix_spawn \(argv[0]): \(String(cString: strerror(result)))") }
        return pid
    }

    /// Waits until the gated shell `pid` is blocked reading its gate (its stdin): from then on it
    /// runs nothing until the gate opens or closes. Read from /proc/PID/syscall (`0 0x0 …`: read
    /// on descriptor 0), or, where that is not readable, its state: sleeping.
    func waitUntilWaitingOnItsGate(_ pid: pid_t) async throws {
        try await within("the gated shell \(pid) waiting on its gate") {
            while true {
                if let call = FileManager.default.contents(atPath: "/proc/\(pid)/syscall").map({ String(decoding: $0, as: UTF8.self) }),
                   !call.isEmpty {
                    if call.hasPrefix("0 0x0 ") { return }
                } else if let stat = FileManager.default.contents(atPath: "/proc/\(pid)/stat").map({ String(decoding: $0, as: UTF8.self) }),
                          let state = stat.split(separator: ")").last?.split(separator: " ").first, state == "S" {
                    return
                }
                try await Task.sleep(for: .milliseconds(2))
            }
        }
    }

    func reap(_ pid: pid_t, signal: Int32) {
        kill(pid, signal)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
    }

    /// `job` as its start on `slot` leaves it (its next attempt).
    func claimed(_ job: Job, on slot: SlotID) -> Job {
        var job = job
        job.start(on: slot, at: Timestamp(microseconds: 1))
        return job
    }

    /// The processes with `marker` (`NAME=value`) in their environment.
    func marked(_ marker: String) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { pid in
            guard let environment = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return false }
            return environment.split(separator: 0).contains { Array($0) == Array(marker.utf8) }
        }
    }

    func pid(in file: String) throws -> Int32 {
        try #require(Int32(String(contentsOfFile: file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
    }

    @Test func exitZeroSucceeds() async throws {
        #expect(await run(try prepare(["/bin/sh", "-c", "echo hello; echo oops >&2"])) == .succeeded)
    }

    @Test func stdoutAndStderrGoToTheLog() async throws {
        let job = try prepare(["/bin/sh", "-c", "echo to-out; echo to-err >&2"])
        _ = await run(job)
        let text = try log(of: job)
        #expect(text.contains("to-out") && text.contains("to-err"))
    }

    /// Stdout and stderr are one pipe: the log has their lines in the order they were written
    /// (two pipes, read apart, mixed them up).
    @Test func stdoutAndStderrKeepTheirOrderInTheLog() async throws {
        let job = try prepare(["/bin/sh", "-c", "i=0; while [ $i -lt 300 ]; do echo \"out $i\"; echo \"err $i\" >&2; i=$((i+1)); done"])
        #expect(await run(job) == .succeeded)
        let expected = (0..<300).map { "out \($0)\nerr \($0)\n" }.joined()
        #expect(try log(of: job) == expected)
    }

    @Test func nonZeroExitIsRecordedWithItsCode() async throws {
        #expect(await run(try prepare(["/bin/sh", "-c", "exit 7"])) == .exited(code: 7))
    }

    @Test func deathBySignalIsRecordedWithTheSignal() async throws {
        #expect(await run(try prepare(["/bin/sh", "-c", "kill -SEGV $$"])) == .signaled(signal: SIGSEGV))
    }

    @Test func missingExecutableIsASpawnFailure() async throws {
        guard case .spawnFailed = await run(try prepare(["/nonexistent/binary"])) else {
            Issue.record("expected spawnFailed")
            return
        }
    }

    /// An executable that something still holds open for writing cannot be run (`ETXTBSY`):
    /// a deploy copying a new version over it, or — in any process that starts children from
    /// several threads — a child forked while the file was being written, which holds the
    /// descriptor until its own `exec` (likely what failed, in a CI run, a test job of a script
    /// written just before: measured here, one spawn in 40 of a script just written as Foundation
    /// writes files, without close-on-exec, met it while two other threads started children).
    /// The start is tried again for a moment instead of failing the job.
    @Test func anExecutableBusyBeingWrittenIsStartedOnceItIsClosed() async throws {
        let command = directory + "/busy-\(UUID().uuidString)"
        let writer = open(command, O_WRONLY | O_CREAT | O_CLOEXEC, 0o755)
        try #require(writer >= 0)
        _ = Array("#!/bin/sh\nexit 0\n".utf8).withUnsafeBytes { write(writer, $0.baseAddress, $0.count) }
        let job = try prepare([command])
        let closer = Task {
            try? await Task.sleep(for: .milliseconds(300))
            close(writer)
        }
        let outcome = await run(job)
        await closer.value
        #expect(outcome == .succeeded, "\(outcome)")
    }

    @Test func theInputArrivesOnStdinAndInTheInputFile() async throws {
        let input: JSONValue = .object(["size": .int(3), "name": .string("a b")])
        let job = try prepare(["/bin/sh", "-c", "cat > \"$SPOOL_OUTPUT_DIR/stdin.json\"; cp \"$SPOOL_INPUT_FILE\" \"$SPOOL_OUTPUT_DIR/file.json\""], input: input)
        #expect(await run(job) == .succeeded)
        let viaStdin = try JSONDecoder().decode(JSONValue.self, from: Data(contentsOf: URL(fileURLWithPath: job.paths.outputs + "/stdin.json")))
        let viaFile = try JSONDecoder().decode(JSONValue.self, from: Data(contentsOf: URL(fileURLWithPath: job.paths.outputs + "/file.json")))
        #expect(viaStdin == input)
        #expect(viaFile == input)
    }

    @Test func theChildSeesTheJobEnvironment() async throws {
        let job = try prepare(["/bin/sh", "-c", "echo \"$SPOOL_JOB_ID $SPOOL_SLOT $EXTRA\" > \"$SPOOL_OUTPUT_DIR/env\""], env: ["EXTRA": "yes"])
        #expect(await run(job) == .succeeded)
        let text = try String(contentsOfFile: job.paths.outputs + "/env", encoding: .utf8)
        #expect(text == "\(job.job.id) 0 yes\n")
    }

    /// A job that is no shell reads `PWD` as its working directory, not the server's start
    /// directory (found by attacking the build: Node's process.env.PWD, `${env:PWD}` in configs);
    /// nor how the server was started (`OLDPWD`, `_`).
    @Test func theChildsPWDIsItsWorkingDirectory() async throws {
        let job = try prepare(["/usr/bin/env"], serverEnvironment: ["PATH": "/usr/bin:/bin", "PWD": "/srv/where-spool-started",
                                                                    "OLDPWD": "/home/admin", "_": "/usr/local/bin/spool"])
        #expect(await run(job) == .succeeded)
        let lines = Set(try log(of: job).split(separator: "\n").map(String.init))
        #expect(lines.contains("PWD=\(job.paths.directory)"), "\(lines)")
        #expect(!lines.contains { $0.hasPrefix("OLDPWD=") || $0.hasPrefix("_=") }, "\(lines)")
    }

    @Test func theChildSeesNoneOfTheServersSpoolSettings() async throws {
        let server = ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin", "HOME": "/home/spool",
                      "SPOOL_WEBHOOK_SECRET": "s3cret", "SPOOL_STORE": "postgres://spool:pw@db/spool", "SPOOL_TOKEN": "tok"]
        let job = try prepare(["/bin/sh", "-c", "env > \"$SPOOL_OUTPUT_DIR/env\""], serverEnvironment: server)
        #expect(await run(job) == .succeeded)
        let lines = Set(try String(contentsOfFile: job.paths.outputs + "/env", encoding: .utf8).split(separator: "\n").map(String.init))
        #expect(lines.contains("HOME=/home/spool"), "the rest of the server's environment is inherited")
        #expect(lines.contains("SPOOL_JOB_ID=\(job.job.id)"), "the documented job variables are set")
        let leaked = lines.filter { $0.contains("s3cret") || $0.contains(":pw@") || $0.hasPrefix("SPOOL_TOKEN=") }
        #expect(leaked.isEmpty, "server settings reached the job: \(leaked)")
    }

    @Test func timeoutKillsTheWholeProcessGroupIncludingGrandchildren() async throws {
        // The leader ignores SIGTERM, so the escalation to SIGKILL is exercised too; the clock
        // is the test's, so the timeout and the grace pass when the test says.
        let manual = ManualClock()
        let script = """
            trap '' TERM
            sleep 300 & echo $! > "$SPOOL_OUTPUT_DIR/grandchild"
            echo '{"type":"progress","fraction":0.1}' > "$SPOOL_MESSAGES"
            wait; wait
            """
        let job = try prepare(["/bin/sh", "-c", script], timeout: 5, grace: .seconds(3), clock: SpoolClock(manual, wall: WallClock.now))
        let (messages, said) = AsyncStream<JobMessage>.makeStream()
        let ended = Task { await run(job, observer: ExecutionObserver(message: { said.yield($0) })) }
        _ = try await messages.next("the job to say its trap and grandchild are set")
        await manual.waitForSleeper(within: .seconds(5))
        manual.advance(by: .seconds(5))          // the timeout: SIGTERM, which the leader ignores
        await manual.waitForSleeper(within: .seconds(3))
        manual.advance(by: .seconds(3))          // the grace: SIGKILL to the group
        #expect(try await within("the job to end") { await ended.value } == .timedOut)
        let pid = try pid(in: job.paths.outputs + "/grandchild")
        #expect(!OrphanReaper.isRunning(pid), "grandchild \(pid) survived its job's timeout")
        let text = try log(of: job)
        #expect(text.contains("ran past its timeout") && text.contains("SIGTERM"))
    }

    @Test func aGrandchildLeftBehindByANormalExitIsKilled() async throws {
        let job = try prepare(["/bin/sh", "-c", "sleep 300 > /dev/null 2>&1 & echo $! > \"$SPOOL_OUTPUT_DIR/grandchild\""])
        #expect(await run(job) == .succeeded)
        #expect(!OrphanReaper.isRunning(try pid(in: job.paths.outputs + "/grandchild")))
    }

    @Test func aGrandchildThatLeftTheProcessGroupWithSetsidIsKilledToo() async throws {
        let job = try prepare(["/bin/sh", "-c", "setsid sleep 300 > /dev/null 2>&1 < /dev/null & echo $! > \"$SPOOL_OUTPUT_DIR/escaped\""])
        #expect(await run(job) == .succeeded)
        let pid = try pid(in: job.paths.outputs + "/escaped")
        #expect(!OrphanReaper.isRunning(pid), "process \(pid) left its job's group with setsid and outlived the job")
    }

    /// The sweep after a job kills what carries that job's own mark (its messages path, unique
    /// to this data directory), not every process of the same job id: another node on this
    /// host may run a later attempt of the job (it rescued it) and must be left alone.
    @Test func theSweepAfterAJobLeavesAnotherNodesAttemptOfTheSameJobAlone() async throws {
        let job = try prepare(["/bin/sh", "-c", "while [ ! -e \"$SPOOL_OUTPUT_DIR/go\" ]; do sleep 0.01; done"])
        let other = Mutex<pid_t?>(nil)
        defer { if let pid = other.withLock({ $0 }) { reap(pid, signal: SIGKILL) } }
        let id = job.job.id
        let observer = ExecutionObserver(started: { [directory] _ in
            // Another node's attempt of the same job, started after this one (its pid is among
            // those the sweep reads).
            let pid = try? spawn(["/bin/sleep", "30"], environment: ["SPOOL_JOB_ID=\(id)", "SPOOL_MESSAGES=\(directory)-other/jobs/\(id)/messages"])
            other.withLock { $0 = pid }
            FileManager.default.createFile(atPath: job.paths.outputs + "/go", contents: nil)
        })
        #expect(await run(job, observer: observer) == .succeeded)
        let pid = try #require(other.withLock { $0 })
        #expect(OrphanReaper.isRunning(pid), "the other node's attempt was killed by this one's sweep")
    }

    /// A job's output is read on while its observer (the scheduler, and through it the store)
    /// is slow to take it: the job does not stall on a full pipe, its time running out.
    @Test func aSlowObserverDoesNotStallAChattyJob() async throws {
        let job = try prepare(["/bin/sh", "-c", "head -c 300000 /dev/zero; touch \"$SPOOL_OUTPUT_DIR/done\""], logLimit: 10_000)
        let (released, release) = AsyncStream<Void>.makeStream()
        let observer = ExecutionObserver(output: { _ in for await _ in released { return } })   // a store that takes its time
        let ran = Task { await run(job, observer: observer) }   // unstructured: awaited below, the observer released first
        defer { release.finish() }   // also when the wait below fails: the job and its observer end
        // Polled: nothing signals a file the job creates.
        try await within("the job writing all its output while its observer waits") {
            while !FileManager.default.fileExists(atPath: job.paths.outputs + "/done") { try await Task.sleep(for: .milliseconds(2)) }
        }
        release.finish()
        #expect(await ran.value == .succeeded)
    }

    /// `writer` runs in the background on the job's stdout, writing without end, and the output is
    /// read slowly (20 ms a chunk), so the pipe never runs dry; once the output flows, the leader
    /// exits 0 (or is stopped by `stop`). The job still ends when its leader does — on a clock that
    /// never advances, so no timeout ends it — and the writer dies with it.
    func aWriterLeftOnStdoutEndsWithItsJob(_ writer: String, stop: StopReason? = nil) async throws -> JobOutcome? {
        let script = """
            mkfifo "$SPOOL_OUTPUT_DIR/exit"
            \(writer) & echo $! > "$SPOOL_OUTPUT_DIR/writer"
            read go < "$SPOOL_OUTPUT_DIR/exit"; exit 0
            """
        let job = try prepare(["/bin/sh", "-c", script], logLimit: 10_000, clock: SpoolClock(ManualClock(), wall: WallClock.now))
        let (output, flows) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let observer = ExecutionObserver(output: { _ in
            flows.yield()
            try? await Task.sleep(for: .milliseconds(20))
        })
        let (stops, stopping) = AsyncStream<StopReason>.makeStream()
        let ended = Task { await run(job, stops: stops, observer: observer) }   // unstructured: awaited below, within a bound
        // Whatever happens here, nothing of the job is left running: the leader, the writer.
        defer { for pid in marked("SPOOL_JOB_ID=\(job.job.id)") { kill(pid, SIGKILL) } }
        // Bounds of a minute: what is checked is that the job ends at all (its clock never moves).
        // In a full run the cooperative pool is sometimes held by other tests for seconds: the
        // first output came 10.0 s after the start there (under 1 s alone), and a 10-s bound
        // made the test a coin toss between the wait and its timer (it failed CI that way).
        let limit = Duration.seconds(60)
        _ = try await output.next("the writer's output", within: limit)
        // Open (no waiting) once the leader reads the FIFO, which it does after writing the writer's pid.
        let path = job.paths.outputs + "/exit"
        let exit = try await within(limit, "the leader to wait on its FIFO") {
            while true {
                let descriptor = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC)
                if descriptor >= 0 { return descriptor }
                try await Task.sleep(for: .milliseconds(2))
            }
        }
        defer { close(exit) }
        let writer = try pid(in: job.paths.outputs + "/writer")
        defer { kill(writer, SIGKILL) }
        if let stop {
            stopping.yield(stop)
        } else {
            #expect(write(exit, "go\n", 3) == 3)
        }
        let outcome = try? await within(limit, "the job to end once its leader exited") { await ended.value }
        // SIGKILLed, it may take a moment to be gone.
        _ = try? await within(.seconds(30), "the writer \(writer) to die") {
            while OrphanReaper.isRunning(writer) { try await Task.sleep(for: .milliseconds(2)) }
        }
        #expect(!OrphanReaper.isRunning(writer), "the writer \(writer) outlived its job")
        return outcome
    }

    @Test func aWriterLeftInTheGroupOnStdoutEndsWithItsJob() async throws {
        #expect(try await aWriterLeftOnStdoutEndsWithItsJob("yes") == .succeeded)
    }

    @Test func aWriterThatLeftTheGroupOnStdoutEndsWithItsJob() async throws {
        #expect(try await aWriterLeftOnStdoutEndsWithItsJob("setsid yes") == .succeeded)
    }

    /// The shutdown's SIGTERM reaches the job's group only; its leader's exit is what ends the writer.
    @Test func aShutdownEndsAJobWhoseWriterLeftTheGroup() async throws {
        #expect(try await aWriterLeftOnStdoutEndsWithItsJob("setsid yes", stop: .shutdown) == .stoppedForShutdown)
    }

    @Test func aStopRequestCancelsARunningJob() async throws {
        let job = try prepare(["/bin/sh", "-c", "echo ready > \"$SPOOL_OUTPUT_DIR/ready\"; sleep 300"])
        let (stops, continuation) = AsyncStream<StopReason>.makeStream()
        let observer = ExecutionObserver(started: { _ in continuation.yield(.cancel) })
        #expect(await run(job, stops: stops, observer: observer) == .canceled)
    }

    /// A stop's grace is the whole group's, not its leader's: a wrapper shell that runs the real
    /// program without `exec` dies at SIGTERM at once, and its child, saving a checkpoint in its
    /// SIGTERM handler, was SIGKILLed with it (found by attacking the build). The job ends once
    /// the group is empty, long before the grace (10 minutes) is over: `within`'s patience is far less.
    @Test(arguments: [StopReason.cancel, .shutdown])
    func aStopGivesTheWholeProcessGroupItsGraceNotTheLeaderAlone(_ reason: StopReason) async throws {
        // Ready once its `sleep` runs too (a sleep started after the SIGTERM would not get it, and
        // would hold the group to the grace's end).
        let child = #"trap 'sleep 0.3; echo saved > "$SPOOL_OUTPUT_DIR/checkpoint"; exit 0' TERM; sleep 300 & echo ready > "$SPOOL_OUTPUT_DIR/ready"; wait"#
        let job = try prepare(["/bin/sh", "-c", "/bin/sh -c '\(child.replacingOccurrences(of: "'", with: #"'\''"#))' & wait"], grace: .seconds(600))
        let (stops, continuation) = AsyncStream<StopReason>.makeStream()
        let ended = Task { await run(job, stops: stops) }
        try await within("the child to set its trap") {
            while !FileManager.default.fileExists(atPath: job.paths.outputs + "/ready") { try await Task.sleep(for: .milliseconds(10)) }
        }
        continuation.yield(reason)
        let outcome = try await within("the job to end as its group emptied, not at the grace's end") { await ended.value }
        #expect(outcome == (reason == .cancel ? .canceled : .stoppedForShutdown))
        #expect((try? String(contentsOfFile: job.paths.outputs + "/checkpoint", encoding: .utf8)) == "saved\n",
                "the child's SIGTERM handler ran to its end: \((try? log(of: job)) ?? "")")
    }

    @Test func shutdownStopsAJobForRequeueing() async throws {
        let job = try prepare(["/bin/sh", "-c", "sleep 300"])
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
            echo '{"type":"progress","fraction":40}' > "$SPOOL_MESSAGES"
            echo '{"type":"progress","fraction":0.5}' > "$SPOOL_MESSAGES"
            """
        let received = Mutex<[JobMessage]>([])
        let job = try prepare(["/bin/sh", "-c", script])
        let outcome = await run(job, observer: ExecutionObserver(message: { message in received.withLock { $0.append(message) } }))
        #expect(outcome == .succeeded)
        let messages = received.withLock { $0 }
        #expect(messages.first == .progress(JobProgress(fraction: 0.25, message: "quarter")))
        #expect(messages.contains(.unknown(type: "future-kind")))
        #expect(messages.contains(.progress(JobProgress(fraction: 1))), "fractions are clamped to 0…1")
        #expect(messages.last == .progress(JobProgress(fraction: 0.5)))
        let text = try log(of: job)
        #expect(text.contains(#"ignored a message on $SPOOL_MESSAGES: not a JSON object with a "type": "not json""#), "\(text)")
        // Said once a run, not for every message: a job that sends percentages sends many.
        #expect(text.components(separatedBy: "is outside 0…1").count == 2, "\(text)")
        #expect(text.contains(#"[spool] a progress "fraction" of 1.5 is outside 0…1 and reads as 1 (send 0.015 for 1.5 %); noted once a run"#), "\(text)")
    }

    /// A job that cleans its working directory (its default is the job's own, which holds the log)
    /// or takes a hard-link snapshot of it keeps its log: the server writes it again under its name,
    /// from what it kept, when the job ends (found by attacking the build: `rm -rf ./*` erased every
    /// line and the server's notices, and a second name made the API refuse the log).
    @Test func aLogTheJobRemovedOrLinkedIsWrittenAgainWhenItEnds() async throws {
        let removing = try prepare(["/bin/sh", "-c", "echo before; rm -rf ./*; echo after"])
        #expect(await run(removing) == .succeeded)
        let text = try log(of: removing)
        #expect(text.hasPrefix("before\nafter\n") && text.contains("[spool] the job removed its log file or gave it another name"), "\(text)")

        let linking = try prepare(["/bin/sh", "-c", "echo one; ln log.txt snapshot.txt; echo two"])
        #expect(await run(linking) == .succeeded)
        var status = stat()
        #expect(lstat(linking.paths.log, &status) == 0 && status.st_nlink == 1, "the log has one name again")
        let linked = try log(of: linking)
        #expect(linked.hasPrefix("one\ntwo\n") && linked.contains("[spool] the job removed its log file"), "\(linked)")
        #expect(try String(contentsOfFile: linking.paths.directory + "/snapshot.txt", encoding: .utf8) == "one\ntwo\n",
                "the job's own link keeps what it had")

        // Through its second name a job can write without end: what is written again is the last
        // 4 MiB (four caps of at least 1 MiB), said so.
        let flooding = try prepare(["/bin/sh", "-c", "echo first; ln log.txt big.txt; head -c 5000000 /dev/zero | tr '\\0' y >> big.txt"])
        #expect(await run(flooding) == .succeeded)
        let flooded = try log(of: flooding)
        #expect(flooded.hasPrefix("[spool] the first \(5_000_006 - 4 << 20) bytes of this log are left out\nyyy") && flooded.utf8.count < 4 << 20 + 300,
                "\(flooded.prefix(200))")

        let quiet = try prepare(["/bin/sh", "-c", "echo fine"])
        #expect(await run(quiet) == .succeeded)
        #expect(try log(of: quiet) == "fine\n", "a log left alone is left as it is")
    }

    /// A message line over 4096 bytes is dropped, and the log says so, as for any other bad line
    /// (found by attacking the build: it went without a word); the next line is read as usual.
    @Test func aMessageLineTooLongIsNotedInTheLogAndTheNextOneArrives() async throws {
        let script = """
            head -c 5000 /dev/zero | tr '\\0' x > "$SPOOL_MESSAGES"; echo >> "$SPOOL_MESSAGES"
            echo '{"type":"progress","fraction":0.5}' > "$SPOOL_MESSAGES"
            """
        let received = Mutex<[JobMessage]>([])
        let job = try prepare(["/bin/sh", "-c", script])
        let outcome = await run(job, observer: ExecutionObserver(message: { message in received.withLock { $0.append(message) } }))
        #expect(outcome == .succeeded)
        #expect(received.withLock { $0 } == [.progress(JobProgress(fraction: 0.5))])
        let text = try log(of: job)
        #expect(text.contains("ignored a message on $SPOOL_MESSAGES: a line over 4096 bytes"), "\(text)")
    }

    @Test func theLastMessagesBeforeAnExitAreNeverLost() async throws {
        // Many lines, then exit at once: everything in the FIFO is read to its end after the exit.
        let script = """
            import json, os
            fd = os.open(os.environ["SPOOL_MESSAGES"], os.O_WRONLY)
            for i in range(1, 501):
                os.write(fd, (json.dumps({"type": "progress", "fraction": i / 500}) + "\\n").encode())
            """
        for _ in 0..<5 {
            let received = Mutex<[JobMessage]>([])
            let job = try prepare(["/usr/bin/python3", "-c", script])
            #expect(await run(job, observer: ExecutionObserver(message: { message in received.withLock { $0.append(message) } })) == .succeeded)
            let messages = received.withLock { $0 }
            #expect(messages.count == 500)
            #expect(messages.last == .progress(JobProgress(fraction: 1)))
        }
    }

    /// What a job writes last without a newline arrives: a message line at the FIFO's
    /// end-of-file, and the output's last bytes in the log.
    @Test func aLastMessageWithoutItsNewlineArrivesAtEndOfFile() async throws {
        let script = #"printf '%s' '{"type":"progress","fraction":0.5}' > "$SPOOL_MESSAGES"; printf 'no newline'"#
        let received = Mutex<[JobMessage]>([])
        let job = try prepare(["/bin/sh", "-c", script])
        #expect(await run(job, observer: ExecutionObserver(message: { message in received.withLock { $0.append(message) } })) == .succeeded)
        #expect(received.withLock { $0 } == [.progress(JobProgress(fraction: 0.5))])
        #expect(try log(of: job) == "no newline")
    }

    /// A process that escaped the job's group, session and marker and still holds the output
    /// pipe (nothing the server can find to kill, as an unkillable one would) keeps end-of-file
    /// away: the job's end waits for it 2 s at most, with what was written before it.
    @Test func aPipeHeldByAnEscapedProcessDelaysTheEndTwoSecondsAtMost() async throws {
        // The job outlives a second: the sweep kills every process born after a job that ended younger.
        let script = #"env -i setsid /bin/sh -c 'echo $$ > "$0"; exec /bin/sleep 60' "$SPOOL_OUTPUT_DIR/holder" & sleep 1.2; echo done"#
        let job = try prepare(["/bin/sh", "-c", script])
        let holderFile = job.paths.outputs + "/holder"
        defer {
            if let text = try? String(contentsOfFile: holderFile, encoding: .utf8), let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
                kill(pid, SIGKILL)
            }
        }
        let began = ContinuousClock.now
        #expect(await run(job) == .succeeded)
        // 1.2 s of the job's own, the 2 s wait, and room for a slow machine; the holder sleeps 60 s.
        #expect(ContinuousClock.now - began < .seconds(20), "the end waited \(ContinuousClock.now - began)")
        let holder = try #require(Int32(String(contentsOfFile: holderFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(kill(holder, 0) == 0, "the job ended while its escaped process still held the pipe")
        #expect(try log(of: job) == "done\n")
    }

    /// Issue 12: everything a start would create is made while the slot's previous job runs
    /// (a file creation is 0.35–0.5 ms here): the directory, outputs, input, an empty log and
    /// the message FIFO. The start then uses them: messages arrive through the FIFO made ahead
    /// (the same inode: it was opened, not replaced), output lands in the log made ahead.
    @Test func aJobPreparedAheadStartsFromTheFilesMadeForIt() async throws {
        let script = """
            echo '{"type":"progress","fraction":0.5}' > "$SPOOL_MESSAGES"
            echo out; cat "$SPOOL_INPUT_FILE"
            """
        let job = try prepare(["/bin/sh", "-c", script], input: .object(["k": .string("v")]), startAhead: false)
        await job.executor.prepare(job.job, on: SlotSpec(id: SlotID(0)))
        var made = stat()
        #expect(stat(job.paths.messages, &made) == 0 && (made.st_mode & S_IFMT) == S_IFIFO, "the FIFO is made ahead")
        #expect(FileManager.default.fileExists(atPath: job.paths.log) && FileManager.default.fileExists(atPath: job.paths.outputs))
        let fifo = try FileManager.default.attributesOfItem(atPath: job.paths.messages)[.systemFileNumber] as? Int
        // Held open, so its inode number cannot be handed to a FIFO made in its place.
        let held = open(job.paths.messages, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        defer { close(held) }
        let opened = Mutex<Int?>(nil)
        let received = Mutex<[JobMessage]>([])
        let observer = ExecutionObserver(started: { _ in
            opened.withLock { $0 = (try? FileManager.default.attributesOfItem(atPath: job.paths.messages)[.systemFileNumber]) as? Int }
        }, message: { message in received.withLock { $0.append(message) } })
        #expect(await run(job, observer: observer) == .succeeded)
        #expect(opened.withLock { $0 } == fifo, "the start opened the FIFO made ahead instead of making another")
        #expect(received.withLock { $0 } == [.progress(JobProgress(fraction: 0.5))])
        #expect(try log(of: job).contains("out\n{\"k\":\"v\"}"))
        #expect(!FileManager.default.fileExists(atPath: job.paths.messages), "the FIFO is removed after the job")
    }

    func spares() throws -> [String] { try FileManager.default.contentsOfDirectory(atPath: directory + "/jobs/.spare") }

    func inode(_ path: String) -> UInt {
        var status = stat()
        return stat(path, &status) == 0 ? UInt(status.st_ino) : 0
    }

    /// A slot that went idle keeps a spare job directory; its next job, which nothing looked
    /// ahead for, gets it renamed into place with its input written, and runs from it: input
    /// on stdin and in the file, messages through the FIFO made at the start, output in the log.
    @Test func aJobStartedOnAnIdleSlotTakesTheSlotsSpareDirectory() async throws {
        let script = #"echo '{"type":"progress","fraction":1}' > "$SPOOL_MESSAGES"; cat "$SPOOL_INPUT_FILE"; cat"#
        let job = try prepare(["/bin/sh", "-c", script], input: .object(["k": .string("v")]), startAhead: false)
        await job.executor.slotIdle(SlotID(0))
        let made = try spares()
        try #require(made.count == 1, "one spare for the idle slot")
        let spare = inode(directory + "/jobs/.spare/" + made[0])
        await job.executor.slotIdle(SlotID(0))
        #expect(try spares() == made, "a slot keeps one spare")
        let received = Mutex<[JobMessage]>([])
        #expect(await run(job, observer: ExecutionObserver(message: { message in received.withLock { $0.append(message) } })) == .succeeded)
        #expect(inode(job.paths.directory) == spare, "the job's directory is the spare, renamed")
        #expect(try spares().isEmpty)
        #expect(try log(of: job) == #"{"k":"v"}{"k":"v"}"#)
        #expect(received.withLock { $0 } == [.progress(JobProgress(fraction: 1))])
        #expect(FileManager.default.fileExists(atPath: job.paths.outputs))
    }

    /// Another job of the same type for the same executor (and slot), with `input`.
    func another(_ first: Run, input: JSONValue) -> Run {
        let job = Job(id: .random(), type: "t", input: input, priority: 0, timeoutSeconds: 30, maxAttempts: 1, createdAt: Timestamp(microseconds: 0))
        return Run(job: job, paths: JobPaths(dataDirectory: directory, job: job.id), executor: first.executor)
    }

    /// A job that ended leaving nothing in its directory (an empty log, no outputs) gives it to
    /// the slot as a spare: the next job runs in it — the same inodes, none made — with its own
    /// input, and the first job's API answers stay empty without it.
    @Test func theDirectoryOfAJobThatLeftNothingIsTheNextJobsSpare() async throws {
        let script = #"[ "$(cat "$SPOOL_INPUT_FILE")" = '{"n":1}' ] || cat "$SPOOL_INPUT_FILE""#
        let first = try prepare(["/bin/sh", "-c", script], input: .object(["n": .int(1)]), startAhead: false)
        await first.executor.slotIdle(SlotID(0))   // the slot's first spare (and the earlier server's removed)
        #expect(await run(first) == .succeeded)
        let directoryInode = inode(first.paths.directory), logInode = inode(first.paths.log), outputsInode = inode(first.paths.outputs)
        await first.executor.ended(first.job.id, on: SlotID(0))
        #expect(!FileManager.default.fileExists(atPath: first.paths.directory), "its directory went to the slot")
        #expect(try spares().count == 1, "the slot had used its spare; it has the recycled one")
        // Nothing of the ended job stays in it: a deleted job's input was kept there, readable, until
        // the spare's next job (found by attacking the build).
        let spare = try #require(try spares().first.map { directory + "/jobs/.spare/" + $0 })
        #expect(FileManager.default.contents(atPath: spare + "/input.json")?.isEmpty == true)

        let second = another(first, input: .object(["n": .int(2)]))
        #expect(await run(second) == .succeeded)
        #expect(inode(second.paths.directory) == directoryInode && inode(second.paths.log) == logInode
                && inode(second.paths.outputs) == outputsInode)
        #expect(try log(of: second) == #"{"n":2}"#, "its own input, on stdin and in the file; an empty log before it")
        #expect(try FileManager.default.contentsOfDirectory(atPath: second.paths.outputs).isEmpty)
        #expect(try spares().isEmpty)
        await second.executor.ended(second.job.id, on: SlotID(0))
        #expect(FileManager.default.fileExists(atPath: second.paths.log), "a job that wrote to its log keeps its directory")
    }

    /// What a job leaves — an output, a file beside its own, a second name for one of its files —
    /// keeps its directory where it is; and a slot keeps at most four spares.
    @Test func aJobThatLeftSomethingKeepsItsDirectoryAndASlotKeepsFourSpares() async throws {
        let scripts = [#"touch "$SPOOL_OUTPUT_DIR/result""#, #"touch "$(dirname "$SPOOL_INPUT_FILE")/scratch""#,
                       #"ln "$SPOOL_INPUT_FILE" "$(dirname "$SPOOL_INPUT_FILE")/../linked-$$""#]
        for script in scripts {
            let job = try prepare(["/bin/sh", "-c", script], startAhead: false)
            #expect(await run(job) == .succeeded)
            await job.executor.slotIdle(SlotID(0))
            let before = try spares()
            await job.executor.ended(job.job.id, on: SlotID(0))
            #expect(FileManager.default.fileExists(atPath: job.paths.input), "kept after: \(script)")
            #expect(try spares() == before)
        }
        let quiet = try prepare(["/bin/true"], startAhead: false)
        await quiet.executor.slotIdle(SlotID(0))
        var runs = [quiet]
        for _ in 0..<5 { runs.append(another(quiet, input: .object([:]))) }
        for job in runs { #expect(await run(job) == .succeeded) }   // the first takes the spare
        for job in runs { await job.executor.ended(job.job.id, on: SlotID(0)) }
        #expect(try spares().count == 4)
        #expect(runs.filter { FileManager.default.fileExists(atPath: $0.paths.directory) }.count == 2, "the rest stay as they were")
    }

    /// A later attempt starts with an empty outputs folder (found by attacking the build: a job
    /// retried after a failure listed the files its failed attempt left, as its outputs), and its
    /// log goes on after a line that says where it begins; in either mode.
    @Test(arguments: [false, true])
    func aLaterAttemptStartsWithoutTheOutputsOfTheOneBefore(startAhead: Bool) async throws {
        var job = try prepare(["/bin/sh", "-c", #"cat "$SPOOL_INPUT_FILE"; echo done > "$SPOOL_OUTPUT_DIR/result.txt""#],
                              input: .object(["n": .int(2)]), startAhead: startAhead)
        job.job.attempts = 2
        try FileManager.default.createDirectory(atPath: job.paths.outputs + "/partial", withIntermediateDirectories: true)
        #expect(FileManager.default.createFile(atPath: job.paths.outputs + "/partial/frame-1.bin", contents: Data([1])))
        #expect(FileManager.default.createFile(atPath: job.paths.log, contents: Data("attempt 1 failed".utf8)))
        await job.executor.prepare(job.job, on: SlotSpec(id: SlotID(0)))   // a look-ahead, where there is one
        #expect(await run(job) == .succeeded)
        #expect(try FileManager.default.contentsOfDirectory(atPath: job.paths.outputs) == ["result.txt"])
        #expect(try log(of: job) == "attempt 1 failed\n--- attempt 2 ---\n" + #"{"n":2}"#)
    }

    /// A job whose directory is there already (an earlier run's: here attempt 1, handed back by a
    /// shutdown, runs again) keeps it: the spare is not renamed over it, and stays for the slot's
    /// next start. Its outputs are emptied and its log marked all the same (found in review: a
    /// run handed back keeps its attempt number, and kept the partial files).
    @Test func aSpareIsNeverRenamedOverAnEarlierAttemptsDirectory() async throws {
        var job = try prepare(["/bin/sh", "-c", #"cat "$SPOOL_INPUT_FILE""#], input: .object(["n": .int(2)]), startAhead: false)
        job.job.attempts = 1
        try FileManager.default.createDirectory(atPath: job.paths.outputs, withIntermediateDirectories: true)
        #expect(FileManager.default.createFile(atPath: job.paths.outputs + "/kept", contents: Data()))
        #expect(FileManager.default.createFile(atPath: job.paths.log, contents: Data("attempt 1\n".utf8)))
        await job.executor.slotIdle(SlotID(0))
        let made = try spares()
        #expect(await run(job) == .succeeded)
        #expect(try log(of: job) == "attempt 1\n--- attempt 1 ---\n" + #"{"n":2}"#)
        #expect(!FileManager.default.fileExists(atPath: job.paths.outputs + "/kept"))
        #expect(try spares() == made && made.count == 1)
    }

    /// Slots going idle together while an earlier server's spares are removed: no spare is made
    /// until that is done (the removal would take a new one apart), and each one made is whole.
    @Test func sparesMadeWhileAnEarlierServersAreRemovedAreWhole() async throws {
        for index in 0..<20 {
            try FileManager.default.createDirectory(atPath: directory + "/jobs/.spare/old-\(index)/outputs", withIntermediateDirectories: true)
        }
        let job = try prepare(["/bin/true"], startAhead: false)
        await withTaskGroup(of: Void.self) { group in
            for slot in 0..<4 { group.addTask { await job.executor.slotIdle(SlotID(slot)) } }
        }
        for slot in 0..<4 { await job.executor.slotIdle(SlotID(slot)) }   // those that found the removal under way
        let made = try spares()
        #expect(made.count == 4 && !made.contains { $0.hasPrefix("old-") })
        for spare in made {
            let path = directory + "/jobs/.spare/" + spare
            #expect(["input.json", "log.txt", "outputs"].allSatisfy { FileManager.default.fileExists(atPath: path + "/" + $0) }, "\(spare) is whole")
        }
    }

    /// Spares an earlier server left (it was killed) are removed when this one makes its first.
    @Test func anEarlierServersSparesAreRemoved() async throws {
        let left = directory + "/jobs/.spare/1-1"
        try FileManager.default.createDirectory(atPath: left + "/outputs", withIntermediateDirectories: true)
        #expect(FileManager.default.createFile(atPath: left + "/log.txt", contents: Data("x".utf8)))
        #expect(mkfifo(left + "/messages", 0o600) == 0)
        let job = try prepare(["/bin/true"], startAhead: false)
        await job.executor.slotIdle(SlotID(0))
        let now = try spares()
        #expect(now.count == 1 && !now.contains("1-1"))
    }

    /// A slot busy since the server started (it never went idle, so never made a spare) still
    /// takes back its quiet jobs' directories; the first one it takes back removes the spares an
    /// earlier server left, as a first spare made by an idle slot does.
    @Test func aSlotBusySinceTheStartTakesBackDirectoriesAndRemovesAnEarlierServersSpares() async throws {
        let left = directory + "/jobs/.spare/1-1"
        try FileManager.default.createDirectory(atPath: left + "/outputs", withIntermediateDirectories: true)
        let first = try prepare(["/bin/true"], startAhead: false)
        #expect(await run(first) == .succeeded)
        let directoryInode = inode(first.paths.directory)
        await first.executor.ended(first.job.id, on: SlotID(0))
        #expect(!FileManager.default.fileExists(atPath: first.paths.directory), "its directory went to the slot")
        let now = try spares()
        #expect(now.count == 1 && !now.contains("1-1"), "\(now)")

        let second = another(first, input: .object([:]))
        #expect(await run(second) == .succeeded)
        #expect(inode(second.paths.directory) == directoryInode, "the next job ran in it")
    }

    /// A FIFO made ahead that is no longer one when the job starts (something replaced it) is
    /// made again; the job's messages still arrive.
    @Test func aPreparedFIFOThatWasReplacedIsMadeAgain() async throws {
        let job = try prepare(["/bin/sh", "-c", #"echo '{"type":"progress","fraction":1}' > "$SPOOL_MESSAGES""#], startAhead: false)
        await job.executor.prepare(job.job, on: SlotSpec(id: SlotID(0)))
        try FileManager.default.removeItem(atPath: job.paths.messages)
        #expect(FileManager.default.createFile(atPath: job.paths.messages, contents: Data("stale".utf8)))
        let received = Mutex<[JobMessage]>([])
        #expect(await run(job, observer: ExecutionObserver(message: { message in received.withLock { $0.append(message) } })) == .succeeded)
        #expect(received.withLock { $0 } == [.progress(JobProgress(fraction: 1))])
    }

    /// Issue 12: a slot's next job is started ahead, behind a gate: its process exists while the
    /// slot's current job runs, but runs nothing of the job until the job starts. Then it is the
    /// job's command (the same pid), with the job's stdin, environment, messages and log.
    @Test func aJobStartedAheadRunsItsCommandOnlyOnceItStarts() async throws {
        let ran = directory + "/ran-\(UUID().uuidString)"
        let script = """
            echo $$ > "\(ran)"
            cat > "$SPOOL_OUTPUT_DIR/stdin.json"
            echo '{"type":"progress","fraction":0.5}' > "$SPOOL_MESSAGES"
            echo done
            """
        let job = try prepare(["/bin/sh", "-c", script], input: .object(["n": .int(1)]))
        let slot = SlotSpec(id: SlotID(0))
        await job.executor.prepare(job.job, on: slot)
        let gated = marked("SPOOL_JOB_ID=\(job.job.id)")
        #expect(gated.count == 1, "one process started ahead")
        try await waitUntilWaitingOnItsGate(try #require(gated.first))   // from here it can run nothing unasked
        #expect(!FileManager.default.fileExists(atPath: ran), "the command ran before the job started")
        let started = Mutex<Int32>(0)
        let received = Mutex<[JobMessage]>([])
        let observer = ExecutionObserver(started: { pid in started.withLock { $0 = pid } },
                                         message: { message in received.withLock { $0.append(message) } })
        #expect(await job.executor.run(claimed(job.job, on: slot.id), on: slot, stops: AsyncStream { _ in }, observer: observer).outcome == .succeeded)
        let commandPID = try pid(in: ran)
        #expect(started.withLock { $0 } == gated.first && commandPID == gated.first, "the gated shell became the command: same pid")
        #expect(received.withLock { $0 } == [.progress(JobProgress(fraction: 0.5))])
        #expect(try log(of: job).contains("done"))
        #expect(try String(contentsOfFile: job.paths.outputs + "/stdin.json", encoding: .utf8) == #"{"n":1}"#, "the job's stdin is its input")
    }

    /// A job started ahead on a slot whose look-ahead then moves on (a newer look-ahead, the slot
    /// going idle, shutdown) has its gated process killed: it ran nothing. And that kill sweeps
    /// no process by the job's marker, which could be the job running for real on another slot.
    @Test func aJobStartedAheadButOvertakenRunsNothingAndSweepsNothing() async throws {
        let ran = directory + "/ran-\(UUID().uuidString)"
        let first = try prepare(["/bin/sh", "-c", "touch \"\(ran)\""])
        let executor = first.executor
        let second = Job(id: .random(), type: "t", input: .object([:]), priority: 0, timeoutSeconds: 30, maxAttempts: 1,
                         createdAt: Timestamp(microseconds: 0))
        let slot = SlotSpec(id: SlotID(0))
        await executor.prepare(first.job, on: slot)
        let gated = marked("SPOOL_JOB_ID=\(first.job.id)")
        #expect(gated.count == 1, "one process started ahead")
        // The same job, running elsewhere: a process carrying its marker.
        let elsewhere = try spawn(["/bin/sleep", "30"], environment: ["SPOOL_JOB_ID=\(first.job.id)"])
        defer { reap(elsewhere, signal: SIGKILL) }
        await executor.prepare(second, on: slot)   // the slot's look-ahead moves on
        #expect(gated.allSatisfy { kill($0, 0) != 0 }, "the overtaken gated shell is gone (killed and reaped)")
        #expect(marked("SPOOL_JOB_ID=\(second.id)").count == 1)
        await executor.slotIdle(slot.id)
        #expect(marked("SPOOL_JOB_ID=\(second.id)").isEmpty, "an idle slot keeps nothing started ahead")
        await executor.prepare(second, on: slot)
        await executor.shutdown()
        #expect(marked("SPOOL_JOB_ID=\(second.id)").isEmpty, "shutdown keeps nothing started ahead")
        #expect(!FileManager.default.fileExists(atPath: ran), "the overtaken job's command ran")
        var status: Int32 = 0
        #expect(waitpid(elsewhere, &status, WNOHANG) == 0, "discarding a gated shell killed a process by the job's marker")
        // The job still runs normally where it does start.
        #expect(await executor.run(claimed(first.job, on: SlotID(1)), on: SlotSpec(id: SlotID(1)), stops: AsyncStream { _ in },
                                   observer: ExecutionObserver()).outcome == .succeeded)
        #expect(FileManager.default.fileExists(atPath: ran))
    }

    /// A job prepared on one slot and started on another: the gated process is killed and the
    /// job starts plainly, once, with the slot it started on.
    @Test func aJobStartedAheadForAnotherSlotStartsPlainly() async throws {
        let ran = directory + "/ran-\(UUID().uuidString)"
        let job = try prepare(["/bin/sh", "-c", "echo x >> \"\(ran)\"; echo $CUDA_VISIBLE_DEVICES >> \"\(ran)\""])
        await job.executor.prepare(job.job, on: SlotSpec(id: SlotID(0), gpu: "0"))
        let gated = marked("SPOOL_JOB_ID=\(job.job.id)")
        #expect(gated.count == 1)
        #expect(await job.executor.run(claimed(job.job, on: SlotID(1)), on: SlotSpec(id: SlotID(1), gpu: "1"), stops: AsyncStream { _ in },
                                       observer: ExecutionObserver()).outcome == .succeeded)
        #expect(try String(contentsOfFile: ran, encoding: .utf8) == "x\n1\n", "it ran once, with the slot it started on")
        #expect(gated.allSatisfy { kill($0, 0) != 0 }, "the gated shell is gone")
    }

    /// A look-ahead that comes after the job has started (another slot took it, or the job was
    /// shorter than the look-up) does nothing: no second process, and none of the running job's
    /// files — its message FIFO, its input — is made again under it.
    @Test func aLookAheadForAJobThatHasStartedTouchesNothing() async throws {
        // The job waits on a FIFO until the test's checks are done.
        let checked = directory + "/checked-\(UUID().uuidString)"
        #expect(mkfifo(checked, 0o600) == 0)
        let script = """
            read _ < "\(checked)"
            echo '{"type":"progress","fraction":0.5}' > "$SPOOL_MESSAGES"
            cat
            """
        let job = try prepare(["/bin/sh", "-c", script], input: .object(["k": .int(7)]))
        let received = Mutex<[JobMessage]>([])
        let (started, running) = AsyncStream<Int32>.makeStream()
        let observer = ExecutionObserver(started: { pid in running.yield(pid) },
                                         message: { message in received.withLock { $0.append(message) } })
        async let outcome = job.executor.run(claimed(job.job, on: SlotID(0)), on: SlotSpec(id: SlotID(0)), stops: AsyncStream { _ in },
                                             observer: observer)
        _ = try await within("the job's start") { await started.first { _ in true } }
        let fifo = try FileManager.default.attributesOfItem(atPath: job.paths.messages)[.systemFileNumber] as? Int
        let held = open(job.paths.messages, O_RDONLY | O_NONBLOCK | O_CLOEXEC)   // pins the inode number
        defer { close(held) }
        await job.executor.prepare(job.job, on: SlotSpec(id: SlotID(1)))
        let shells = marked("SPOOL_JOB_ID=\(job.job.id)").filter { pid in
            FileManager.default.contents(atPath: "/proc/\(pid)/cmdline").map { String(decoding: $0, as: UTF8.self).contains("spool-gate") } ?? false
        }
        #expect(shells.isEmpty, "the late look-ahead started a gated shell")
        #expect(try FileManager.default.attributesOfItem(atPath: job.paths.messages)[.systemFileNumber] as? Int == fifo,
                "the late look-ahead made the running job's FIFO again")
        // Held open read-write until the job ends: the line waits there whenever the job opens it.
        let done = open(checked, O_RDWR | O_CLOEXEC)
        defer { close(done) }
        #expect(write(done, "go\n", 3) == 3)
        #expect(await outcome.outcome == .succeeded)
        #expect(received.withLock { $0 } == [.progress(JobProgress(fraction: 0.5))])
        #expect(try log(of: job).contains(#"{"k":7}"#))
    }

    /// The look-ahead bookkeeping's ordering rules, with look-aheads the test holds mid-way: a
    /// look-ahead being dropped keeps its job from being looked ahead at again and hands its drop
    /// to the job's start, which waits for it; one look-ahead per job; a started job gets none.
    @Test func aStartWaitsForItsJobsLookAheadToBeDroppedAndLookAheadsNeverOverlapIt() async throws {
        let ahead = StartedAhead()
        let (release, held) = AsyncStream<Void>.makeStream()
        let job = JobID.random(), other = JobID.random()
        let first = try #require(ahead.begin(job, on: SlotID(0), attempt: 1) { for await _ in release { break }; return nil })
        #expect(first.dropped.isEmpty)
        #expect(ahead.begin(job, on: SlotID(1), attempt: 1) { nil } == nil, "a second look-ahead for the same job")
        let drops = ahead.drop(slot: SlotID(0))   // the slot went idle while its look-ahead still works
        #expect(drops.count == 1)
        #expect(ahead.begin(job, on: SlotID(1), attempt: 1) { nil } == nil, "a look-ahead beside one being dropped")
        let (entry, dropping, _) = ahead.starting(job)
        #expect(entry == nil && dropping != nil, "the start is handed the drop to wait for")
        held.yield()
        await dropping?.value
        #expect(ahead.begin(job, on: SlotID(1), attempt: 1) { nil } == nil, "a look-ahead for a started job")
        ahead.ended(job)
        let again = try #require(ahead.begin(job, on: SlotID(1), attempt: 2) { nil }, "once the start ended, a later attempt may be")
        _ = await again.work.value
        // A newer look-ahead on a slot replaces its older one.
        let newer = try #require(ahead.begin(other, on: SlotID(1), attempt: 1) { nil })
        #expect(newer.dropped.count == 1)
        for drop in newer.dropped { await drop.value }
        #expect(ahead.starting(job).entry == nil)
    }

    /// A command the kernel cannot run — here a text file without `#!` — is not started ahead
    /// (a shell would run it as a script): its start is a spawn failure, as it always was.
    @Test func aCommandTheKernelCannotRunIsNotStartedAhead() async throws {
        let script = directory + "/no-shebang-\(UUID().uuidString)"
        #expect(FileManager.default.createFile(atPath: script, contents: Data("touch \"$SPOOL_OUTPUT_DIR/ran\"\n".utf8),
                                               attributes: [.posixPermissions: 0o755]))
        let job = try prepare([script])
        await job.executor.prepare(job.job, on: SlotSpec(id: SlotID(0)))
        #expect(marked("SPOOL_JOB_ID=\(job.job.id)").isEmpty)
        guard case .spawnFailed = await job.executor.run(claimed(job.job, on: SlotID(0)), on: SlotSpec(id: SlotID(0)),
                                                        stops: AsyncStream { _ in }, observer: ExecutionObserver()).outcome else {
            Issue.record("expected spawnFailed")
            return
        }
        #expect(!FileManager.default.fileExists(atPath: job.paths.outputs + "/ran"))
    }

    /// A job started ahead whose executable was replaced, before its start, by a file the kernel
    /// cannot run is a spawn failure, and the file is not run as a script by the gated shell.
    @Test func aJobStartedAheadWhoseExecutableWasReplacedIsASpawnFailure() async throws {
        let command = directory + "/command-\(UUID().uuidString)"
        #expect(FileManager.default.createFile(atPath: command, contents: Data("#!/bin/sh\nexit 0\n".utf8),
                                               attributes: [.posixPermissions: 0o755]))
        let job = try prepare([command])
        let slot = SlotSpec(id: SlotID(0))
        await job.executor.prepare(job.job, on: slot)
        let gated = marked("SPOOL_JOB_ID=\(job.job.id)")
        #expect(gated.count == 1, "one process started ahead")
        try FileManager.default.removeItem(atPath: command)
        #expect(FileManager.default.createFile(atPath: command, contents: Data("touch \"$SPOOL_OUTPUT_DIR/ran\"\n".utf8),
                                               attributes: [.posixPermissions: 0o755]))
        guard case .spawnFailed = await job.executor.run(claimed(job.job, on: slot.id), on: slot, stops: AsyncStream { _ in },
                                                        observer: ExecutionObserver()).outcome else {
            Issue.record("expected spawnFailed")
            return
        }
        #expect(!FileManager.default.fileExists(atPath: job.paths.outputs + "/ran"), "the gated shell ran the text as a script")
        #expect(gated.allSatisfy { !OrphanReaper.isRunning($0) }, "the gated shell outlived its discarded start")
    }

    /// The look at a started-ahead job's executable made when its slot's previous process exited
    /// stands for one at the start only while it is fresh. Here the slot's process exits, the look
    /// finds the command fine, the file is then replaced by a text without `#!` and the job starts
    /// a second later (the slot ran something else first, or the store was down): it is looked at
    /// again, a spawn failure, and the gated shell does not run the text as a script.
    @Test func aStaleLookAtAStartedAheadExecutableIsMadeAgain() async throws {
        let manual = ManualClock()
        let command = directory + "/command-\(UUID().uuidString)"
        #expect(FileManager.default.createFile(atPath: command, contents: Data("#!/bin/sh\nexit 0\n".utf8),
                                               attributes: [.posixPermissions: 0o755]))
        let next = try prepare([command], clock: SpoolClock(manual, wall: WallClock.now))
        let slot = SlotSpec(id: SlotID(0))
        await next.executor.prepare(next.job, on: slot)
        #expect(marked("SPOOL_JOB_ID=\(next.job.id)").count == 1, "one process started ahead")
        // Another job of the type runs on the slot and exits: the look-ahead is looked at then.
        let before = Job(id: .random(), type: "t", input: .object([:]), priority: 0, timeoutSeconds: 30, maxAttempts: 1,
                         createdAt: Timestamp(microseconds: 0))
        let ran = await next.executor.run(claimed(before, on: slot.id), on: slot, stops: AsyncStream { _ in }, observer: ExecutionObserver())
        try #require(ran.outcome == .succeeded, "the job before: \(ran.outcome)")
        let check = try #require(next.executor.ahead.check(of: slot.id), "the exit looked at the slot's look-ahead")
        #expect(await check.runnable.value, "the command was fine then")
        try FileManager.default.removeItem(atPath: command)
        #expect(FileManager.default.createFile(atPath: command, contents: Data("touch \"$SPOOL_OUTPUT_DIR/ran\"\n".utf8),
                                               attributes: [.posixPermissions: 0o755]))
        manual.advance(by: .seconds(1))
        guard case .spawnFailed = await next.executor.run(claimed(next.job, on: slot.id), on: slot, stops: AsyncStream { _ in },
                                                         observer: ExecutionObserver()).outcome else {
            Issue.record("expected spawnFailed")
            return
        }
        #expect(!FileManager.default.fileExists(atPath: next.paths.outputs + "/ran"), "the gated shell ran the text as a script")
    }

    /// A job whose start needs nothing more — its process behind the gate, its executable looked
    /// at when the slot's previous process exited, lately — starts from `startReady` at once (no
    /// task hand-off), and its `run` carries on with that process: the same pid, its output,
    /// messages and end. Without a look made lately, `startReady` leaves the start to `run`.
    @Test func aJobReadyToStartStartsAtOnceAndItsRunCarriesOn() async throws {
        let manual = ManualClock()
        let ran = directory + "/ran-\(UUID().uuidString)"
        let script = """
            echo $$ > "\(ran)"
            echo '{"type":"progress","fraction":0.5}' > "$SPOOL_MESSAGES"
            echo done
            """
        let next = try prepare(["/bin/sh", "-c", script], clock: SpoolClock(manual, wall: WallClock.now))
        let slot = SlotSpec(id: SlotID(0))
        let received = Mutex<[JobMessage]>([])
        let started = Mutex<Int32>(0)
        let observer = ExecutionObserver(started: { pid in started.withLock { $0 = pid } },
                                         message: { message in received.withLock { $0.append(message) } })
        await next.executor.prepare(next.job, on: slot)
        let gated = try #require(marked("SPOOL_JOB_ID=\(next.job.id)").first, "one process started ahead")
        #expect(!next.executor.startReady(claimed(next.job, on: slot.id), on: slot, observer: observer),
                "no look at its executable yet: the start is run's")
        // Another job runs on the slot and exits: the look-ahead's executable is looked at then.
        let before = Job(id: .random(), type: "t", input: .object([:]), priority: 0, timeoutSeconds: 30, maxAttempts: 1,
                         createdAt: Timestamp(microseconds: 0))
        #expect(await next.executor.run(claimed(before, on: slot.id), on: slot, stops: AsyncStream { _ in },
                                        observer: ExecutionObserver()).outcome == .succeeded)
        // Made as the process exited, before `run` returned; its answer is kept before its task ends.
        let look = try #require(next.executor.ahead.check(of: slot.id), "the exit looked at the executable")
        #expect(await look.runnable.value)
        #expect(next.executor.ahead.check(of: slot.id)?.answer == true)
        #expect(next.executor.startReady(claimed(next.job, on: slot.id), on: slot, observer: observer), "everything was ready")
        #expect(!next.executor.startReady(claimed(next.job, on: slot.id), on: slot, observer: observer), "and it started once")
        #expect(await next.executor.run(claimed(next.job, on: slot.id), on: slot, stops: AsyncStream { _ in }, observer: observer).outcome
                == .succeeded)
        #expect(try pid(in: ran) == gated && started.withLock { $0 } == gated, "the gated shell became the command")
        #expect(received.withLock { $0 } == [.progress(JobProgress(fraction: 0.5))])
        #expect(try log(of: next).contains("done"))
    }

    /// A process read just after `posix_spawn` returns is often still inside its exec, its
    /// environment not copied in yet (the kernel lets the parent go first): read then, it looked
    /// empty three times in four, and a sweep passed over it. It is found by its mark.
    @Test func aProcessReadMidExecIsStillFoundByItsMark() throws {
        let marker = "SPOOL_MESSAGES=\(directory)/jobs/mid-exec-\(UUID().uuidString)/messages"
        for _ in 0..<50 {
            let pid = try spawn(["/bin/sleep", "30"], environment: [marker])
            defer { reap(pid, signal: SIGKILL) }
            let found = OrphanReaper.scan(pids: [pid]) { $0.elementsEqual(marker.utf8) }
            #expect(found.map(\.pid) == [pid])
        }
    }

    /// A restart finds a dead server's job and worker processes however either named the data
    /// directory — the same directory through a symlink, or the link resolved — and only those.
    @Test func leftoversAreFoundWhateverPathNamedTheirDataDirectory() async throws {
        let real = directory + "/real-data", link = directory + "/linked-data", other = directory + "/other-data"
        for path in [real + "/jobs/job_a", real + "/workers/w1", other + "/jobs/job_b"] {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        }
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: real)
        let throughLink = try spawn(["/bin/sleep", "30"], environment: ["SPOOL_MESSAGES=\(link)/jobs/job_a/messages"])
        let byRealPath = try spawn(["/bin/sleep", "30"], environment: ["SPOOL_MESSAGES=\(real)/jobs/job_a/messages"])
        let worker = try spawn(["/bin/sleep", "30"], environment: ["SPOOL_MESSAGES=\(link)/workers/w1/messages"])
        let stranger = try spawn(["/bin/sleep", "30"], environment: ["SPOOL_MESSAGES=\(other)/jobs/job_b/messages"])
        defer { for pid in [throughLink, byRealPath, worker, stranger] { reap(pid, signal: SIGKILL) } }

        #expect(Set(try await OrphanReaper.killLeftoverJobs(of: real, patience: .seconds(2))) == [throughLink, byRealPath])
        #expect(try await OrphanReaper.killLeftoverWorkers(of: link, patience: .seconds(2)) == [worker])
        #expect(OrphanReaper.isRunning(stranger), "another data directory's process")
        #expect(try await OrphanReaper.killLeftoverJobs(of: real, patience: .seconds(2)).isEmpty)
    }

    /// The sweep after a young job reads only the pids handed out since its process, and of
    /// those passes over the ones it is told are the server's own children (each supervised on
    /// its own): one of them carrying the job's mark is left alone, any other one is killed.
    @Test func theSweepAfterAYoungJobPassesOverTheServersOwnChildren() async throws {
        let marker = "SPOOL_MESSAGES=\(directory)/jobs/sweep-\(UUID().uuidString)/messages"
        let leader = try spawn(["/bin/true"], environment: [])
        reap(leader, signal: 0)
        let own = try spawn(["/bin/sleep", "30"], environment: [marker])
        defer { reap(own, signal: SIGKILL) }
        // What the sweep saw, should it fail (this machine's pids wrap at 32768, often in a run).
        let pids = "leader \(leader), own \(own), /proc/loadavg \(String(decoding: OrphanReaper.readFile("/proc/loadavg") ?? [], as: UTF8.self))"
        #expect(await OrphanReaper.killMarked(marker, bornAfter: leader, ours: { $0 == own }).isEmpty, "\(pids)")
        #expect(OrphanReaper.isRunning(own), "the server's own child was killed by another's sweep: \(pids)")
        let killed = await OrphanReaper.killMarked(marker, bornAfter: leader)
        #expect(killed == [own], "\(pids)")
        #expect(!OrphanReaper.isRunning(own), "\(pids)")
    }

    /// What a server crash does to a gated shell: its gate (its stdin) reads end-of-file, the
    /// server's end closed with the server, and it exits 125 without running the command.
    @Test func aGatedShellWhoseServerIsGoneExitsWithoutRunningAnything() async throws {
        let ran = directory + "/ran-\(UUID().uuidString)"
        // Both ends close-on-exec from birth: no process another test starts meanwhile may hold
        // the server's end (the shell gets the other as its stdin, by dup2).
        var ends: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &ends) == 0)
        let shell = try spawn(["/bin/sh", "-c", Gate.script, "spool-gate", "/dev/null", "/usr/bin/touch", ran], environment: [], stdin: ends[0])
        close(ends[0])
        try await waitUntilWaitingOnItsGate(shell)
        close(ends[1])   // what the kernel does to the server's end when the server dies
        let exit = try await within("the shell exits once its gate is gone") {
            try await BlockingIO.run { () -> Int32 in
                var status: Int32 = 0
                waitpid(shell, &status, 0)
                return status
            }
        }
        #expect((exit >> 8) & 0xFF == Gate.exitWithoutRunning && exit & 0x7F == 0)
        #expect(!FileManager.default.fileExists(atPath: ran))
    }

    @Test func theLogIsCappedAndTheJobStillFinishes() async throws {
        let job = try prepare(["/usr/bin/python3", "-c", "import sys\nfor i in range(20000): print('x' * 99)"], logLimit: 10_000)
        #expect(await run(job) == .succeeded)
        let size = try FileManager.default.attributesOfItem(atPath: job.paths.log)[.size] as? Int ?? 0
        #expect(size >= 10_000 && size < 10_300)
        #expect(try log(of: job).contains("log truncated"))
    }

    /// A full data directory is not the job's fault: a job whose files cannot be written (here
    /// its input's write answers ENOSPC: `JobFiles.failingWrites`, since a `/dev/full` node or
    /// link in its place is replaced, not written) is handed back with its attempt unused and
    /// marked so, instead of failing as spawn_failed (found by attacking the build: on a full
    /// disk every queued job failed within seconds).
    @Test func aJobWhoseFilesMeetAFullDiskIsHandedBackNotFailed() async throws {
        let job = try prepare(["/bin/true"], input: .object(["frame": .int(7)]))
        JobFiles.failingWrites.withLock { $0 = (job.paths.directory + "/", ENOSPC) }
        defer { JobFiles.failingWrites.withLock { $0 = nil } }
        let result = await job.executor.run(job.job, on: SlotSpec(id: SlotID(0)), stops: AsyncStream { _ in }, observer: ExecutionObserver())
        #expect(result.dataDirectoryUnusable, "\(result)")
        guard case .returned(let message, _) = result.outcome else {
            Issue.record("\(result.outcome)")
            return
        }
        #expect(message.hasPrefix("the data directory is full: cannot write \(job.paths.input)"), "\(message)")
    }

    /// A data directory that went (an unmounted volume, a cleanup script) is not the job's fault
    /// either: handed back, its attempt unused, and marked so (found by attacking the build: an
    /// agent whose data directory went failed every job it claimed as spawn_failed, reporting ok).
    @Test func aJobWhoseDataDirectoryIsGoneIsHandedBackNotFailed() async throws {
        let job = try prepare(["/bin/true"], startAhead: false)
        let jobs = (job.paths.directory as NSString).deletingLastPathComponent
        try? FileManager.default.removeItem(atPath: jobs)
        let result = await job.executor.run(job.job, on: SlotSpec(id: SlotID(0)), stops: AsyncStream { _ in }, observer: ExecutionObserver())
        #expect(result.dataDirectoryUnusable, "\(result)")
        guard case .returned(let message, _) = result.outcome else {
            Issue.record("\(result.outcome)")
            return
        }
        #expect(message == "the data directory cannot be written: cannot create \(job.paths.directory): No such file or directory", "\(message)")
    }

    @Test func aStopThatArrivesBeforeTheSpawnStillStopsTheJob() async throws {
        let job = try prepare(["/bin/sh", "-c", "sleep 300"])
        let (stops, continuation) = AsyncStream<StopReason>.makeStream()
        continuation.yield(.cancel)
        let started = ContinuousClock.now
        #expect(await run(job, stops: stops) == .canceled)
        // Alone it takes milliseconds; in the full run, with a few hundred processes starting
        // on two cores, up to a minute has been seen. Short of the job's 300 s either way.
        #expect(ContinuousClock.now - started < .seconds(150))
    }

    @Test func aNULInAPlaceholderValueIsRefusedNotCut() throws {
        let type = JobType(name: "t", command: try CommandTemplate(["echo", "--name={input.name}"]))
        #expect(throws: CommandTemplate.Error.self) { _ = try type.command.render(input: .object(["name": .string("a\u{0}b")])) }
    }
}
