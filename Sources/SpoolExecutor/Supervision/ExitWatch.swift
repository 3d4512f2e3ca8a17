import Dispatch
import Glibc
import Synchronization

/// Tells when a child has exited, without reaping it: it stays a zombie — its pid and process
/// group id still its own — until swift-subprocess reaps it. Its pidfd turns readable then;
/// Dispatch watches a copy of it, so no thread waits. Without a pidfd (a kernel older than 5.3)
/// its /proc state is polled instead, every 10 ms at first, every second at the most.
final class ExitWatch: Sendable {
    private enum State {
        case watching
        case waiting(CheckedContinuation<Bool, Never>)
        case ended(exited: Bool)
    }

    private let state = Mutex(State.watching)
    /// Stops the watching (cancels the Dispatch source, which closes the copy, or the polling).
    private let release = Mutex<(@Sendable () -> Void)?>(nil)

    init(pid: Int32, processDescriptor: Int32) {
        let descriptor = processDescriptor >= 0 ? fcntl(processDescriptor, F_DUPFD_CLOEXEC, 0) : -1
        if descriptor >= 0 {
            // A copy: swift-subprocess closes its own once it has reaped the child, maybe before
            // Dispatch has let go of this one. (A source's `cancel` may be called from any thread.)
            nonisolated(unsafe) let source = DispatchSource.makeReadSource(fileDescriptor: descriptor, queue: .global())
            source.setEventHandler { [self] in end(exited: true) }
            source.setCancelHandler { _ = Glibc.close(descriptor) }
            release.withLock { $0 = { source.cancel() } }
            source.activate()
        } else {
            let polling = Task { [self] in   // unstructured: stopped by `stop()`, or ends once the child has exited
                var pause = Duration.milliseconds(10)
                while !Task.isCancelled {
                    if let running = try? await BlockingIO.run({ OrphanReaper.isRunning(pid) }), !running { return end(exited: true) }
                    try? await Task.sleep(for: pause)
                    pause = min(pause * 2, .seconds(1))
                }
            }
            release.withLock { $0 = { polling.cancel() } }
            if case .ended = state.withLock({ $0 }) { release.withLock { $0.take() }?() }
        }
    }

    /// True once the child has exited; false if `stop()` came first. Not cut short by cancellation:
    /// a cancelled supervision tears the child down, and its exit is what must be noticed then.
    func exited() async -> Bool {
        await withCheckedContinuation { continuation in
            let ended: Bool? = state.withLock { state in
                switch state {
                case .watching:
                    state = .waiting(continuation)
                    return nil
                case .waiting:
                    preconditionFailure("one waiter at a time")
                case .ended(let exited):
                    return exited
                }
            }
            if let ended { continuation.resume(returning: ended) }
        }
    }

    /// Stops watching: a wait still under way (or one still to come) answers false. Idempotent.
    func stop() { end(exited: false) }

    private func end(exited: Bool) {
        let waiter: CheckedContinuation<Bool, Never>? = state.withLock { state in
            switch state {
            case .watching:
                state = .ended(exited: exited)
                return nil
            case .waiting(let continuation):
                state = .ended(exited: exited)
                return continuation
            case .ended:
                return nil
            }
        }
        waiter?.resume(returning: exited)
        release.withLock { $0.take() }?()
    }
}
