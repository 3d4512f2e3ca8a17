import SpoolCore
import Testing
@testable import SpoolApp

/// `allowed_hosts`: bound to loopback, only loopback names by default (against DNS rebinding);
/// a list names the hosts served; `["*"]` serves any, wherever the server listens.
@Suite struct HostConfigurationTests {
    @Test func loopbackNamesByDefaultANamedListOrAny() throws {
        var configuration = ServerConfiguration()
        #expect(configuration.accessPolicy.allows(host: "127.0.0.1:8080") && configuration.accessPolicy.allows(host: "localhost"))
        #expect(!configuration.accessPolicy.allows(host: "rebound.example"))

        try configuration.apply("allowed_hosts", .array([.string("proxy.example.com")]), from: "spool.json")
        #expect(configuration.accessPolicy.allows(host: "proxy.example.com:443"))
        #expect(!configuration.accessPolicy.allows(host: "other.example"))

        for any in [JSONValue.array([.string("*")]), .string("*"), .array([.string("proxy.example.com"), .string("*")])] {
            try configuration.apply("allowed_hosts", any, from: "spool.json")
            #expect(configuration.accessPolicy.allows(host: "anything.example"), "\(any.canonicalText) while bound to loopback")
        }
        configuration.host = "0.0.0.0"
        #expect(configuration.accessPolicy.allows(host: "anything.example"))
    }
}
