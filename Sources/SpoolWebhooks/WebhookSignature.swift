import Crypto

/// `Spool-Webhook-Signature: v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>`. The
/// timestamp is signed with the body so a captured delivery cannot be replayed later under a
/// fresh timestamp; receivers should also refuse timestamps far from their clock.
public enum WebhookSignature {
    public static func sign(secret: String, timestamp: Int64, body: [UInt8]) -> String {
        var message = Array("\(timestamp).".utf8)
        message.append(contentsOf: body)
        return "v1=" + hex(HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: Array(secret.utf8))))
    }

    /// The secret that signs the deliveries of `owner`'s jobs: 64 hex digits of HMAC-SHA256,
    /// keyed by `webhook_secret` and the store's own random key (`storeKey`, which no client
    /// ever sees), of "spool-webhook-secret:" + owner. Each tenant verifies with a secret of its
    /// own, and one that knows its own cannot sign for another (with one secret for all, any
    /// tenant could forge deliveries to every other tenant's receivers). The store's key is in
    /// it because tenants of an older server all hold `webhook_secret` (found in review: derived
    /// from it alone, their secrets were theirs to compute). Jobs without an owner (no tokens)
    /// are signed with `webhook_secret` itself.
    public static func secret(for owner: String?, serverSecret: String, storeKey: [UInt8]) -> String {
        guard let owner else { return serverSecret }
        return hex(HMAC<SHA256>.authenticationCode(for: Array("spool-webhook-secret:\(owner)".utf8),
                                                   using: SymmetricKey(data: Array(serverSecret.utf8) + storeKey)))
    }

    private static func hex(_ code: some Sequence<UInt8>) -> String {
        code.map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }
}
