import SpoolCore
import Synchronization

/// A job's progress and output on their way to its observer (the scheduler, and through it the
/// store), in order, by one task: the worker's pipes are read on meanwhile. A store slow to
/// take a progress report once left the heartbeats after it unread, and a worker that beat
/// every few seconds was killed as hung with its job. Each report supersedes the one before:
/// while `messageLimit` of them wait, a new one waits apart instead, in place of any other
/// kept there, and goes once the queue has drained (a newer one queued meanwhile supersedes
/// it) — so the newest always arrives, and a job that reports without pause while the store
/// is slow cannot grow the queue without bound. Output is dropped for the observer only while
/// more than `outputLimit` bytes of it wait — the log file has all of it.
final class ObserverDeliveries: Sendable {
    private enum Delivery: Sendable {
        case message(JobMessage)
        case output([UInt8])
    }

    /// Output bytes that may wait for the observer; past them a chunk is not queued.
    static let outputLimit = 4 << 20
    /// Messages that may wait in the queue; past them the newest waits apart.
    static let messageLimit = 1024

    /// The queue and the task that empties it, made by the first delivery: a job that says
    /// nothing (most quick jobs) costs neither.
    private struct Started {
        var queue: AsyncStream<Delivery>.Continuation
        var delivering: Task<Void, Never>
    }

    private let observer: ExecutionObserver
    private let started = Mutex<Started?>(nil)
    /// Output bytes queued and not yet delivered.
    private let waitingOutput = Atomic<Int>(0)
    /// Messages queued and not yet delivered, and the newest one kept apart while too many were.
    private let waitingMessages = Mutex((count: 0, apart: JobMessage?.none))

    init(_ observer: ExecutionObserver) { self.observer = observer }

    /// Messages queued and not yet delivered (for tests).
    var messagesWaiting: Int { waitingMessages.withLock(\.count) }

    private func start() -> Started {
        let (deliveries, queue) = AsyncStream<Delivery>.makeStream()
        // unstructured: it delivers while the worker's actor reads on; `finish` awaits it.
        let delivering = Task {   // unstructured: see above
            for await delivery in deliveries {
                switch delivery {
                case .message(let message):
                    await observer.message(message)
                    let apart = waitingMessages.withLock { waiting in
                        waiting.count -= 1
                        return waiting.count == 0 ? waiting.apart.take() : nil
                    }
                    if let apart { await observer.message(apart) }
                case .output(let bytes):
                    await observer.output(bytes)
                    waitingOutput.subtract(bytes.count, ordering: .relaxed)
                }
            }
        }
        return Started(queue: queue, delivering: delivering)
    }

    func message(_ message: JobMessage) {
        let queued = waitingMessages.withLock { waiting in
            guard waiting.count < Self.messageLimit else {
                waiting.apart = message
                return false
            }
            waiting.count += 1
            waiting.apart = nil   // superseded by this newer one
            return true
        }
        if queued { deliver(.message(message)) }
    }

    func output(_ bytes: [UInt8]) {
        guard waitingOutput.load(ordering: .relaxed) <= Self.outputLimit else { return }
        waitingOutput.add(bytes.count, ordering: .relaxed)
        deliver(.output(bytes))
    }

    private func deliver(_ delivery: Delivery) {
        let queue = started.withLock { started in
            if started == nil { started = start() }
            return started!.queue
        }
        queue.yield(delivery)
    }

    /// Returns once everything queued has been delivered.
    func finish() async {
        guard let started = started.withLock({ $0 }) else { return }
        started.queue.finish()
        await started.delivering.value
    }
}
