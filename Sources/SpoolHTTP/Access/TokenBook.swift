import Crypto
import Logging
import ServiceLifecycle
import SpoolCore
import SpoolStore
import Synchronization

/// The API tokens a running server honours. It reads them from the store every half second,
/// so a token created or revoked with `spool token` works — or stops working — within a
/// second, on every node, without a restart. If the store cannot be read, the last tokens read
/// stay in force (and the failure is logged).
public final class TokenBook: Service {
    private let store: (any TokenStore)?
    private let interval: Duration
    private let logger: Logger
    private let byID = Mutex<[String: TokenRecord]>([:])
    /// A token was created in the store at some point (`TokenStore.tokensWereCreated`): once
    /// true, it stays so.
    private let created = Mutex(false)
    private let onRevoke: @Sendable () -> Void
    private let onChange: @Sendable () -> Void
    /// The server's `auth` setting: whether a request without a token may go on.
    private let auth: AccessPolicy.Mode

    /// `onRevoke` runs when a refresh finds a token gone: open event streams are woken then,
    /// so a revoked token's stream ends within a second rather than at its next keep-alive.
    /// `onChange` runs when a token came or went (its limits with it): idle slots look at the
    /// queue again, for jobs a lifted `max_running` lets start (found by attacking the build:
    /// they stayed idle until the next submit).
    public init(store: (any TokenStore)?, refreshEvery interval: Duration = .milliseconds(500), auth: AccessPolicy.Mode = .auto,
                logger: Logger, onRevoke: @escaping @Sendable () -> Void = {}, onChange: @escaping @Sendable () -> Void = {}) {
        self.store = store
        self.auth = auth
        self.interval = interval
        self.logger = logger
        self.onRevoke = onRevoke
        self.onChange = onChange
    }

    /// Reads the tokens now.
    public func refresh() async throws {
        guard let store else { return }
        var tokens = try await store.tokens()
        let wasCreated = created.withLock { $0 }
        var nowCreated = !wasCreated && !tokens.isEmpty
        if !wasCreated, !nowCreated, try await store.tokensWereCreated() {
            // The first token was created since the read above (or created and revoked): read
            // again, so this server never asks for a token without honouring the one that made
            // it ask (found in CI: the dashboard, asked to log in, was told its new token was not valid).
            nowCreated = true
            tokens = try await store.tokens()
        }
        let fresh = Dictionary(tokens.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        let (revoked, changed) = byID.withLock { known in
            defer { known = fresh }
            return (known.keys.contains { fresh[$0] == nil }, Set(known.keys) != Set(fresh.keys))
        }
        if nowCreated {
            // After the tokens themselves, for the same reason.
            created.withLock { $0 = true }
            // Streams opened without a token (none was needed) end now that one is (`stillValid`).
            onRevoke()
        }
        if revoked { onRevoke() }
        if changed { onChange() }
    }

    public func run() async throws {
        var failing = false
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                try await refresh()
                if failing { logger.info("reading the API tokens works again") }
                failing = false
            } catch is CancellationError {
                return   // the server is stopping (or never started): not a failure to read them
            } catch {
                if !failing { logger.warning("could not read the API tokens; the last ones read stay in force", metadata: ["error": "\(error)"]) }
                failing = true
            }
            try? await Task.sleep(for: interval)
        }
    }

    /// Whether any token exists.
    public var isEmpty: Bool { byID.withLock { $0.isEmpty } }

    /// Whether a token exists or ever did (`auth: auto` asks for one then): revoking the last
    /// token does not open the server to anyone (found by attacking the build: every anonymous
    /// caller became an administrator the moment the last token was revoked).
    public var wereCreated: Bool { created.withLock { $0 } || !isEmpty }

    /// The tenant a token text belongs to; nil for a malformed, unknown or revoked token. The
    /// secret is compared by its digest, in constant time.
    public func principal(forToken text: some StringProtocol) -> Principal? {
        guard let (id, secret) = TokenText.parse(text), let record = byID.withLock({ $0[id] }) else { return nil }
        return TokenText.constantTimeEqual(Self.digest(ofSecret: secret), record.secretDigest) ? record.principal : nil
    }

    /// The tenant of the token with this public id (a session names it), while it exists.
    public func principal(forTokenID id: String) -> Principal? { byID.withLock { $0[id]?.principal } }

    /// The principal of a dashboard session of token `id` that began at `began`: nil once the
    /// token is gone, or its sessions were ended (a log out) after it began (both to the millisecond).
    public func principal(forSessionOf id: String, began: Timestamp) -> Principal? {
        byID.withLock { tokens in
            guard let token = tokens[id], token.sessionsSince.map({ began >= $0 }) ?? true else { return nil }
            return token.principal
        }
    }

    /// Ends the dashboard sessions of token `id` (a log out), on every node of a shared store:
    /// this one at once (its open streams woken to end), the others at their next refresh.
    public func endSessions(ofToken id: String, at now: Timestamp) async throws {
        guard let store, try await store.endSessions(ofToken: id, at: now) else { return }
        byID.withLock { $0[id]?.sessionsSince = now }
        onRevoke()
    }

    /// Whether the token a request came with still exists (true for one that came without):
    /// a long poll or an event stream whose token was revoked — or replaced under its name — ends.
    public func stillValid(_ principal: Principal) -> Bool {
        guard let id = principal.tokenID else {
            // Without a token: valid while none is needed (found in review: a stream opened before
            // the first token was created went on showing every tenant's events).
            switch auth {
            case .off: return true
            case .required: return false
            case .auto: return !wereCreated
            }
        }
        return byID.withLock { tokens in
            guard let token = tokens[id] else { return false }
            // A session's stream ends at a log out too (found in review: a stream opened with a
            // copied cookie went on after the log out).
            guard let began = principal.sessionBegan, let since = token.sessionsSince else { return true }
            return began >= since
        }
    }

    /// The tenant of the token with this name, while it exists.
    public func principal(named name: String) -> Principal? { byID.withLock { $0.values.first { $0.name == name }?.principal } }

    /// The id of the token a text names, if it is a valid token (for a session).
    public func tokenID(forToken text: some StringProtocol) -> String? {
        guard principal(forToken: text) != nil else { return nil }
        return TokenText.parse(text)?.id
    }

    public static func digest(ofSecret secret: String) -> [UInt8] { Array(SHA256.hash(data: Array(secret.utf8))) }
}
