import Foundation
import Logging
import SpoolCore
import SpoolHTTP
import SpoolPostgres
import SpoolSQLite
import SpoolStore
import SpoolExecutor

/// `spool token create | list | revoke`: the tokens live in the job store (SQLite file or
/// PostgreSQL), so these commands open the store a server uses — while it runs, too; the
/// server reads the tokens again within a second.
public enum TokenAdministration {
    /// Creates a token; returns its text (shown once: only its digest is stored).
    public static func create(_ configuration: ServerConfiguration, name: String, admin: Bool, limits: TenantLimits,
                              logger: Logger) async throws -> String {
        guard TokenRecord.isValidName(name) else {
            throw ConfigurationError("--name: a token's name may use \(TokenRecord.namePattern)")
        }
        if let value = limits.maxQueued, value < 1 { throw ConfigurationError("--max-queued must be at least 1") }
        if let value = limits.maxRunning, value < 1 { throw ConfigurationError("--max-running must be at least 1") }
        if let value = limits.maxPriority, !(Int(Int32.min)...Int(Int32.max)).contains(value) {
            throw ConfigurationError("--max-priority must be from \(Int32.min) to \(Int32.max)")
        }
        if let value = limits.rate, !(value > 0 && value.isFinite) { throw ConfigurationError("--rate must be a number of submits per second above 0") }
        guard TenantLimits.weightRange.contains(limits.weight) else {
            throw ConfigurationError("--weight must be from \(TenantLimits.weightRange.lowerBound) to \(TenantLimits.weightRange.upperBound)")
        }
        let (id, secret) = TokenText.generate()
        let record = TokenRecord(id: id, name: name, secretDigest: TokenBook.digest(ofSecret: secret), isAdmin: admin, limits: limits,
                                 createdAt: WallClock.now())
        try await withTokenStore(configuration, creating: true, logger: logger) { try await $0.createToken(record) }
        return TokenText.format(id: id, secret: secret)
    }

    /// The tokens, and whether any was ever created (with none left, the server is closed then).
    public static func list(_ configuration: ServerConfiguration, logger: Logger) async throws -> (tokens: [TokenRecord], everCreated: Bool) {
        try await withTokenStore(configuration, logger: logger) { store in (try await store.tokens(), try await store.tokensWereCreated()) }
    }

    /// Revokes the named token; returns a note for stderr when it was the last one.
    public static func revoke(_ configuration: ServerConfiguration, name: String, logger: Logger) async throws -> String? {
        let (revoked, left) = try await withTokenStore(configuration, logger: logger) { store in
            (try await store.revokeToken(named: name), try await store.tokens().count)
        }
        guard revoked else { throw ConfigurationError("there is no token named \(name)") }
        guard left == 0, configuration.auth == .auto else { return nil }
        return "that was the last token: the server now refuses every request but its open routes (/healthz, /openapi.json, the "
            + "dashboard's page and login) until a token is created (spool token create); set auth: off to serve without tokens"
    }

    /// Opens (and migrates) the configured store for `body`, then closes it. An embedded store
    /// that is not there yet is made only when `creating` (a first token, before the server's
    /// first start), and then stderr says where; else it is an error, so that a mistyped data
    /// directory is not read as a server without tokens.
    static func withTokenStore<T: Sendable>(_ configuration: ServerConfiguration, creating: Bool = false, logger: Logger,
                                            _ body: (any TokenStore) async throws -> T) async throws -> T {
        switch configuration.store {
        case .sqlite:
            let file = configuration.dataDirectory + "/spool.sqlite"
            let exists = FileManager.default.fileExists(atPath: file)
            guard exists || creating else {
                throw ConfigurationError("no job store in \(configuration.dataDirectory) (no spool.sqlite): give the server's data directory "
                                         + "with --data-dir or SPOOL_DATA_DIR (the default is ./spool-data)")
            }
            let directory = try SpoolServer.prepareDataDirectory(configuration.dataDirectory)
            // A lost job database is not made anew here either: the server's next start would take it.
            try SpoolServer.refuseALostDatabase(directory + "/spool.sqlite")
            if !exists { StandardStreams.error("spool: made a new job store in \(directory) (a server started with --data-dir \(directory) uses it)\n") }
            let store = try SQLiteJobStore(path: directory + "/spool.sqlite", synchronous: configuration.synchronous)
            // An upgrade only while no server holds the directory (one of an earlier Spool may run
            // on it, and would go on serving a schema it does not know): its lock, held meanwhile.
            let lock = open(directory + "/spool.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
            let noServer = lock >= 0 && flock(lock, LOCK_EX | LOCK_NB) == 0
            defer { if lock >= 0 { close(lock) } }
            try await store.prepare(upgrading: noServer)
            SpoolServer.markDatabaseMade(directory)
            return try await body(store)
        case .postgres(let location):
            let store = try PostgresJobStore(location: location, node: configuration.nodeName(dataDirectory: configuration.dataDirectory),
                                             followsEvents: false, logger: logger)
            defer { store.close() }
            try await store.prepare(upgrading: false)   // never an upgrade: nodes of an earlier Spool may run on it
            return try await body(store)
        }
    }
}
