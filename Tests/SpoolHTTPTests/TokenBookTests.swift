import Logging
import SpoolCore
import SpoolStore
import Synchronization
import Testing
@testable import SpoolHTTP

/// The tokens a server honours: once it asks for a token (`wereCreated`), it honours the token
/// that made it ask.
@Suite struct TokenBookTests {
    /// A token store whose first `tokens()` answers as the store was just before `spool token
    /// create` committed, the commit landing between the book's two reads of a refresh.
    final class CreatedBetweenReads: TokenStore {
        let store = MemoryJobStore()
        let token: TokenRecord
        let reads = Mutex(0)
        init(token: TokenRecord) { self.token = token }

        func tokens() async throws -> [TokenRecord] {
            let before = try await store.tokens()
            if reads.withLock({ $0 += 1; return $0 }) == 1 { try await store.createToken(token) }
            return before
        }
        func createToken(_ token: TokenRecord) async throws { try await store.createToken(token) }
        func revokeToken(named name: String) async throws -> Bool { try await store.revokeToken(named: name) }
        func tokensWereCreated() async throws -> Bool { try await store.tokensWereCreated() }
        func sessionKey() async throws -> [UInt8] { try await store.sessionKey() }
        func endSessions(ofToken id: String, at now: Timestamp) async throws -> Bool { try await store.endSessions(ofToken: id, at: now) }
    }

    /// Found when a CI run's dashboard test was asked for a token and then told the new token was
    /// not valid: a refresh that saw "a token was created" but not the token itself asked every
    /// caller for one that it refused.
    @Test func aRefreshThatSeesATokenWasCreatedHonoursIt() async throws {
        let (id, secret) = TokenText.generate()
        let record = TokenRecord(id: id, name: "viewer", secretDigest: TokenBook.digest(ofSecret: secret), isAdmin: false,
                                 limits: TenantLimits(), createdAt: Timestamp(microseconds: 1_800_000_000_000_000))
        let book = TokenBook(store: CreatedBetweenReads(token: record), logger: Logger(label: "test"))
        try await book.refresh()
        #expect(book.wereCreated, "the store says a token was created")
        #expect(book.principal(forToken: TokenText.format(id: id, secret: secret))?.name == "viewer",
                "the server that asks for a token honours the one created")
    }
}
