import Logging
import PostgresNIO
import SpoolCore
import SpoolStore
import Synchronization

/// The highest event id up to which the shared event log is complete.
///
/// Event ids come from a sequence (one at a time: it caches none), and concurrent transactions
/// on many nodes commit out of order: id 11 can be visible while id 10 is still being
/// committed. A reader that took 11 and moved its cursor past 10 would lose event 10 for good.
/// So readers only see events up to the *horizon*: the end of the unbroken run of committed ids.
///
/// An id missing below a visible one (a *hole*) belongs to a transaction that is still open or
/// that rolled back, and how long a transaction stays open between taking an id and committing
/// says nothing (an array of 10,000 tasks, a rescue, a COMMIT waiting on fsync or on a row
/// lock): no time limit can tell the two apart. PostgreSQL's transaction state can:
///
/// - When holes are first seen, every id up to the newest one read (`Pending.upTo`) has been
///   handed out already. `nextval` runs as the row that takes the id is inserted, which gives
///   the transaction its xid; `settle` later each transaction that took one of those ids has
///   its xid, and the *barrier*, the `xmax` of a snapshot read then (the next xid to be
///   assigned), is above all of them.
/// - Each later look reads a snapshot's `xmin` (the oldest xid still running) first and the
///   events after it. Once `xmin >= barrier`, every one of those transactions has ended: the
///   ones that committed have their events in that read, and an id up to `upTo` still missing
///   will never be filled (rolled back), so it is passed.
/// - A hole above `upTo` (taken later) waits for a barrier of its own.
///
/// So a hole stays open as long as the transaction that may fill it does, however long. Each
/// transaction of this database holding an xid older than the barrier holds it open too: that
/// delays the events after a rolled-back id, never loses one. Those of other databases on the
/// server do not (`pg_stat_activity` tells them apart; the snapshot's `xmin` is server-wide).
///
/// One loop per store advances the horizon when poked (a commit here, or a notification from
/// another node; with neither, every second), so many readers share one query; it reports the jobs whose events it passed,
/// so that waiters on this node hear about changes made on other nodes (this node's own
/// commits wake its waiters directly). While holes are open it looks again every 20 ms.
final class EventHorizon: Sendable {
    /// How long after holes are first seen the barrier is read: ample for each transaction that
    /// took one of their ids (its `nextval` and the insert of its row are one step) to have its xid.
    static let settle: Duration = .milliseconds(100)
    static let batch = 10_000
    static let minimumInterval: Duration = .milliseconds(2)
    /// How often the log is looked at with no poke (a notification missed).
    static let fallbackInterval: Duration = .seconds(1)
    /// How many of the newest events `start(newest:)` looks at for holes.
    static let startupWindow = 1000

    /// Holes waited for: every id up to `upTo` was handed out before `since`; `barrier` (read
    /// `settle` after it) is above the xid of every transaction that took one.
    private struct Pending {
        var upTo: Int64
        var since: ContinuousClock.Instant
        var barrier: Int64?
    }

    private struct State {
        var settled: Int64 = 0
        var pending: Pending?
    }

    private let state = Mutex(State())
    private let pokes: AsyncStream<Void>
    private let pokeSink: AsyncStream<Void>.Continuation

    init() {
        (pokes, pokeSink) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    var settled: Int64 { state.withLock { $0.settled } }

    func start(at id: Int64) { state.withLock { $0.settled = id } }

    /// Where the horizon starts, given the newest ids of the log (at most `startupWindow`, in
    /// any order): at the end of the unbroken run below their first hole, which may belong to a
    /// transaction still open on another node (the loop decides about it as about any hole; the
    /// committed events it passes again only wake waiters). Below the oldest of a full window
    /// the log is taken as complete; a shorter one is the whole log, so its holes from id 1 are
    /// the loop's to decide too.
    static func start(newest ids: [Int64]) -> Int64 {
        let ascending = ids.sorted()
        guard let oldest = ascending.first else { return 0 }
        var end = ascending.count < startupWindow ? 0 : oldest
        for id in ascending where id > end {
            guard id == end + 1 else { break }
            end = id
        }
        return end
    }

    /// Asks the loop to look for newly committed events.
    func poke() { pokeSink.yield() }

    func finish() { pokeSink.finish() }

    /// Runs until `finish`. `advanced` gets the new horizon and the jobs of the events passed.
    func run(_ client: PostgresClient, node: String, logger: Logger, advanced: @Sendable (Int64, Set<String>) -> Void) async {
        await withDiscardingTaskGroup { group in
            // Other nodes' commits are heard by notification; a listening connection that died
            // without a word (half-open TCP) would leave this node's streams and waits stalled
            // until it is noticed: the log is looked at now and then anyway.
            group.addTask { [pokeSink] in
                while (try? await Task.sleep(for: Self.fallbackInterval)) != nil { pokeSink.yield() }
            }
            await follow(client, node: node, logger: logger, advanced: advanced)
            group.cancelAll()
        }
    }

    private func follow(_ client: PostgresClient, node: String, logger: Logger, advanced: @Sendable (Int64, Set<String>) -> Void) async {
        for await _ in pokes {
            var more = true
            while more {
                do {
                    more = try await refresh(client, node: node, logger: logger, advanced: advanced)
                } catch {
                    guard !Task.isCancelled else { return }
                    logger.warning("could not read the shared event log; retrying", metadata: ["error": "\(String(reflecting: error))"])
                    try? await Task.sleep(for: .milliseconds(200))
                    more = !Task.isCancelled
                }
            }
            // Under load every commit on every node pokes: look at most every few
            // milliseconds, so one query covers many commits.
            try? await Task.sleep(for: Self.minimumInterval)
            if state.withLock({ $0.pending != nil }) {
                // Look again soon: the holes fill when their transactions commit, or are passed
                // once those have ended.
                Task { [pokeSink] in  // unstructured: a one-shot delayed poke that outlives nothing (the loop may have finished)
                    try? await Task.sleep(for: .milliseconds(20))
                    pokeSink.yield()
                }
            }
        }
    }

    /// One step; true when a full batch was read (there may be more).
    private func refresh(_ client: PostgresClient, node: String, logger: Logger, advanced: @Sendable (Int64, Set<String>) -> Void) async throws -> Bool {
        // Only this loop changes the state after `start`.
        let (from, pending) = state.withLock { ($0.settled, $0.pending) }
        // Whether every transaction that could fill the pending holes has ended: read before
        // the events, so that the events read sees each of them that committed.
        var ended = false
        if let pending, pending.barrier != nil || ContinuousClock.now - pending.since >= Self.settle {
            // The barrier as a 32-bit xid (what `pg_stat_activity` shows), 3 at the wrap (xids 0-2 are never handed out).
            let barrier32 = pending.barrier.map { max(3, $0 % (1 << 32)) } ?? 3
            let snapshot = try await client.query("""
                SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint,
                       (SELECT count(*) FROM pg_stat_activity AS a WHERE a.datname = current_database()
                          AND age(a.backend_xid) > age(\(String(barrier32))::xid))
                       + (SELECT count(*) FROM pg_prepared_xacts AS p WHERE p.database = current_database()
                          AND age(p.transaction) > age(\(String(barrier32))::xid))
                FROM pg_current_snapshot() AS s
                """, logger: logger).decodeFirstRow((Int64, Int64, Int64).self)
            guard let (xmin, xmax, older) = snapshot else { throw StoreError(.other, "the database did not return its snapshot") }
            if let barrier = pending.barrier {
                // Ended when no transaction older than the barrier is still running in this
                // database (only this database's can fill a hole; `backend_xid` is shown for
                // every role's sessions, and a prepared transaction, which has no session, is
                // counted from `pg_prepared_xacts`), or in any (the snapshot's xmin).
                ended = xmin >= barrier || older == 0
            } else {
                state.withLock { $0.pending?.barrier = xmax }
            }
        }
        // While holes wait, nothing past them can be passed: only the ids up to the newest one seen
        // with them are read (the holes fill, or are passed once their transactions have ended).
        let limit = pending.map { ended ? Self.batch : Int(min(Int64(Self.batch), max(1, $0.upTo - from))) } ?? Self.batch
        let rows = try await client.query("""
            SELECT id, CASE WHEN origin = \(node) THEN NULL ELSE job_id END FROM events WHERE id > \(from) ORDER BY id LIMIT \(limit)
            """, logger: logger)
        var ids: [(Int64, String?)] = []
        for try await (id, job) in rows.decode((Int64, String?).self) { ids.append((id, job)) }
        var jobs: Set<String> = []
        let now = ContinuousClock.now   // after the read: every id it saw was handed out before
        let horizon = state.withLock { state -> Int64 in
            var expected = state.settled + 1
            for (id, job) in ids {
                if id != expected, ended, let pending = state.pending, expected <= pending.upTo {
                    expected = min(id, pending.upTo + 1)   // rolled back: they will never be filled
                }
                if id != expected {
                    if state.pending.map({ expected > $0.upTo }) ?? true {
                        state.pending = Pending(upTo: ids[ids.count - 1].0, since: now)
                    }
                    break
                }
                if let job { jobs.insert(job) }
                expected = id + 1
            }
            // Nothing visible past the horizon any more (the events after the holes were trimmed)
            // and every transaction that could fill them ended: passed too, or the loop would
            // look every 20 ms for good.
            if ids.isEmpty, ended, let pending = state.pending { expected = max(expected, pending.upTo + 1) }
            state.settled = expected - 1
            if let pending = state.pending, state.settled >= pending.upTo { state.pending = nil }
            return state.settled
        }
        if horizon > from { advanced(horizon, jobs) }
        return ids.count == limit && horizon > from
    }
}
