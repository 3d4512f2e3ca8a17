import SpoolCore
import SpoolStore
import Synchronization

/// How long a test waits for something that should happen at once: long, because a limit is
/// only reached when something is wrong, and a shared 2-core CI machine has been seen to stall
/// every test for most of a minute (ten seconds failed seven waits at once).
public let patience: Duration = .seconds(60)

/// Runs `body`, failing with a sentence that says what was awaited if it takes longer than
/// `limit` of real time: a test never hangs, and never sleeps to let something happen. On a
/// timeout the body is cancelled and left behind (it may be stuck in a wait that ignores
/// cancellation: that is the bug the failure reports), so the test fails instead of hanging.
public func within<T: Sendable>(_ limit: Duration, _ what: String,
                                _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    let answer = Answer<T>()
    return try await withCheckedThrowingContinuation { continuation in
        answer.wait(continuation)
        let work = Task {   // unstructured: neither task may keep the caller waiting once the other has answered
            do { answer.settle(.success(try await body())) } catch { answer.settle(.failure(error)) }
        }
        Task {   // unstructured: the timer; see above
            try? await Task.sleep(for: limit)
            answer.settle(.failure(WaitTimedOut(description: "timed out after \(limit) waiting for \(what)")))
            work.cancel()
        }
    }
}

/// `within(patience, what, body)`.
public func within<T: Sendable>(_ what: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await within(patience, what, body)
}

/// `Task.yield()` for a test's polling loop, but it throws once the task is cancelled.
/// `within` cancels a body at its limit and leaves it behind; a loop over plain `Task.yield()`
/// whose condition never comes true spins on the cooperative pool for the rest of the run —
/// its two threads, on a 2-core machine — and starves every other test into a timeout of its
/// own, whose loop then spins too: the run never ends.
public func pollingYield() async throws {
    try Task.checkCancellation()
    await Task.yield()
}

/// Waits, at most `limit` of real time, until the job `id` in `store` satisfies `done`, looking
/// again at each of its changes; fails with a sentence naming `what`.
@discardableResult
public func untilJob(_ id: JobID, in store: any JobStore, _ what: String, within limit: Duration = patience,
                     satisfies done: @escaping @Sendable (Job) async throws -> Bool) async throws -> Job {
    try await within(limit, what) {
        while true {
            // Left behind at the limit, the wait stops: a cancelled watch answers at once, and
            // the loop would otherwise look again and again without ever suspending.
            try Task.checkCancellation()
            let watch = store.watch(id)   // before the look: a change in between is not missed
            guard let job = try await store.job(id) else { throw WaitTimedOut(description: "no job \(id)") }
            if try await done(job) { return job }
            _ = await watch.next(timeout: limit)
        }
    }
}

/// The first answer wins.
private final class Answer<T: Sendable>: Sendable {
    private let continuation = Mutex<CheckedContinuation<T, any Error>?>(nil)
    func wait(_ continuation: CheckedContinuation<T, any Error>) { self.continuation.withLock { $0 = continuation } }
    func settle(_ result: Result<T, any Error>) { continuation.withLock { $0.take() }?.resume(with: result) }
}

public struct WaitTimedOut: Error, CustomStringConvertible {
    public var description: String
    public init(description: String) { self.description = description }
}

extension AsyncStream where Element: Sendable {
    /// The next element, or a failure naming `what` after `limit` of real time.
    public func next(_ what: String, within limit: Duration = patience) async throws -> Element {
        let iterator = SendableIterator(self)
        return try await within(limit, what) {
            guard let element = await iterator.next() else { throw WaitTimedOut(description: "the stream of \(what) ended") }
            return element
        }
    }
}

/// Lets a test take elements one at a time across calls.
final class SendableIterator<Element: Sendable>: @unchecked Sendable {
    private var iterator: AsyncStream<Element>.Iterator
    init(_ stream: AsyncStream<Element>) { iterator = stream.makeAsyncIterator() }
    func next() async -> Element? { await iterator.next() }
}
