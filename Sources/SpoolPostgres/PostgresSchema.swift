import Logging
import PostgresNIO
import SpoolStore

/// The schema, as versioned migrations applied at startup. Every node runs `migrate`; a
/// transaction-scoped advisory lock makes nodes that start together take turns, so each
/// migration runs exactly once. Never edit a shipped migration: add the next one.
enum PostgresSchema {
    /// The advisory lock key that serializes migrations ("spool" in ASCII).
    static let migrationLock: Int64 = 0x73_70_6F_6F_6C

    static let migrations: [(version: Int, name: String, sql: [String])] = [
        (1, "jobs-events-files", [
            """
            CREATE FUNCTION spool_now() RETURNS bigint LANGUAGE sql VOLATILE AS
                $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint $$
            """,
            """
            CREATE TABLE jobs (
                seq BIGSERIAL PRIMARY KEY,
                id TEXT NOT NULL UNIQUE,
                type TEXT NOT NULL,
                input TEXT NOT NULL,
                priority INTEGER NOT NULL,
                timeout_s DOUBLE PRECISION NOT NULL,
                max_attempts INTEGER NOT NULL,
                state TEXT NOT NULL CHECK (state IN ('queued','running','succeeded','failed','canceled')),
                reason TEXT,
                attempts INTEGER NOT NULL DEFAULT 0,
                created_at BIGINT NOT NULL,
                started_at BIGINT,
                finished_at BIGINT,
                exit_code INTEGER,
                signal INTEGER,
                error TEXT,
                slot INTEGER,
                node TEXT,
                lease_until BIGINT,
                progress_fraction DOUBLE PRECISION,
                progress_message TEXT,
                idempotency_key TEXT,
                fingerprint TEXT NOT NULL,
                cancel_requested BOOLEAN NOT NULL DEFAULT false,
                result TEXT,
                webhook_url TEXT,
                webhook_events TEXT
            )
            """,
            // The queue: only queued rows, in claim order. A claim reads its head.
            "CREATE INDEX jobs_queue ON jobs (priority DESC, seq) WHERE state = 'queued'",
            // Running jobs by node (lease renewal) and by lease end (rescue).
            "CREATE INDEX jobs_running_node ON jobs (node, seq) WHERE state = 'running'",
            "CREATE INDEX jobs_running_lease ON jobs (lease_until) WHERE state = 'running'",
            "CREATE INDEX jobs_state_seq ON jobs (state, seq)",
            "CREATE INDEX jobs_type_seq ON jobs (type, seq)",
            "CREATE UNIQUE INDEX jobs_idempotency ON jobs (idempotency_key) WHERE idempotency_key IS NOT NULL",
            """
            CREATE TABLE events (
                id BIGSERIAL PRIMARY KEY,
                job_id TEXT NOT NULL,
                kind TEXT NOT NULL,
                at BIGINT NOT NULL,
                data TEXT NOT NULL,
                origin TEXT NOT NULL
            )
            """,
            "CREATE INDEX events_job ON events (job_id, id)",
            // A finished job's log and outputs, so that any node can serve them.
            """
            CREATE TABLE job_files (
                job_id TEXT NOT NULL,
                name TEXT NOT NULL,
                size BIGINT NOT NULL,
                content BYTEA NOT NULL,
                PRIMARY KEY (job_id, name)
            )
            """,
        ]),
        (2, "webhooks", [
            // The cursor starts at the newest event: earlier history is not replayed.
            """
            CREATE TABLE webhook_cursor (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                last_event_id BIGINT NOT NULL
            )
            """,
            "INSERT INTO webhook_cursor (id, last_event_id) VALUES (1, COALESCE((SELECT MAX(id) FROM events), 0))",
            """
            CREATE TABLE webhook_deliveries (
                id BIGSERIAL PRIMARY KEY,
                job_id TEXT NOT NULL,
                event TEXT NOT NULL,
                event_id BIGINT NOT NULL,
                url TEXT NOT NULL,
                payload TEXT NOT NULL,
                state TEXT NOT NULL CHECK (state IN ('pending','delivered','failed')),
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at BIGINT,
                created_at BIGINT NOT NULL,
                -- The node sending it now, until when (the database's clock): nodes share the outbox.
                claimed_by TEXT,
                claimed_until BIGINT,
                UNIQUE (event_id, event)
            )
            """,
            "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at, id) WHERE state = 'pending'",
            "CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id, id)",
            """
            CREATE TABLE webhook_attempts (
                delivery_id BIGINT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
                number INTEGER NOT NULL,
                at BIGINT NOT NULL,
                status INTEGER,
                error TEXT,
                duration_ms DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (delivery_id, number)
            )
            """,
        ]),
        (3, "nodes", [
            // Every node's heartbeat (the database's clock), for `GET /v1/nodes`.
            """
            CREATE TABLE nodes (
                name TEXT PRIMARY KEY,
                role TEXT NOT NULL,
                slots INTEGER NOT NULL,
                started_at BIGINT NOT NULL,
                seen_at BIGINT NOT NULL
            )
            """,
        ]),
        (4, "tenants", [
            // Owners ('' with authentication off), who canceled, and the fair-share order: jobs
            // queued before the upgrade keep their first-in first-out order.
            "ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE jobs ADD COLUMN canceled_by TEXT",
            "ALTER TABLE jobs ADD COLUMN fair_tag BIGINT NOT NULL DEFAULT 0",
            "UPDATE jobs SET fair_tag = seq * 1000000 WHERE state = 'queued'",
            "DROP INDEX jobs_queue",
            "CREATE INDEX jobs_queue ON jobs (priority DESC, fair_tag, seq) WHERE state = 'queued'",
            "CREATE INDEX jobs_owner_queue ON jobs (owner, priority, fair_tag) WHERE state = 'queued'",
            "CREATE INDEX jobs_owner_running ON jobs (owner) WHERE state = 'running'",
            "CREATE INDEX jobs_owner_seq ON jobs (owner, seq)",
            "DROP INDEX jobs_idempotency",
            "CREATE UNIQUE INDEX jobs_idempotency ON jobs (owner, idempotency_key) WHERE idempotency_key IS NOT NULL",
            "ALTER TABLE events ADD COLUMN owner TEXT NOT NULL DEFAULT ''",
            "CREATE INDEX events_owner ON events (owner, id)",
            """
            CREATE TABLE tokens (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                digest BYTEA NOT NULL,
                admin BOOLEAN NOT NULL,
                max_queued INTEGER,
                max_running INTEGER,
                rate DOUBLE PRECISION,
                weight DOUBLE PRECISION NOT NULL,
                created_at BIGINT NOT NULL
            )
            """,
            "CREATE TABLE settings (name TEXT PRIMARY KEY, value BYTEA NOT NULL)",
        ]),
        (5, "retries-deadlines", [
            // A job's retry policy, when it may start (run_at, delay_s, a retry's back-off), when
            // it must have started (start_within_s), and the log of its ended attempts (JSON).
            // The partial indexes hold only delayed or deadlined queued jobs: the timers' reads.
            "ALTER TABLE jobs ADD COLUMN retry TEXT",
            "ALTER TABLE jobs ADD COLUMN not_before BIGINT",
            "ALTER TABLE jobs ADD COLUMN start_by BIGINT",
            "ALTER TABLE jobs ADD COLUMN attempt_log TEXT",
            "CREATE INDEX jobs_not_before ON jobs (not_before) WHERE state = 'queued' AND not_before IS NOT NULL",
            "CREATE INDEX jobs_start_by ON jobs (start_by) WHERE state = 'queued' AND start_by IS NOT NULL",
        ]),
        (6, "dedup", [
            // Result reuse: the hash of a job's identity (type and input, or its dedup_key), for
            // the jobs submitted with dedup only.
            "ALTER TABLE jobs ADD COLUMN dedup_hash TEXT",
            "CREATE INDEX jobs_dedup ON jobs (owner, dedup_hash, seq) WHERE dedup_hash IS NOT NULL",
        ]),
        (7, "arrays", [
            // Job arrays: a task's array and its index in it (the array is what its tasks add up to).
            "ALTER TABLE jobs ADD COLUMN array_id TEXT",
            "ALTER TABLE jobs ADD COLUMN array_index BIGINT",
            "ALTER TABLE jobs ADD COLUMN array_fail_fast BOOLEAN",
            "CREATE INDEX jobs_array ON jobs (array_id, array_index) WHERE array_id IS NOT NULL",
        ]),
        (8, "submit-rates", [
            // Each rate-limited token's bucket of submits (`SubmitRateStore`): what it held at
            // `at` (spool_now(), microseconds), shared by every node. Unlogged: a take writes no
            // WAL, so its commit does not wait for a WAL flush; a crash of the database empties
            // the table, and every bucket starts full again.
            "CREATE UNLOGGED TABLE submit_rates (owner TEXT PRIMARY KEY, tokens DOUBLE PRECISION NOT NULL, at BIGINT NOT NULL)",
        ]),
        (9, "queue-counts", [
            // Queued jobs per priority, kept by triggers, so a submit and a position read sum a few
            // counters instead of counting the queue (which PostgreSQL does row by row: 5.4 ms a
            // submit at 20,000 queued). Each database session (backend) adds its changes to rows
            // of its own, keyed by its process id: no two open transactions ever write the same
            // counter, so a counter is never waited on and never part of a deadlock, whatever
            // order a statement changes jobs of several priorities in. A row's value is a sum of
            // changes, and may be below zero; a priority's count is the sum over its rows.
            // `foldQueueCounts` merges the rows of sessions that have ended.
            """
            CREATE TABLE queue_counts (
                priority INTEGER NOT NULL,
                backend INTEGER NOT NULL,
                queued BIGINT NOT NULL,
                PRIMARY KEY (priority, backend)
            ) WITH (fillfactor = 50)
            """,
            """
            CREATE FUNCTION spool_count_queued() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP <> 'INSERT' THEN
                    IF OLD.state = 'queued' THEN
                        INSERT INTO queue_counts (priority, backend, queued) VALUES (OLD.priority, pg_backend_pid(), -1)
                        ON CONFLICT (priority, backend) DO UPDATE SET queued = queue_counts.queued - 1;
                    END IF;
                END IF;
                IF TG_OP <> 'DELETE' THEN
                    IF NEW.state = 'queued' THEN
                        INSERT INTO queue_counts (priority, backend, queued) VALUES (NEW.priority, pg_backend_pid(), 1)
                        ON CONFLICT (priority, backend) DO UPDATE SET queued = queue_counts.queued + 1;
                    END IF;
                END IF;
                RETURN NULL;
            END
            $$
            """,
            """
            CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs FOR EACH ROW
                WHEN (NEW.state = 'queued') EXECUTE FUNCTION spool_count_queued()
            """,
            """
            CREATE TRIGGER jobs_count_update AFTER UPDATE OF state, priority ON jobs FOR EACH ROW
                WHEN ((OLD.state = 'queued' OR NEW.state = 'queued')
                      AND (OLD.state <> NEW.state OR OLD.priority <> NEW.priority)) EXECUTE FUNCTION spool_count_queued()
            """,
            """
            CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs FOR EACH ROW
                WHEN (OLD.state = 'queued') EXECUTE FUNCTION spool_count_queued()
            """,
            """
            CREATE FUNCTION spool_count_cleared() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                DELETE FROM queue_counts;
                RETURN NULL;
            END
            $$
            """,
            "CREATE TRIGGER jobs_count_truncate AFTER TRUNCATE ON jobs EXECUTE FUNCTION spool_count_cleared()",
            // The triggers' creation locked out every other writer of `jobs` until this commits:
            // the count below is exact.
            "INSERT INTO queue_counts (priority, backend, queued) SELECT priority, 0, count(*) FROM jobs WHERE state = 'queued' GROUP BY priority",
        ]),
        (10, "retention", [
            // Retention's read: the ended jobs by when they ended (a job enters it at its end).
            "CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL",
        ]),
        (11, "array-heads", [
            // The first task of each array (its head) marked, so arrays are listed newest first
            // from a small index instead of by grouping every task.
            "ALTER TABLE jobs ADD COLUMN array_head BOOLEAN",
            "UPDATE jobs SET array_head = true WHERE seq IN (SELECT min(seq) FROM jobs WHERE array_id IS NOT NULL GROUP BY array_id)",
            "CREATE INDEX jobs_array_heads ON jobs (seq) WHERE array_head",
            "CREATE INDEX jobs_owner_array_heads ON jobs (owner, seq) WHERE array_head",
        ]),
        (12, "joined-keys", [
            // The Idempotency-Key of a request that joined (or reused) a job through result reuse
            // instead of storing one: a repeat answers that job; another request is a conflict.
            """
            CREATE TABLE joined_keys (
                owner TEXT NOT NULL,
                key TEXT NOT NULL,
                job_id TEXT NOT NULL,
                fingerprint TEXT NOT NULL,
                PRIMARY KEY (owner, key)
            )
            """,
            "CREATE INDEX joined_keys_job ON joined_keys (job_id)",
        ]),
        (13, "node-health", [
            // Each node's health as its heartbeat reads it (`NodeHealth`): an agent answers no
            // `/healthz`, so `GET /v1/nodes` is where a full disk or a sick slot there shows.
            "ALTER TABLE nodes ADD COLUMN status TEXT NOT NULL DEFAULT 'ok'",
            "ALTER TABLE nodes ADD COLUMN problems TEXT[] NOT NULL DEFAULT '{}'",
        ]),
        (14, "fail-fast-sweep", [
            // The cluster's sweep for fail-fast arrays left open (every minute on each node) reads
            // only the unfinished tasks of fail-fast arrays, not every queued job.
            "CREATE INDEX jobs_fail_fast_open ON jobs (array_id) WHERE array_fail_fast AND state IN ('queued', 'running')",
        ]),
        (15, "token-max-priority", [
            // The highest priority a token's jobs may have (`TenantLimits.maxPriority`).
            "ALTER TABLE tokens ADD COLUMN max_priority INTEGER",
        ]),
        (16, "tokens-created-mark", [
            // A store with tokens from before `createToken` left its mark (`tokensWereCreated`)
            // gets it now: revoking them all must not open the servers after a restart.
            "INSERT INTO settings (name, value) SELECT 'tokens_created', '\\x01'::bytea WHERE EXISTS (SELECT 1 FROM tokens) ON CONFLICT (name) DO NOTHING",
        ]),
        (17, "token-sessions-since", [
            // When the token's dashboard sessions were last ended (a log out: `TokenRecord.sessionsSince`).
            "ALTER TABLE tokens ADD COLUMN sessions_since BIGINT",
        ]),
    ]

    /// Applies the migrations this database has not seen, in one transaction under the lock.
    /// Returns the versions applied now.
    /// `upgrading` false: a database an earlier Spool made (some of these not applied yet) is
    /// refused, for a caller beside nodes that may run that earlier Spool (the token commands;
    /// found by attacking an upgrade: the old nodes' next start was refused); an empty one is made.
    /// A migration that PostgreSQL rolls back as a deadlock's victim (another node's transaction on
    /// the older schema holds a table it alters and wants one it holds: found by attacking an
    /// upgrade, the new node failed to start) is tried again, from the start, a few times.
    static func migrate(_ client: PostgresClient, upgrading: Bool = true, logger: Logger) async throws -> [Int] {
        var pause = Duration.milliseconds(100)
        for attempt in 1... {
            do {
                return try await migrateOnce(client, upgrading: upgrading, logger: logger)
            } catch where attempt < migrationAttempts && Self.gaveWay(error) {
                logger.notice("the schema migration gave way to another transaction (a deadlock, or a lock it waited for); trying it again",
                              metadata: ["attempt": "\(attempt)", "pause": "\(pause)"])
                try await Task.sleep(for: pause)
                pause *= 2
            }
        }
        preconditionFailure("unreachable")
    }

    static let migrationAttempts = 5

    /// Whether a migration failed for another transaction's sake, and may go through if tried
    /// again: a deadlock's victim, a serialization failure, a lock given up on.
    private static func gaveWay(_ error: any Error) -> Bool {
        var error = error
        if let transaction = error as? PostgresTransactionError {
            error = transaction.closureError ?? transaction.beginError ?? transaction.commitError ?? error
        }
        guard let state = (error as? PSQLError)?.serverInfo?[.sqlState] else { return false }
        return ["40P01", "40001", "55P03"].contains(state)
    }

    private static func migrateOnce(_ client: PostgresClient, upgrading: Bool, logger: Logger) async throws -> [Int] {
        try await client.withTransaction(logger: logger) { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(\(migrationLock))", logger: logger)
            try await connection.query("""
                CREATE TABLE IF NOT EXISTS spool_migrations (
                    version INTEGER PRIMARY KEY,
                    name TEXT NOT NULL,
                    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
                )
                """, logger: logger)
            var applied: Set<Int> = []
            for try await version in try await connection.query("SELECT version FROM spool_migrations", logger: logger).decode(Int.self) {
                applied.insert(version)
            }
            if let newest = applied.max(), newest > migrations.last!.version {
                throw StoreError(.other, "the database was migrated by a newer Spool (schema version \(newest)); upgrade this node")
            }
            if !upgrading, let newest = applied.max(), migrations.contains(where: { !applied.contains($0.version) }) {
                throw StoreError(.other, "the database was made by an earlier Spool (schema version \(newest), this version's is "
                                 + "\(migrations.last!.version)): upgrade its nodes first (a node of this version upgrades it as it starts), "
                                 + "then run this again")
            }
            var now: [Int] = []
            for migration in migrations where !applied.contains(migration.version) {
                for statement in migration.sql {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await connection.query("INSERT INTO spool_migrations (version, name) VALUES (\(migration.version), \(migration.name))",
                                           logger: logger)
                now.append(migration.version)
            }
            return now
        }
    }
}

extension PostgresJobStore {
    /// This build's newest migration (`spool --version` names it).
    public static var schemaVersion: Int { PostgresSchema.migrations.last!.version }
}
