import SpoolCore
import Synchronization

/// Wakes waiters (`GET /v1/jobs/{id}?wait=`) when a job changes. Stores call `publish`
/// after a change commits; a waiter subscribes before it reads, then waits.
///
/// A wait's time limit is kept by one timer for all the waits of this notifier
/// (`WaitDeadlines`), not by a `Task.sleep` raced against each wait: a cancelled sleep stays
/// scheduled, about 700 bytes, until its deadline, and every progress report woke every long
/// poll on its job, each leaving one behind for up to a minute (see `EventNotifier`).
public final class JobChangeNotifier: Sendable {
    private struct Watches {
        var nextToken = 0
        /// Each watch's delivery, holding it weakly: a watch unregisters as it goes.
        var byJob: [JobID: [Int: @Sendable (JobWatch.Change) -> Void]] = [:]
    }

    private let watches = Mutex(Watches())
    private let deadlines = WaitDeadlines()

    public init() {}

    public func watch(_ id: JobID) -> JobWatch {
        let token = watches.withLock { state in
            state.nextToken += 1
            return state.nextToken
        }
        let watch = JobWatch(deadlines: deadlines) { [weak self] in
            self?.watches.withLock { state in
                state.byJob[id]?[token] = nil
                if state.byJob[id]?.isEmpty == true { state.byJob[id] = nil }
            }
        }
        let deliver: @Sendable (JobWatch.Change) -> Void = { [weak watch] change in watch?.deliver(change) }
        watches.withLock { state in state.byJob[id, default: [:]][token] = deliver }
        return watch
    }

    /// Wait deadlines not yet due nor removed (for tests).
    var deadlinesWaiting: Int { deadlines.count }
    /// Watches registered on `id` (for tests).
    func watching(_ id: JobID) -> Int { watches.withLock { $0.byJob[id]?.count ?? 0 } }

    public func publish(_ id: JobID) { deliver(.changed, to: id) }

    public func publish(_ ids: some Sequence<JobID>) {
        for id in ids { publish(id) }
    }

    /// After a change that left `job` as it is now: a job that has ended goes with the wake-up
    /// (it changes no more, so the waiter need not read it again); any other state is only a wake-up
    /// (a later change may be published first).
    public func publish(_ job: Job) { deliver(job.state.isTerminal ? .ended(job) : .changed, to: job.id) }

    private func deliver(_ change: JobWatch.Change, to id: JobID) {
        let targets = watches.withLock { state in state.byJob[id].map { Array($0.values) } ?? [] }
        for deliver in targets { deliver(change) }
    }
}

/// One subscription to a job's changes: what comes between two waits is kept (the newest, an
/// end over a plain change). Unregisters when it is deinitialised.
public final class JobWatch: Sendable {
    /// What a wake-up says.
    public enum Change: Sendable {
        /// The job ended: this is it, as stored.
        case ended(Job)
        /// It changed: read it.
        case changed
    }

    private struct State {
        var pending: Change?
        var waiter: CheckedContinuation<Change?, Never>?
        /// Which wait `waiter` is (a deadline that comes for an earlier one does nothing), and
        /// its entry in `deadlines`.
        var wait = 0
        var deadline: Int?
        var ended = false

        /// The waiter, taken, with the deadline entry it leaves.
        mutating func takeWaiter() -> (CheckedContinuation<Change?, Never>, Int?)? {
            guard let waiter = waiter.take() else { return nil }
            return (waiter, deadline.take())
        }
    }

    private let state = Mutex(State())
    private let deadlines: WaitDeadlines
    private let unregister: @Sendable () -> Void

    init(deadlines: WaitDeadlines, unregister: @escaping @Sendable () -> Void) {
        self.deadlines = deadlines
        self.unregister = unregister
    }

    deinit { unregister() }

    /// A wait is in progress, its deadline set (for tests).
    var isWaiting: Bool { state.withLock { $0.waiter != nil && $0.deadline != nil } }

    /// Ends the watch (the server is shutting down): a wait in progress, and every later one,
    /// returns nil at once.
    public func end() {
        let taken = state.withLock { state in
            state.ended = true
            return state.takeWaiter()
        }
        resume(taken, with: nil)
    }

    /// Whether `end()` was called.
    public var hasEnded: Bool { state.withLock { $0.ended } }

    /// Returns true when the job changed within `timeout`, false when the time ran out.
    public func next(timeout: Duration) async -> Bool { await nextChange(timeout: timeout) != nil }

    /// The job's next change within `timeout` (nil when the time ran out, the watch ended, or
    /// the task was cancelled).
    public func nextChange(timeout: Duration) async -> Change? {
        let deadline = ContinuousClock.now + timeout
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Change?, Never>) in
                let (answer, wait) = state.withLock { state -> (Change??, Int) in
                    if let pending = state.pending.take() { return (pending, 0) }
                    // Checked under the lock `onCancel` takes: a cancellation is seen here or there.
                    if state.ended || Task.isCancelled || timeout <= .zero { return (.some(nil), 0) }
                    state.wait += 1
                    state.waiter = continuation
                    return (nil, state.wait)
                }
                if let answer { return continuation.resume(returning: answer) }
                let entry = deadlines.add(at: deadline) { [weak self] in self?.expire(wait) }
                // Still this wait's (it may have been answered meanwhile): its entry goes with it.
                let stale = state.withLock { state -> Bool in
                    guard state.wait == wait, state.waiter != nil else { return true }
                    state.deadline = entry
                    return false
                }
                if stale { deadlines.remove(entry) }
            }
        } onCancel: {
            resume(state.withLock { $0.takeWaiter() }, with: nil)
        }
    }

    fileprivate func deliver(_ change: Change) {
        let taken = state.withLock { state -> (CheckedContinuation<Change?, Never>, Int?)? in
            if let taken = state.takeWaiter() { return taken }
            if case .ended = state.pending { return nil }   // an end is kept over a later plain change
            state.pending = change
            return nil
        }
        resume(taken, with: change)
    }

    private func expire(_ wait: Int) {
        let taken = state.withLock { state in state.wait == wait ? state.takeWaiter() : nil }
        resume(taken, with: nil)
    }

    private func resume(_ taken: (CheckedContinuation<Change?, Never>, Int?)?, with change: Change?) {
        guard let (waiter, entry) = taken else { return }
        if let entry { deadlines.remove(entry) }
        waiter.resume(returning: change)
    }
}

/// Deadlines of many waits, kept by one timer task: it sleeps until the earliest, runs what is
/// due, and ends when none is left. A wait that ends early removes its entry; no sleep of its
/// own stays scheduled.
final class WaitDeadlines: Sendable {
    private struct State {
        var due: [Int: (at: ContinuousClock.Instant, action: @Sendable () -> Void)] = [:]
        var entries = 0
        /// The timer task running now, and when it wakes next.
        var timer: (id: Int, at: ContinuousClock.Instant)?
        var timers = 0
    }

    private let state = Mutex(State())

    /// Runs `action` at `deadline` unless `remove`d first; returns its entry.
    func add(at deadline: ContinuousClock.Instant, _ action: @escaping @Sendable () -> Void) -> Int {
        let (entry, start) = state.withLock { state -> (Int, Int?) in
            state.entries += 1
            state.due[state.entries] = (deadline, action)
            if let timer = state.timer, timer.at <= deadline { return (state.entries, nil) }
            state.timers += 1
            state.timer = (state.timers, deadline)
            return (state.entries, state.timers)
        }
        // unstructured: the one timer of these waits, never cancelled (a cancelled sleep would
        // stay scheduled, the cost this replaces); a later, earlier deadline starts another and
        // this one ends at its next wake.
        if let start { Task { await self.run(id: start, at: deadline) } }   // unstructured: see above
        return entry
    }

    func remove(_ entry: Int) { state.withLock { _ = $0.due.removeValue(forKey: entry) } }

    /// Entries not yet due nor removed (for tests).
    var count: Int { state.withLock { $0.due.count } }

    private func run(id: Int, at first: ContinuousClock.Instant) async {
        var at = first
        while true {
            try? await Task.sleep(until: at, clock: .continuous)
            let (due, next) = state.withLock { state -> ([@Sendable () -> Void], ContinuousClock.Instant?) in
                let now = ContinuousClock.now
                let keys = state.due.compactMap { $0.value.at <= now ? $0.key : nil }
                let due = keys.compactMap { state.due.removeValue(forKey: $0)?.action }
                guard state.timer?.id == id else { return (due, nil) }
                let earliest = state.due.values.lazy.map(\.at).min()
                state.timer = earliest.map { (id, $0) }
                return (due, earliest)
            }
            for action in due { action() }
            guard let next else { return }
            at = next
        }
    }
}
