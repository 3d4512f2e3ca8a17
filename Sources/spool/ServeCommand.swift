import ArgumentParser
import Foundation
import Logging
import SpoolApp
import SpoolExecutor

/// What every node takes, whatever its role.
struct NodeOptions: ParsableArguments {
    @Option(name: .long, help: "A JSON config file (settings and job_types).") var config: String?
    @Option(name: .customLong("data-dir"), help: "Where the job database (SQLite), logs and outputs live (default ./spool-data).") var dataDir: String?
    @Option(name: .long, help: "sqlite (default: a file in the data directory) or postgres://USER@HOST:PORT/DB, a queue shared by many nodes.") var store: String?
    @Option(name: .long, help: "This node's name in a shared store (default: host name and a digest of the data directory).") var node: String?
    @Option(name: .long, help: "Seconds a running job's claim lasts without renewal before other nodes rescue it (shared store; default 10).") var lease: Double?
    @Option(name: .long, help: "Number of slots when no GPU is used (default 1).") var slots: Int?
    @Option(name: .long, help: "GPUs to use: auto (one slot per GPU nvidia-smi lists), none, or a list like 0,2.") var gpus: String?
    @Option(name: .customLong("kill-grace"), help: "Seconds between SIGTERM and SIGKILL when a job is stopped (default 10).") var killGrace: Double?
    @Option(name: .customLong("shutdown-grace"), help: "Seconds running jobs may finish after SIGTERM before they are requeued (default 30).") var shutdownGrace: Double?
    @Option(name: .customLong("retention-days"), help: "Days an ended job is kept with its logs and outputs; 0 keeps them forever (default 30).") var retentionDays: Double?
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical (default info).") var logLevel: String = "info"
    @Option(name: .customLong("log-format"), help: "text (default) or json (one object per line, for log shippers).") var logFormat: String = "text"

    /// Merges the config file, `SPOOL_*` variables and these flags (plus `extra` flags).
    func settings(extra: [(String, String?)] = []) -> ServerConfiguration {
        var settings = ServerConfiguration()
        do {
            if let config { try settings.load(file: config) }
            try settings.load(environment: ProcessInfo.processInfo.environment)
            let flags: [(String, String?)] = [
                ("data_dir", dataDir), ("store", store), ("node", node), ("lease_s", lease.map { "\($0)" }),
                ("slots", slots.map(String.init)), ("gpus", gpus), ("kill_grace_s", killGrace.map { "\($0)" }),
                ("shutdown_grace_s", shutdownGrace.map { "\($0)" }), ("retention_days", retentionDays.map { "\($0)" }),
            ] + extra
            for case let (key, text?) in flags {
                let flag = "--" + Self.flagName(of: key)
                try settings.apply(text: text, to: key, from: flag)
            }
        } catch {
            fail("\(error)")
        }
        // Read: the secrets among them leave this process's environment (jobs can read it).
        SecretVariables.scrub()
        return settings
    }

    /// The flag that sets the setting `key`: `kill_grace_s` → `kill-grace`, `sqlite_synchronous` →
    /// `sqlite-synchronous` (only a trailing `_s` goes: found by attacking the build, an error named
    /// the flag `--sqliteynchronous`), `lease_s` → `lease`.
    static func flagName(of key: String) -> String {
        let base = key.hasSuffix("_s") ? String(key.dropLast(2)) : key
        return base.replacingOccurrences(of: "_", with: "-")
    }

    /// The server's log lines (and its guard's) on stderr, as text or one JSON object each.
    static func bootstrapLogging(level: Logger.Level, json: Bool) {
        LoggingSystem.bootstrap { label in
            if json {
                var handler = JSONLogHandler(label: label)
                handler.logLevel = level
                return handler
            }
            var handler = TextLogHandler(label: label)
            handler.logLevel = level
            return handler
        }
    }

    /// Sets up logging as asked, then runs the node until it is stopped.
    func run(_ settings: ServerConfiguration, ready: @escaping @Sendable (String) -> Void) async {
        guard let level = Logger.Level(rawValue: logLevel) else { fail("--log-level must be one of trace, debug, info, notice, warning, error, critical") }
        guard logFormat == "text" || logFormat == "json" else { fail("--log-format must be text or json") }
        Self.bootstrapLogging(level: level, json: logFormat == "json")
        let logger = Logger(label: "spool")
        do {
            try await SpoolServer.run(settings, executable: ServeCommand.executablePath(), logger: logger,
                                      guardArguments: ["--log-level", logLevel, "--log-format", logFormat], onListening: ready)
        } catch let error as ConfigurationError {
            fail(error.description)
        } catch {
            fail("\(error)")
        }
    }
}

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the server: HTTP API, durable queue and the slots that run jobs.",
        discussion: """
            Settings come from --config FILE (JSON), then SPOOL_* environment variables (SPOOL_PORT, SPOOL_DATA_DIR, …),
            then these flags; later sources win. The built-in `render` job type is always there.

            Many machines, one queue: give every node the same --store postgres://… ; `serve` nodes answer the API
            (with --no-slots they run no jobs), `spool agent` nodes only run jobs.
            """
    )

    @OptionGroup var node: NodeOptions
    @Option(name: .long, help: "Address to listen on (default 127.0.0.1).") var host: String?
    @Option(name: .long, help: "Port to listen on; 0 picks a free one (default 8080).") var port: Int?
    @Option(name: .customLong("sqlite-synchronous"), help: "full (an accepted job survives power loss; default) or normal (survives a crash).") var synchronous: String?
    @Flag(name: .customLong("no-slots"), help: "Answer the API but run no jobs (an API node in front of a shared store).") var noSlots = false

    func run() async throws {
        var settings = node.settings(extra: [("host", host), ("port", port.map(String.init)), ("sqlite_synchronous", synchronous)])
        if noSlots {
            guard case .postgres = settings.store else {
                fail("--no-slots needs a shared store (--store postgres://…): with SQLite no other node would run the jobs")
            }
            settings.role = .api
        }
        await node.run(settings) { url in
            CodePages.trim()
            // Whether anyone reads it or not: the server runs on (found by attacking the build: `spool serve | true` crashed).
            StandardStreams.write(Array("spool: listening on \(url)\n".utf8), to: STDOUT_FILENO)
        }
    }

    /// The running binary, so the built-in `render` type can re-execute it.
    static func executablePath() -> String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }
}

struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Run jobs from a shared queue on this machine's slots, with no HTTP API (a GPU node).",
        discussion: """
            Needs --store postgres://… (the same as the API nodes'). Takes the same settings as `serve` (config file,
            SPOOL_* variables, flags), except those of the HTTP server; with --metrics-port it serves /metrics and
            /healthz alone, on that port of --host (default 127.0.0.1).
            """
    )

    @OptionGroup var node: NodeOptions
    @Option(name: .customLong("metrics-port"), help: "Serve /metrics and /healthz on this port (default: no HTTP at all).") var metricsPort: Int?
    @Option(name: .long, help: "The address the metrics port listens on (default 127.0.0.1).") var host: String?

    func run() async throws {
        var settings = node.settings(extra: [("metrics_port", metricsPort.map(String.init)), ("host", host)])
        guard case .postgres(let location) = settings.store else {
            fail("an agent needs a shared store: --store postgres://USER@HOST:PORT/DATABASE (or \"store\" in the config file)")
        }
        settings.role = .agent
        let description = "\(location)"
        await node.run(settings) { _ in
            StandardStreams.write(Array("spool: agent running jobs from \(description)\n".utf8), to: STDOUT_FILENO)
        }
    }
}

/// One line on stderr, exit 1: how every command reports an error.
/// Stops with one line unless `id` reads as a job's (`job_…`) or, where `arrays`, a job array's
/// (`arr_…`) id: it goes into a URL's path, and `spool status ../../metrics` asked for another
/// resource than a job's, `spool status ''` for the list (found by attacking the build).
func requireID(_ id: String, arrays: Bool = true) {
    let prefixes = arrays ? ["job_", "arr_"] : ["job_"]
    guard let prefix = prefixes.first(where: id.hasPrefix), id.count > prefix.count, id.count <= 64,
          id.dropFirst(prefix.count).allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) }) else {
        fail("\"\(id)\" is not a job id (job_…)" + (arrays ? " or a job array's (arr_…)" : ""))
    }
}

func fail(_ message: String, code: Int32 = 1) -> Never {
    StandardStreams.error("spool: \(message)\n")
    exit(code)
}
