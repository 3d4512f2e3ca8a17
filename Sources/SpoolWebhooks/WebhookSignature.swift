import Crypto

/// `Spool-Webhook-Signature: v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>`. The
/// timestamp is signed with the body so a captured delivery cannot be replayed later under a
/// fresh timestamp; receivers should also refuse timestamps far from their clock.
public enum WebhookSignature {
    public static func sign(secret: String, timestamp: Int64, body: [UInt8]) -> String {
        var message = Array("\(timestamp).".utf8)
        message.append(contentsOf: body)
        let code = HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: Array(secret.utf8)))
        return "v1=" + code.map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }
}
