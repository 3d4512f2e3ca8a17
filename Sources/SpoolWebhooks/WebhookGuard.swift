import SpoolCore

/// Checks a webhook URL against `WebhookTarget`'s rules, resolving its host with `resolver`: at
/// submit, and again before every delivery, which then connects to an address from that same
/// answer (`destination(of:)`). With `allowPrivate` (`webhook_allow_private: true`) loopback,
/// private and link-local hosts are allowed too; the URL must still be well formed and carry
/// no credentials.
public struct WebhookGuard: Sendable {
    public var allowPrivate: Bool
    /// Where host names are looked up: the system's resolver, but for tests.
    public var resolver: any WebhookResolver

    public init(allowPrivate: Bool, resolver: any WebhookResolver = SystemResolver()) {
        self.allowPrivate = allowPrivate
        self.resolver = resolver
    }

    /// Why a delivery cannot go out now.
    public enum Failure: Error, Sendable, Equatable {
        /// The URL is malformed, or its host resolves to an address it may not go to: final.
        case refused(WebhookTarget.Refusal)
        /// The lookup itself failed (no answer, a timeout, SERVFAIL, no such name): this attempt
        /// fails, and the delivery is tried again on the usual back-off, as when a receiver is down.
        case unresolved(WebhookResolutionFailure)
    }

    /// At submit: whether `url` may receive webhooks. A lookup that fails refuses it too — the
    /// submitter is there to see why and try again.
    public func check(_ url: String) async throws(WebhookTarget.Refusal) {
        guard !allowPrivate else {
            _ = try WebhookTarget.parse(url)
            return
        }
        do {
            _ = try await destination(of: url)
        } catch {
            switch error {
            case .refused(let refusal): throw refusal
            case .unresolved(let failure):
                throw WebhookTarget.Refusal(description: "the webhook's host does not resolve to an address (\(failure))")
            }
        }
    }

    /// Before a delivery: the URL's host and port, and the addresses its host resolves to now,
    /// every one of them checked. The delivery connects to one of these addresses and to no
    /// other: looking the name up again to connect could answer otherwise (found by attacking
    /// the build: a name that answered a public address to the check and 127.0.0.1 to the HTTP
    /// client's own lookup had the signed delivery POSTed to a loopback service).
    public func destination(of url: String) async throws(Failure) -> WebhookDestination {
        let host: String, port: Int
        do { (host, port) = try WebhookTarget.parse(url) } catch { throw .refused(error) }
        let addresses: [IPAddress]
        if let literal = IPAddress(literal: host) {
            addresses = [literal]   // what the HTTP client connects to without a lookup
        } else {
            do { addresses = try await resolver.addresses(of: host) } catch { throw .unresolved(error) }
        }
        guard !addresses.isEmpty else { throw .unresolved(WebhookResolutionFailure("the resolver answered no address")) }
        if !allowPrivate, let refusal = WebhookTarget.refusal(for: addresses) { throw .refused(refusal) }
        return WebhookDestination(host: host, port: port, addresses: addresses)
    }
}

/// Where a delivery may connect: its URL's host (which goes in the Host header, TLS SNI and the
/// certificate check), its port, and the checked addresses of the host, most preferred first.
public struct WebhookDestination: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var addresses: [IPAddress]

    /// The address attempt number `attempt` connects to: the first, then the next on each
    /// retry, so that one that does not answer does not hold a delivery up on every attempt.
    public func address(forAttempt attempt: Int) -> IPAddress {
        addresses[max(attempt - 1, 0) % addresses.count]
    }
}
