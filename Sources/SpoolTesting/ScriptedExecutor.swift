import SpoolCore
import SpoolExecutor
import Synchronization

/// A `JobExecutor` whose attempts the test ends: each `run` shows up on `attempts`, and stays
/// running until the test calls `finish` on it. Stop requests the scheduler sends arrive on
/// the attempt (`nextStop`), so a test sees exactly what the scheduler asked for.
public final class ScriptedExecutor: JobExecutor {
    /// One attempt in flight.
    public final class Attempt: Sendable {
        public let job: Job
        public let slot: SlotSpec
        public let observer: ExecutionObserver
        private let stops: AsyncStream<StopReason>
        private let ending: Mutex<CheckedContinuation<ExecutionResult, Never>?>

        init(job: Job, slot: SlotSpec, observer: ExecutionObserver, stops: AsyncStream<StopReason>,
             ending: CheckedContinuation<ExecutionResult, Never>) {
            self.job = job
            self.slot = slot
            self.observer = observer
            self.stops = stops
            self.ending = Mutex(ending)
        }

        /// Ends the attempt with this outcome (later calls do nothing).
        public func finish(_ outcome: JobOutcome, result: JSONValue? = nil) {
            finish(ExecutionResult(outcome, result: result))
        }

        /// Ends the attempt with `result` as the executor's whole answer.
        public func finish(_ result: ExecutionResult) {
            ending.withLock { $0.take() }?.resume(returning: result)
        }

        /// The next stop request the scheduler sends for this attempt (nil once it sends none).
        public func nextStop() async -> StopReason? {
            var iterator = stops.makeAsyncIterator()
            return await iterator.next()
        }
    }

    /// Every attempt the scheduler starts, in order.
    public let attempts: AsyncStream<Attempt>
    private let started: AsyncStream<Attempt>.Continuation
    private let state = Mutex(State())

    struct State {
        var started = 0
        var live: [JobID: Attempt] = [:]
        var excluded: [SlotID: Set<String>] = [:]
        var nextRetry: Moment?
        var afterRuns: [SlotID] = []
        var ended: [JobID] = []
        var shutDown = false
        var closed = false
        /// Slots the scheduler said are quarantined (and not released since).
        var quarantined: Set<SlotID> = []
        /// Attempts handed to a slot while the executor was told it is quarantined.
        var ranOnQuarantined = 0
    }

    /// `prepare` calls (a look-ahead between its look at the queue and its answer).
    private let preparing = CallHold()
    /// `slotReleased` calls (the executor hearing of a release late).
    private let releasing = CallHold()

    /// Whether an attempt's work begins as it starts, as a process's does (`observer.started`);
    /// false: as a warm worker's, after its setup — the test calls `observer.started` itself.
    public let startsWork: Bool

    public init(startsWork: Bool = true) {
        self.startsWork = startsWork
        (attempts, started) = AsyncStream<Attempt>.makeStream()
    }

    public func run(_ job: Job, on slot: SlotSpec, stops: AsyncStream<StopReason>, observer: ExecutionObserver) async -> ExecutionResult {
        if startsWork { await observer.started(0) }
        let result = await withCheckedContinuation { continuation in
            let attempt = Attempt(job: job, slot: slot, observer: observer, stops: stops, ending: continuation)
            state.withLock { state in
                state.started += 1
                state.live[job.id] = attempt
                if state.quarantined.contains(slot.id) { state.ranOnQuarantined += 1 }
            }
            started.yield(attempt)
        }
        state.withLock { $0.live[job.id] = nil }
        return result
    }

    /// Looks ahead wait in `prepare` from now on (after their look at the queue, before the
    /// scheduler hears what they found) until `releasePrepares`.
    public func holdPrepares() { preparing.hold() }

    /// Lets the held `prepare` calls go on, and later ones pass; returns how many were waiting.
    @discardableResult
    public func releasePrepares() -> Int { preparing.release() }

    /// How many `prepare` calls wait on the hold.
    public var preparesWaiting: Int { preparing.count }

    public func prepare(_ job: Job, on slot: SlotSpec) async { await preparing.pass() }

    /// Ends every attempt still running with `outcome` (a test's teardown).
    public func finishAll(_ outcome: JobOutcome) {
        for attempt in state.withLock({ Array($0.live.values) }) { attempt.finish(outcome) }
    }

    public func afterRun(on slot: SlotID) async { state.withLock { $0.afterRuns.append(slot) } }
    public func ended(_ job: JobID, on slot: SlotID) async { state.withLock { $0.ended.append(job) } }
    public func excludedTypes(for slot: SlotID) -> Set<String> { state.withLock { $0.excluded[slot] ?? [] } }
    public func close() async { state.withLock { $0.closed = true } }
    public func slotQuarantined(_ slot: SlotID) async { state.withLock { _ = $0.quarantined.insert(slot) } }
    public func slotReleased(_ slot: SlotID) async {
        await releasing.pass()
        state.withLock { _ = $0.quarantined.remove(slot) }
    }

    /// `slotReleased` calls wait from now on (the executor has not heard yet) until `releaseSlotReleases`.
    public func holdSlotReleases() { releasing.hold() }

    /// Lets the held `slotReleased` calls go on, and later ones pass.
    public func releaseSlotReleases() { releasing.release() }

    /// How many `slotReleased` calls wait on the hold.
    public var slotReleasesWaiting: Int { releasing.count }
    /// The slots the scheduler said are quarantined, and not released since.
    public var quarantinedSlots: Set<SlotID> { state.withLock { $0.quarantined } }
    /// Attempts started on a slot the executor was told is quarantined.
    public var attemptsOnQuarantinedSlots: Int { state.withLock { $0.ranOnQuarantined } }
    public func shutdown() async { state.withLock { $0.shutDown = true } }

    /// Makes `slot` refuse these types (as a backing-off worker type would).
    public func exclude(_ types: Set<String>, on slot: SlotID) { state.withLock { $0.excluded[slot] = types } }

    /// When the excluded types may be tried again (`nextRetry`); the test lifts them itself.
    public func retry(at moment: Moment?) { state.withLock { $0.nextRetry = moment } }
    public func nextRetry() async -> Moment? { state.withLock { $0.nextRetry } }

    /// How many attempts the scheduler has started.
    public var startedCount: Int { state.withLock { $0.started } }

    /// Slots that got their `afterRun`, in order.
    public var afterRuns: [SlotID] { state.withLock { $0.afterRuns } }
    /// Jobs the scheduler said had ended for good without outputs (`ended(_:on:)`), in order.
    public var endedJobs: [JobID] { state.withLock { $0.ended } }
    public var wasShutDown: Bool { state.withLock { $0.shutDown } }
    /// Whether the scheduler said the server is shutting down (`close`).
    public var wasClosed: Bool { state.withLock { $0.closed } }
}
