import SpoolCore
import SpoolTesting
import Synchronization
import Testing
@testable import SpoolExecutor

/// The queue between a job's pipes and its observer: with the observer stalled (a slow store),
/// progress reports wait in a bounded queue, and the newest one still arrives, last.
@Suite struct ObserverDeliveriesTests {
    /// An observer that takes a message only when let (`letOne`, or `release` for all), and
    /// records what it was given.
    final class StalledObserver: Sendable {
        private let state = Mutex((permits: 0, open: false, waiter: CheckedContinuation<Void, Never>?.none))
        let delivered = Mutex<[Double]>([])

        var observer: ExecutionObserver {
            ExecutionObserver(message: { [self] message in
                await withCheckedContinuation { continuation in
                    let go = state.withLock { state -> Bool in
                        if state.open { return true }
                        if state.permits > 0 { state.permits -= 1; return true }
                        state.waiter = continuation
                        return false
                    }
                    if go { continuation.resume() }
                }
                guard case .progress(let progress) = message else { return }
                delivered.withLock { $0.append(progress.fraction) }
            })
        }

        func letOne() {
            state.withLock { state -> CheckedContinuation<Void, Never>? in
                if let waiter = state.waiter.take() { return waiter }
                state.permits += 1
                return nil
            }?.resume()
        }

        func release() {
            state.withLock { state in
                state.open = true
                return state.waiter.take()
            }?.resume()
        }
    }

    static func inOrder(_ fractions: [Double]) -> Bool { zip(fractions, fractions.dropFirst()).allSatisfy { $0 < $1 } }

    static func progress(_ n: Int, of total: Int) -> JobMessage { .progress(JobProgress(fraction: Double(n) / Double(total))) }

    @Test func reportsWaitInABoundedQueueAndTheNewestArrivesLast() async {
        let stalled = StalledObserver()
        let deliveries = ObserverDeliveries(stalled.observer)
        let total = ObserverDeliveries.messageLimit * 5
        for n in 1...total { deliveries.message(Self.progress(n, of: total)) }
        stalled.release()
        await deliveries.finish()
        let delivered = stalled.delivered.withLock { $0 }
        #expect(delivered.count <= ObserverDeliveries.messageLimit + 1, "\(delivered.count) reports waited for a stalled observer")
        #expect(delivered.last == 1.0, "the newest report did not arrive last")
        #expect(Self.inOrder(delivered), "reports arrived out of order")
    }

    /// A report kept apart is superseded by a newer one queued once the queue has room: it is
    /// not delivered after it.
    @Test func aReportKeptApartGivesWayToANewerOneQueued() async throws {
        let stalled = StalledObserver()
        let deliveries = ObserverDeliveries(stalled.observer)
        let limit = ObserverDeliveries.messageLimit, total = limit + 10
        for n in 1...(limit + 1) { deliveries.message(Self.progress(n, of: total)) }   // the last one kept apart
        stalled.letOne()
        try await within("the first report delivered") { while deliveries.messagesWaiting == limit { try await pollingYield() } }
        deliveries.message(Self.progress(limit + 2, of: total))   // the queue has room again
        stalled.release()
        await deliveries.finish()
        let delivered = stalled.delivered.withLock { $0 }
        #expect(Self.inOrder(delivered), "a superseded report arrived after a newer one")
        #expect(delivered.count == limit + 1 && delivered.last == Double(limit + 2) / Double(total))
    }
}
