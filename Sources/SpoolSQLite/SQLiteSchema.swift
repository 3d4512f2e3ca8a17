import GRDB
import SpoolStore

/// The schema, as versioned migrations run at startup (GRDB's `DatabaseMigrator` records
/// which have run). Never edit a shipped migration: add the next one.
enum SQLiteSchema {
    /// A database migrated by a newer Spool (a migration this build does not know) is refused,
    /// as PostgreSQL's is: a downgrade would write into a schema it does not know (found by
    /// attacking the build: it started and took submits).
    static func refuseANewer(in pool: DatabasePool, path: String) async throws {
        let known = Set(migrator.migrations)
        let applied = try await pool.read { db -> [String] in
            guard try db.tableExists("grdb_migrations") else { return [] }
            return try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations")
        }
        let unknown = applied.filter { !known.contains($0) }
        guard !unknown.isEmpty else { return }
        throw StoreError(.other, "the job database \(path) was migrated by a newer Spool (\(unknown.sorted().joined(separator: ", "))); "
                         + "upgrade this server, or restore a backup made before the upgrade")
    }

    /// Refuses a database an earlier Spool made (migrations of this build not applied yet), for a
    /// caller that must not upgrade it: a token command, beside a server that may run that earlier
    /// Spool on it (found by attacking an upgrade: the migration ran under it, and it went on
    /// serving a schema it did not know). A database with nothing in it yet is made as usual.
    static func refuseAnOlder(in pool: DatabasePool, path: String) async throws {
        let applied = try await pool.read { db -> Set<String> in
            guard try db.tableExists("grdb_migrations") else { return [] }
            return Set(try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations"))
        }
        let missing = migrator.migrations.filter { !applied.contains($0) }
        guard !applied.isEmpty, !missing.isEmpty else { return }
        throw StoreError(.other, "the job database \(path) was made by an earlier Spool (\(missing.count) of this version's "
                         + "\(migrator.migrations.count) schema steps not applied): start this version's server on it first (it upgrades "
                         + "the database as it starts), then run this again")
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1-jobs") { db in
            try db.execute(sql: """
                CREATE TABLE jobs (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    id TEXT NOT NULL UNIQUE,
                    type TEXT NOT NULL,
                    input TEXT NOT NULL,
                    priority INTEGER NOT NULL,
                    timeout_s REAL NOT NULL,
                    max_attempts INTEGER NOT NULL,
                    state TEXT NOT NULL CHECK (state IN ('queued','running','succeeded','failed','canceled')),
                    reason TEXT,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    created_at INTEGER NOT NULL,
                    started_at INTEGER,
                    finished_at INTEGER,
                    exit_code INTEGER,
                    signal INTEGER,
                    error TEXT,
                    slot INTEGER,
                    pid INTEGER,
                    progress_fraction REAL,
                    progress_message TEXT,
                    idempotency_key TEXT,
                    fingerprint TEXT NOT NULL,
                    cancel_requested INTEGER NOT NULL DEFAULT 0
                );
                -- The queue: only queued rows, in claim order. Claim reads its first entry.
                CREATE INDEX jobs_queue ON jobs(priority DESC, seq) WHERE state = 'queued';
                CREATE INDEX jobs_running ON jobs(seq) WHERE state = 'running';
                CREATE INDEX jobs_state_seq ON jobs(state, seq);
                CREATE INDEX jobs_type_seq ON jobs(type, seq);
                CREATE UNIQUE INDEX jobs_idempotency ON jobs(idempotency_key) WHERE idempotency_key IS NOT NULL;

                -- Queued jobs per priority, kept by triggers, so a queue position costs a
                -- sum over priorities plus a count within one priority, never a table scan.
                CREATE TABLE queue_counts (priority INTEGER PRIMARY KEY, queued INTEGER NOT NULL);
                CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs WHEN NEW.state = 'queued' BEGIN
                    INSERT INTO queue_counts (priority, queued) VALUES (NEW.priority, 1)
                        ON CONFLICT (priority) DO UPDATE SET queued = queued + 1;
                END;
                CREATE TRIGGER jobs_count_leave AFTER UPDATE OF state ON jobs
                    WHEN OLD.state = 'queued' AND NEW.state <> 'queued' BEGIN
                    UPDATE queue_counts SET queued = queued - 1 WHERE priority = OLD.priority;
                END;
                CREATE TRIGGER jobs_count_return AFTER UPDATE OF state ON jobs
                    WHEN OLD.state <> 'queued' AND NEW.state = 'queued' BEGIN
                    INSERT INTO queue_counts (priority, queued) VALUES (NEW.priority, 1)
                        ON CONFLICT (priority) DO UPDATE SET queued = queued + 1;
                END;
                CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs WHEN OLD.state = 'queued' BEGIN
                    UPDATE queue_counts SET queued = queued - 1 WHERE priority = OLD.priority;
                END;
                """)
        }
        migrator.registerMigration("v2-results") { db in
            try db.execute(sql: "ALTER TABLE jobs ADD COLUMN result TEXT")
        }
        migrator.registerMigration("v3-events-webhooks") { db in
            try db.execute(sql: """
                CREATE TABLE events (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    job_id TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    at INTEGER NOT NULL,
                    data TEXT NOT NULL
                );
                CREATE INDEX events_job ON events(job_id, id);
                ALTER TABLE jobs ADD COLUMN webhook_url TEXT;
                ALTER TABLE jobs ADD COLUMN webhook_events TEXT;
                """)
        }
        migrator.registerMigration("v4-webhooks") { db in
            // The cursor starts at the newest event: history from before webhooks existed is
            // not replayed to receivers.
            try db.execute(sql: """
                CREATE TABLE webhook_cursor (
                    id INTEGER PRIMARY KEY CHECK (id = 1),
                    last_event_id INTEGER NOT NULL
                );
                INSERT INTO webhook_cursor (id, last_event_id) VALUES (1, COALESCE((SELECT MAX(id) FROM events), 0));
                CREATE TABLE webhook_deliveries (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    job_id TEXT NOT NULL,
                    event TEXT NOT NULL,
                    event_id INTEGER NOT NULL,
                    url TEXT NOT NULL,
                    payload TEXT NOT NULL,
                    state TEXT NOT NULL CHECK (state IN ('pending','delivered','failed')),
                    attempts INTEGER NOT NULL DEFAULT 0,
                    next_attempt_at INTEGER,
                    created_at INTEGER NOT NULL,
                    UNIQUE (event_id, event)
                );
                CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at, id) WHERE state = 'pending';
                CREATE INDEX webhook_deliveries_job ON webhook_deliveries(job_id, id);
                CREATE TABLE webhook_attempts (
                    delivery_id INTEGER NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
                    number INTEGER NOT NULL,
                    at INTEGER NOT NULL,
                    status INTEGER,
                    error TEXT,
                    duration_ms REAL NOT NULL,
                    PRIMARY KEY (delivery_id, number)
                );
                """)
        }
        migrator.registerMigration("v5-tenants") { db in
            // Owners ('' with authentication off), who canceled, and the fair-share order:
            // jobs queued before the upgrade keep their first-in first-out order.
            try db.execute(sql: """
                ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
                ALTER TABLE jobs ADD COLUMN canceled_by TEXT;
                ALTER TABLE jobs ADD COLUMN fair_tag INTEGER NOT NULL DEFAULT 0;
                UPDATE jobs SET fair_tag = seq * 1000000 WHERE state = 'queued';
                DROP INDEX jobs_queue;
                CREATE INDEX jobs_queue ON jobs(priority DESC, fair_tag, seq) WHERE state = 'queued';
                CREATE INDEX jobs_owner_queue ON jobs(owner, priority, fair_tag) WHERE state = 'queued';
                CREATE INDEX jobs_owner_running ON jobs(owner) WHERE state = 'running';
                CREATE INDEX jobs_owner_seq ON jobs(owner, seq);
                DROP INDEX jobs_idempotency;
                CREATE UNIQUE INDEX jobs_idempotency ON jobs(owner, idempotency_key) WHERE idempotency_key IS NOT NULL;
                ALTER TABLE events ADD COLUMN owner TEXT NOT NULL DEFAULT '';
                CREATE INDEX events_owner ON events(owner, id);
                CREATE TABLE tokens (
                    id TEXT PRIMARY KEY,
                    name TEXT NOT NULL UNIQUE,
                    digest BLOB NOT NULL,
                    admin INTEGER NOT NULL,
                    max_queued INTEGER,
                    max_running INTEGER,
                    rate REAL,
                    weight REAL NOT NULL,
                    created_at INTEGER NOT NULL
                );
                CREATE TABLE settings (name TEXT PRIMARY KEY, value BLOB NOT NULL);
                """)
        }
        migrator.registerMigration("v6-retries-deadlines") { db in
            // A job's retry policy, when it may start (run_at, delay_s, a retry's back-off), when
            // it must have started (start_within_s), and the log of its ended attempts (JSON).
            // The partial indexes hold only delayed or deadlined queued jobs: the timers' reads.
            try db.execute(sql: """
                ALTER TABLE jobs ADD COLUMN retry TEXT;
                ALTER TABLE jobs ADD COLUMN not_before INTEGER;
                ALTER TABLE jobs ADD COLUMN start_by INTEGER;
                ALTER TABLE jobs ADD COLUMN attempt_log TEXT;
                CREATE INDEX jobs_not_before ON jobs(not_before) WHERE state = 'queued' AND not_before IS NOT NULL;
                CREATE INDEX jobs_start_by ON jobs(start_by) WHERE state = 'queued' AND start_by IS NOT NULL;
                """)
        }
        migrator.registerMigration("v7-dedup") { db in
            // Result reuse: the hash of a job's identity (type and input, or its dedup_key), for
            // the jobs submitted with dedup only.
            try db.execute(sql: """
                ALTER TABLE jobs ADD COLUMN dedup_hash TEXT;
                CREATE INDEX jobs_dedup ON jobs(owner, dedup_hash, seq) WHERE dedup_hash IS NOT NULL;
                """)
        }
        migrator.registerMigration("v8-arrays") { db in
            // Job arrays: a task's array and its index in it (the array is what its tasks add up to).
            try db.execute(sql: """
                ALTER TABLE jobs ADD COLUMN array_id TEXT;
                ALTER TABLE jobs ADD COLUMN array_index INTEGER;
                ALTER TABLE jobs ADD COLUMN array_fail_fast INTEGER;
                CREATE INDEX jobs_array ON jobs(array_id, array_index) WHERE array_id IS NOT NULL;
                """)
        }
        migrator.registerMigration("v9-retention") { db in
            // Retention's read: the ended jobs by when they ended (a job enters it at its end).
            try db.execute(sql: "CREATE INDEX jobs_finished ON jobs(finished_at) WHERE finished_at IS NOT NULL")
        }
        migrator.registerMigration("v10-array-heads") { db in
            // The first task of each array (its head) marked, so arrays are listed newest first
            // from a small index instead of by grouping every task.
            try db.execute(sql: """
                ALTER TABLE jobs ADD COLUMN array_head INTEGER;
                UPDATE jobs SET array_head = 1 WHERE seq IN (SELECT MIN(seq) FROM jobs WHERE array_id IS NOT NULL GROUP BY array_id);
                CREATE INDEX jobs_array_heads ON jobs(seq) WHERE array_head = 1;
                CREATE INDEX jobs_owner_array_heads ON jobs(owner, seq) WHERE array_head = 1;
                """)
        }
        migrator.registerMigration("v11-joined-keys") { db in
            // The Idempotency-Key of a request that joined (or reused) a job through result reuse
            // instead of storing one: a repeat answers that job; another request is a conflict.
            try db.execute(sql: """
                CREATE TABLE joined_keys (
                    owner TEXT NOT NULL,
                    key TEXT NOT NULL,
                    job_id TEXT NOT NULL,
                    fingerprint TEXT NOT NULL,
                    PRIMARY KEY (owner, key)
                ) WITHOUT ROWID;
                CREATE INDEX joined_keys_job ON joined_keys(job_id);
                """)
        }
        migrator.registerMigration("v12-token-max-priority") { db in
            // The highest priority a token's jobs may have (`TenantLimits.maxPriority`).
            try db.execute(sql: "ALTER TABLE tokens ADD COLUMN max_priority INTEGER")
        }
        migrator.registerMigration("v13-tokens-created-mark") { db in
            // A store with tokens from before `createToken` left its mark (`tokensWereCreated`)
            // gets it now: revoking them all must not open the server after a restart.
            try db.execute(sql: """
                INSERT OR IGNORE INTO settings (name, value) SELECT 'tokens_created', x'01' WHERE EXISTS (SELECT 1 FROM tokens)
                """)
        }
        migrator.registerMigration("v14-disk-reserve") { db in
            // Rows of zeros kept as room for recording jobs' ends on a full disk (`DiskReserve`).
            try db.execute(sql: "CREATE TABLE disk_reserve (id INTEGER PRIMARY KEY, bytes BLOB NOT NULL)")
        }
        migrator.registerMigration("v15-token-sessions-since") { db in
            // When the token's dashboard sessions were last ended (a log out: `TokenRecord.sessionsSince`).
            try db.execute(sql: "ALTER TABLE tokens ADD COLUMN sessions_since INTEGER")
        }
        migrator.registerMigration("v16-array-operations") { db in
            // An array's cancel or delete, done a chunk of tasks per transaction: begun in the
            // first, ended in the last (`ArrayOperation`); one left by a crash is finished at start.
            try db.execute(sql: """
                CREATE TABLE array_operations (
                    array_id TEXT NOT NULL,
                    operation TEXT NOT NULL,
                    actor TEXT,
                    PRIMARY KEY (array_id, operation)
                ) WITHOUT ROWID
                """)
        }
        return migrator
    }
}

extension SQLiteJobStore {
    /// This build's newest migration's number (`v16-…` is 16): `spool --version` names it, so two
    /// builds that would store jobs differently tell apart.
    public static var schemaVersion: Int {
        let newest = SQLiteSchema.migrator.migrations.last ?? "v0"
        return Int(newest.dropFirst().prefix { $0.isNumber }) ?? 0
    }
}
