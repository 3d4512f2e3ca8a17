import HTTPTypes
@testable import SpoolHTTP
import Testing

/// RFC 9110 validators, conditional requests and byte ranges, as pure decisions.
@Suite struct DownloadTests {
    let download = Download(etag: "\"abc\"", lastModified: 1_700_000_000, size: 1000)

    @Test(arguments: [
        ("bytes=0-99", Download.Answer.partial(0...99)),
        ("bytes=100-", .partial(100...999)),
        ("bytes=-10", .partial(990...999)),
        ("bytes=-5000", .partial(0...999)),
        ("bytes=990-5000", .partial(990...999)),
        ("bytes=999-999", .partial(999...999)),
        ("bytes=1000-", .unsatisfiable),
        ("bytes=99999999999999999999999-", .unsatisfiable),
        ("bytes=-0", .unsatisfiable),
        ("bytes=5-4", .whole),          // invalid: ignored
        ("bytes=0-1,5-6", .whole),      // several ranges: the whole content (allowed)
        ("items=0-1", .whole),
        ("bytes=a-b", .whole),
        ("bytes=-", .whole),
        ("bytes=+1-2", .whole),
    ])
    func rangesAreParsedAsRFC9110Says(header: String, answer: Download.Answer) {
        #expect(ByteRange.parse(header, size: 1000) == answer, "\(header)")
    }

    @Test func anEmptyFileHasNoSatisfiableRange() {
        #expect(ByteRange.parse("bytes=0-", size: 0) == .unsatisfiable)
        #expect(ByteRange.parse("bytes=-1", size: 0) == .unsatisfiable)
    }

    @Test func conditionalRequests() {
        func answer(_ fields: [HTTPField.Name: String]) -> Download.Answer {
            var headers = HTTPFields()
            for (name, value) in fields { headers[name] = value }
            return download.answer(to: headers)
        }
        let date = HTTPDate.format(1_700_000_000)
        #expect(answer([:]) == .whole)
        #expect(answer([.ifNoneMatch: "\"abc\""]) == .notModified)
        #expect(answer([.ifNoneMatch: "W/\"abc\""]) == .notModified, "weak comparison")
        #expect(answer([.ifNoneMatch: "\"x\", \"abc\""]) == .notModified)
        #expect(answer([.ifNoneMatch: "*"]) == .notModified)
        #expect(answer([.ifNoneMatch: "\"other\""]) == .whole)
        #expect(answer([.ifModifiedSince: date]) == .notModified)
        #expect(answer([.ifModifiedSince: HTTPDate.format(1_700_000_001)]) == .notModified)
        #expect(answer([.ifModifiedSince: HTTPDate.format(1_699_999_999)]) == .whole)
        #expect(answer([.ifModifiedSince: "yesterday"]) == .whole, "an unreadable date is ignored")
        #expect(answer([.ifNoneMatch: "\"other\"", .ifModifiedSince: date]) == .whole, "If-None-Match wins")
        #expect(answer([.range: "bytes=10-19"]) == .partial(10...19))
        #expect(answer([.range: "bytes=10-19", .ifRange: "\"abc\""]) == .partial(10...19))
        #expect(answer([.range: "bytes=10-19", .ifRange: "\"changed\""]) == .whole)
        #expect(answer([.range: "bytes=10-19", .ifRange: date]) == .partial(10...19))
        #expect(answer([.range: "bytes=10-19", .ifRange: HTTPDate.format(1)]) == .whole)
    }

    @Test func httpDatesRoundTrip() {
        #expect(HTTPDate.format(784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(HTTPDate.parse("Sun, 06 Nov 1994 08:49:37 GMT") == 784_111_777)
        for seconds in [0, 1_000_000_000, 1_796_386_095, 4_102_444_800] { #expect(HTTPDate.parse(HTTPDate.format(seconds)) == seconds) }
        for text in ["Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994", "", "Sun, 06 Nov 1994 08:49 GMT"] {
            #expect(HTTPDate.parse(text) == nil, "\(text)")
        }
    }

    @Test(arguments: [("gzip", true), ("gzip, deflate, br", true), ("br;q=1.0, gzip;q=0.5", true), ("gzip;q=0", false),
                      ("identity", false), ("*", true), ("*;q=0", false), ("GZIP", true), ("deflate", false),
                      ("gzip;Q=0", false), ("\tgzip ; q=0.8", true), ("x-gzip", false), ("deflate, *;q=0.1", true),
                      ("gzip;level=1", true), ("gzip;q=high", true), (" , ;q=1", false)])
    func acceptEncodingIsReadWithItsWeights(header: String, gzip: Bool) {
        #expect(CompressionMiddleware<SpoolRequestContext>.acceptsGzip(header) == gzip, "\(header)")
    }
}
