import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
@testable import SpoolHTTP
import SpoolTestSupport
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
        #expect(answer([.ifNoneMatch: "\"abc\""]) == .notModified())
        #expect(answer([.ifNoneMatch: "W/\"abc\""]) == .notModified(), "weak comparison")
        #expect(answer([.ifNoneMatch: "\"x\", \"abc\""]) == .notModified())
        #expect(answer([.ifNoneMatch: "*"]) == .notModified())
        #expect(answer([.ifNoneMatch: "\"other\""]) == .whole)
        // The gzip representation's tag, as the compression names it, holds too (and its 304 names it).
        #expect(answer([.ifNoneMatch: "\"abc-gzip\""]) == .notModified(gzip: true))
        #expect(answer([.ifNoneMatch: "\"other-gzip\""]) == .whole)
        #expect(answer([.ifModifiedSince: date]) == .notModified())
        #expect(answer([.ifModifiedSince: HTTPDate.format(1_700_000_001)]) == .notModified())
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

/// A job's file is opened once, as the regular file it is, and served from that descriptor: a
/// FIFO a job put in its place is refused at once instead of blocking the open (found by
/// attacking the build: a job swapping its log for a FIFO hung every file route of the server).
@Suite struct OpenedFileTests {
    @Test func onlyARegularFileOpensAndAFIFONeverBlocks() throws {
        let scratch = try ScratchDirectory("spool-opened")
        let file = scratch.path + "/log.txt", fifo = scratch.path + "/fifo", elsewhere = scratch.path + "/elsewhere"
        try Data("0123456789".utf8).write(to: URL(fileURLWithPath: file))
        try Data("secret".utf8).write(to: URL(fileURLWithPath: elsewhere))
        #expect(mkfifo(fifo, 0o600) == 0)
        #expect(OpenedFile.open(fifo) == nil, "a FIFO is refused, not waited on")
        #expect(OpenedFile.open(scratch.path) == nil, "a directory is refused")
        #expect(symlink(file, scratch.path + "/link") == 0)
        #expect(OpenedFile.open(scratch.path + "/link") == nil, "a link at the end is not followed")
        #expect(link(elsewhere, scratch.path + "/hard") == 0)
        #expect(OpenedFile.open(scratch.path + "/hard", singleLink: true) == nil, "a hard link to a file elsewhere is refused for a log")
        let opened = try #require(OpenedFile.open(file, singleLink: true))
        #expect(opened.size == 10 && opened.download.size == 10)
    }

    @Test func aRangeIsServedFromTheOpenedFileEvenIfItsPathChangesAfter() async throws {
        let scratch = try ScratchDirectory("spool-opened")
        let file = scratch.path + "/out.bin"
        try Data((0..<300_000).map { UInt8($0 % 251) }).write(to: URL(fileURLWithPath: file))
        let opened = try #require(OpenedFile.open(file))
        try FileManager.default.removeItem(atPath: file)
        #expect(mkfifo(file, 0o600) == 0)   // swapped for a FIFO after the open: the descriptor is what is read
        let collector = BodyCollector()
        try await opened.body(1000...260_999, chunk: 65_536).write(collector)
        let bytes = collector.bytes
        #expect(bytes.count == 260_000 && bytes.first == UInt8(1000 % 251) && bytes.last == UInt8(260_999 % 251))
    }
}

/// Collects what a response body writes.
final class BodyCollector: ResponseBodyWriter, @unchecked Sendable {
    private(set) var bytes: [UInt8] = []
    func write(_ buffer: ByteBuffer) async throws { bytes += Array(buffer.readableBytesView) }
    func finish(_ trailingHeaders: HTTPFields?) async throws {}
}
