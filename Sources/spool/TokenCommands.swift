import ArgumentParser
import Foundation
import Logging
import SpoolApp
import SpoolCore
import SpoolExecutor

struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Create, list and revoke API tokens (kept in the job store; a running server picks changes up within a second).",
        discussion: """
            Tokens are stored as SHA-256 digests: a new token is printed once, as the last line of stdout.
            Clients send it as `Authorization: Bearer TOKEN` (`spool --token` or SPOOL_TOKEN for this CLI).
            A token's name is its tenant: it sees only the jobs it submitted, unless it is an administrator.
            """,
        subcommands: [TokenCreateCommand.self, TokenListCommand.self, TokenRevokeCommand.self]
    )
}

struct TokenCreateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create", abstract: "Create a token and print it (once).")

    @OptionGroup var node: NodeOptions
    @Option(help: "The token's name: the tenant its jobs belong to.") var name: String
    @Flag(help: "An administrator sees every tenant's jobs, /metrics and /v1/nodes.") var admin = false
    @Option(name: .customLong("max-queued"), help: "Most jobs it may have queued at once (429 beyond).") var maxQueued: Int?
    @Option(name: .customLong("max-running"), help: "Most of its jobs running at once (the rest wait).") var maxRunning: Int?
    @Option(help: "Most submits per second (429 beyond).") var rate: Double?
    @Option(help: "Its share of the slots against other tenants of the same priority (default 1).") var weight: Double = 1
    @Option(name: .customLong("max-priority"), parsing: .unconditional,   // a negative number is a value
            help: "The highest priority its jobs may have (403 above; fair share holds within a priority only).") var maxPriority: Int?

    func run() async throws {
        let settings = node.settings()
        let limits = TenantLimits(maxQueued: maxQueued, maxRunning: maxRunning, rate: rate, weight: weight, maxPriority: maxPriority)
        let token = await adminCommand { try await TokenAdministration.create(settings, name: name, admin: admin, limits: limits, logger: $0) }
        print("created token \"\(name)\"\(admin ? " (administrator)" : ""); it is shown only now — keep it secret:")
        print(token)
    }
}

struct TokenListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the tokens (names and limits; never the secrets).")

    @OptionGroup var node: NodeOptions

    func run() async throws {
        let settings = node.settings()
        let (tokens, everCreated) = await adminCommand { try await TokenAdministration.list(settings, logger: $0) }
        guard !tokens.isEmpty else {
            // Found by attacking the build: after the last revoke this said the server needed none.
            print(everCreated && settings.auth != .off
                  ? "no tokens: every one was revoked, so the server refuses all but its open routes until one is created "
                      + "(`spool token create --name NAME --admin`)"
                  : "no tokens: this server needs none on loopback (create one with `spool token create --name NAME --admin`)")
            return
        }
        print("NAME".padding(toLength: 24, withPad: " ", startingAt: 0) + "ROLE    MAX_QUEUED  MAX_RUNNING  RATE    WEIGHT  MAX_PRIORITY  CREATED")
        for token in tokens {
            func column(_ value: String, _ width: Int) -> String { value.padding(toLength: max(width, value.count + 1), withPad: " ", startingAt: 0) }
            print(column(token.name, 24) + column(token.isAdmin ? "admin" : "tenant", 8) + column(token.limits.maxQueued.map(String.init) ?? "-", 12)
                  + column(token.limits.maxRunning.map(String.init) ?? "-", 13) + column(token.limits.rate.map { "\($0)" } ?? "-", 8)
                  + column("\(token.limits.weight)", 8) + column(token.limits.maxPriority.map(String.init) ?? "-", 14)
                  + token.createdAt.description)
        }
    }
}

struct TokenRevokeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "revoke", abstract: "Revoke a token by name (its sessions end too).")

    @OptionGroup var node: NodeOptions
    @Argument(help: "The token's name.") var name: String

    func run() async throws {
        let settings = node.settings()
        let note = await adminCommand { try await TokenAdministration.revoke(settings, name: name, logger: $0) }
        print("revoked token \"\(name)\"")
        if let note { StandardStreams.error("spool: \(note)\n") }
    }
}

/// Runs an administration step against the store: errors are one line, exit 1.
func adminCommand<T>(_ body: (Logger) async throws -> T) async -> T {
    var logger = Logger(label: "spool")
    logger.logLevel = .error
    do {
        return try await body(logger)
    } catch let error as ConfigurationError {
        fail(error.description)
    } catch {
        fail("\(error)")
    }
}
