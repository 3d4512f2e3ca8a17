// TestPostgres: the PostgreSQL server the tests use — $SPOOL_PG_URL when set, else a
// throwaway server that scripts/throwaway-postgres.sh starts once for this test process (and
// stops when the process exits). Each test gets a database of its own, dropped afterwards.

import Foundation
import Logging
import PostgresNIO
import SpoolPostgres
import SpoolStore

public enum TestPostgres {
    /// The server's URL (its `postgres` database), started at most once.
    public static let server = Task<String, any Error> {
        if let url = ProcessInfo.processInfo.environment["SPOOL_PG_URL"], !url.isEmpty { return url }
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("scripts/throwaway-postgres.sh").path
        do {
            return try ThrowawayPostgres.start(script: script)
        } catch {
            throw TestPostgresError("\(error); or set SPOOL_PG_URL to a server the tests may create databases on")
        }
    }

    public static let logger = Logger(label: "test-postgres")

    /// A new, empty database on the test server; returns its URL.
    public static func createDatabase() async throws -> String {
        let serverURL = try await server.value
        let name = "spool_test_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        try await withClient(serverURL) { client in
            try await client.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"))
        }
        var url = serverURL
        if let slash = url.lastIndex(of: "/") { url = String(url[..<slash]) + "/" + name }
        return url
    }

    public static func dropDatabase(_ url: String) async throws {
        let serverURL = try await server.value
        guard let name = url.split(separator: "/").last else { return }
        try await withClient(serverURL) { client in
            try await client.query(PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \(name) WITH (FORCE)"))
        }
    }

    /// Runs `body` against a fresh, prepared store in a database of its own.
    public static func withStore<T>(node: String = "test-node", leaseDuration: Duration = .seconds(10),
                             _ body: (PostgresJobStore) async throws -> T) async throws -> T {
        let url = try await createDatabase()
        // A minute for each operation, not the production 15 s: the run's machine has stalled for
        // most of a minute, failing a test here that had done nothing wrong.
        let store = try PostgresJobStore(location: PostgresLocation(url: url), node: node, leaseDuration: leaseDuration,
                                         connections: 8, operationTimeout: .seconds(60), logger: logger)
        do {
            try await store.prepare()
            let result = try await body(store)
            store.close()
            try await dropDatabase(url)
            return result
        } catch {
            store.close()
            try? await dropDatabase(url)
            throw error
        }
    }

    /// Runs `body` with a client of its own for the database at `url` (creating and dropping test
    /// databases, a test's raw SQL).
    public static func withClient(_ url: String, _ body: (PostgresClient) async throws -> Void) async throws {
        let location = try PostgresLocation(url: url)
        guard case .tcp(let host, let port) = location.endpoint else { throw TestPostgresError("the test server must be on TCP") }
        let client = PostgresClient(configuration: .init(host: host, port: port, username: location.user, password: location.password,
                                                         database: location.database, tls: .disable), backgroundLogger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            try await body(client)
        }
    }
}

public struct TestPostgresError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
