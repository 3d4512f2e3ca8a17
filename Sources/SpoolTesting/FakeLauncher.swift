import Glibc
import SpoolCore
import SpoolExecutor
import Synchronization

/// A `ChildLauncher` that starts scripted children instead of processes: the executors'
/// supervision (timeouts, stops, escalation, the worker lifecycle) runs for real against them,
/// on a manual clock. Each launch shows up on `children`.
public final class FakeLauncher: ChildLauncher {
    public let children: AsyncStream<FakeChild>
    private let launched: AsyncStream<FakeChild>.Continuation
    private let state = Mutex(State())

    struct State {
        var nextPID: Int32 = 4_000_000
        var failures: [(message: String, errno: Int32?)] = []
        var behaviour: FakeChild.Behaviour = .init()
        var launches: [ChildLaunch] = []
    }

    public init(behaviour: FakeChild.Behaviour = .init()) {
        (children, launched) = AsyncStream<FakeChild>.makeStream()
        state.withLock { $0.behaviour = behaviour }
    }

    /// The next launch fails with `message` (a missing executable, say), for the system error
    /// `errno` if given (EAGAIN: the server out of processes).
    public func failNextLaunch(_ message: String, errno: Int32? = nil) { state.withLock { $0.failures.append((message, errno)) } }

    /// How children launched from now on behave.
    public func setBehaviour(_ behaviour: FakeChild.Behaviour) { state.withLock { $0.behaviour = behaviour } }

    /// Every launch so far.
    public var launches: [ChildLaunch] { state.withLock { $0.launches } }

    public func launch(_ launch: ChildLaunch, events: ChildEvents) async throws(ExecutorError) -> any ChildProcess {
        // A fake child has no shell to wait behind a gate: refused, so the start is a plain one.
        if launch.gate { throw ExecutorError("the fake launcher starts no gated children") }
        let (pid, failure, behaviour) = state.withLock { state -> (Int32, (message: String, errno: Int32?)?, FakeChild.Behaviour) in
            state.launches.append(launch)
            state.nextPID += 1
            return (state.nextPID, state.failures.isEmpty ? nil : state.failures.removeFirst(), state.behaviour)
        }
        if let failure { throw failure.errno.map { ExecutorError(failure.message, errno: $0) } ?? ExecutorError(failure.message) }
        let child = FakeChild(pid: pid, launch: launch, events: events, behaviour: behaviour)
        launched.yield(child)
        await child.started()
        return child
    }
}

/// A child process played by the test (or by a `Behaviour`): it exits when told, answers
/// signals as a real process would, and can speak the worker protocol.
public final class FakeChild: ChildProcess {
    public struct Behaviour: Sendable {
        /// Exits on SIGTERM (else only SIGKILL ends it).
        public var exitsOnTerminate = true
        /// Speaks the worker protocol: says `ready` at once, exits on `shutdown`, and answers
        /// `job` commands with `succeeded` when `answersJobs`.
        public var isWorker = false
        public var answersJobs = false
        /// A worker that exits when told to shut down (a hung one does not).
        public var obeysShutdown = true
        /// Its output takes fences (`fenceOutput`), which come through only when the test passes
        /// them on (from `fences`, with `print(bytes:)`), as a pipe would deliver them later.
        public var fencesOutput = false
        /// Reads its command channel (else what is sent stays unread, as after `closeCommands`).
        public var readsCommands = true
        public init(exitsOnTerminate: Bool = true, isWorker: Bool = false, answersJobs: Bool = false, obeysShutdown: Bool = true,
                    fencesOutput: Bool = false, readsCommands: Bool = true) {
            self.exitsOnTerminate = exitsOnTerminate
            self.isWorker = isWorker
            self.answersJobs = answersJobs
            self.obeysShutdown = obeysShutdown
            self.fencesOutput = fencesOutput
            self.readsCommands = readsCommands
        }
    }

    public let pid: Int32
    public let launch: ChildLaunch
    private let events: ChildEvents
    private let behaviour: Behaviour
    private let state = Mutex(State())
    /// Command lines the child received, in order.
    public let commands: AsyncStream<String>
    private let commandSink: AsyncStream<String>.Continuation
    /// The fences the server wrote into its output, in order; the test prints them (whole, split,
    /// or among other bytes) where the output should carry them.
    public let fences: AsyncStream<[UInt8]>
    private let fenceSink: AsyncStream<[UInt8]>.Continuation

    struct State {
        var status: ChildExit?
        var waiters: [CheckedContinuation<ChildExit, Never>] = []
        var signals: [Int32] = []
        var rss: Double? = 100
        var gpu: Double?
        /// GPU readings wait until released (a `nvidia-smi` that takes its time).
        var holdsGPUReadings = false
        var heldGPUReadings: [(id: Int, continuation: CheckedContinuation<Void, Never>)] = []
        var gpuReadingsStarted = 0
        /// Held readings whose task was cancelled (an `nvidia-smi` killed): they end with no answer.
        var gpuReadingsCancelled: Set<Int> = []
        /// How many fences were written into its output.
        var fencesWritten = 0
        /// It closed its end of the command channel: what is sent stays in the pipe, unread
        /// (the server holds the channel open read-write, so the write itself goes through).
        var commandsClosed = false
        var unreadCommandBytes = 0
    }

    init(pid: Int32, launch: ChildLaunch, events: ChildEvents, behaviour: Behaviour) {
        self.pid = pid
        self.launch = launch
        self.events = events
        self.behaviour = behaviour
        if !behaviour.readsCommands { state.withLock { $0.commandsClosed = true } }
        (commands, commandSink) = AsyncStream<String>.makeStream()
        (fences, fenceSink) = AsyncStream<[UInt8]>.makeStream()
    }

    func started() async {
        if behaviour.isWorker { await say(["type": .string("ready")]) }
    }

    /// Signals received, in order.
    public var signals: [Int32] { state.withLock { $0.signals } }
    public var hasExited: Bool { state.withLock { $0.status != nil } }

    public func setMemory(rss: Double?, gpu: Double? = nil) { state.withLock { $0.rss = rss; $0.gpu = gpu } }

    /// Closes its end of the command channel (`SPOOL_COMMANDS`) and goes on running: what is
    /// sent from now on stays unread.
    public func closeCommands() { state.withLock { $0.commandsClosed = true } }

    public func unreadCommandBytes() -> Int { state.withLock { $0.unreadCommandBytes } }

    /// Writes to its stdout.
    public func print(_ text: String) async { await events.output(Array(text.utf8)) }
    public func print(bytes: [UInt8]) async { await events.output(bytes) }

    /// Writes a message line (a JSON object) to its message FIFO.
    public func say(_ message: [String: JSONValue]) async {
        await events.message(Array(JSONValue.object(message).canonicalText.utf8))
    }

    /// The worker reports a job done.
    public func succeed(_ job: JobID, result: JSONValue = .object([:])) async {
        await say(["type": .string("succeeded"), "job": .string(job.rawValue), "result": result])
    }

    /// Ends the child with this status (later calls do nothing).
    public func exit(with status: ChildExit) {
        let waiters = state.withLock { state -> [CheckedContinuation<ChildExit, Never>] in
            guard state.status == nil else { return [] }
            state.status = status
            defer { state.waiters = [] }
            return state.waiters
        }
        commandSink.finish()
        for waiter in waiters { waiter.resume(returning: status) }
    }

    public func signal(_ signal: Int32) {
        let alive = state.withLock { state -> Bool in
            guard state.status == nil else { return false }
            state.signals.append(signal)
            return true
        }
        guard alive else { return }
        if signal == SIGKILL || (signal == SIGTERM && behaviour.exitsOnTerminate) { exit(with: .signaled(signal)) }
    }

    public func send(_ line: String) async -> Bool {
        guard !hasExited else { return false }
        let unread = state.withLock { state in
            if state.commandsClosed { state.unreadCommandBytes += line.utf8.count }
            return state.commandsClosed
        }
        guard !unread else { return true }
        commandSink.yield(line)
        guard behaviour.isWorker, let command = try? JSONParser.parse(Array(line.utf8)) else { return true }
        switch command["type"]?.stringValue {
        case "shutdown" where behaviour.obeysShutdown: exit(with: .exited(0))
        case "job" where behaviour.answersJobs:
            if let id = command["job"]?.stringValue.flatMap(JobID.init) { await succeed(id, result: .object(["pid": .int(Int64(pid))])) }
        default: break
        }
        return true
    }

    public func fenceOutput() -> [UInt8]? {
        guard behaviour.fencesOutput else { return nil }
        let marker = state.withLock { state in
            state.fencesWritten += 1
            return Array("\u{0}fake-fence-\(state.fencesWritten)\u{0}".utf8)
        }
        fenceSink.yield(marker)
        return marker
    }

    /// How many fences the server wrote into its output.
    public var fencesWritten: Int { state.withLock { $0.fencesWritten } }

    public func exit() async -> ChildExit {
        await withCheckedContinuation { continuation in
            let status = state.withLock { state -> ChildExit? in
                if let status = state.status { return status }
                state.waiters.append(continuation)
                return nil
            }
            if let status { continuation.resume(returning: status) }
        }
    }

    public func residentMegabytes() async -> Double? { state.withLock { $0.rss } }
    public func gpuMegabytes() async -> Double? {
        let id = state.withLock { state in
            state.gpuReadingsStarted += 1
            return state.gpuReadingsStarted
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let held = state.withLock { state in
                    let hold = state.holdsGPUReadings && !state.gpuReadingsCancelled.contains(id)
                    if hold { state.heldGPUReadings.append((id, continuation)) }
                    return hold
                }
                if !held { continuation.resume() }
            }
        } onCancel: {
            let held = state.withLock { state in
                state.gpuReadingsCancelled.insert(id)
                guard let index = state.heldGPUReadings.firstIndex(where: { $0.id == id }) else { return nil as CheckedContinuation<Void, Never>? }
                return state.heldGPUReadings.remove(at: index).continuation
            }
            held?.resume()
        }
        return state.withLock { $0.gpuReadingsCancelled.contains(id) ? nil : $0.gpu }
    }

    /// Held GPU readings whose task was cancelled.
    public var gpuReadingsCancelled: Int { state.withLock { $0.gpuReadingsCancelled.count } }

    /// GPU readings from now on wait until `releaseGPUReadings` (a slow `nvidia-smi`).
    public func holdGPUReadings() { state.withLock { $0.holdsGPUReadings = true } }
    /// GPU readings waiting now.
    public var gpuReadingsHeld: Int { state.withLock { $0.heldGPUReadings.count } }
    /// Lets every GPU reading go on, now and from now on.
    public func releaseGPUReadings() {
        let held = state.withLock { state in
            state.holdsGPUReadings = false
            defer { state.heldGPUReadings = [] }
            return state.heldGPUReadings
        }
        for reading in held { reading.continuation.resume() }
    }
}
