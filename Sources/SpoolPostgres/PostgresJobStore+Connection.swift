import Logging
import PostgresNIO
import SpoolCore
import SpoolStore

/// Connections, transactions, time limits, and PostgreSQL errors turned into `StoreError`s.
extension PostgresJobStore {
    /// Runs one statement outside the store's schema (tools: `spool bench` creates databases
    /// with it). Not for job data.
    public func execute(unsafeSQL sql: String) async throws {
        try await write("run a statement") { connection in
            _ = try await connection.query(PostgresQuery(unsafeSQL: sql), logger: self.logger)
        }
    }

    // MARK: - Transactions and errors

    func read<T: Sendable>(_ what: String, _ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        try await bounded(what) { try await self.client.withConnection { try await body($0) } }
    }

    /// One autocommitted statement (or several that need no transaction).
    func write<T: Sendable>(_ what: String, _ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        try await read(what, body)
    }

    func transaction<T: Sendable>(_ what: String, _ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        try await bounded(what) {
            try await self.client.withConnection { connection in
                try await connection.withTransaction(logger: self.logger) { try await body($0) }
            }
        }
    }

    /// Runs one store operation, translating its errors, and gives up after `operationTimeout`:
    /// while the database is unreachable the pool keeps retrying for about a minute before it
    /// fails a request, and an API answer or a slot should not wait that long to hear it. The
    /// answer does not wait for the operation to end: a query already sent ignores cancellation
    /// and waits for its answer as long as the network holds it (found by attacking the build:
    /// a blackholed link held requests for 90 s, a held lock for 49 s), so it is left to finish
    /// on its own (its connection goes back to the pool then) and the caller hears the timeout.
    ///
    /// An operation that ran out of time has a connection of its own tried (`probeReachable`):
    /// while the database takes none, later operations fail at once — a second's probe at
    /// most — instead of each waiting out the timeout (found by attacking the build: for the
    /// first minute of an outage every request waited 15 s for its 503). A slow database that
    /// still takes connections is left its whole timeout.
    private func bounded<T: Sendable>(_ what: String, _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
        let limit = operationTimeout, location = self.location
        if reachability.withLock({ $0.unreachable }), !(await probeReachable()) {
            throw StoreError(.storageUnavailable, "could not \(what): cannot reach the database at \(location)")
        }
        do {
            return try await answerWithin(limit, orThrow: Reachability.TimedOut(what: what, location: location, limit: limit), operation)
        } catch let timeout as Reachability.TimedOut {
            _ = await probeReachable()
            throw timeout.error
        } catch {
            throw translate(error, doing: what)
        }
    }

    /// Whether the database takes a connection now: asked at most once a second (what was found
    /// then stands), by one connection at a time however many operations ask, within 2 s.
    private func probeReachable() async -> Bool {
        let now = ContinuousClock.now
        let probe: Task<Bool, Never> = reachability.withLock { state in
            if let checked = state.checkedAt, now - checked < .seconds(1) {
                let known = !state.unreachable
                return Task { known }   // unstructured: answers at once with what was found
            }
            if let running = state.probe { return running }
            let location = self.location, logger = self.logger
            let running = Task {   // unstructured: shared by the operations that ask meanwhile, awaited by each
                guard var configuration = try? location.connectionConfiguration() else { return false }
                // The connection's own limit (not a wait abandoned around it: a connection that
                // came late would be left open).
                configuration.options.connectTimeout = .seconds(2)
                do {
                    let connection = try await PostgresConnection.connect(configuration: configuration, id: 0, logger: logger)
                    try? await connection.close()
                    return true
                } catch let error as PSQLError where error.serverInfo != nil {
                    // The server answered (too many clients, a password refused, starting up):
                    // it is there, and the pool's open connections may well work (found in review).
                    return true
                } catch {
                    return false
                }
            }
            state.probe = running
            return running
        }
        let reachable = await probe.value
        reachability.withLock { state in
            if state.probe == probe {
                state.probe = nil
                state.checkedAt = ContinuousClock.now
                if state.unreachable != !reachable {
                    logger.log(level: reachable ? .info : .warning, reachable ? "the database takes connections again"
                               : "the database takes no connection: store operations fail at once until it does")
                }
                state.unreachable = !reachable
            }
        }
        return reachable
    }

    /// A connection error in a few words (PSQLError's own description hides the cause).
    static func describe(_ error: any Error) -> String {
        guard let error = error as? PSQLError else { return "\(error)" }
        if let message = error.serverInfo?[.message] { return message }
        if let underlying = error.underlying { return "\(underlying)" }
        return "\(error.code)"
    }

    /// PostgreSQL errors become `StoreError`s here and nowhere else.
    func translate(_ error: any Error, doing what: String) -> any Error {
        if let error = error as? StoreError { return error }
        if let transaction = error as? PostgresTransactionError {
            return translate(transaction.closureError ?? transaction.beginError ?? transaction.commitError ?? error, doing: what)
        }
        guard let error = error as? PSQLError else {
            // The pool's own errors (its type is not public): it could not open a connection.
            if String(describing: type(of: error)).contains("ConnectionPoolError") {
                return StoreError(.storageUnavailable, "could not \(what): cannot reach the database at \(location) (\(error))")
            }
            return StoreError(.other, "could not \(what): \(error)")
        }
        if let state = error.serverInfo?[.sqlState] {
            let message = error.serverInfo?[.message] ?? state
            switch state {
            case "53100": return StoreError(.storageUnavailable, "could not \(what): the database server's disk is full (\(message))")
            case "25006", "53000", "53200", "53300", "57P01", "57P02", "57P03", "08000", "08003", "08006":
                return StoreError(.storageUnavailable, "could not \(what): the database is unavailable (\(message))")
            case "57014", "55P03":
                // A statement or lock timeout of the database's (a lock held elsewhere): try again later,
                // like any unavailable store (found by attacking the build: a 500 with no Retry-After).
                return StoreError(.storageUnavailable, "could not \(what): the database gave up waiting (\(message))")
            case "XX001", "XX002": return StoreError(.corrupt, "could not \(what): the database is damaged (\(message))")
            default: return StoreError(.other, "could not \(what): \(message) (SQLSTATE \(state))")
            }
        }
        switch error.code {
        case .connectionError, .serverClosedConnection, .clientClosedConnection, .poolClosed, .uncleanShutdown:
            return StoreError(.storageUnavailable, "could not \(what): cannot reach the database at \(location) (\(error.code))")
        default:
            return StoreError(.other, "could not \(what): \(String(reflecting: error))")
        }
    }
}

/// What the store knows of whether the database takes connections (`bounded`).
struct Reachability: Sendable {
    var unreachable = false
    var checkedAt: ContinuousClock.Instant?
    var probe: Task<Bool, Never>?

    /// An operation that ran out of time.
    struct TimedOut: Error {
        var what: String
        var location: PostgresLocation
        var limit: Duration
        var error: StoreError { StoreError(.storageUnavailable, "could not \(what): the database at \(location) did not answer within \(limit)") }
    }
}

extension PostgresRowSequence {
    /// The first row, decoded; nil when there is none.
    func decodeFirst<T: PostgresDecodable>(_ type: T.Type) async throws -> T? {
        for try await value in decode(T.self) { return value }
        return nil
    }

    func decodeFirstRow<each T: PostgresDecodable>(_ types: (repeat each T).Type) async throws -> (repeat each T)? {
        for try await value in decode((repeat each T).self) { return value }
        return nil
    }
}

extension Optional {
    func asyncFlatMap<U>(_ transform: (Wrapped) async throws -> U?) async rethrows -> U? {
        guard let self else { return nil }
        return try await transform(self)
    }
}

extension Duration {
    var microseconds: Int64 { components.seconds * 1_000_000 + components.attoseconds / 1_000_000_000_000 }
}

