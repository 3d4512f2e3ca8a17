import PostgresNIO
import Synchronization
import SpoolCore
import SpoolStore

/// One running node per node name. A node's name is what its claims, leases and restart
/// recovery go by: two live nodes with one name each recovered the other's running jobs as
/// interrupted and gave them back as unanswered claims, so the same attempt ran twice, over
/// and over (found by attacking the build: a config file copied to every node, `node` in it;
/// or two hosts with one short name and the same data_dir).
extension PostgresJobStore {
    /// Takes this node's name for as long as the store is open: a session advisory lock, on a
    /// connection of its own, keyed by the name. It goes with the session — when the node stops,
    /// or its process dies and the server closes the connection — so a node restarted after a
    /// crash takes it again at once. When its machine died instead, the database learns it from
    /// the session's TCP keepalives (set short on it, about 15 s; found in review: with the
    /// defaults, two hours), so a start waits up to `patience` for the name before it throws,
    /// saying another node holds it.
    public func holdNodeName(patience: Duration = .seconds(20)) async throws {
        let deadline = ContinuousClock.now + patience
        var waiting = false
        while true {
            let connection: PostgresConnection
            do {
                connection = try await PostgresConnection.connect(configuration: try location.connectionConfiguration(), id: 1, logger: logger)
            } catch {
                throw StoreError(.storageUnavailable, "cannot reach the PostgreSQL store at \(location): \(Self.describe(error))")
            }
            let held: Bool
            do {
                held = try await Self.lockName(node, on: connection, logger: logger)
            } catch {
                try? await connection.close()
                throw translate(error, doing: "take the node name \"\(node)\"")
            }
            if held {
                nameHold.withLock { $0 = .held }
                tasks.withLock { tasks in
                    tasks.append(Task { [weak self] in await self?.keepNodeName(connection) })   // unstructured: lives as long as the store; `close()` cancels it
                }
                return
            }
            try? await connection.close()
            guard ContinuousClock.now < deadline else {
                throw StoreError(.conflict, "another node named \"\(node)\" is running on this store (it holds the name); "
                    + "give each node a name of its own (node, or --node; by default the host name and a digest of data_dir)")
            }
            if !waiting {
                waiting = true
                logger.notice("another session holds this node's name; waiting for it (a node of this name whose machine died is let go within about 15 s)",
                              metadata: ["node": "\(node)"])
            }
            try await Task.sleep(for: .seconds(1))
        }
    }

    /// Holds the name's connection until the store closes; if the connection drops (a database
    /// restart), takes the name again on a new one, retrying every second. A connection that
    /// went dead without closing (half-open TCP: the database ended the session, this side never
    /// heard) would hold the name here for ever while another node took it: the holder is asked
    /// `SELECT 1` every `nameProbeInterval`, and one that does not answer within the store's
    /// operation timeout is dropped like a closed one; a try to take the name again is bounded
    /// the same way (found in review).
    private func keepNodeName(_ first: PostgresConnection) async {
        var connection: PostgresConnection? = first
        let limit = operationTimeout, logger = self.logger
        while !Task.isCancelled {
            if let held = connection {
                // Heard once per connection (a wait on the future per look would outlive each look:
                // `get()` does not listen to cancellation; found in review).
                let closed = Atomic(false)
                held.closeFuture.whenComplete { _ in closed.store(true, ordering: .relaxed) }
                await withTaskCancellationHandler {
                    while !Task.isCancelled {
                        for _ in 0..<Int(Self.nameProbeInterval / Self.nameCloseCheck) where !closed.load(ordering: .relaxed) {
                            try? await Task.sleep(for: Self.nameCloseCheck)
                        }
                        if closed.load(ordering: .relaxed) || Task.isCancelled { break }
                        let answered = (try? await answerWithin(limit, orThrow: CancellationError()) {
                            try await held.query("SELECT 1", logger: logger)
                            return true
                        }) ?? false
                        if !answered {
                            held.close().whenComplete { _ in }
                            break
                        }
                    }
                } onCancel: {
                    held.close().whenComplete { _ in }
                }
                // Closed for good before it goes: a connection dropped while its channel is still
                // closing trips PostgresNIO's assertion in a debug build.
                try? await held.close()
                connection = nil
                if Task.isCancelled { return }
                nameHold.withLock { $0 = .lost(since: ContinuousClock.now, taken: false) }
                logger.warning("lost the connection that holds this node's name; claiming no jobs until it is taken again",
                               metadata: ["node": "\(node)"])
            }
            try? await Task.sleep(for: .seconds(1))
            // Bounded: the connect by its own timeout, the lock by a watchdog that closes the
            // connection (its query then fails) — every connection made here is closed or kept,
            // none dropped (a debug build asserts on one dropped open).
            guard let fresh = try? await PostgresConnection.connect(configuration: try location.connectionConfiguration(), id: 1, logger: logger)
            else { continue }
            let watchdog = Task {   // unstructured: cancelled once the lock answers
                guard (try? await Task.sleep(for: limit)) != nil else { return }
                fresh.close().whenComplete { _ in }
            }
            let answer = try? await Self.lockName(node, on: fresh, logger: logger)
            watchdog.cancel()
            guard let held = answer else {   // no answer (an error, or cut off by the watchdog): tried again
                try? await fresh.close()
                continue
            }
            if held {
                connection = fresh
                nameHold.withLock { $0 = .held }
                logger.notice("holds this node's name again: claims jobs again", metadata: ["node": "\(node)"])
            } else {
                let first = nameHold.withLock { hold in
                    guard case .lost(let since, let taken) = hold else { return false }
                    hold = .lost(since: since, taken: true)
                    return !taken
                }
                if first {
                    logger.error("another node took this node's name while its connection was down: this node claims no jobs until that one stops; give each node a name of its own",
                                 metadata: ["node": "\(node)"])
                }
                try? await fresh.close()
            }
        }
        try? await connection?.close()
    }

    /// How often the connection holding the name is asked whether it still answers, and how
    /// soon its close is noticed.
    static let nameProbeInterval: Duration = .seconds(5)
    static let nameCloseCheck: Duration = .milliseconds(250)

    private static func lockName(_ node: String, on connection: PostgresConnection, logger: Logger) async throws -> Bool {
        // The database notices this session's end within about 15 s of its machine's (keepalive
        // probes after 5 s idle, every 2 s, 3 unanswered; unacknowledged writes after 10 s).
        for setting in ["tcp_keepalives_idle = 5", "tcp_keepalives_interval = 2", "tcp_keepalives_count = 3", "tcp_user_timeout = 10000"] {
            try await connection.query(PostgresQuery(unsafeSQL: "SET " + setting), logger: logger)
        }
        let key = "spool:node:" + node
        return try await connection.query("SELECT pg_try_advisory_lock(hashtext(\(key)), hashtext(reverse(\(key))))", logger: logger)
            .decodeFirst(Bool.self) ?? false
    }
}

/// Whether a node holds its name (`PostgresJobStore.holdNodeName`).
enum NameHold: Sendable {
    /// Never taken: a store used without `holdNodeName` (tests, tools) claims as it likes.
    case untracked
    case held
    /// Its connection dropped at `since`; `taken`: another session holds the name now.
    case lost(since: ContinuousClock.Instant, taken: Bool)

    var mayClaim: Bool {
        if case .lost = self { return false }
        return true
    }
}

extension PostgresJobStore {
    /// Why this node claims no jobs, while another node holds its name (nil while its
    /// connection is merely down: the store's own failures say so).
    public var nameProblem: String? {
        guard case .lost(let since, true) = nameHold.withLock({ $0 }) else { return nil }
        return "another node holds this node's name \"\(node)\" (for \(Int((ContinuousClock.now - since).inSeconds.rounded())) s): "
            + "this node claims no jobs until that one stops; give each node a name of its own"
    }
}
