// PostgresSchemaTests: migrations that fill in what a database already holds — the heads of the
// job arrays stored before arrays could be listed.

import Logging
import PostgresNIO
import SpoolCore
@testable import SpoolPostgres
import SpoolStore
import SpoolTestSupport
import Synchronization
import Testing

@Suite struct PostgresSchemaTests {
    @Test func arraysStoredBeforeTheirHeadsWereMarkedAreListedAfterTheMigration() async throws {
        let url = try await TestPostgres.createDatabase()
        let store = try PostgresJobStore(location: PostgresLocation(url: url), node: "node-0", logger: TestPostgres.logger)
        try await store.prepare()
        let older = ArraySpec.newID(), newer = ArraySpec.newID()
        for (id, count) in [(older, 3), (newer, 2)] {
            _ = try await store.enqueueArray(tasks(id, count: count, first: 7), limits: QueueLimits())
        }
        store.close()
        // The database as the build before `array-heads` left it.
        try await TestPostgres.withClient(url) { client in
            try await client.query("ALTER TABLE jobs DROP COLUMN array_head")
            try await client.query("DELETE FROM spool_migrations WHERE version = 11")
        }
        let upgraded = try PostgresJobStore(location: PostgresLocation(url: url), node: "node-0", logger: TestPostgres.logger)
        try await upgraded.prepare()
        let page = try await upgraded.arrays(ArrayQuery())
        #expect(page.arrays.map(\.id) == [newer, older])
        #expect(page.arrays.map(\.size) == [2, 3])
        upgraded.close()
        try await TestPostgres.dropDatabase(url)
    }

    /// The schema number `spool --version` prints is the newest migration a new database gets.
    @Test func theSchemaVersionIsTheNewestMigrationApplied() async throws {
        let url = try await TestPostgres.createDatabase()
        let store = try PostgresJobStore(location: PostgresLocation(url: url), node: "node-0", logger: TestPostgres.logger)
        try await store.prepare()
        store.close()
        try await TestPostgres.withClient(url) { client in
            let rows = try await client.query("SELECT max(version), count(*) FROM spool_migrations")
            for try await (newest, count) in rows.decode((Int, Int).self) {
                #expect(PostgresJobStore.schemaVersion == newest && count == newest)
            }
        }
        try await TestPostgres.dropDatabase(url)
    }

    /// As SQLite's: a caller that must not upgrade the shared database (the token commands; older
    /// nodes may run on it) is refused one an earlier Spool made, and it stays as it was (found by
    /// attacking an upgrade: `spool token list` moved it on, and the old nodes' next start failed).
    @Test func aCallerThatMustNotUpgradeIsRefusedAnOlderDatabase() async throws {
        let url = try await TestPostgres.createDatabase()
        let store = try PostgresJobStore(location: PostgresLocation(url: url), node: "node-0", logger: TestPostgres.logger)
        try await store.prepare(upgrading: false)   // nothing there yet: made whole
        store.close()
        let newest = PostgresSchema.migrations.last!.version
        try await TestPostgres.withClient(url) { client in
            try await client.query("DELETE FROM spool_migrations WHERE version = \(newest)")
        }
        let cli = try PostgresJobStore(location: PostgresLocation(url: url), node: "node-0", logger: TestPostgres.logger)
        await #expect {
            try await cli.prepare(upgrading: false)
        } throws: { error in
            "\(error)".contains("was made by an earlier Spool") && "\(error)".contains("schema version \(newest - 1)")
        }
        cli.close()
        try await TestPostgres.withClient(url) { client in
            let rows = try await client.query("SELECT count(*) FROM spool_migrations WHERE version = \(newest)")
            for try await count in rows.decode(Int.self) { #expect(count == 0, "left as it was") }
        }
        try await TestPostgres.dropDatabase(url)
    }

    /// A node's migration that deadlocks with another node's transaction is tried again, not the
    /// end of the node's start (found by attacking an upgrade: an old node's claim held `tokens` and
    /// wanted `jobs`, the migration held `jobs` for an index and wanted `tokens`; when PostgreSQL
    /// chose the migration as the victim, the new node failed to start).
    @Test func aMigrationThatDeadlocksIsTriedAgain() async throws {
        // PostgreSQL looks for a deadlock once, a `deadlock_timeout` after a wait begins: the
        // migration waits first, so the other transaction must come to wait within that second
        // for the migration to be the one that finds it. On a machine too busy for that, the other
        // is the victim and nothing was shown: the scene is played again.
        for _ in 0..<3 {
            if try await migrationIsADeadlocksVictim() { return }
        }
        Issue.record("the other transaction was the deadlock's victim three times: the migration's retry was never shown")
    }

    /// Plays the deadlock on a database as the build before `fail-fast-sweep` (14) and
    /// `token-max-priority` (15) left it; true when the migration was its victim and, tried again,
    /// went through, false when the other transaction was the victim.
    private func migrationIsADeadlocksVictim() async throws -> Bool {
        let url = try await TestPostgres.createDatabase()
        let store = try PostgresJobStore(location: PostgresLocation(url: url), node: "node-0", logger: TestPostgres.logger)
        try await store.prepare()
        store.close()
        try await TestPostgres.withClient(url) { client in
            try await client.query("DROP INDEX jobs_fail_fast_open")
            try await client.query("ALTER TABLE tokens DROP COLUMN max_priority")
            try await client.query("DELETE FROM spool_migrations WHERE version IN (14, 15)")
        }
        let notices = RecordedLines()
        let upgraded = try PostgresJobStore(location: PostgresLocation(url: url), node: "node-1",
                                            logger: Logger(label: "migration") { _ in RecordingHandler(lines: notices) })
        let started = Mutex<Task<Void, any Error>?>(nil)
        let victim = Mutex(false)
        do {
            try await TestPostgres.withClient(url) { other in
                do {
                    try await other.withTransaction(logger: TestPostgres.logger) { connection in
                        // The old node's transaction: it has read `tokens` (held to its end) and looks
                        // for deadlocks late, so the migration is the one that finds this one.
                        try await connection.query("SET LOCAL deadlock_timeout = '10s'", logger: TestPostgres.logger)
                        try await connection.query("SELECT count(*) FROM tokens", logger: TestPostgres.logger)
                        started.withLock { $0 = Task { try await upgraded.prepare() } }   // unstructured: awaited below
                        // Once the migration holds `jobs` (its index) and waits for `tokens`, this one
                        // wants `jobs`. (This database's locks alone: every test database has its
                        // tables under the same ids.)
                        let deadline = ContinuousClock.now + .seconds(30)
                        while true {
                            let rows = try await other.query(
                                """
                                SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                                WHERE c.relname = 'tokens' AND NOT l.granted
                                  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                                """)
                            var waiting = 0
                            for try await count in rows.decode(Int.self) { waiting = count }
                            if waiting > 0 { break }
                            try #require(ContinuousClock.now < deadline, "the migration never waited for tokens")
                            try await Task.sleep(for: .milliseconds(5))
                        }
                        try await connection.query("LOCK TABLE jobs IN ROW EXCLUSIVE MODE", logger: TestPostgres.logger)
                    }
                } catch let error as PostgresTransactionError
                            where (error.closureError as? PSQLError)?.serverInfo?[.sqlState] == "40P01" {
                    victim.withLock { $0 = true }   // this transaction was the victim: the migration went on
                }
            }
            // This transaction has ended: the migration, tried again, goes through.
            try await #require(started.withLock { $0 }).value
            try await TestPostgres.withClient(url) { client in
                let rows = try await client.query("SELECT count(*) FROM spool_migrations WHERE version IN (14, 15)")
                for try await count in rows.decode(Int.self) { #expect(count == 2) }
            }
        } catch {
            upgraded.close()
            try? await TestPostgres.dropDatabase(url)
            throw error
        }
        upgraded.close()
        try await TestPostgres.dropDatabase(url)
        if victim.withLock({ $0 }) { return false }
        #expect(notices.lines.contains { $0.contains("the schema migration gave way to another transaction") },
                "the migration was not tried again: \(notices.lines)")
        return true
    }
}

/// Log lines, as a `RecordingHandler` keeps them.
final class RecordedLines: Sendable {
    private let kept = Mutex<[String]>([])
    var lines: [String] { kept.withLock { $0 } }
    func append(_ line: String) { kept.withLock { $0.append(line) } }
}

/// Keeps every message logged through it, at any level.
struct RecordingHandler: LogHandler {
    let lines: RecordedLines
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) { lines.append("\(event.message)") }
}
