import Foundation
import GRDB
import SpoolCore
import SpoolStore

/// API tokens (digests only) and the session-signing key, in the job database, so the
/// `spool token` commands and a running server share them.
extension SQLiteJobStore {
    public func createToken(_ token: TokenRecord) async throws {
        try await pool.write { db in
            guard try Bool.fetchOne(db, cached: "SELECT EXISTS (SELECT 1 FROM tokens WHERE name = ?)", arguments: [token.name]) == false else {
                throw StoreError(.conflict, "a token named \(token.name) already exists (revoke it first to replace it)")
            }
            try db.execute(cached: """
                INSERT INTO tokens (id, name, digest, admin, max_queued, max_running, rate, weight, max_priority, created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [token.id, token.name, Data(token.secretDigest), token.isAdmin, token.limits.maxQueued,
                                 token.limits.maxRunning, token.limits.rate, token.limits.weight, token.limits.maxPriority,
                                 token.createdAt.microseconds])
            try db.execute(cached: "INSERT OR IGNORE INTO settings (name, value) VALUES ('\(Self.tokensCreatedSetting)', x'01')")
        }
    }

    public func tokensWereCreated() async throws -> Bool {
        do {
            return try await pool.read { db in
                try Bool.fetchOne(db, cached: """
                    SELECT EXISTS (SELECT 1 FROM settings WHERE name = '\(Self.tokensCreatedSetting)') OR EXISTS (SELECT 1 FROM tokens)
                    """) ?? false
            }
        } catch {
            throw Self.translate(error, doing: "read whether tokens were created")
        }
    }

    /// The `settings` row `createToken` leaves (`tokensWereCreated`).
    static let tokensCreatedSetting = "tokens_created"

    public func tokens() async throws -> [TokenRecord] {
        do {
            return try await pool.read { db in
                try Row.fetchAll(db, cached: "SELECT * FROM tokens ORDER BY name").map { row in
                    TokenRecord(id: row["id"], name: row["name"], secretDigest: Array(row["digest"] as Data), isAdmin: row["admin"],
                                limits: TenantLimits(maxQueued: row["max_queued"], maxRunning: row["max_running"], rate: row["rate"],
                                                     weight: row["weight"], maxPriority: row["max_priority"]),
                                createdAt: Timestamp(microseconds: row["created_at"]),
                                sessionsSince: (row["sessions_since"] as Int64?).map(Timestamp.init(microseconds:)))
                }
            }
        } catch {
            throw Self.translate(error, doing: "read the tokens")
        }
    }

    public func revokeToken(named name: String) async throws -> Bool {
        try await pool.write { db in
            try db.execute(cached: "INSERT OR IGNORE INTO settings (name, value) VALUES ('\(Self.tokensCreatedSetting)', x'01')")
            try db.execute(cached: "DELETE FROM tokens WHERE name = ?", arguments: [name])
            return db.changesCount > 0
        }
    }

    public func endSessions(ofToken id: String, at now: Timestamp) async throws -> Bool {
        do {
            return try await pool.write { db in
                try db.execute(cached: "UPDATE tokens SET sessions_since = ? WHERE id = ?", arguments: [now.microseconds, id])
                return db.changesCount > 0
            }
        } catch {
            throw Self.translate(error, doing: "end the token's sessions")
        }
    }

    public func sessionKey() async throws -> [UInt8] {
        try await pool.write { db in
            if let key = try Data.fetchOne(db, cached: "SELECT value FROM settings WHERE name = 'session_key'") { return Array(key) }
            var generator = SystemRandomNumberGenerator()
            let key = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
            try db.execute(cached: "INSERT INTO settings (name, value) VALUES ('session_key', ?)", arguments: [Data(key)])
            return key
        }
    }
}
