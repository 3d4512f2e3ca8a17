import SpoolCore
import Synchronization

/// Wakes waiters (`GET /v1/jobs/{id}?wait=`) when a job changes. Stores call `publish`
/// after a change commits; a waiter subscribes before it reads, then waits.
public final class JobChangeNotifier: Sendable {
    private struct Waiters {
        var nextToken = 0
        var byJob: [JobID: [Int: AsyncStream<Job?>.Continuation]] = [:]
    }

    private let waiters = Mutex(Waiters())

    public init() {}

    public func watch(_ id: JobID) -> JobWatch {
        let (stream, continuation) = AsyncStream<Job?>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let token = waiters.withLock { state in
            state.nextToken += 1
            state.byJob[id, default: [:]][state.nextToken] = continuation
            return state.nextToken
        }
        continuation.onTermination = { [weak self] _ in
            self?.waiters.withLock { state in
                state.byJob[id]?[token] = nil
                if state.byJob[id]?.isEmpty == true { state.byJob[id] = nil }
            }
        }
        return JobWatch(stream: stream, continuation: continuation)
    }

    public func publish(_ id: JobID) { yield(nil, to: id) }

    public func publish(_ ids: some Sequence<JobID>) {
        for id in ids { publish(id) }
    }

    /// After a change that left `job` as it is now: a job that has ended goes with the wake-up
    /// (it changes no more, so the waiter need not read it again); any other state is only a wake-up
    /// (a later change may be published first).
    public func publish(_ job: Job) { yield(job.state.isTerminal ? job : nil, to: job.id) }

    private func yield(_ ended: Job?, to id: JobID) {
        let targets = waiters.withLock { state in state.byJob[id].map { Array($0.values) } ?? [] }
        for continuation in targets { continuation.yield(ended) }
    }
}

/// One subscription to a job's changes. Ends (and unregisters) when it is deinitialised.
public final class JobWatch: Sendable {
    /// What a wake-up says.
    public enum Change: Sendable {
        /// The job ended: this is it, as stored.
        case ended(Job)
        /// It changed: read it.
        case changed
    }

    private let stream: AsyncStream<Job?>
    private let continuation: AsyncStream<Job?>.Continuation

    init(stream: AsyncStream<Job?>, continuation: AsyncStream<Job?>.Continuation) {
        self.stream = stream
        self.continuation = continuation
    }

    deinit { continuation.finish() }

    /// Ends the watch (the server is shutting down): a wait in progress, and every later one,
    /// returns nil at once.
    public func end() { continuation.finish() }

    /// Returns true when the job changed within `timeout`, false when the time ran out.
    public func next(timeout: Duration) async -> Bool { await nextChange(timeout: timeout) != nil }

    /// The job's next change within `timeout` (nil when the time ran out).
    public func nextChange(timeout: Duration) async -> Change? {
        let stream = self.stream
        return await withTaskGroup(of: Change?.self) { group in
            group.addTask {
                for await ended in stream { return ended.map(Change.ended) ?? .changed }
                return nil
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let change = await group.next() ?? nil
            group.cancelAll()
            return change
        }
    }
}
