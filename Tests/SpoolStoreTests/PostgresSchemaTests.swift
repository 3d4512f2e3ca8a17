// PostgresSchemaTests: migrations that fill in what a database already holds — the heads of the
// job arrays stored before arrays could be listed.

import PostgresNIO
import SpoolCore
@testable import SpoolPostgres
import SpoolStore
import SpoolTestSupport
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
}
