import Glibc
import SpoolCore
import Synchronization

/// Process mode: each slot's next job, started ahead behind a gate (`ChildLaunch.gate`) while
/// the slot's current job still runs, so that the slot goes from one job to the next with a
/// write to a FIFO and an `exec` instead of a whole spawn (0.8 ms of swift-subprocess set-up,
/// thread hand-offs and `posix_spawn` in the gap traces).
///
/// The gated process runs nothing of the job until its start opens the gate: it is a shell
/// waiting on the FIFO, in its own process group, holding no GPU. One per slot: a newer
/// look-ahead for the slot replaces an older one, and a job that starts on another slot, or
/// with another launch than the one prepared, has its gated process killed. A server that dies
/// leaves gated shells that read end-of-file and exit without running anything.
final class StartedAhead: Sendable {
    /// A gated child and what its start needs.
    struct Gated: Sendable {
        var launch: ChildLaunch
        var child: any ChildProcess
        var log: LogSink
        var observer: ObserverBinding
    }

    struct Entry: Sendable {
        var slot: SlotID
        /// The attempt the launch was made for (the job's next).
        var attempt: Int
        var start: Task<Gated?, Never>
    }

    private let entries = Mutex([JobID: Entry]())

    /// Records the start of `job` ahead on `entry.slot`; returns the entries it replaces (the
    /// slot's older look-aheads, an older start of the same job), which the caller discards.
    func register(_ job: JobID, _ entry: Entry) -> [Entry] {
        entries.withLock { entries in
            let replaced = entries.filter { $0.key == job || $0.value.slot == entry.slot }
            for id in replaced.keys { entries[id] = nil }
            entries[job] = entry
            return Array(replaced.values)
        }
    }

    func take(_ job: JobID) -> Entry? { entries.withLock { $0.removeValue(forKey: job) } }

    func takeAll() -> [Entry] {
        entries.withLock { entries in
            defer { entries = [:] }
            return Array(entries.values)
        }
    }

    /// Kills a gated child that will not run (its gate never opened, so it ran nothing) and
    /// waits until it is reaped.
    static func discard(_ entry: Entry) async {
        guard let gated = await entry.start.value else { return }
        gated.child.signal(SIGKILL)
        _ = await gated.child.exit()
        await gated.log.close()
    }
}

/// Where a child's output and messages go once its attempt runs: set at the start, so a child
/// launched ahead (gated) reports to the attempt that opens its gate.
final class ObserverBinding: Sendable {
    private let observer = Mutex<ExecutionObserver?>(nil)

    init(_ observer: ExecutionObserver? = nil) { self.observer.withLock { $0 = observer } }

    func bind(_ observer: ExecutionObserver) { self.observer.withLock { $0 = observer } }

    var current: ExecutionObserver? { observer.withLock { $0 } }
}

/// Whether `argv0` names an executable the child could run (with `PATH` for a bare name), so
/// that a job is started ahead only when its command will be found: a missing executable is
/// reported by a plain start as a spawn failure, which a gated shell could only turn into an
/// exit status.
enum ExecutableLookup {
    static func runnable(_ argv0: String, path: String?) -> Bool {
        if argv0.contains("/") { return access(argv0, X_OK) == 0 }
        guard let path else { return false }
        return path.split(separator: ":").contains { directory in
            !directory.isEmpty && access("\(directory)/\(argv0)", X_OK) == 0
        }
    }
}
