import SpoolCore
import Synchronization

/// A job's progress and output on their way to its observer (the scheduler, and through it the
/// store), in order, by one task: the worker's pipes are read on meanwhile. A store slow to
/// take a progress report once left the heartbeats after it unread, and a worker that beat
/// every few seconds was killed as hung with its job. Messages (progress) are never dropped;
/// output is dropped for the observer only while more than `outputLimit` bytes of it wait —
/// the log file has all of it.
final class ObserverDeliveries: Sendable {
    private enum Delivery: Sendable {
        case message(JobMessage)
        case output([UInt8])
    }

    /// Output bytes that may wait for the observer; past them a chunk is not queued.
    static let outputLimit = 4 << 20

    private let queue: AsyncStream<Delivery>.Continuation
    private let delivering: Task<Void, Never>
    /// Something was queued (a job that says nothing ends without waiting for the task).
    private let used = Atomic<Bool>(false)
    private let waitingOutput: Counter

    /// Shared with the delivering task (an `Atomic` cannot be captured on its own).
    private final class Counter: Sendable {
        let bytes = Atomic<Int>(0)
    }

    init(_ observer: ExecutionObserver) {
        let (deliveries, queue) = AsyncStream<Delivery>.makeStream()
        let waiting = Counter()
        self.queue = queue
        waitingOutput = waiting
        // unstructured: it delivers while the worker's actor reads on; `finish` awaits it.
        delivering = Task {
            for await delivery in deliveries {
                switch delivery {
                case .message(let message): await observer.message(message)
                case .output(let bytes):
                    await observer.output(bytes)
                    waiting.bytes.subtract(bytes.count, ordering: .relaxed)
                }
            }
        }
    }

    func message(_ message: JobMessage) { deliver(.message(message)) }

    func output(_ bytes: [UInt8]) {
        guard waitingOutput.bytes.load(ordering: .relaxed) <= Self.outputLimit else { return }
        waitingOutput.bytes.add(bytes.count, ordering: .relaxed)
        deliver(.output(bytes))
    }

    private func deliver(_ delivery: Delivery) {
        used.store(true, ordering: .relaxed)
        queue.yield(delivery)
    }

    /// Returns once everything queued has been delivered.
    func finish() async {
        queue.finish()
        if used.load(ordering: .relaxed) { await delivering.value }
    }
}
