import SpoolCore
import Testing

/// What a webhook URL must be before anything resolves its host (the addresses it resolves to
/// are checked at submit, in the end-to-end security tests).
@Suite struct WebhookTargetTests {
    @Test func aURLsHostAndPortAreFound() throws {
        #expect(try WebhookTarget.parse("https://hooks.example.com/spool") == ("hooks.example.com", 443))
        #expect(try WebhookTarget.parse("http://[2001:db8::1]:8080/x") == ("2001:db8::1", 8080))
    }

    /// A refusal says what kind of address the host resolves to, never which (a tenant would
    /// learn the server's internal names' addresses).
    @Test func aRefusalNamesTheKindOfAddressNotTheAddress() throws {
        let refusal = try #require(WebhookTarget.refusal(for: [.v4([10, 3, 2, 1])]))
        #expect(refusal.description.contains("(private)") && !refusal.description.contains("10.3.2.1"), "\(refusal)")
        #expect(WebhookTarget.refusal(for: [.v4([93, 184, 215, 14])]) == nil)
    }

    @Test(arguments: ["http://example.com/a\u{0}b", "http://example.com/a\nb", "http://exa\tmple.com/", "http://example.com/\u{7F}"])
    func aURLWithAControlCharacterIsRefused(_ url: String) {
        #expect(throws: WebhookTarget.Refusal.self) { try WebhookTarget.parse(url) }
    }
}
