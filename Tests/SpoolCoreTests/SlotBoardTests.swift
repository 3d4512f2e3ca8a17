// SlotBoardTests: the invariant "a slot never runs two jobs at once", checked transition by
// transition and then by a seeded random walk that compares the board with a model of the
// documented state machine (idle → claiming → running(job) → idle | claiming | closed).

import Testing
import SpoolCore

@Suite struct SlotBoardTests {
    let a = SlotID(0), b = SlotID(1)

    @Test func newBoardHasEveryGivenSlotIdle() {
        let board = SlotBoard(slots: [SlotID(2), SlotID(0), SlotID(1)])
        #expect(board.slots == [SlotID(0), SlotID(1), SlotID(2)])
        #expect(board.occupancy.values.allSatisfy { $0 == .idle })
        #expect(board.runningJobs.isEmpty)
        #expect(board.isQuiescent)
    }

    @Test func beginClaimsReturnsOnlyIdleSlotsLowestFirstAndMarksThemClaiming() throws {
        var board = SlotBoard(slots: [SlotID(2), a, b])
        let job = JobID.random()
        #expect(board.beginClaims() == [a, b, SlotID(2)])
        try board.claimed(job, on: b)
        try board.claimed(nil, on: SlotID(2))
        #expect(board.occupancy == [a: .claiming, b: .running(job), SlotID(2): .idle])
        #expect(board.beginClaims() == [SlotID(2)])
        #expect(board.occupancy[SlotID(2)] == .claiming)
        #expect(board.beginClaims().isEmpty)
    }

    @Test func claimedPutsTheJobOnTheSlotOrFreesItWhenTheQueueWasEmpty() throws {
        var board = SlotBoard(slots: [a, b])
        _ = board.beginClaims()
        let job = JobID.random()
        try board.claimed(job, on: a)
        try board.claimed(nil, on: b)
        #expect(board.job(on: a) == job)
        #expect(board.job(on: b) == nil)
        #expect(board.occupancy[b] == .idle)
        #expect(board.runningJobs == [a: job])
        #expect(!board.isQuiescent)
    }

    @Test(arguments: [false, true])
    func claimedOnASlotThatIsNotClaimingThrows(withJob: Bool) throws {
        var board = SlotBoard(slots: [a, b])
        let job: JobID? = withJob ? JobID.random() : nil
        // idle
        try expectRefusal(on: &board, slot: a) { try $0.claimed(job, on: a) }
        // running
        _ = board.beginClaims()
        let running = JobID.random()
        try board.claimed(running, on: a)
        try expectRefusal(on: &board, slot: a) { try $0.claimed(job, on: a) }
        // closed
        try board.claimed(nil, on: b)
        board.closeIdle()
        try expectRefusal(on: &board, slot: b) { try $0.claimed(job, on: b) }
        // not on the board at all
        try expectRefusal(on: &board, slot: SlotID(7)) { try $0.claimed(job, on: SlotID(7)) }
    }

    @Test func finishedWithAnotherJobThanTheRunningOneThrows() throws {
        var board = SlotBoard(slots: [a, b])
        _ = board.beginClaims()
        let first = JobID.random(), second = JobID.random()
        try board.claimed(first, on: a)
        try board.claimed(second, on: b)
        try expectRefusal(on: &board, slot: a) { try $0.finished(second, on: a) }
        try expectRefusal(on: &board, slot: a) { try $0.finishedAndClaiming(second, on: a) }
        try board.finished(first, on: a)
        #expect(board.occupancy[a] == .idle)
        // Finishing twice is refused: the slot no longer runs it.
        try expectRefusal(on: &board, slot: a) { try $0.finished(first, on: a) }
    }

    @Test func finishedAndClaimingMovesRunningStraightToClaiming() throws {
        var board = SlotBoard(slots: [a])
        _ = board.beginClaims()
        let first = JobID.random(), next = JobID.random()
        try board.claimed(first, on: a)
        try board.finishedAndClaiming(first, on: a)
        #expect(board.occupancy[a] == .claiming)
        #expect(!board.isQuiescent)
        #expect(board.beginClaims().isEmpty, "a slot handing over is not offered a second claim")
        try board.claimed(next, on: a)
        #expect(board.job(on: a) == next)
    }

    @Test func closeIdleClosesOnlyIdleSlotsAndBusySlotsCloseAsTheirJobEnds() throws {
        var board = SlotBoard(slots: [a, b, SlotID(2)])
        #expect(board.beginClaims().count == 3)
        let job = JobID.random()
        try board.claimed(job, on: a)
        try board.claimed(nil, on: b)
        board.closeIdle()
        #expect(board.occupancy == [a: .running(job), b: .closed, SlotID(2): .claiming])
        #expect(board.beginClaims().isEmpty)
        try board.finished(job, on: a, closing: true)
        #expect(board.occupancy[a] == .closed)
        try board.claimed(nil, on: SlotID(2))
        board.closeIdle()
        #expect(board.occupancy.values.allSatisfy { $0 == .closed })
        #expect(board.isQuiescent)
    }

    @Test func closedSlotsNeverReopen() throws {
        var board = SlotBoard(slots: [a])
        board.closeIdle()
        #expect(board.beginClaims().isEmpty)
        let job = JobID.random()
        try expectRefusal(on: &board, slot: a) { try $0.claimed(job, on: a) }
        try expectRefusal(on: &board, slot: a) { try $0.claimed(nil, on: a) }
        try expectRefusal(on: &board, slot: a) { try $0.finished(job, on: a) }
        try expectRefusal(on: &board, slot: a) { try $0.finishedAndClaiming(job, on: a) }
        board.closeIdle()
        #expect(board.occupancy[a] == .closed)
    }

    @Test func violationNamesTheSlotAndItsOccupancy() {
        var board = SlotBoard(slots: [a])
        let job = JobID.random()
        #expect {
            try board.finished(job, on: a)
        } throws: { error in
            guard let violation = error as? SlotBoard.Violation else { return false }
            return violation.slot == a && violation.occupancy == .idle
                && violation.description.contains("slot 0") && violation.description.contains(job.rawValue)
        }
    }

    /// Thousands of random operations; after each one the board must equal the model, a
    /// refused operation must leave it unchanged, and a closed slot must stay closed.
    @Test(arguments: [1, 2, 3, 42, 2024] as [UInt64])
    func randomOperationsNeverPutTwoJobsOnASlotAndRefusalsChangeNothing(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        let slots = (0..<4).map { SlotID($0) }
        var board = SlotBoard(slots: slots)
        var model: [SlotID: SlotBoard.Occupancy] = Dictionary(uniqueKeysWithValues: slots.map { ($0, .idle) })
        var everClosed: Set<SlotID> = []
        var accepted = 0, refused = 0
        for step in 0..<5_000 {
            let before = board
            // Mostly real slots, sometimes one the board does not have.
            let slot = random.roll(10) == 0 ? SlotID(9) : slots[random.roll(4)]
            // The job the slot runs, or a stranger.
            let job = model[slot].flatMap { if case .running(let id) = $0, random.roll(4) != 0 { id } else { nil } }
                ?? JobID.random()
            var expected = model
            let legal: Bool
            do {
                switch random.roll(6) {
                case 0:
                    let idle = model.filter { $0.value == .idle }.keys.sorted()
                    for s in idle { expected[s] = .claiming }
                    let claims = board.beginClaims()
                    #expect(claims == idle, "step \(step)")
                    legal = true
                case 1:
                    legal = model[slot] == SlotBoard.Occupancy.claiming
                    if legal { expected[slot] = .running(JobID.random()) }
                    let claimedJob: JobID? = legal ? expected[slot].flatMap { if case .running(let id) = $0 { id } else { nil } } : job
                    try board.claimed(claimedJob, on: slot)
                case 2:
                    legal = model[slot] == SlotBoard.Occupancy.claiming
                    if legal { expected[slot] = .idle }
                    try board.claimed(nil, on: slot)
                case 3:
                    let closing = random.roll(2) == 0
                    legal = model[slot] == SlotBoard.Occupancy.running(job)
                    if legal { expected[slot] = closing ? .closed : .idle }
                    try board.finished(job, on: slot, closing: closing)
                case 4:
                    legal = model[slot] == SlotBoard.Occupancy.running(job)
                    if legal { expected[slot] = .claiming }
                    try board.finishedAndClaiming(job, on: slot)
                default:
                    for (s, state) in model where state == .idle { expected[s] = .closed }
                    board.closeIdle()
                    legal = true
                }
                #expect(legal, "step \(step): an illegal move was carried out")
                accepted += 1
            } catch {
                #expect(board == before, "step \(step): a refused move changed the board")
                #expect(error.slot == slot)
                expected = model
                refused += 1
            }
            model = expected
            #expect(board.occupancy == model, "step \(step)")
            // Each slot holds at most one job, and each running job is on exactly one slot.
            let running = board.runningJobs
            #expect(Set(running.values).count == running.count, "step \(step)")
            for (s, id) in running { #expect(board.job(on: s) == id) }
            for s in everClosed { #expect(board.occupancy[s] == .closed, "step \(step): slot \(s) reopened") }
            everClosed.formUnion(board.occupancy.filter { $0.value == .closed }.keys)
            if everClosed.count == slots.count { // start a fresh round so the walk keeps exercising moves
                board = SlotBoard(slots: slots)
                model = board.occupancy
                everClosed = []
            }
        }
        #expect(accepted > 500 && refused > 500, "the walk should exercise both outcomes")
    }

    private func expectRefusal(
        on board: inout SlotBoard, slot: SlotID, sourceLocation: SourceLocation = #_sourceLocation,
        _ operation: (inout SlotBoard) throws -> Void
    ) throws {
        let before = board
        do {
            try operation(&board)
            Issue.record("expected the board to refuse the move on slot \(slot)", sourceLocation: sourceLocation)
        } catch {
            #expect((error as? SlotBoard.Violation)?.slot == slot, sourceLocation: sourceLocation)
        }
        #expect(board == before, "a refused move must leave the board unchanged", sourceLocation: sourceLocation)
    }
}

/// A small seeded generator (SplitMix64), so random walks are reproducible.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE5_E4B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A number in `0..<bound`.
    mutating func roll(_ bound: Int) -> Int { Int(next(upperBound: UInt64(bound))) }
}
