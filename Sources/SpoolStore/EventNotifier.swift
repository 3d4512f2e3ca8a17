import SpoolCore
import Synchronization

/// Tells event readers (SSE streams, the webhook deliverer) that events past a given id
/// exist, and — while an event stream is open — keeps the newest ones in memory so that many
/// readers of the same events (500 dashboards) do not each query the database. With none open
/// it keeps none: 4,096 events held for nobody were 5 MB of a server taking submits. Stores
/// call `published` after committing; readers wait for more than what they have seen, then
/// take `recent(after:)` — which answers only when it holds an unbroken run of ids, so a
/// reader never skips an event — or fall back to the store. A reader that falls behind loses
/// nothing.
///
/// Waits are continuations in one table, and one timer task (`sweep`) ends those whose time
/// is up. Each wait once raced an event against its own `Task.sleep(for: timeout)` and
/// cancelled the loser; but a cancelled sleep stays scheduled, about 700 bytes, until its
/// deadline. 500 streams woken by every event, each leaving a 15 s keep-alive sleep behind,
/// held hundreds of thousands of them: the server's RSS rose from 65 to 377 MB in 20 s of
/// `Benchmarks/events_bench.py` and did not come down.
///
/// The memory holds each event with its SSE frame (`EventFrame`), encoded once, by the first
/// reader that needs it: 500 streams share those bytes instead of each encoding every event
/// again, and an event nobody streams is never encoded.
public final class EventNotifier: Sendable {
    public static let memoryCapacity = 4096
    /// And at most about this many bytes of events (`EventFrame.weight`; held twice once
    /// encoded), the newest always: a job's log lines are up to 16 KiB each, and 4,096 of them
    /// (8,192 before a compaction) held for one open stream were about 250 MB (found by
    /// attacking the build).
    public static let memoryBytes = 8 << 20

    private struct Waiter {
        var after: Int64
        var deadline: ContinuousClock.Instant
        var continuation: CheckedContinuation<Bool, Never>
    }

    private struct State {
        /// The newest events in id order: `ring[start...]`, at most `memoryCapacity` of them
        /// (the dropped prefix is compacted away in bulk, so a publish is not a 4096-element shift).
        var ring: [EventFrame] = []
        var start = 0
        /// The weights of `memory`'s frames, summed.
        var bytes = 0
        var latest: Int64 = 0
        var waiters: [Int: Waiter] = [:]
        /// The timer task that will end the earliest wait, and when it wakes.
        var sweeper: (id: Int, at: ContinuousClock.Instant)?
        /// Set for good by `stopWaiting()` (the server is shutting down): waits return at once.
        var stopped = false
        var nextSweeper = 0

        var memory: ArraySlice<EventFrame> { ring[start...] }
    }

    private let state = Mutex(State())
    private let nextWaiter = Atomic<Int>(0)
    private let readerCount = Atomic<Int>(0)

    public init() {}

    public var latest: Int64 { state.withLock { $0.latest } }

    /// How many readers (open event streams) follow the log now: streams pace their writes by it.
    public var readers: Int { readerCount.load(ordering: .relaxed) }
    public func addReader() { readerCount.add(1, ordering: .relaxed) }
    public func removeReader() { readerCount.subtract(1, ordering: .relaxed) }

    /// Waits now registered (for tests).
    var waiting: Int { state.withLock { $0.waiters.count } }

    /// Events held in memory now (for tests).
    var kept: Int { state.withLock { $0.memory.count } }

    /// Committed events, in any order (concurrent commits may publish out of order).
    public func published(_ events: [JobEvent]) {
        guard let newest = events.map(\.id).max() else { return }
        // With no stream open nothing reads the memory: it is let go, and a stream that opens
        // later reads what came before it from the store (memory answers only for an unbroken run).
        let streaming = readers > 0
        let frames = streaming ? events.map(EventFrame.init) : []   // made outside the lock; encoded by their first reader
        let ready = state.withLock { state in
            if !streaming, !state.ring.isEmpty {
                state.ring = []
                state.start = 0
                state.bytes = 0
            }
            for frame in frames {
                if let last = state.ring.last, last.id > frame.id {
                    let index = state.memory.firstIndex { $0.id > frame.id } ?? state.ring.endIndex
                    state.ring.insert(frame, at: index)
                } else {
                    state.ring.append(frame)
                }
                state.bytes += frame.weight
            }
            // The oldest go, past either bound (the newest stays, however big).
            while state.ring.count - state.start > Self.memoryCapacity
                    || (state.bytes > Self.memoryBytes && state.ring.count - state.start > 1) {
                state.bytes -= state.ring[state.start].weight
                state.start += 1
            }
            if state.start >= Self.memoryCapacity || (state.start >= 64 && state.start * 2 >= state.ring.count) {
                state.ring.removeFirst(state.start)
                state.start = 0
            }
            return Self.advance(&state, to: newest)
        }
        for continuation in ready { continuation.resume(returning: true) }
    }

    /// The events after `after` from memory, or nil when memory cannot prove it has all of
    /// them (then read the store). `limit` events at most.
    public func recent(after: Int64, job: JobID?, owner: String? = nil, limit: Int) -> [JobEvent]? {
        recentFrames(after: after, job: job, owner: owner, limit: limit, maxBytes: .max)?.frames.map(\.event)
    }

    /// Frames of the events after `after` for `job` (all jobs when nil) and `owner` (any when
    /// nil), at most `limit` of them and — past the first — no more than `maxBytes` in all;
    /// `through`: the id the log has been read through (past other jobs' events, up to
    /// `latest` when the answer is not cut short). Nil when memory cannot prove it holds every
    /// event after `after`.
    public func recentFrames(after: Int64, job: JobID?, owner: String?, limit: Int, maxBytes: Int) -> (frames: [EventFrame], through: Int64)? {
        // Under the lock, the matching frames up to `limit` (with where the run of ids breaks, if
        // it does); out of it, the cut to `maxBytes`, so that a frame is encoded (the first
        // time it is sized) by a reader, never under the lock. Memory answers when the frames
        // up to the cut are an unbroken run.
        let taken = state.withLock { state -> (frames: [EventFrame], through: Int64, complete: Bool)? in
            if after >= state.latest { return ([], after, true) }
            let memory = state.memory
            guard let first = memory.first, first.id <= after + 1 else { return nil }
            // Ids are increasing: binary search for the first one past `after`.
            var low = memory.startIndex, high = memory.endIndex
            while low < high {
                let mid = low + (high - low) / 2
                if memory[mid].id <= after { low = mid + 1 } else { high = mid }
            }
            var expected = after + 1
            var found: [EventFrame] = []
            for frame in memory[low...] {
                guard frame.id == expected else { return (found, expected - 1, false) }
                expected += 1
                let event = frame.event
                guard job == nil || event.job == job, owner == nil || event.owner == owner else { continue }
                found.append(frame)
                if found.count == limit { return (found, frame.id, true) }
            }
            return (found, expected - 1, expected > state.latest)
        }
        guard let taken else { return nil }
        if maxBytes < .max {
            var bytes = 0
            for (index, frame) in taken.frames.enumerated() {
                let size = frame.bytes.count
                if index > 0, bytes + size > maxBytes { return (Array(taken.frames[..<index]), frame.id - 1) }
                bytes += size
            }
        }
        return taken.complete ? (taken.frames, taken.through) : nil
    }

    public func published(upTo id: Int64) {
        let ready = state.withLock { state in Self.advance(&state, to: id) }
        for continuation in ready { continuation.resume(returning: true) }
    }

    /// `latest` moves with the memory in one step: a reader never finds an event in memory
    /// that is past `latest` (it would read it again from `latest`).
    private static func advance(_ state: inout State, to id: Int64) -> [CheckedContinuation<Bool, Never>] {
        state.latest = max(state.latest, id)
        return remove(from: &state) { $0.after < id }
    }

    /// Wakes every waiter without new events (a token revoked, shutdown): they return false
    /// and look again.
    public func wakeAll() {
        let all = state.withLock { state in Self.remove(from: &state) { _ in true } }
        for continuation in all { continuation.resume(returning: false) }
    }

    /// Wakes every waiter and makes every later wait return at once (false): the server is
    /// shutting down. A stream that checked for shutdown just before it began to wait would
    /// otherwise sleep through `wakeAll()` until its next keep-alive.
    public func stopWaiting() {
        state.withLock { $0.stopped = true }
        wakeAll()
    }

    /// Returns true once an event with an id above `after` exists, false after `timeout` (at
    /// once after `stopWaiting()`, or when the task is cancelled).
    public func wait(after: Int64, timeout: Duration) async -> Bool {
        if latest > after { return true }   // a reader catching up does not suspend
        let deadline = ContinuousClock.now + timeout
        let key = nextWaiter.wrappingAdd(1, ordering: .relaxed).newValue
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let (answer, sweep) = state.withLock { state -> (Bool?, Int?) in
                    if state.latest > after { return (true, nil) }
                    // Checked under the lock that `onCancel` takes: a cancellation is seen here or there.
                    if state.stopped || Task.isCancelled { return (false, nil) }
                    state.waiters[key] = Waiter(after: after, deadline: deadline, continuation: continuation)
                    if let sweeper = state.sweeper, sweeper.at <= deadline { return (nil, nil) }
                    state.nextSweeper += 1
                    state.sweeper = (state.nextSweeper, deadline)
                    return (nil, state.nextSweeper)
                }
                if let answer { continuation.resume(returning: answer) }
                if let sweep {
                    // unstructured: the one timer of every wait on this notifier, so that a wait
                    // that ends early leaves no sleep behind. It ends when no wait has a
                    // deadline left, and is never cancelled (a cancelled Task.sleep would stay
                    // scheduled until its deadline — the very cost it replaces).
                    Task { await self.sweep(id: sweep, at: deadline) }   // unstructured: see above
                }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: key) }
            waiter?.continuation.resume(returning: false)
        }
    }

    /// Ends the waits whose deadline has passed, at `at` and then at each next deadline, while
    /// this sweeper is the one due first; another (an earlier deadline arrived since) takes over.
    private func sweep(id: Int, at first: ContinuousClock.Instant) async {
        var at = first
        while true {
            try? await Task.sleep(until: at, clock: .continuous)
            let (due, next) = state.withLock { state -> ([CheckedContinuation<Bool, Never>], ContinuousClock.Instant?) in
                let now = ContinuousClock.now
                let due = Self.remove(from: &state) { $0.deadline <= now }
                guard state.sweeper?.id == id else { return (due, nil) }
                let earliest = state.waiters.values.lazy.map(\.deadline).min()
                state.sweeper = earliest.map { (id, $0) }
                return (due, earliest)
            }
            for continuation in due { continuation.resume(returning: false) }
            guard let next else { return }
            at = next
        }
    }

    private static func remove(from state: inout State, where isDue: (Waiter) -> Bool) -> [CheckedContinuation<Bool, Never>] {
        let keys = state.waiters.compactMap { key, waiter in isDue(waiter) ? key : nil }
        return keys.compactMap { state.waiters.removeValue(forKey: $0)?.continuation }
    }
}
