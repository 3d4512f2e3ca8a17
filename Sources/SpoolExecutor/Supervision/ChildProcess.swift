import SpoolCore

/// The supervision core's view of one child process — a job's process, or a warm worker —
/// whatever starts it. `SubprocessLauncher` starts real ones; tests start scripted fakes.
///
/// A launcher's guarantees, which both modes build on:
/// - the child leads its own session and process group, so it is signalled as one;
/// - its environment is the server's minus every `SPOOL_*` setting, plus the launch's variables;
/// - stdout and stderr are drained as they come (a chatty child never stalls on a full pipe),
///   through one pipe, so their lines keep their order; with `fencedOutput` the server can put
///   fences in it;
/// - message lines are read from its FIFO from before the spawn until end-of-file after it
///   is gone, so the last thing it wrote before exiting is delivered;
/// - once it has exited, nothing it started is left: its process group is killed, and so is
///   every process that left the group but carries its `marker` in its environment — during a
///   stop (a SIGTERM sent), once the rest of the group has had the stop's kill grace.
public protocol ChildLauncher: Sendable {
    /// Starts the child; returns once it runs. Throws when it cannot be started.
    func launch(_ launch: ChildLaunch, events: ChildEvents) async throws(ExecutorError) -> any ChildProcess
}

public protocol ChildProcess: Sendable {
    /// The process id, which is also its process group id.
    var pid: Int32 { get }
    /// Sends `signal` to the whole process group (a no-op once the child and its group are gone).
    func signal(_ signal: Int32)
    /// Writes a line to the child's command channel; false when it could not.
    func send(_ line: String) async -> Bool
    /// Writes a line to the command channel now, without waiting, if the pipe has room for all
    /// of it (nearly always); false when the line must go through `send` instead.
    func sendNow(_ line: String) -> Bool
    /// Lets a child started with a `gate` run its command; false when it cannot (it has no gate,
    /// the gate is open already, or the child is gone).
    func openGate() -> Bool
    /// Writes a fresh marker into the child's output behind everything it wrote so far, and
    /// returns it; the marker comes back through `ChildEvents.output` after those bytes (see
    /// `OutputPipe`). Nil when the child's output takes no fences (launched without
    /// `fencedOutput`, or the pipe is full or gone).
    func fenceOutput() -> [UInt8]?
    /// Waits until the child has exited and everything above is done: output and messages
    /// drained, leftovers killed. A cancelled wait kills the child's group.
    func exit() async -> ChildExit
    /// Resident memory of the child's process group, in MiB.
    func residentMegabytes() async -> Double?
    /// GPU memory of the child's process group, in MiB (nil without a GPU).
    func gpuMegabytes() async -> Double?
    /// Bytes written to its command channel that it has not read yet.
    func unreadCommandBytes() -> Int
}

extension ChildProcess {
    /// Writes nothing now: every line goes through `send` (children with no faster way).
    public func sendNow(_ line: String) -> Bool { false }
    /// No gate: the child runs its command from the start.
    public func openGate() -> Bool { false }
    /// No fences: output is handed on as it comes.
    public func fenceOutput() -> [UInt8]? { nil }
    /// No command channel to look into.
    public func unreadCommandBytes() -> Int { 0 }
}

/// What to start.
public struct ChildLaunch: Sendable, Equatable {
    public var argv: [String]
    /// The launch's own variables, added to the server's environment (less its `SPOOL_*` settings).
    public var environment: [String: String]
    public var workingDirectory: String
    /// A file to read as stdin; /dev/null when nil.
    public var stdin: String?
    /// The FIFO the child writes message lines to (created by the launcher, unless `messagesMade`).
    public var messages: String?
    /// `messages` was made fresh by the caller (a job's files, prepared while the slot's previous
    /// job ran): the launcher opens it instead of replacing it, which saves a file creation.
    public var messagesMade: Bool
    /// The FIFO the child reads command lines from (created by the launcher; warm workers).
    public var commands: String?
    /// Start the process now, run `argv` later (a job started ahead, while its slot's previous
    /// job still runs): the launcher starts `/bin/sh` reading a socket from the server as its stdin, which runs
    /// nothing until `openGate` (then it `exec`s `argv`, same pid, with `stdin` as its stdin),
    /// and exits without running anything if the server goes away first (the socket reads
    /// end-of-file).
    public var gate: Bool
    /// `NAME=value`, found in the environment of every process the child starts: how the
    /// processes that left its group are found once it is gone.
    public var marker: String
    /// SIGTERM → SIGKILL grace if the server itself tears the child down.
    public var killGrace: Duration
    /// The child's output pipe takes fences (`ChildProcess.fenceOutput`): a warm worker's end of
    /// a job is placed in its output.
    public var fencedOutput: Bool

    public init(argv: [String], environment: [String: String], workingDirectory: String, stdin: String? = nil,
                messages: String? = nil, messagesMade: Bool = false, commands: String? = nil, gate: Bool = false,
                marker: String, killGrace: Duration, fencedOutput: Bool = false) {
        self.argv = argv
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.stdin = stdin
        self.messages = messages
        self.messagesMade = messagesMade
        self.commands = commands
        self.gate = gate
        self.marker = marker
        self.killGrace = killGrace
        self.fencedOutput = fencedOutput
    }
}

/// Where a child's output and messages go.
public struct ChildEvents: Sendable {
    /// A chunk of stdout or stderr.
    public var output: @Sendable ([UInt8]) async -> Void
    /// One line from the message FIFO, without its newline (at most 4 KiB; longer ones are dropped).
    public var message: @Sendable ([UInt8]) async -> Void
    /// The child has exited and is reaped (its leftovers are being killed and its pipes drained;
    /// `ChildProcess.exit` returns after that). Called once, before `exit` returns; not for a
    /// child that could not be started, nor for a gated one whose gate never opened.
    public var exited: @Sendable () -> Void

    public init(output: @escaping @Sendable ([UInt8]) async -> Void, message: @escaping @Sendable ([UInt8]) async -> Void,
                exited: @escaping @Sendable () -> Void = {}) {
        self.output = output
        self.message = message
        self.exited = exited
    }
}

public enum ChildExit: Sendable, Equatable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)

    public var attemptEnd: AttemptEnd {
        switch self {
        case .exited(let code): .exited(code: code)
        case .signaled(let signal): .signaled(signal: signal)
        }
    }

    public var description: String {
        switch self {
        case .exited(let code): "it exited with status \(code)"
        case .signaled(let signal): "it was killed by signal \(signal)"
        }
    }
}
