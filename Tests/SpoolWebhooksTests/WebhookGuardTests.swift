import SpoolCore
import SpoolWebhooks
import Testing

/// Where webhooks may go.
struct WebhookGuardTests {
    /// The other ways an IPv4 address rides in IPv6 are refused as the address itself is: 6to4
    /// by its IPv4 address, Teredo and local-use NAT64 whole (found by attacking the build: all
    /// three were accepted, while IPv4-mapped and 64:ff9b::/96 were refused).
    @Test(arguments: ["http://[2002:7f00:1::]/",                         // 6to4 of 127.0.0.1
                      "http://[2002:a9fe:a9fe::1]:8080/",                // 6to4 of 169.254.169.254
                      "http://[2002:c0a8:101::]/",                       // 6to4 of 192.168.1.1
                      "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",  // Teredo
                      "http://[64:ff9b:1::7f00:1]/",                     // local-use NAT64
                      "http://[64:ff9b:1:abcd::5db8:d822]/"])
    func sixToFourOfANonPublicAddressTeredoAndLocalUseNAT64AreRefused(_ url: String) async {
        await #expect(throws: WebhookTarget.Refusal.self) { try await WebhookGuard(allowPrivate: false).check(url) }
    }

    @Test func sixToFourOfAPublicAddressAndAnUpperCaseSchemeAreAccepted() async throws {
        try await WebhookGuard(allowPrivate: false).check("http://[2002:5db8:d822::1]/")   // 93.184.216.34
        try await WebhookGuard(allowPrivate: false).check("HTTPS://[2606:4700::1111]/x")
        #expect(try WebhookTarget.parse("HTTP://203.0.113.7/hook") == ("203.0.113.7", 80))
    }
}
