import Glibc
import NIOPosix
import Synchronization

/// A child's process group through a stop: from the SIGTERM that asks it to stop, the whole group
/// has the kill grace, whether or not the leader outlives it; a SIGKILL (the stop forced) or the
/// grace's end closes it. Signals reach the group until the supervision has settled it.
final class GroupStop: Sendable {
    private struct State {
        var askedAt: ContinuousClock.Instant?
        var forced = false
        var settled = false
    }

    private let state = Mutex(State())

    /// Whether `signal` may go to the group now (noted: a first SIGTERM starts the grace, a SIGKILL ends it).
    func takes(_ signal: Int32) -> Bool {
        state.withLock { state in
            guard !state.settled else { return false }
            if signal == SIGTERM, state.askedAt == nil { state.askedAt = .now }
            if signal == SIGKILL { state.forced = true }
            return true
        }
    }

    /// Once the leader `pid` is reaped: while a stop's grace runs, waits until its group is empty,
    /// the stop is forced, or `killGrace` from the SIGTERM has passed (the stop's own SIGKILL
    /// runs on the scheduler's clock; this bound holds whatever that clock does).
    func graceForGroup(_ pid: Int32, killGrace: Duration) async {
        guard let askedAt = state.withLock({ $0.forced ? nil : $0.askedAt }) else { return }
        var pause = Duration.milliseconds(1)
        var looked: ContinuousClock.Instant?
        while ContinuousClock.now < askedAt + killGrace, !state.withLock(\.forced), kill(-pid, 0) == 0 {
            // `kill` counts zombies too, which nothing reaps where the server is a container's PID 1
            // (found in review): a look at /proc for a live member, four times a second at most
            // (one each poll kept the blocking pool busy when many stops waited at once).
            if looked.map({ ContinuousClock.now - $0 >= .milliseconds(250) }) ?? true {
                looked = .now
                let live = (try? await Self.looker.runIfActive { ProcessTree.members(ofGroup: pid).contains(where: OrphanReaper.isRunning) }) ?? false
                if !live { return }
            }
            guard (try? await Task.sleep(for: pause)) != nil else { return }   // the supervision torn down
            pause = min(pause * 2, .milliseconds(20))
        }
    }

    /// A thread of its own for those looks: a stopped job's end never waits behind other blocking
    /// work (a full blocking pool held one for 16 s in a test run).
    private static let looker: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        return pool
    }()

    /// Makes the looker's thread now (`BlockingIO.startPools`).
    static func startLooker() async { _ = try? await looker.runIfActive {} }

    /// The group was killed for good: no more signals to its id, which may be another's soon.
    func settle() { state.withLock { $0.settled = true } }
}
