// When a queued job will start: from the recent run times, and from the running jobs' progress.
import SpoolCore
import Testing

@Suite struct QueueEstimateTests {
    func runTimes(_ type: String, _ seconds: [Double]) -> QueueEstimate.RunTimes {
        var book = QueueEstimate.RunTimes()
        for value in seconds { book.record(value, type: type) }
        return book
    }

    @Test func theNextJobWaitsForWhatTheRunningJobHasLeftByItsProgress() throws {
        // Renders used to take 10 s; this one is 52 s in at 86 %: about 8.5 s are left, not 0.
        let running = QueueEstimate.Running(type: "render", elapsed: 52, progress: 0.86)
        let estimate = try #require(QueueEstimate.estimate(position: 1, type: "render", slots: 1, running: [running],
                                                           runTimes: runTimes("render", [10, 10, 10])))
        #expect(abs(estimate.startsIn - 52 * 0.14 / 0.86) < 0.01)
        #expect(estimate.method.contains("progress"))
    }

    @Test func withoutProgressTheMedianRunTimeLessWhatHasRunCounts() throws {
        let running = QueueEstimate.Running(type: "render", elapsed: 4)
        let estimate = try #require(QueueEstimate.estimate(position: 2, type: "render", slots: 1, running: [running],
                                                           runTimes: runTimes("render", [10, 12, 14])))
        #expect(estimate.startsIn == (12 - 4) + 12, "the running job's 8 s left, then one job ahead")
    }

    @Test func aBarelyStartedJobsProgressSaysTooLittle() {
        let running = QueueEstimate.Running(type: "render", elapsed: 1, progress: 0.001)
        #expect(running.remaining(typical: 30) == 29, "below 2 % the typical run time decides")
    }

    @Test func aFinishedLookingJobHasNothingLeft() {
        #expect(QueueEstimate.Running(type: "t", elapsed: 9, progress: 1).remaining(typical: 30) == 0)
    }

    @Test func nothingIsEstimatedBeforeAnyJobHasFinished() {
        #expect(QueueEstimate.estimate(position: 1, type: "x", slots: 1, running: [], runTimes: .init()) == nil)
    }

    /// The jobs ahead handed out one at a time to the slot that frees first: what the estimate
    /// means, played out job by job.
    func playedOut(ahead: Int, slotsFreeAt: [Double], each: Double) -> Double {
        var freeAt = slotsFreeAt
        for _ in 0..<ahead {
            let index = freeAt.indices.min { freeAt[$0] < freeAt[$1] }!
            freeAt[index] += each
        }
        return freeAt.min() ?? 0
    }

    @Test func theStartWorkedOutIsTheStartPlayedOut() {
        // Slots freeing together, apart by less and by more than a run, and by exact multiples
        // of it (times that tie across slots); up to 3,000 jobs ahead.
        var random = SplitMix64(seed: 12)
        for _ in 0..<2_000 {
            let each = [0.5, 1, 3, 0.07, 12.25].randomElement(using: &random)!
            let slots = Int.random(in: 1...6, using: &random)
            let freeAt = (0..<slots).map { _ in
                switch Int.random(in: 0...3, using: &random) {
                case 0: 0.0
                case 1: Double(Int.random(in: 0...40, using: &random)) * each
                default: Double.random(in: 0...200, using: &random)
                }
            }
            let ahead = Int.random(in: 0...3_000, using: &random)
            let expected = playedOut(ahead: ahead, slotsFreeAt: freeAt, each: each)
            let worked = QueueEstimate.startAfter(ahead: ahead, slotsFreeAt: freeAt, each: each)
            #expect(abs(worked - expected) <= 1e-9 * max(1, expected), "\(ahead) ahead of slots freeing at \(freeAt), \(each) s each")
        }
    }

    @Test func aDeepQueuesStartIsWorkedOutNotPlayedOut() throws {
        // A billion jobs of 2 s ahead of four slots, one busy for 7 s more. The free slots free
        // at 0, 2, 4… (three at each), the busy one at 7, 9, 11…: by 2L + 1 s that is 4L + 1
        // times, so the billion-and-first is at 500,000,001 s.
        #expect(QueueEstimate.startAfter(ahead: 1_000_000_000, slotsFreeAt: [7, 0, 0, 0], each: 2) == 500_000_001)
        let estimate = try #require(QueueEstimate.estimate(position: 1_000_000_001, type: "render", slots: 2, running: [],
                                                           runTimes: runTimes("render", [3])))
        #expect(estimate.startsIn == 1_500_000_000)
    }

    @Test func jobsThatTakeNoTimeLeaveTheSlotsWhereTheyAre() {
        #expect(QueueEstimate.startAfter(ahead: 500, slotsFreeAt: [4, 9], each: 0) == 4)
        #expect(QueueEstimate.startAfter(ahead: 0, slotsFreeAt: [4, 9], each: 3) == 4)
    }
}
