import NIOCore
import PostgresNIO
import SpoolCore
import SpoolStore

/// API tokens (digests only) and the session-signing key, shared by every node.
extension PostgresJobStore: TokenStore {
    public func createToken(_ token: TokenRecord) async throws {
        let inserted = try await transaction("store the token") { connection in
            // Marked in the same transaction (`tokensWereCreated`): a token never exists without it.
            try await connection.query("INSERT INTO settings (name, value) VALUES ('tokens_created', '\\x01'::bytea) ON CONFLICT (name) DO NOTHING",
                                       logger: self.logger)
            return try await connection.query("""
                INSERT INTO tokens (id, name, digest, admin, max_queued, max_running, rate, weight, max_priority, created_at)
                VALUES (\(token.id), \(token.name), \(ByteBuffer(bytes: token.secretDigest)), \(token.isAdmin), \(token.limits.maxQueued),
                        \(token.limits.maxRunning), \(token.limits.rate), \(token.limits.weight), \(token.limits.maxPriority),
                        \(token.createdAt.microseconds))
                ON CONFLICT DO NOTHING
                RETURNING id
                """, logger: self.logger).decodeFirst(String.self)
        }
        guard inserted != nil else { throw StoreError(.conflict, "a token named \(token.name) already exists (revoke it first to replace it)") }
        // A new token starts with a full bucket, whatever a revoked one of that name left (a
        // submit on another node may have made one again after the revoke removed it).
        try await write("reset the token's submit rate") { connection in
            try await connection.query("DELETE FROM submit_rates WHERE owner = \(token.name)", logger: self.logger)
        }
        if token.limits.maxRunning != nil { runningCapped.withLock { $0 = true } }
    }

    public func tokens() async throws -> [TokenRecord] {
        try await read("read the tokens") { connection in
            var tokens: [TokenRecord] = []
            let rows = try await connection.query("""
                SELECT id, name, digest, admin, max_queued, max_running, rate, weight, max_priority, created_at, sessions_since
                FROM tokens ORDER BY name
                """, logger: self.logger)
            for try await (id, name, digest, admin, maxQueued, maxRunning, rate, weight, maxPriority, createdAt, sessionsSince)
                in rows.decode((String, String, ByteBuffer, Bool, Int?, Int?, Double?, Double, Int?, Int64, Int64?).self) {
                tokens.append(TokenRecord(id: id, name: name, secretDigest: Array(digest.readableBytesView), isAdmin: admin,
                                          limits: TenantLimits(maxQueued: maxQueued, maxRunning: maxRunning, rate: rate, weight: weight,
                                                               maxPriority: maxPriority),
                                          createdAt: Timestamp(microseconds: createdAt), sessionsSince: sessionsSince.map(Timestamp.init(microseconds:))))
            }
            return tokens
        }
    }

    public func tokensWereCreated() async throws -> Bool {
        try await read("read whether tokens were created") { connection in
            try await connection.query("""
                SELECT EXISTS (SELECT 1 FROM settings WHERE name = 'tokens_created') OR EXISTS (SELECT 1 FROM tokens)
                """, logger: self.logger).decodeFirst(Bool.self) ?? false
        }
    }

    public func revokeToken(named name: String) async throws -> Bool {
        try await transaction("revoke the token") { connection in
            try await connection.query("INSERT INTO settings (name, value) VALUES ('tokens_created', '\\x01'::bytea) ON CONFLICT (name) DO NOTHING",
                                       logger: self.logger)
            try await connection.query("DELETE FROM submit_rates WHERE owner = \(name)", logger: self.logger)
            return try await connection.query("DELETE FROM tokens WHERE name = \(name) RETURNING id", logger: self.logger)
                .decodeFirst(String.self) != nil
        }
    }

    public func endSessions(ofToken id: String, at now: Timestamp) async throws -> Bool {
        try await write("end the token's sessions") { connection in
            try await connection.query("UPDATE tokens SET sessions_since = \(now.microseconds) WHERE id = \(id) RETURNING id", logger: self.logger)
                .decodeFirst(String.self) != nil
        }
    }

    public func sessionKey() async throws -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        let candidate = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        // The first node to ask stores its key; every node reads the one stored.
        return try await write("read the session key") { connection in
            try await connection.query("""
                INSERT INTO settings (name, value) VALUES ('session_key', \(ByteBuffer(bytes: candidate))) ON CONFLICT (name) DO NOTHING
                """, logger: self.logger)
            return try await connection.query("SELECT value FROM settings WHERE name = 'session_key'", logger: self.logger)
                .decodeFirst(ByteBuffer.self).map { Array($0.readableBytesView) } ?? candidate
        }
    }
}

/// Each token's submit rate, one bucket per token in the database: every node takes from the
/// same one, so a token's `rate` holds for the cluster.
extension PostgresJobStore: SubmitRateStore {
    public func takeSubmit(owner: String, rate: Double) async throws -> Double? {
        let capacity = max(1, rate)
        return try await write("count the token's submit rate") { connection in
            // One statement, one reading of the clock: the row is locked while it is updated, so
            // submits on many nodes at once each see the one before (one that read the clock
            // before the one ahead of it committed gets no refill, and leaves `at` as it was). A
            // bucket that holds less than one submit is left as it is.
            let taken = try await connection.query("""
                WITH clock AS (SELECT spool_now() AS now)
                INSERT INTO submit_rates AS b (owner, tokens, at)
                SELECT \(owner), \(capacity) - 1, clock.now FROM clock
                ON CONFLICT (owner) DO UPDATE
                    SET tokens = LEAST(\(capacity), b.tokens + GREATEST(0, EXCLUDED.at - b.at) / 1e6 * \(rate)) - 1,
                        at = GREATEST(b.at, EXCLUDED.at)
                    WHERE LEAST(\(capacity), b.tokens + GREATEST(0, EXCLUDED.at - b.at) / 1e6 * \(rate)) >= 1
                RETURNING b.tokens
                """, logger: self.logger).decodeFirst(Double.self)
            if taken != nil { return nil }
            let held = try await connection.query("""
                SELECT LEAST(\(capacity), tokens + GREATEST(0, spool_now() - at) / 1e6 * \(rate)) FROM submit_rates WHERE owner = \(owner)
                """, logger: self.logger).decodeFirst(Double.self) ?? 0
            return max(0.001, (1 - held) / rate)
        }
    }
}
