import Synchronization
import SpoolCore
import SpoolStore
import SpoolTesting
import Testing
@testable import SpoolHTTP

/// A token's submit rate: the bucket's arithmetic (pure, on a given time), and where a submit
/// is counted — the shared store, with this node's own bucket in front so that a client
/// retrying in a loop costs the database nothing.
@Suite struct RateLimiterTests {
    @Test func aBucketHoldsOneSecondsWorthAndRefillsAtTheRate() {
        let limiter = RateLimiter()
        for _ in 0..<4 { #expect(limiter.take("a", rate: 4, now: 100) == nil) }
        #expect(limiter.take("a", rate: 4, now: 100) == 0.25, "empty: one more in a quarter second")
        #expect(limiter.take("b", rate: 4, now: 100) == nil, "each name has its own")
        #expect(limiter.peek("a", rate: 4, now: 100.25) == nil)
        #expect(limiter.peek("a", rate: 4, now: 100.25) == nil, "a peek takes nothing")
        #expect(limiter.take("a", rate: 4, now: 100.25) == nil)
        #expect(limiter.take("a", rate: 4, now: 100.25) != nil)
    }

    @Test func aSlowRateStillLetsOneThroughAndAClockGoingBackGivesNothing() {
        let limiter = RateLimiter()
        #expect(limiter.take("a", rate: 0.5, now: 100) == nil, "at least one, however slow the rate")
        #expect(limiter.take("a", rate: 0.5, now: 101) == 1)
        #expect(limiter.take("a", rate: 0.5, now: 50) == 1, "an earlier time refills nothing and takes nothing")
        #expect(limiter.take("a", rate: 0.5, now: 102) == nil)
    }

    @Test func aNodesBucketsRefillOnTheMonotonicClock() async throws {
        let manual = ManualClock()
        let rates = SubmitRates(shared: nil, clock: SpoolClock(manual, wall: { Timestamp(microseconds: 0) }))
        #expect(try await rates.take("a", rate: 1) == nil)
        #expect(try await rates.take("a", rate: 1) == 1, "empty: the next in a second")
        manual.advance(by: .milliseconds(500))
        #expect(try await rates.take("a", rate: 1) == 0.5, "half refilled after half a second, whatever the time of day says")
        manual.advance(by: .milliseconds(500))
        #expect(try await rates.take("a", rate: 1) == nil)
    }

    /// A shared store that lets `allowed` submits through and counts how often it is asked.
    final class CountingStore: SubmitRateStore {
        let state: Mutex<(asked: Int, allowed: Int)>
        init(allowed: Int) { state = Mutex((0, allowed)) }
        var asked: Int { state.withLock { $0.asked } }
        func takeSubmit(owner: String, rate: Double) async throws -> Double? {
            state.withLock { state in
                state.asked += 1
                guard state.allowed > 0 else { return 7 }
                state.allowed -= 1
                return nil
            }
        }
    }

    @Test func withASharedStoreTheStoreDecidesAndThisNodesOwnSubmitsSpareItTheRest() async throws {
        let store = CountingStore(allowed: 100)
        let rates = SubmitRates(shared: store)
        // A slow rate: one submit an hour. The store lets the first through; after that this
        // node's own bucket is empty, so the cluster's is too, and the store is not asked.
        #expect(try await rates.take("a", rate: 1.0 / 3600) == nil)
        let wait = try #require(try await rates.take("a", rate: 1.0 / 3600))
        #expect(wait > 3500)
        #expect(store.asked == 1)
        // Another node took the cluster's share: the store refuses although this node's bucket is full.
        let busy = CountingStore(allowed: 0)
        #expect(try await SubmitRates(shared: busy).take("b", rate: 5) == 7)
        #expect(busy.asked == 1)
    }
}
