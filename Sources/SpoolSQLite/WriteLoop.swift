import Dispatch
import GRDB
import SpoolCore
import Synchronization

/// The job store's writes, committed by one loop on GRDB's writer queue (group commit).
///
/// Whatever arrives while a transaction commits goes into the next one, so concurrent submits,
/// claims and ends share a sync. The loop runs on the writer's own thread: when a commit is done
/// it answers that batch and takes the next one there and then. (`GroupCommit`, which the
/// PostgreSQL store uses, hands the lead from one caller's task to the next: between two
/// commits, a task created, a hop onto the writer queue, a hop back and a hand-off — four
/// thread wake-ups on a path that is otherwise the sync and a few statements.)
///
/// After `maxRounds` transactions in a row the loop steps aside for the pool's other writers
/// (tokens, the webhook outbox) and queues itself again behind them.
///
/// A write that need not have a sync of its own (`submit(lingering:)`: a job's log lines, its
/// list of outputs) waits up to that long for another write to share a transaction with, and
/// only then commits alone: one `fdatasync` per tiny job instead of two.
final class WriteLoop: Sendable {
    typealias Step = @Sendable (Database) throws -> any Sendable
    private typealias Waiter = CheckedContinuation<any Sendable, any Error>

    private struct State {
        var pending: [(step: Step, waiter: Waiter)] = []
        /// A loop is queued on the writer, or running there.
        var looping = false
        /// A timer is set to start the loop for lingering writes.
        var flushAt: ContinuousClock.Instant?
    }

    private let state = Mutex(State())
    private let pool: DatabasePool
    private let maxBatch: Int
    private let maxRounds: Int

    init(pool: DatabasePool, maxBatch: Int = 512, maxRounds: Int = 32) {
        self.pool = pool
        self.maxBatch = maxBatch
        self.maxRounds = maxRounds
    }

    /// Writes waiting for the next transaction (for tests).
    var waiting: Int { state.withLock { $0.pending.count } }

    /// Runs `step` in the next transaction and answers once it committed. A step that throws
    /// fails its whole transaction (every step in it gets the error).
    func submit(_ step: @escaping Step) async throws -> any Sendable {
        try await submit(step, lingering: nil)
    }

    /// `submit`, but the step waits up to `lingering` for another write to share a transaction
    /// with (any write that comes meanwhile takes it along).
    func submit(_ step: @escaping Step, lingering: Duration?) async throws -> any Sendable {
        try await withCheckedThrowingContinuation { (waiter: Waiter) in
            let (start, delay) = state.withLock { state -> (Bool, Duration?) in
                state.pending.append((step, waiter))
                guard !state.looping else { return (false, nil) }
                guard let lingering else {
                    state.looping = true
                    return (true, nil)
                }
                let due = ContinuousClock.now + lingering
                if let set = state.flushAt, set <= due { return (false, nil) }
                state.flushAt = due
                return (false, lingering)
            }
            if start { queueLoop() }
            if let delay { flush(after: delay) }
        }
    }

    private func flush(after delay: Duration) {
        DispatchQueue.global().asyncAfter(deadline: .now() + delay.inSeconds) { [self] in flush() }
    }

    /// The lingering writes' time is up: they commit, with whatever else is waiting.
    private func flush() {
        let (start, early) = state.withLock { state -> (Bool, Duration?) in
            guard let due = state.flushAt else { return (false, nil) }   // they went along already
            let now = ContinuousClock.now
            if due > now { return (false, due - now) }   // a later one's timer, or this one came early
            state.flushAt = nil
            guard !state.looping, !state.pending.isEmpty else { return (false, nil) }
            state.looping = true
            return (true, nil)
        }
        if start { queueLoop() }
        if let early { flush(after: early) }
    }

    private func queueLoop() {
        pool.asyncWriteWithoutTransaction { [self] db in loop(db) }
    }

    private func loop(_ db: Database) {
        for _ in 0..<maxRounds {
            let batch = state.withLock { state in
                let taken = Array(state.pending.prefix(maxBatch))
                state.pending.removeFirst(taken.count)
                if taken.isEmpty { state.looping = false }
                if state.pending.isEmpty { state.flushAt = nil }   // the lingering went along
                return taken
            }
            if batch.isEmpty { return }
            commit(batch, in: db)
        }
        queueLoop()   // still looping: behind the writes queued meanwhile
    }

    private func commit(_ batch: [(step: Step, waiter: Waiter)], in db: Database) {
        var outputs: [any Sendable] = []
        do {
            // GRDB's `inTransaction`, with its BEGIN and COMMIT from the statement cache (it
            // prepares both anew for every transaction).
            try db.execute(cached: "BEGIN IMMEDIATE TRANSACTION")
            do {
                outputs = try batch.map { entry in
                    let output = try entry.step(db)
                    // As GRDB checks: a step that swallowed an error which ended the transaction
                    // must not leave the next steps writing outside one.
                    guard db.isInsideTransaction else { throw DatabaseError(resultCode: .SQLITE_ABORT, message: "the transaction was aborted") }
                    return output
                }
                try db.execute(cached: "COMMIT TRANSACTION")
            } catch {
                try? db.rollback()   // when still in the transaction: an I/O error or a full disk may have ended it
                throw error
            }
        } catch {
            for entry in batch { entry.waiter.resume(throwing: error) }
            return
        }
        for (entry, output) in zip(batch, outputs) { entry.waiter.resume(returning: output) }
    }
}
