import Glibc
import SpoolCore
import Synchronization

/// Process mode: each slot's next job, got ready while the slot's current job still runs — its
/// files, and its process started behind a gate (`ChildLaunch.gate`) — so that the slot goes
/// from one job to the next with a write to a pipe and an `exec` instead of file creations and a
/// whole spawn (0.8 ms of swift-subprocess set-up, thread hand-offs and `posix_spawn` in the gap
/// traces).
///
/// The gated process runs nothing of the job until its start opens the gate: it is a shell
/// reading a pipe, in its own process group, holding no GPU. The bookkeeping keeps three rules:
/// - one look-ahead per job: a second slot looking at the same job leaves it to the first;
/// - one per slot: a newer look-ahead for a slot replaces its older one, and a slot that goes
///   idle drops its own;
/// - never beside the job's start: a job that starts takes its entry (waiting for a look-ahead
///   still making its files), and a look-ahead for a job that has started does nothing, so no
///   file of a running job is ever made again under it.
/// A start takes its entry in `run` (`starting`, awaiting what is not in yet), or from the
/// scheduler's hand-over (`takeReady`, when the gated child and a fresh look at its executable
/// are both in; `run` then supervises what it let go, `begun`).
/// A server that dies leaves gated shells that read end-of-file and exit without running anything.
final class StartedAhead: Sendable {
    /// A gated child and what its start needs.
    struct Gated: Sendable {
        var launch: ChildLaunch
        /// The command's executable as it was found when the look-ahead started it.
        var executable: String
        var started: StartedChild
    }

    struct Entry: Sendable {
        var slot: SlotID
        /// The attempt the launch was made for (the job's next).
        var attempt: Int
        /// Makes the files and starts the gated child (nil when the job is not started ahead).
        var work: Task<Gated?, Never>
        /// Whether the gated child's executable is still there to run, looked at when the slot's
        /// latest process exited (`check`); nil until one did.
        var checked: Check?
        /// Tells this entry from a later one of the same job.
        var id: Int
        /// `work`'s answer, once it has come: a start can take it without awaiting (`startReady`).
        var ready: Gated?
    }

    /// A gated child let go by `startReady`, and the attempt and slot it was let go for.
    struct Begun: Sendable {
        var attempt: Int
        var slot: SlotID
        var started: StartedChild
    }

    /// A look at a gated child's executable, and when it began.
    struct Check: Sendable {
        var at: Moment
        var runnable: Task<Bool, Never>
        var id: Int
        /// `runnable`'s answer, once it has come.
        var answer: Bool?
    }

    private struct State {
        var entries: [JobID: Entry] = [:]
        /// Gated children whose gate `startReady` opened, for their job's `run` to supervise.
        var begun: [JobID: Begun] = [:]
        var nextID = 0
        /// Look-aheads being dropped (their gated child killed, their files possibly still being
        /// made): a start of their job waits until they are gone; a look-ahead for it does nothing.
        var dropping: [JobID: Task<Void, Never>] = [:]
        /// Jobs whose start has begun and not ended: no look-ahead for them.
        var starting: Set<JobID> = []
    }

    private let state = Mutex(State())

    /// Begins the look-ahead for `job` on `slot` with `work`, unless the job has started, is
    /// looked ahead at already (by another slot) or its look-ahead is being dropped; returns its
    /// task and the drops of the entries it replaces (the slot's older look-ahead), to await.
    func begin(_ job: JobID, on slot: SlotID, attempt: Int,
               _ work: @escaping @Sendable () async -> Gated?) -> (work: Task<Gated?, Never>, dropped: [Task<Void, Never>])? {
        state.withLock { state in
            guard !state.starting.contains(job), state.entries[job] == nil, state.dropping[job] == nil else { return nil }
            let dropped = drop(state.entries.filter { $0.value.slot == slot }, in: &state)
            state.nextID += 1
            let id = state.nextID
            let task = Task {   // unstructured: made under the lock, so a later start finds and awaits it
                let gated = await work()
                self.state.withLock { state in
                    if state.entries[job]?.id == id { state.entries[job]!.ready = gated }
                }
                return gated
            }
            state.entries[job] = Entry(slot: slot, attempt: attempt, work: task, id: id)
            return (task, dropped)
        }
    }

    /// The job starts: its look-ahead, if any, and the drop of one still under way (the start
    /// waits for it before it makes anything), or its gated child already let go by
    /// `startReady`; no new look-ahead for the job until `ended`.
    func starting(_ job: JobID) -> (entry: Entry?, dropping: Task<Void, Never>?, begun: Begun?) {
        state.withLock { state in
            state.starting.insert(job)
            return (state.entries.removeValue(forKey: job), state.dropping[job], state.begun.removeValue(forKey: job))
        }
    }

    /// `startReady`: takes `job`'s look-ahead when it is for `slot` and `attempt`, its gated
    /// child is there (`ready`), and its executable was looked at since `freshSince` and found
    /// fine — all known without waiting; `fits` says whether its launch is the start's. The job
    /// then counts as starting, until `taken` says how the gate went.
    func takeReady(_ job: JobID, on slot: SlotID, attempt: Int, freshSince: Moment, fits: (Gated) -> Bool) -> Entry? {
        state.withLock { state in
            guard !state.starting.contains(job), state.dropping[job] == nil, let entry = state.entries[job],
                  entry.slot == slot, entry.attempt == attempt, let gated = entry.ready,
                  let check = entry.checked, check.at > freshSince, check.answer == true, fits(gated) else { return nil }
            state.entries[job] = nil
            state.starting.insert(job)
            return entry
        }
    }

    /// The gate of `takeReady`'s child opened: the job's `run` supervises the child (and ends
    /// its starting). Not opened (its shell is gone; the gate cannot open again): it is dropped,
    /// and `run` waits for that before a plain start.
    func taken(_ job: JobID, _ entry: Entry, opened: Bool) {
        state.withLock { state in
            if opened, let started = entry.ready?.started {
                state.begun[job] = Begun(attempt: entry.attempt, slot: entry.slot, started: started)
            } else {
                state.starting.remove(job)
                _ = drop([job: entry], in: &state)
            }
        }
    }

    /// A process on `slot` exited (at `now`): the slot's look-ahead has its executable looked at
    /// now, while the slot's way to its next job (the sweep, the drain, the scheduler) goes on,
    /// instead of after it. Each exit looks again. The start takes the answer only while it is
    /// fresh (`ProcessJobExecutor.checkFreshFor`): the slot may start another job first and
    /// this one much later.
    func check(slot: SlotID, at now: Moment, _ runnable: @escaping @Sendable (Gated) async -> Bool) {
        state.withLock { state in
            guard let (job, entry) = state.entries.first(where: { $0.value.slot == slot }) else { return }
            let work = entry.work
            state.nextID += 1
            let id = state.nextID
            let task = Task {   // unstructured: the start that takes the entry awaits it
                guard let gated = await work.value else { return false }
                let answer = await runnable(gated)
                self.state.withLock { state in
                    if state.entries[job]?.checked?.id == id { state.entries[job]!.checked!.answer = answer }
                }
                return answer
            }
            state.entries[job]!.checked = Check(at: now, runnable: task, id: id)
        }
    }

    /// Nothing looked ahead at, being dropped, starting or let go (for tests).
    var isEmpty: Bool {
        state.withLock { $0.entries.isEmpty && $0.dropping.isEmpty && $0.starting.isEmpty && $0.begun.isEmpty }
    }

    /// The latest check of `slot`'s look-ahead (for tests).
    func check(of slot: SlotID) -> Check? {
        state.withLock { state in state.entries.values.first { $0.slot == slot }?.checked }
    }

    func ended(_ job: JobID) {
        _ = state.withLock { $0.starting.remove(job) }
    }

    /// Drops the look-aheads of `slot` (it went idle), or of every slot (shutdown); returns the
    /// drops, to await.
    func drop(slot: SlotID? = nil) -> [Task<Void, Never>] {
        state.withLock { state in drop(state.entries.filter { slot == nil || $0.value.slot == slot }, in: &state) }
    }

    private func drop(_ taken: [JobID: Entry], in state: inout State) -> [Task<Void, Never>] {
        taken.map { job, entry in
            state.entries[job] = nil
            let task = Task {   // unstructured: registered under the lock before it runs, so the job's start finds it
                await Self.discard(entry)
                self.state.withLock { _ = $0.dropping.removeValue(forKey: job) }
            }
            state.dropping[job] = task
            return task
        }
    }

    /// Kills a gated child that will not run (its gate never opened, so it ran nothing) and
    /// waits until it is reaped.
    static func discard(_ entry: Entry) async {
        guard let started = await entry.work.value?.started else { return }
        started.child.signal(SIGKILL)
        _ = await started.child.exit()
        await started.log.close()
    }
}

/// A job's process, started (gated or not), with its log and where its reports go.
struct StartedChild: Sendable {
    var child: any ChildProcess
    var log: LogSink
    var observer: ObserverBinding
}

/// Where a child's output and messages go once its attempt runs: set at the start, so a child
/// launched ahead (gated) reports to the attempt that opens its gate.
final class ObserverBinding: Sendable {
    private let deliveries = Mutex<ObserverDeliveries?>(nil)

    init(_ observer: ExecutionObserver? = nil) { deliveries.withLock { $0 = observer.map(ObserverDeliveries.init) } }

    func bind(_ observer: ExecutionObserver) { deliveries.withLock { $0 = ObserverDeliveries(observer) } }

    /// Where the child's output and messages go: to the observer by a task of their own, so
    /// the child's pipes are read on while the observer (the store) takes its time.
    var current: ObserverDeliveries? { deliveries.withLock { $0 } }
}

/// Finds the executable a job's command names, for a start ahead: only an absolute path or a
/// bare name looked up on `PATH`, only a regular executable file that is an ELF binary or starts
/// with `#!`. Anything else (missing, a directory, a relative path, a text file the kernel
/// cannot run) is not started ahead, so a plain start reports it as a spawn failure — a gated
/// shell could only turn it into an exit status, or run the text as a script.
public enum ExecutableLookup {
    /// Blocking (see `runnable`).
    static func find(_ argv0: String, path: String?) -> String? {
        if argv0.hasPrefix("/") { return runnable(argv0) ? argv0 : nil }
        // Only what the shell's own search would find first: every directory absolute (an empty
        // one means the working directory), the first executable file the answer.
        guard !argv0.contains("/"), let path else { return nil }
        let directories = path.split(separator: ":", omittingEmptySubsequences: false)
        guard directories.allSatisfy({ $0.hasPrefix("/") }) else { return nil }
        for directory in directories {
            let candidate = "\(directory)/\(argv0)"
            if isExecutableFile(candidate) { return runnable(candidate) ? candidate : nil }
        }
        return nil
    }

    /// A regular file this process may execute (blocking: a stat and an access).
    public static func isExecutableFile(_ path: String) -> Bool {
        var status = stat()
        return stat(path, &status) == 0 && status.st_mode & S_IFMT == S_IFREG && access(path, X_OK) == 0
    }

    /// Blocking (a stat, an access and a read of four bytes): call it on the blocking pool.
    static func runnable(_ file: String) -> Bool {
        guard isExecutableFile(file) else { return false }
        let descriptor = open(file, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var head: [UInt8] = [0, 0, 0, 0]
        let count = head.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, 4) }
        return (count >= 2 && head[0] == UInt8(ascii: "#") && head[1] == UInt8(ascii: "!"))
            || (count == 4 && head == [0x7F, UInt8(ascii: "E"), UInt8(ascii: "L"), UInt8(ascii: "F")])
    }
}
