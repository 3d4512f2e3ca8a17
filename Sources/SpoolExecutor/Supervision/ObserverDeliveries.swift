import SpoolCore
import Synchronization

/// A job's progress and output on their way to its observer (the scheduler, and through it the
/// store), in order, by one task: the worker's pipes are read on meanwhile. A store slow to
/// take a progress report once left the heartbeats after it unread, and a worker that beat
/// every few seconds was killed as hung with its job. Output beyond what is waiting already
/// (256 chunks) is dropped for the observer only — the log file has all of it, and the
/// scheduler keeps a job's first 64 KiB as events.
final class ObserverDeliveries: Sendable {
    private enum Delivery: Sendable {
        case message(JobMessage)
        case output([UInt8])
    }

    private let queue: AsyncStream<Delivery>.Continuation
    private let delivering: Task<Void, Never>
    /// Something was queued (a job that says nothing ends without waiting for the task).
    private let used = Atomic<Bool>(false)

    init(_ observer: ExecutionObserver) {
        let (deliveries, queue) = AsyncStream<Delivery>.makeStream(bufferingPolicy: .bufferingOldest(256))
        self.queue = queue
        // unstructured: it delivers while the worker's actor reads on; `finish` awaits it.
        delivering = Task {
            for await delivery in deliveries {
                switch delivery {
                case .message(let message): await observer.message(message)
                case .output(let bytes): await observer.output(bytes)
                }
            }
        }
    }

    func message(_ message: JobMessage) { deliver(.message(message)) }
    func output(_ bytes: [UInt8]) { deliver(.output(bytes)) }

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
