import Synchronization

/// Group commit: concurrent callers share one transaction (and one fsync).
///
/// The first caller to arrive becomes the leader and commits its own item at once; callers
/// that arrive while a commit is in flight queue up and the leader commits them together in
/// the next round, until none are left. No background task, no timer: with one client every
/// item commits alone at full speed; with many, the cost of the sync is shared.
public final class GroupCommit<Item: Sendable, Output: Sendable>: Sendable {
    public typealias Commit = @Sendable ([Item]) async throws -> [Result<Output, any Error>]
    private typealias Waiter = CheckedContinuation<Result<Output, any Error>?, Never>

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

    public func submit(_ item: Item) async throws -> Output {
        while true {
            let leads = state.withLock { state in
                if state.leaderActive { return false }
                state.leaderActive = true
                return true
            }
            if leads { return try await lead(with: item).get() }
            // Follow: hand the item to the active leader, unless it left in the meantime.
            let result: Result<Output, any Error>? = await withCheckedContinuation { (waiter: Waiter) in
                let queued = state.withLock { state in
                    guard state.leaderActive else { return false }
                    state.pending.append((item, waiter))
                    return true
                }
                if !queued { waiter.resume(returning: nil) }
            }
            if let result { return try result.get() }
        }
    }

    private func lead(with item: Item) async -> Result<Output, any Error> {
        var mine: Result<Output, any Error>?
        var batch: [(Item, Waiter?)] = [(item, nil)]
        while !batch.isEmpty {
            let results: [Result<Output, any Error>]
            do {
                let items = batch.map(\.0), commit = self.commit
                // unstructured: the batch belongs to every caller in it, so it must not inherit
                // the leader's cancellation (GRDB refuses to write for a cancelled task).
                results = try await Task { try await commit(items) }.value  // unstructured: see above
                precondition(results.count == batch.count, "a group commit must answer every item")
            } catch {
                results = Array(repeating: .failure(error), count: batch.count)
            }
            for ((_, waiter), result) in zip(batch, results) {
                if let waiter { waiter.resume(returning: result) } else { mine = result }
            }
            batch = state.withLock { state in
                let taken = Array(state.pending.prefix(maxBatch))
                state.pending.removeFirst(taken.count)
                if taken.isEmpty { state.leaderActive = false }
                return taken.map { ($0.0, Optional($0.1)) }
            }
        }
        return mine!
    }
}
