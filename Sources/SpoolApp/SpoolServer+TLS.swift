import Foundation
import HummingbirdCore
import HummingbirdHTTP2
import NIOCore
import NIOSSL
import SpoolCore
import SpoolHTTP

/// The server's HTTP channel, and its TLS files, checked before anything starts.
extension SpoolServer {
    /// HTTP/1.1, or with TLS HTTP/2 and HTTP/1.1 by ALPN, each connection guarded
    /// (`ConnectionGuard`, `GuardedTLSChannel`).
    static func httpServer(_ configuration: ServerConfiguration) throws -> HTTPServerBuilder {
        let count = ConnectionGuard.Count(limit: configuration.maxConnections)
        let timeout = TimeAmount.milliseconds(Int64(configuration.headerTimeoutSeconds * 1000))
        let http1 = HTTP1Channel.Configuration(
            additionalChannelHandlers: [ConnectionGuard(headerTimeout: timeout, count: count, maxBodyBytes: configuration.maxBodyBytes)], idleTimeout: .seconds(300))
        guard let certificate = configuration.tlsCertificate, let key = configuration.tlsKey else {
            if configuration.tlsCertificate != nil || configuration.tlsKey != nil {
                throw ConfigurationError("TLS needs both tls_cert and tls_key (PEM files)")
            }
            return .http1(configuration: http1)
        }
        let tls = try tlsConfiguration(certificate: certificate, key: key)
        // The connection is counted (and timed until its handshake ends) in front of TLS; the
        // HTTP/1.1 guard behind it times requests only. An HTTP/2 connection with no stream open
        // is closed after the header timeout, as an HTTP/1.1 one between requests.
        var streams = http1
        streams.additionalChannelHandlers = {
            [ConnectionGuard(headerTimeout: timeout, count: ConnectionGuard.Count(limit: .max), maxBodyBytes: configuration.maxBodyBytes),
             StreamTally()]
        }
        let upgrade = HTTP2UpgradeChannel.Configuration(idleTimeout: .milliseconds(Int64(configuration.headerTimeoutSeconds * 1000)),
                                                        streamConfiguration: streams)
        return HTTPServerBuilder { responder in
            GuardedTLSChannel(inner: try HTTP2UpgradeChannel(tlsConfiguration: tls, configuration: upgrade, responder: responder),
                              count: count, handshakeTimeout: timeout,
                              silenceLimit: .seconds(Int64(SpoolAPI.Limits().maxWait)) + timeout * 2)
        }
    }

    /// What to say of a server certificate that has expired or soon will (found by attacking the
    /// build: an expired one started silently, and every client then failed its handshake). A
    /// warning, not a refusal: a renewed file is read at the next start.
    static func certificateWarning(_ path: String, now: time_t) -> String? {
        guard let leaf = try? NIOSSLCertificate.fromPEMFile(path).first else { return nil }
        let left = leaf.notValidAfter - now, day: time_t = 86_400
        let date = Timestamp(microseconds: Int64(leaf.notValidAfter) * 1_000_000).description
        if left <= 0 { return "the TLS certificate expired on \(date): clients that check it will refuse this server" }
        if left < 14 * day { return "the TLS certificate expires on \(date), in \(max(1, left / day)) day(s)" }
        return nil
    }

    /// The server's TLS set-up, checked before anything starts: each file read on its own, and
    /// the key matched to the certificate (a context made now, which checks it), so that a wrong
    /// file is named in one line (found by attacking the build: a key of another certificate
    /// stopped the server only once it started, with "failedToLoadPrivateKey").
    static func tlsConfiguration(certificate: String, key: String) throws -> TLSConfiguration {
        func readable(_ path: String, _ what: String) throws {
            guard access(path, R_OK) != 0 else { return }
            throw ConfigurationError("cannot read the TLS \(what) \(path): \(String(cString: strerror(errno)))")
        }
        try readable(certificate, "certificate (tls_cert)")
        try readable(key, "key (tls_key)")
        let chain: [NIOSSLCertificate]
        do { chain = try NIOSSLCertificate.fromPEMFile(certificate) } catch {
            throw ConfigurationError("the TLS certificate (tls_cert) \(certificate) is not a PEM certificate (\(error))")
        }
        guard !chain.isEmpty else { throw ConfigurationError("the TLS certificate (tls_cert) \(certificate) holds no certificate") }
        let privateKey: NIOSSLPrivateKey
        do { privateKey = try NIOSSLPrivateKey(file: key, format: .pem) } catch {
            throw ConfigurationError("the TLS key (tls_key) \(key) is not an unencrypted PEM private key (\(error))")
        }
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(privateKey))
        // TLS 1.2 and up, with forward secrecy and AEAD only (found by attacking the build: the
        // library's defaults took TLS 1.0 and 1.1, static-RSA key exchange and CBC-SHA1 suites,
        // which RFC 8996 deprecates and scanners fail). TLS 1.3's suites are all of that kind.
        tls.minimumTLSVersion = .tlsv12
        tls.cipherSuiteValues = Self.tls12CipherSuites
        do { _ = try NIOSSLContext(configuration: tls) } catch {
            throw ConfigurationError("the TLS key (tls_key) \(key) does not belong to the certificate (tls_cert) \(certificate) (\(error))")
        }
        return tls
    }

    /// The TLS 1.2 suites offered: ECDHE key exchange with AES-GCM or ChaCha20-Poly1305.
    static let tls12CipherSuites: [NIOTLSCipher] = [
        .TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, .TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        .TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, .TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        .TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, .TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ]
}
