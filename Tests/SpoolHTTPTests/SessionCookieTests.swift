import SpoolCore
import Testing
@testable import SpoolHTTP

/// The dashboard's session cookie: its value names a token until it expires, and only with the
/// server's signature; any other value names nothing, whatever its numbers.
@Suite struct SessionCookieTests {
    let key = Array("a session key of thirty-two bytes".utf8)
    let now = Timestamp(microseconds: 1_800_000_000_000_000)

    @Test func aSignedValueNamesItsTokenUntilItExpires() {
        let value = SessionCookie.value(tokenID: "tok_1", expires: now.adding(seconds: 60), key: key)
        #expect(SessionCookie.session(in: value[...], key: key, now: now)?.tokenID == "tok_1")
        #expect(SessionCookie.session(in: value[...], key: key, now: now)?.began == now.adding(seconds: 60 - SessionCookie.lifetime),
                "it began a lifetime before it expires, to the millisecond")
        #expect(SessionCookie.session(in: value[...], key: key, now: now.adding(seconds: 61)) == nil, "expired")
        #expect(SessionCookie.session(in: value[...], key: Array("another key".utf8), now: now) == nil)
        let tampered = value.replacingOccurrences(of: "tok_1.", with: "tok_2.")
        #expect(SessionCookie.session(in: tampered[...], key: key, now: now) == nil)
    }

    /// A cookie from a build that wrote its expiry in seconds (before 2026-12-07) lasts out its
    /// session across the upgrade (found by attacking the build: every dashboard was logged out,
    /// its expiry read as milliseconds, in 1970).
    @Test func aCookieWithItsExpiryInSecondsFromAnEarlierBuildStillHolds() {
        let expires = now.adding(seconds: 60)
        let payload = "tok_1.\(expires.microseconds / 1_000_000)"
        let value = payload + "." + SessionCookie.signature(payload, key: key)
        let session = SessionCookie.session(in: value[...], key: key, now: now)
        #expect(session?.tokenID == "tok_1")
        #expect(session?.began == Timestamp(microseconds: expires.microseconds / 1_000_000 * 1_000_000).adding(seconds: -SessionCookie.lifetime))
        #expect(SessionCookie.session(in: value[...], key: key, now: now.adding(seconds: 61)) == nil, "expired")
    }

    /// Found by attacking the build: an expiry past Int64.max / 1,000,000 trapped on the
    /// multiplication, before the signature was looked at — one request with no credential
    /// stopped the server.
    @Test func anyExpiryInAnUnsignedValueNamesNothingAndNeverTraps() {
        for expires in ["9223372036854775807", "-9223372036854775808", "9223372036855", "99999999999999999999", "", "-1", "1e3"] {
            #expect(SessionCookie.session(in: "tok_1.\(expires).00ff"[...], key: key, now: now) == nil, "\(expires)")
        }
        let far = "tok_1.9223372036854775807"
        let signed = far + "." + SessionCookie.signature(far, key: key)
        #expect(SessionCookie.session(in: signed[...], key: key, now: now)?.tokenID == "tok_1", "a far expiry the server signed is in the future")
    }
}
