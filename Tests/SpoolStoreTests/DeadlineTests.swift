import Synchronization
import SpoolStore
import Testing

/// `answerWithin`: the operation's answer, the timeout's, or the watch's error, whichever comes first.
@Suite struct DeadlineTests {
    struct Watched: Error {}
    struct TimedOut: Error {}

    @Test func aWatchsErrorAnswersBeforeTheLimit() async throws {
        await #expect(throws: Watched.self) {
            try await answerWithin(.seconds(60), orThrow: TimedOut(), watch: {
                try await Task.sleep(for: .milliseconds(10))
                throw Watched()
            }) {
                // Ignores cancellation, as a query already sent does: it would answer 1 in 5 s.
                _ = await Task.detached { try? await Task.sleep(for: .seconds(5)) }.value
                return 1
            }
        }
    }

    @Test func anOperationThatAnswersEndsTheWatch() async throws {
        let watchEnded = Mutex(false)
        let answer = try await answerWithin(.seconds(60), orThrow: TimedOut(), watch: {
            defer { watchEnded.withLock { $0 = true } }
            try await Task.sleep(for: .seconds(60))
        }) { 42 }
        #expect(answer == 42)
        for _ in 0..<500 where !watchEnded.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(10)) }
        #expect(watchEnded.withLock { $0 }, "the watch was cancelled once the call had its answer")
    }

    @Test func theLimitStillAnswersWithAWatchThatFindsNothing() async throws {
        await #expect(throws: TimedOut.self) {
            try await answerWithin(.milliseconds(50), orThrow: TimedOut(), watch: {
                while true { try await Task.sleep(for: .milliseconds(5)) }
            }) {
                _ = await Task.detached { try? await Task.sleep(for: .seconds(5)) }.value
                return 1
            }
        }
    }
}
