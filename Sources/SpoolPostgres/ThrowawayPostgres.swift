#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Starts a throwaway PostgreSQL server with `scripts/throwaway-postgres.sh` — for tests and
/// `spool bench --cluster`, never for jobs — and returns its URL. The server stops when
/// `owner` exits. Blocks while the script runs (about a second): call it off event loops.
public enum ThrowawayPostgres {
    /// `durable` keeps PostgreSQL's default fsync and synchronous commit (for benchmarks).
    public static func start(script: String, owner: Int32 = getpid(), durable: Bool = false) throws -> String {
        // popen, and one line: the server the script leaves running holds a copy of the pipe,
        // so reading to its end would never finish.
        let command = "SPOOL_PG_DURABLE=\(durable ? 1 : 0) /bin/bash '\(script)' \(owner)"
        guard let pipe = popen(command, "r") else { throw Failure("cannot run \(script)") }
        var line = [CChar](repeating: 0, count: 4096)
        let url = fgets(&line, Int32(line.count), pipe) == nil ? "" : String(cString: line).trimmingCharacters(in: .whitespacesAndNewlines)
        guard pclose(pipe) == 0, !url.isEmpty else {
            throw Failure("could not start a throwaway PostgreSQL server with \(script) (its error is above): install PostgreSQL (initdb, pg_ctl) or name a server")
        }
        return url
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }
}
