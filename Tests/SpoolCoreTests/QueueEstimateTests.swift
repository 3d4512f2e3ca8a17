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
}
