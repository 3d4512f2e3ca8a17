import SpoolCore
import SpoolPostgres
import SpoolSQLite

/// What `spool --version` prints: the version, and the stores' schemas this build writes (found
/// by attacking an upgrade: builds of one version with different schemas printed the same line).
public enum BuildVersion {
    public static var line: String {
        "\(SpoolVersion.current) (store schema: SQLite \(SQLiteJobStore.schemaVersion), PostgreSQL \(PostgresJobStore.schemaVersion))"
    }
}
