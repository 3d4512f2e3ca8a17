import Synchronization

/// Group commit: concurrent callers share one transaction (and one fsync).
///
/// The first caller to arrive becomes the leader and commits its own item at once; callers
/// that arrive while a commit is in flight queue up. When the leader's commit is done it
/// answers the callers in it and hands the lead to the first of those queued since, who commits
/// them all in the next round and hands on in turn. No background task, no timer: with one
/// client every item commits alone at full speed; with many, the cost of the sync is shared,
/// and no caller waits for more than the commit in flight and its own (a leader that committed
/// every later round itself answered its own caller only once the queue ran dry: under steady
/// load, tens of milliseconds — the submit p99).
public final class GroupCommit<Item: Sendable, Output: Sendable>: Sendable {
    public typealias Commit = @Sendable ([Item]) async throws -> [Result<Output, any Error>]
    private typealias Waiter = CheckedContinuation<Turn, Never>

    /// What a queued caller is woken with.
    private enum Turn: Sendable {
        /// Its item was committed (or failed) in a batch.
        case done(Result<Output, any Error>)
        /// It leads the next round: its own item with these queued after it.
        case lead([(Item, Waiter)])
        /// The leader left before the item was queued: try again.
        case retry
    }

    private struct State {
        var leaderActive = false
        var pending: [(Item, Waiter)] = []
    }

    private let state = Mutex(State())
    private let commit: Commit
    private let maxBatch: Int

    /// `commit` writes a batch in one transaction and returns one result per item, in order;
    /// it throws only when the whole transaction failed.
    public init(maxBatch: Int = 512, commit: @escaping Commit) {
        self.maxBatch = maxBatch
        self.commit = commit
    }

    /// Callers queued behind the commit in flight.
    public var waiting: Int { state.withLock { $0.pending.count } }

    public func submit(_ item: Item) async throws -> Output {
        while true {
            let leads = state.withLock { state in
                if state.leaderActive { return false }
                state.leaderActive = true
                return true
            }
            if leads { return try await lead(item, with: []).get() }
            // Follow: hand the item to the active leader, unless it left in the meantime.
            let turn: Turn = await withCheckedContinuation { (waiter: Waiter) in
                let queued = state.withLock { state in
                    guard state.leaderActive else { return false }
                    state.pending.append((item, waiter))
                    return true
                }
                if !queued { waiter.resume(returning: .retry) }
            }
            switch turn {
            case .done(let result): return try result.get()
            case .lead(let others): return try await lead(item, with: others).get()
            case .retry: continue
            }
        }
    }

    /// Commits `item` and `others` in one transaction, answers `others`, and hands the lead to
    /// the first caller queued meanwhile (or gives it up when there is none).
    private func lead(_ item: Item, with others: [(Item, Waiter)]) async -> Result<Output, any Error> {
        let items = [item] + others.map(\.0)
        let results: [Result<Output, any Error>]
        do {
            let commit = self.commit
            // unstructured: the batch belongs to every caller in it, so it must not inherit
            // the leader's cancellation (GRDB refuses to write for a cancelled task).
            results = try await Task { try await commit(items) }.value  // unstructured: see above
            precondition(results.count == items.count, "a group commit must answer every item")
        } catch {
            results = Array(repeating: .failure(error), count: items.count)
        }
        for ((_, waiter), result) in zip(others, results.dropFirst()) { waiter.resume(returning: .done(result)) }
        let successor = state.withLock { state -> (Waiter, [(Item, Waiter)])? in
            guard let first = state.pending.first else {
                state.leaderActive = false
                return nil
            }
            let taken = state.pending.prefix(maxBatch)
            state.pending.removeFirst(taken.count)
            return (first.1, Array(taken.dropFirst()))
        }
        if let (next, batch) = successor { next.resume(returning: .lead(batch)) }
        return results[0]
    }
}
