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

    /// Loopback is an address in 127.0.0.0/8, ::1 or `localhost` — not a name that merely begins
    /// with "127." (found by attacking the build: `--host 127.lab.example.com`, a network
    /// address, started with no token, and its default allowed_hosts were the loopback names).
    @Test func onlyLoopbackAddressesCountAsLoopback() {
        var configuration = ServerConfiguration()
        for host in ["127.0.0.1", "127.1.2.3", "localhost", "LOCALHOST", "::1", "[::1]"] {
            configuration.host = host
            #expect(configuration.bindsLoopback, "\(host)")
        }
        for host in ["127.lab.example.com", "127.0.0.1.nip.io", "127.0.0", "0.0.0.0", "10.0.0.7", "::", "spool.example.com", "128.0.0.1"] {
            configuration.host = host
            #expect(!configuration.bindsLoopback, "\(host)")
        }
    }

    /// A setting that cannot be a host name (a JSON list half-typed into the environment, say)
    /// stops startup with one line, instead of a server that answers 421 to everything.
    @Test func aListThatHoldsNoHostNameStopsStartup() throws {
        var configuration = ServerConfiguration()
        for good in ["spool.example.com", "spool.example.com:8443", "10.0.0.7", "[::1]:8080", "[fe80::1]", "spool_api:8080", "a.b-c.d, e.f"] {
            try configuration.load(environment: ["SPOOL_ALLOWED_HOSTS": good])
        }
        #expect(configuration.accessPolicy.allowedHosts == ["a.b-c.d", "e.f"])
        for bad in ["[", "[\"a.com\"", "a.com/path", "http://a.com", "a b", "[::1", "a.com:0", "a.com:http", "", " , "] {
            do {
                try configuration.load(environment: ["SPOOL_ALLOWED_HOSTS": bad])
                Issue.record("\(bad) was taken")
            } catch {
                #expect(error.description.hasPrefix("SPOOL_ALLOWED_HOSTS: allowed_hosts must be"), "\(error.description)")
            }
        }
    }

    /// `host`, the address to listen on: a typo stops startup with one line naming it, before
    /// anything starts (found by attacking the build: the server started, then failed to bind).
    @Test func aHostThatCannotBeListenedOnStopsStartup() throws {
        var configuration = ServerConfiguration()
        for good in ["127.0.0.1", "0.0.0.0", "::", "::1", "fe80::1", "localhost", "gpu-box.lan", "spool_api"] {
            try configuration.apply(text: good, to: "host", from: "--host")
            #expect(configuration.host == good)
        }
        for bad in ["256.1.1.1", "1.2.3", "not a host", "[::1]", "http://x", "a/b", "1.2.3.4:80"] {
            do {
                try configuration.apply(text: bad, to: "host", from: "--host")
                Issue.record("\(bad) was taken")
            } catch {
                #expect(error.description.hasPrefix("--host: host must be an IP address or a host name to listen on"), "\(error.description)")
            }
        }
    }
}
