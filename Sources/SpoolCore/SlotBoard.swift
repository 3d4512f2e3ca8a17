/// Which slot holds which job: the scheduler's decisions as a pure value.
///
/// The invariant the whole server rests on — **a slot never runs two jobs at once** — lives
/// here and nowhere else: a slot goes `idle → claiming → running(job) → idle`, and every
/// other move is refused with an error instead of being carried out. The scheduler asks the
/// board which slots to fill, tells it what the store handed out, and reports finishes;
/// it never decides occupancy itself.
public struct SlotBoard: Sendable, Equatable {
    public enum Occupancy: Sendable, Equatable {
        /// Free; may be offered work.
        case idle
        /// A claim for this slot is in flight at the store.
        case claiming
        /// Runs this job.
        case running(JobID)
        /// Closed for new work (the server is shutting down).
        case closed
    }

    public struct Violation: Error, Equatable, CustomStringConvertible {
        public var slot: SlotID
        public var attempted: String
        public var occupancy: Occupancy
        public var description: String { "slot \(slot): cannot \(attempted) while \(occupancy)" }
    }

    public private(set) var occupancy: [SlotID: Occupancy]

    public init(slots: [SlotID]) {
        occupancy = Dictionary(uniqueKeysWithValues: slots.map { ($0, .idle) })
    }

    public var slots: [SlotID] { occupancy.keys.sorted() }

    public func job(on slot: SlotID) -> JobID? {
        if case .running(let job)? = occupancy[slot] { job } else { nil }
    }

    public var runningJobs: [SlotID: JobID] {
        occupancy.compactMapValues { if case .running(let job) = $0 { job } else { nil } }
    }

    public var isQuiescent: Bool { !occupancy.values.contains { if case .running = $0 { true } else { $0 == .claiming } } }

    /// Marks every idle slot (but those `excepted`) as claiming and returns them, lowest first:
    /// the claims to make now.
    public mutating func beginClaims(except excepted: Set<SlotID> = []) -> [SlotID] {
        let idle = occupancy.filter { $0.value == .idle && !excepted.contains($0.key) }.keys.sorted()
        for slot in idle { occupancy[slot] = .claiming }
        return idle
    }

    /// The store answered a claim: the slot runs `job`, or goes back to idle when the queue was empty.
    public mutating func claimed(_ job: JobID?, on slot: SlotID) throws(Violation) {
        guard occupancy[slot] == .claiming else {
            throw Violation(slot: slot, attempted: "accept \(job.map(\.rawValue) ?? "an empty claim")", occupancy: occupancy[slot] ?? .closed)
        }
        occupancy[slot] = job.map(Occupancy.running) ?? .idle
    }

    /// A job finished on a slot: the slot is idle again (or stays closed when shutting down).
    public mutating func finished(_ job: JobID, on slot: SlotID, closing: Bool = false) throws(Violation) {
        guard occupancy[slot] == .running(job) else {
            throw Violation(slot: slot, attempted: "finish \(job)", occupancy: occupancy[slot] ?? .closed)
        }
        occupancy[slot] = closing ? .closed : .idle
    }

    /// A job finished and the slot asks the store for its next job in the same step
    /// (`running(job) → claiming`), so a busy queue never leaves the slot idle in between.
    public mutating func finishedAndClaiming(_ job: JobID, on slot: SlotID) throws(Violation) {
        guard occupancy[slot] == .running(job) else {
            throw Violation(slot: slot, attempted: "hand over from \(job)", occupancy: occupancy[slot] ?? .closed)
        }
        occupancy[slot] = .claiming
    }

    /// Start of shutdown: idle slots close at once; busy ones close as their job ends.
    public mutating func closeIdle() {
        for (slot, state) in occupancy where state == .idle { occupancy[slot] = .closed }
    }
}
