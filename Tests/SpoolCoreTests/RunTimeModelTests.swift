import Foundation
@testable import SpoolCore
import Testing

/// Run times learned from the input, on synthetic jobs whose time is a known function of it.
@Suite struct RunTimeModelTests {
    /// A render-like cost: time ∝ width × height × samples^0.9, times a noise factor.
    static func seconds(_ width: Int, _ height: Int, _ samples: Int, noise: Double = 1) -> Double {
        2e-7 * Double(width * height) * pow(Double(samples), 0.9) * noise
    }

    static func input(_ width: Int, _ height: Int, _ samples: Int, seed: Int = 0) -> JSONValue {
        .object(["width": .int(Int64(width)), "height": .int(Int64(height)), "samples": .int(Int64(samples)), "seed": .int(Int64(seed)),
                 "name": .string("frame")])
    }

    /// A deterministic pseudo-random sequence (the tests must not depend on luck).
    struct Dice {
        var state: UInt64
        mutating func next(_ range: ClosedRange<Int>) -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return range.lowerBound + Int((state >> 33) % UInt64(range.count))
        }
    }

    @Test func aPowerLawIsLearnedAndPredictsInputsItHasNotSeen() throws {
        var model = RunTimeModel()
        var dice = Dice(state: 1)
        for _ in 0..<30 {
            let (w, h, s) = (dice.next(16...512), dice.next(16...512), dice.next(1...64))
            let noise = 1 + Double(dice.next(-5...5)) / 100   // ±5 %
            model.record(type: "render", input: Self.input(w, h, s, seed: dice.next(0...1000)), seconds: Self.seconds(w, h, s, noise: noise))
        }
        for (w, h, s) in [(640, 480, 100), (32, 24, 1), (1024, 16, 8)] {
            let predicted = model.predict(type: "render", input: Self.input(w, h, s, seed: 7))
            let prediction = try #require(predicted)
            let truth = Self.seconds(w, h, s)
            #expect(abs(prediction.seconds - truth) / truth < 0.15, "\(w)×\(h)×\(s): \(prediction.seconds) vs \(truth)")
            #expect(prediction.method.contains("height") && prediction.method.contains("samples") && prediction.method.contains("width"))
        }
    }

    @Test func tooFewRunsOrNoNumbersOrNumbersThatDoNotMatterFallBackToTheMedian() {
        var model = RunTimeModel()
        for index in 0..<5 { model.record(type: "render", input: Self.input(64 * (index + 1), 64, 4), seconds: Self.seconds(64 * (index + 1), 64, 4)) }
        #expect(model.predict(type: "render", input: Self.input(64, 64, 4)) == nil, "5 runs are too few")

        for _ in 0..<30 { model.record(type: "noop", input: .object(["name": .string("x")]), seconds: 0.01) }
        #expect(model.predict(type: "noop", input: .object(["name": .string("y")])) == nil, "no numeric field")

        // The time does not depend on the seed: a fit would only memorise noise.
        var dice = Dice(state: 2)
        for _ in 0..<40 {
            model.record(type: "sleep", input: .object(["seed": .int(Int64(dice.next(1...1000)))]), seconds: 2 + Double(dice.next(0...100)) / 100)
        }
        #expect(model.predict(type: "sleep", input: .object(["seed": .int(5)])) == nil, "a fit no better than the median is not used")
        #expect(model.predict(type: "unknown", input: Self.input(1, 1, 1)) == nil)
    }

    @Test func anInputWithoutAFieldTheFitNeedsIsNotGuessed() {
        var model = RunTimeModel()
        var dice = Dice(state: 3)
        for _ in 0..<20 {
            let (w, h, s) = (dice.next(16...256), dice.next(16...256), dice.next(1...16))
            model.record(type: "render", input: Self.input(w, h, s), seconds: Self.seconds(w, h, s))
        }
        #expect(model.predict(type: "render", input: .object(["width": .int(64)])) == nil)
    }

    @Test func theQueueEstimateUsesLearnedRunTimesForRunningJobsAndTheJobItself() {
        var runTimes = QueueEstimate.RunTimes()
        for _ in 0..<5 { runTimes.record(10, type: "render") }
        let run = RunTimeModel.Prediction(seconds: 42, method: "learned")
        // A running job with no progress but an expected run of 30 s, 5 s in: 25 s left (not 10 − 5).
        let running = [QueueEstimate.Running(type: "render", elapsed: 5, expected: 30)]
        let estimate = QueueEstimate.estimate(position: 1, type: "render", slots: 1, running: running, runTimes: runTimes, run: run)
        #expect(estimate?.startsIn == 25)
        #expect(estimate?.runSeconds == 42)
        #expect(estimate?.method.contains("its own run: about 42.0 s") == true)
    }
}
