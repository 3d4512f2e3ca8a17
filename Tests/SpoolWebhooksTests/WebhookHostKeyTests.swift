@testable import SpoolWebhooks
import Testing

/// What the sending lanes' per-host share counts as one host.
@Suite struct WebhookHostKeyTests {
    /// One host whatever its port or case (found by attacking the build: a dead receiver on four
    /// ports took all eight lanes); two names are two hosts.
    @Test func aHostIsOneWhateverItsPort() {
        let keys = ["http://hooks.example:8001/a", "https://HOOKS.example:8443/b", "http://hooks.example/c"].map(WebhookDeliverer.hostKey)
        #expect(Set(keys).count == 1, "\(keys)")
        #expect(WebhookDeliverer.hostKey("http://other.example/a") != keys[0])
    }
}
