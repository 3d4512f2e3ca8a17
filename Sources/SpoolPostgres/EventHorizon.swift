import Logging
import PostgresNIO
import SpoolCore
import Synchronization

/// The highest event id up to which the shared event log is complete.
///
/// Event ids come from a sequence, and concurrent transactions on many nodes commit out of
/// order: id 11 can be visible while id 10 is still being committed. A reader that took 11 and
/// moved its cursor past 10 would lose event 10 for good. So readers only see events up to the
/// *horizon*: the end of the unbroken run of committed ids. A hole is waited for (its
/// transaction is about to commit) and skipped after `holeTimeout` (it belonged to a
/// transaction that rolled back and will never fill).
///
/// One loop per store advances the horizon when poked (a commit here, or a notification from
/// another node), so many readers share one query; it reports the jobs whose events it passed,
/// so that waiters on this node hear about changes made on other nodes (this node's own
/// commits wake its waiters directly).
final class EventHorizon: Sendable {
    static let holeTimeout: Duration = .seconds(1)
    static let batch = 10_000
    static let minimumInterval: Duration = .milliseconds(2)

    private struct State {
        var settled: Int64 = 0
        var hole: (id: Int64, since: ContinuousClock.Instant)?
    }

    private let state = Mutex(State())
    private let pokes: AsyncStream<Void>
    private let pokeSink: AsyncStream<Void>.Continuation

    init() {
        (pokes, pokeSink) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    var settled: Int64 { state.withLock { $0.settled } }

    func start(at id: Int64) { state.withLock { $0.settled = id } }

    /// Asks the loop to look for newly committed events.
    func poke() { pokeSink.yield() }

    func finish() { pokeSink.finish() }

    /// Runs until `finish`. `advanced` gets the new horizon and the jobs of the events passed.
    func run(_ client: PostgresClient, node: String, logger: Logger, advanced: @Sendable (Int64, Set<String>) -> Void) async {
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
            if state.withLock({ $0.hole != nil }) {
                // Look again soon: the hole fills when its transaction commits, or times out.
                Task { [pokeSink] in  // unstructured: a one-shot delayed poke that outlives nothing (the loop may have finished)
                    try? await Task.sleep(for: .milliseconds(20))
                    pokeSink.yield()
                }
            }
        }
    }

    /// One step; true when a full batch was read (there may be more).
    private func refresh(_ client: PostgresClient, node: String, logger: Logger, advanced: @Sendable (Int64, Set<String>) -> Void) async throws -> Bool {
        let from = settled
        let rows = try await client.query("""
            SELECT id, CASE WHEN origin = \(node) THEN NULL ELSE job_id END FROM events WHERE id > \(from) ORDER BY id LIMIT \(Self.batch)
            """, logger: logger)
        var ids: [(Int64, String?)] = []
        for try await (id, job) in rows.decode((Int64, String?).self) { ids.append((id, job)) }
        var jobs: Set<String> = []
        let now = ContinuousClock.now
        let horizon = state.withLock { state -> Int64 in
            var expected = state.settled + 1
            if ids.isEmpty { state.hole = nil }
            for (id, job) in ids {
                if id != expected {
                    if let hole = state.hole, hole.id == expected, now - hole.since >= Self.holeTimeout {
                        expected = id   // rolled back: it will never be filled
                    } else {
                        if state.hole?.id != expected { state.hole = (expected, now) }
                        break
                    }
                }
                if let job { jobs.insert(job) }
                expected = id + 1
                state.hole = nil
            }
            state.settled = expected - 1
            return state.settled
        }
        if horizon > from { advanced(horizon, jobs) }
        return ids.count == Self.batch && horizon > from
    }
}
