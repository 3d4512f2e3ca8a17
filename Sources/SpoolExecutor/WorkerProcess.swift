// One actor, one file (a little over 400 lines): the worker's phases (starting, ready, busy,
// stopping, exited) change from the process's output, its exit and the scheduler's calls, and
// every change stays in sight of the others. The wire format lives in SpoolCore.
import Glibc
import Logging
import SpoolCore
import Subprocess
import SystemPackage

/// One warm worker: a long-lived child process that sets up once (loads its model) and then
/// runs jobs one at a time over the protocol in docs/worker-protocol.md.
///
/// The process lives in a task the worker owns (`lifetime`), because it outlives any single
/// job; everything else — readiness, the job in flight, heartbeats, memory readings — is actor
/// state changed by messages from that task. A worker that exits, misses three heartbeats or
/// overruns its setup is killed as a whole process group; the job it was running ends
/// `workerLost`.
///
/// This file is longer than most: the worker's lifecycle reads best in one place.
public actor WorkerProcess {
    public enum Phase: String, Sendable { case starting, ready, busy, stopping, exited }

    public struct StartFailure: Error, CustomStringConvertible, Sendable {
        public var description: String
        public init(description: String) { self.description = description }
    }

    public nonisolated let id: String
    public nonisolated let type: String
    let plan: WorkerLaunchPlan
    let policy: WorkerPolicy
    let directory: String
    let killGrace: Duration
    let logger: Logger
    let gpu: Bool

    public private(set) var phase: Phase = .starting
    public private(set) var jobsRun = 0
    public private(set) var usage = WorkerUsage()
    public private(set) var processID: Int32?
    /// The worker's process group as last scanned (every 500 ms).
    private var tree: [Int32] = []
    private var lastHeard = ContinuousClock.now
    private var idleSince = ContinuousClock.now
    private var lastFailure: String?
    private var readyWaiter: CheckedContinuation<Void, any Error>?
    private var currentJob: JobID?
    private var currentSink: LogSink?
    private var currentObserver: ExecutionObserver?
    private var jobWaiter: CheckedContinuation<WorkerJobEnd, Never>?
    private var pendingEnd: WorkerJobEnd?
    private var exitWatchers: [AsyncStream<Void>.Continuation] = []
    private var commandDescriptor: Int32 = -1
    private var workerLog: LogSink?
    private var lifetime: Task<Void, Never>?

    public init(id: String, type: JobType, policy: WorkerPolicy, slot: SlotSpec, dataDirectory: String,
                killGrace: Duration, logger: Logger) throws {
        self.id = id
        self.type = type.name
        self.policy = policy
        directory = dataDirectory + "/workers/" + id
        plan = try WorkerLaunchPlan(type: type, policy: policy, slot: slot, workerID: id, directory: directory)
        self.killGrace = killGrace
        self.logger = logger
        gpu = slot.gpu != nil
    }

    enum WorkerJobEnd: Sendable {
        case succeeded(JSONValue?)
        case failed(String)
        case lost(String)
    }

    // MARK: - Lifecycle

    /// Spawns the worker and waits for `ready` (at most the setup timeout).
    public func start() async throws(StartFailure) {
        let directory = self.directory
        do {
            try await BlockingIO.run {
                for path in [String(directory[..<directory.lastIndex(of: "/")!]), directory]
                where mkdir(path, 0o755) != 0 && errno != EEXIST {
                    throw ExecutorError("cannot create \(path): \(String(cString: strerror(errno)))")
                }
                try MessageChannel.create(at: directory + "/messages")
                try MessageChannel.create(at: directory + "/commands")
            }
            workerLog = try LogSink(path: directory + "/worker.log", limit: 50 << 20)
        } catch {
            phase = .exited
            throw StartFailure(description: "cannot prepare the worker directory: \(error)")
        }
        commandDescriptor = open(directory + "/commands", O_RDWR | O_NONBLOCK | O_CLOEXEC)
        // The worker process outlives the call that starts it; `stop()` ends it and awaits
        // this task, so it never leaks past the worker.
        lifetime = Task { await self.live() }  // unstructured: owned and awaited by the worker (see above)
        let setup = Duration.milliseconds(Int64(policy.setupTimeoutSeconds * 1000))
        let ready: Result<Void, any Error> = await withTaskGroup(of: Result<Void, any Error>?.self) { group in
            group.addTask {
                do { try await self.waitUntilReady(); return .success(()) } catch { return .failure(error) }
            }
            group.addTask {
                try? await Task.sleep(for: setup)
                return Task.isCancelled ? nil : .failure(StartFailure(description: "setup took longer than \(setup)"))
            }
            // The timer answers nil when cancelled (the server is stopping): wait for the other.
            while let answer = await group.next() {
                if let answer {
                    group.cancelAll()
                    return answer
                }
            }
            return .failure(StartFailure(description: "the start was cancelled"))
        }
        if case .failure(let error) = ready {
            lastFailure = "\(error)"
            await kill()
            throw StartFailure(description: "\(error)")
        }
        idleSince = .now
    }

    private func waitUntilReady() async throws {
        if phase == .ready { return }
        if phase == .exited { throw StartFailure(description: lastFailure ?? "the worker exited during setup") }
        try await withCheckedThrowingContinuation { readyWaiter = $0 }
    }

    /// Asks the worker to exit; kills its process group if it has not after the grace period.
    public func stop() async {
        guard phase != .exited else { await lifetime?.value; return }
        phase = .stopping
        await writeCommand(.shutdown)
        if await !waitForExit(within: killGrace) { await kill() }
        await lifetime?.value
    }

    /// SIGTERM to the group, SIGKILL after the grace period; returns once the process is gone.
    func kill() async {
        guard let pgid = processID, phase != .exited else { return }
        Glibc.kill(-pgid, SIGTERM)
        if await !waitForExit(within: killGrace) { Glibc.kill(-pgid, SIGKILL) }
        _ = await waitForExit(within: .seconds(30))
    }

    private func waitForExit(within limit: Duration) async -> Bool {
        if phase == .exited { return true }
        let (stream, continuation) = AsyncStream<Void>.makeStream()
        exitWatchers.append(continuation)
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask { for await _ in stream {}; return !Task.isCancelled }
            group.addTask { try? await Task.sleep(for: limit); return false }
            let exited = await group.next()!
            group.cancelAll()
            return exited
        }
    }

    public var isAlive: Bool { phase == .ready || phase == .busy }

    // MARK: - Jobs

    public struct Assignment: Sendable {
        public var job: JobID
        public var input: JSONValue
        public var paths: JobPaths
        public var attempt: Int
        public var timeout: Duration
        public var timeoutSeconds: Double
        public init(job: JobID, input: JSONValue, paths: JobPaths, attempt: Int, timeoutSeconds: Double) {
            self.job = job
            self.input = input
            self.paths = paths
            self.attempt = attempt
            self.timeoutSeconds = timeoutSeconds
            timeout = .milliseconds(Int64(timeoutSeconds * 1000))
        }
    }

    /// Runs one job on the ready worker. Cancel and timeout ask the worker to stop the job,
    /// then kill the worker after the grace period.
    public func run(_ assignment: Assignment, stops: AsyncStream<StopReason>, observer: ExecutionObserver) async -> (JobOutcome, JSONValue?) {
        guard phase == .ready else { return (.returned(message: "the worker was not ready"), nil) }
        let paths = assignment.paths
        do {
            try await JobFiles.prepare(paths, input: assignment.input)
            currentSink = try LogSink(path: paths.log, limit: 10 << 20)
        } catch {
            return (.returned(message: "\(error)"), nil)
        }
        phase = .busy
        currentJob = assignment.job
        currentObserver = observer
        pendingEnd = nil
        await writeCommand(.job(id: assignment.job, input: assignment.input, inputFile: paths.input, outputDirectory: paths.outputs,
                          attempt: assignment.attempt, timeoutSeconds: assignment.timeoutSeconds))
        await observer.started(processID ?? 0)

        enum Event: Sendable { case ended(WorkerJobEnd), stop(StopReason), graceOver, quiet }
        let grace = killGrace
        var stopReason: StopReason?
        let end: WorkerJobEnd = await withTaskGroup(of: Event.self) { group in
            group.addTask { .ended(await self.waitForJobEnd()) }
            group.addTask {
                try? await Task.sleep(for: assignment.timeout)
                return Task.isCancelled ? .quiet : .stop(.timeout)
            }
            group.addTask {
                for await reason in stops { return .stop(reason) }
                return .quiet
            }
            var end: WorkerJobEnd = .lost("no answer")
            loop: while let event = await group.next() {
                switch event {
                case .ended(let result):
                    end = result
                    break loop
                case .stop(let reason):
                    guard stopReason == nil else { continue }
                    stopReason = reason
                    currentSink?.note("\(reason == .timeout ? "the job ran past its timeout" : "stop requested (\(reason))"): asking the worker to cancel it, killing the worker in \(grace.components.seconds) s if it does not")
                    await writeCommand(.cancel(assignment.job))
                    group.addTask {
                        try? await Task.sleep(for: grace)
                        return Task.isCancelled ? .quiet : .graceOver
                    }
                case .graceOver:
                    currentSink?.note("the worker did not give the job up in time: killing it")
                    await kill()
                case .quiet:
                    continue
                }
            }
            group.cancelAll()
            return end
        }
        jobsRun += 1
        // Fresh memory reading for the recycling decision. /proc/PID/statm is generated by the
        // kernel without disk I/O, so reading a few of them inline costs microseconds.
        if let pid = processID { usage.rssMegabytes = ProcessTree.residentMegabytes(of: tree.isEmpty ? [pid] : tree) }
        currentJob = nil
        currentObserver = nil
        let sink = currentSink
        currentSink = nil
        await sink?.close()
        if phase == .busy { phase = .ready }
        idleSince = .now

        if case .succeeded(let result) = end { return (.succeeded, result) }
        switch stopReason {
        case .timeout?: return (.timedOut, nil)
        case .cancel?: return (.canceled, nil)
        case .shutdown?: return (.stoppedForShutdown, nil)
        case nil: break
        }
        switch end {
        case .failed(let message): return (.reportedFailure(message: message), nil)
        case .lost(let message): return (.workerLost(message: message), nil)
        case .succeeded: fatalError("handled above")
        }
    }

    private func waitForJobEnd() async -> WorkerJobEnd {
        if let end = pendingEnd { pendingEnd = nil; return end }
        return await withCheckedContinuation { jobWaiter = $0 }
    }

    private func endJob(_ end: WorkerJobEnd) {
        if let waiter = jobWaiter {
            jobWaiter = nil
            waiter.resume(returning: end)
        } else {
            pendingEnd = end
        }
    }

    /// Why the worker should be replaced now, after a job ended with `outcome`.
    public func recycleReason(after outcome: JobOutcome) -> String? {
        if !isAlive { return "it is no longer running" }
        return policy.recycleReason(after: outcome, jobsRun: jobsRun, usage: usage)
    }

    // MARK: - The process

    private func live() async {
        let argv = plan.argv
        let executable: Executable = argv[0].contains("/") ? .path(FilePath(argv[0])) : .name(argv[0])
        var updates: [Environment.Key: String?] = [:]
        for (key, value) in plan.environment { updates[Environment.Key(rawValue: key)!] = value }
        let environment = Environment.inherit.updating(updates)
        var options = PlatformOptions()
        options.createSession = true
        options.teardownSequence = [.send(signal: .terminate, toProcessGroup: true, allowedDurationToNextStep: killGrace)]
        let platformOptions = options
        let messages = directory + "/messages"
        let status: String
        do {
            let result = try await Subprocess.run(
                executable, arguments: Arguments(Array(argv.dropFirst())), environment: environment,
                workingDirectory: FilePath(plan.workingDirectory), platformOptions: platformOptions,
                input: .none, output: .sequence, error: .sequence
            ) { execution in
                self.attached(execution.processIdentifier.value)
                enum Part: Sendable { case drained, other }
                await withTaskGroup(of: Part.self) { group in
                    group.addTask { try? await self.drain(execution.standardOutput); return .drained }
                    group.addTask { try? await self.drain(execution.standardError); return .drained }
                    group.addTask {
                        try? await MessageChannel.read(from: messages) { line in await self.received(line) }
                        return .other
                    }
                    group.addTask { await self.watch(); return .other }
                    var drained = 0
                    while let part = await group.next() {
                        if part == .drained { drained += 1 }
                        if drained == 2 { break }
                    }
                    group.cancelAll()
                }
            }
            status = switch result.terminationStatus {
            case .exited(let code): "it exited with status \(code)"
            case .signaled(let signal): "it was killed by signal \(signal)"
            }
        } catch {
            status = "it could not be started: \(error)"
        }
        if let pgid = processID { Glibc.kill(-pgid, SIGKILL) }
        exited(status)
    }

    private func attached(_ pid: Int32) {
        processID = pid
        lastHeard = .now
        logger.info("worker started", metadata: ["worker": "\(id)", "type": "\(type)", "pid": "\(pid)"])
    }

    private func drain(_ output: SubprocessOutputSequence) async throws {
        for try await chunk in output {
            let bytes = chunk.withUnsafeBytes { Array($0) }
            (currentSink ?? workerLog)?.write(bytes)
            if let observer = currentObserver { await observer.output(bytes) }
        }
    }

    private func exited(_ status: String) {
        let wasStarting = phase == .starting
        phase = .exited
        lastFailure = (wasStarting ? "the worker exited during setup: " : "") + status
        workerLog?.note("worker ended: \(status)")
        logger.info("worker ended", metadata: ["worker": "\(id)", "status": "\(status)"])
        if let waiter = readyWaiter {
            readyWaiter = nil
            waiter.resume(throwing: StartFailure(description: lastFailure!))
        }
        if currentJob != nil { endJob(.lost(status)) }
        for watcher in exitWatchers { watcher.finish() }
        exitWatchers = []
        if commandDescriptor >= 0 { close(commandDescriptor); commandDescriptor = -1 }
        let log = workerLog
        // unstructured: flushing the worker log must not hold up the exit bookkeeping.
        Task { await log?.close() }  // unstructured: a flush that must not delay the exit bookkeeping
    }

    private func received(_ line: [UInt8]) async {
        lastHeard = .now
        let message: WorkerMessage
        do { message = try WorkerMessage(line: line) } catch {
            (currentSink ?? workerLog)?.note("ignored a message on $SPOOL_MESSAGES: \(error)")
            return
        }
        let current = currentJob?.rawValue
        switch message {
        case .ready(let info):
            guard phase == .starting else { return }
            phase = .ready
            if let info { workerLog?.note("worker ready: \(info.canonicalText)") }
            readyWaiter?.resume()
            readyWaiter = nil
            Task { await self.sampleUsage(baseline: true) }  // unstructured: a one-off reading, off the ready path
        case .heartbeat, .unknown:
            return
        case .progress(let job, let progress, _) where job == current:
            await currentObserver?.message(.progress(progress))
        case .log(let job, let text) where job == current:
            let bytes = Array((text + "\n").utf8)
            currentSink?.write(bytes)
            await currentObserver?.output(bytes)
        case .output(let job, let name) where job == current:
            currentSink?.note("output: \(name)")
        case .succeeded(let job, let result) where job == current:
            endJob(.succeeded(result))
        case .failed(let job, let error) where job == current:
            endJob(.failed(error))
        default:
            workerLog?.note("ignored a message about a job that is not running: \(String(decoding: line, as: UTF8.self))")
        }
    }

    /// Heartbeat, idle timeout and memory readings, until the worker ends.
    private func watch() async {
        let heartbeat = Duration.milliseconds(Int64(policy.heartbeatSeconds * 1000))
        let tick = min(.milliseconds(500), heartbeat / 2)
        var sinceSample = Duration.zero
        while !Task.isCancelled, phase != .exited {
            try? await Task.sleep(for: tick)
            sinceSample += tick
            if sinceSample >= .milliseconds(500) {
                sinceSample = .zero
                await sampleUsage(baseline: false)
            }
            let now = ContinuousClock.now
            if (phase == .ready || phase == .busy), now - lastHeard > heartbeat * 3 {
                (currentSink ?? workerLog)?.note("the worker missed 3 heartbeats (\(heartbeat) apart): killing it")
                logger.warning("worker stopped answering; killing it", metadata: ["worker": "\(id)"])
                lastHeard = now
                await kill()
            }
            if phase == .ready, let idle = policy.idleTimeoutSeconds, now - idleSince > .milliseconds(Int64(idle * 1000)) {
                workerLog?.note("idle for \(idle) s: stopping the worker")
                idleSince = now
                await stop()
            }
        }
    }

    private func sampleUsage(baseline: Bool) async {
        guard let pgid = processID else { return }
        let tree = (try? await BlockingIO.run { ProcessTree.members(ofGroup: pgid) }) ?? []
        self.tree = tree
        usage.rssMegabytes = (try? await BlockingIO.run { ProcessTree.residentMegabytes(of: tree) }) ?? usage.rssMegabytes
        if gpu, baseline || Int.random(in: 0..<4) == 0 {
            let memory = await GPUProbe.processMemory()
            let vram = tree.compactMap { memory[$0] }.reduce(0, +)
            usage.vramMegabytes = vram
            if baseline { usage.vramBaselineMegabytes = vram }
        }
    }

    private func writeCommand(_ command: WorkerCommand) async {
        guard commandDescriptor >= 0 else { return }
        let bytes = Array(command.line.utf8)
        var offset = 0
        var spins = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { Glibc.write(commandDescriptor, $0.baseAddress, $0.count) }
            if written > 0 { offset += written; continue }
            // A full pipe means the worker is not reading; give it a moment, then give up.
            if errno == EAGAIN || errno == EINTR, spins < 10_000 {
                spins += 1
                try? await Task.sleep(for: .milliseconds(1))
                continue
            }
            logger.warning("could not write to the worker", metadata: ["worker": "\(id)", "errno": "\(errno)"])
            return
        }
    }
}
