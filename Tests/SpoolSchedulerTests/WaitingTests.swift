import SpoolCore
import SpoolStore
import SpoolTesting
import Synchronization
import Testing

/// The tests' own waits: a wait that runs out of time fails its test and stops. One that
/// went on looking after its limit spun on the cooperative pool for the rest of the run (seen:
/// `WorkerSupervisionTests` on a loaded 2-core machine, both pool threads at 100 % for 15
/// minutes, every other test timing out behind them, the run never ending).
@Suite struct WaitingTests {
    final class Count: Sendable {
        private let atomic = Atomic<Int>(0)
        func add() { atomic.add(1, ordering: .relaxed) }
        var value: Int { atomic.load(ordering: .relaxed) }
    }

    /// Whether `count` stops moving: real time, bounded (a second), since a loop left behind
    /// has no event to wait for — it either stops or goes on counting.
    static func settles(_ count: Count) async throws -> Bool {
        var last = count.value
        for _ in 0..<50 {
            try await Task.sleep(for: .milliseconds(20))
            let now = count.value
            if now == last { return true }
            last = now
        }
        return false
    }

    @Test func aJobWaitThatRunsOutOfTimeStopsLooking() async throws {
        let store = MemoryJobStore()
        let job = Job(id: .random(), type: "t", input: .object([:]), priority: 0, timeoutSeconds: 60, maxAttempts: 1, createdAt: WallClock.now())
        _ = try await store.enqueue(job)
        let looks = Count()
        await #expect(throws: WaitTimedOut.self) {
            try await untilJob(job.id, in: store, "a job that never ends", within: .milliseconds(100)) { _ in
                looks.add()
                return false
            }
        }
        #expect(try await Self.settles(looks), "the wait went on looking after its limit: \(looks.value) looks")
    }

    @Test func aPollingLoopThatRunsOutOfTimeStops() async throws {
        let turns = Count()
        await #expect(throws: WaitTimedOut.self) {
            try await within(.milliseconds(100), "a condition that never holds") {
                while true {
                    turns.add()
                    try await pollingYield()
                }
            }
        }
        #expect(try await Self.settles(turns), "the loop went on after its limit: \(turns.value) turns")
    }
}
