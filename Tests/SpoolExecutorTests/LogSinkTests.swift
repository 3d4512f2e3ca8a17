import Foundation
import Glibc
import Synchronization
import Testing
@testable import SpoolExecutor

/// A job's log: everything handed over before `close` is in the file once `close` returns,
/// whether the writes were still queued (closed on the queue) or done (closed at once); what
/// comes after is dropped; the cap holds.
@Suite struct LogSinkTests {
    let path = NSTemporaryDirectory() + "spool-log-\(UUID().uuidString).log"

    func contents() throws -> String { try String(contentsOfFile: path, encoding: .utf8) }

    @Test func everythingWrittenBeforeCloseIsInTheFileWhenCloseReturns() async throws {
        defer { unlink(path) }
        let sink = try LogSink(path: path, limit: 1 << 20)
        var expected = ""
        for line in 0..<2_000 {
            sink.write(Array("line \(line)\n".utf8))
            expected += "line \(line)\n"
        }
        await sink.close()   // most writes are still queued here: closed on the queue, after them
        #expect(try contents() == expected)
        sink.write(Array("late\n".utf8))
        await sink.close()
        #expect(try contents() == expected, "a write after close is dropped, a second close is harmless")
    }

    @Test func aQuietSinkClosesAtOnceAndLaterWritesAreDropped() async throws {
        defer { unlink(path) }
        let sink = try LogSink(path: path, limit: 1 << 20)
        sink.note("started")
        await sink.close()
        #expect(try contents() == "[spool] started\n")
        let quiet = try LogSink(path: path, limit: 1 << 20)
        await quiet.close()
        quiet.write(Array("late\n".utf8))
        await quiet.close()
        #expect(try contents() == "[spool] started\n")
    }

    /// Output the file cannot take (a full disk) is noted in the log once it can take a line
    /// again — or when it closes — and `close` reports it (found by attacking the build: a
    /// job's lines while the disk was full vanished without a word).
    @Test func outputTheFileCouldNotTakeIsNotedAndReported() async throws {
        defer { unlink(path) }
        let full = Mutex(true)
        let sink = try LogSink(path: path, limit: 1 << 20) { descriptor, bytes, count in
            guard !full.withLock({ $0 }) else { errno = ENOSPC; return -1 }
            return Glibc.write(descriptor, bytes, count)
        }
        sink.write(Array("lost 1\n".utf8))
        sink.write(Array("lost 2\n".utf8))
        await sink.drain()
        full.withLock { $0 = false }
        sink.write(Array("kept\n".utf8))
        let loss = await sink.close()
        #expect(try contents() == "\n[spool] 14 bytes of the job's output could not be written here (No space left on device)\nkept\n")
        #expect(loss == LogSink.Loss(bytes: 14, error: "No space left on device"))

        let stillFull = try LogSink(path: path + ".2", limit: 1 << 20) { _, _, _ in errno = ENOSPC; return -1 }
        defer { unlink(path + ".2") }
        stillFull.write(Array("gone\n".utf8))
        #expect(await stillFull.close()?.bytes == 5)
    }

    @Test func theCapHolds() async throws {
        defer { unlink(path) }
        let sink = try LogSink(path: path, limit: 100)
        for _ in 0..<10 { sink.write(Array(repeating: UInt8(ascii: "x"), count: 30)) }
        await sink.close()
        let text = try contents()
        #expect(text.hasPrefix(String(repeating: "x", count: 100)))
        #expect(text.contains("log truncated"))
    }

    /// Each run of a job has the cap to itself: a later attempt's output is written after an
    /// earlier one filled the log (found by attacking the build: the final attempt's error, the
    /// one that decided the job, was dropped because attempt 1 had used the cap up).
    @Test func aLaterRunHasTheCapToItself() async throws {
        defer { unlink(path) }
        let first = try LogSink(path: path, limit: 100)
        first.write(Array(repeating: UInt8(ascii: "x"), count: 150))
        await first.close()
        let second = try LogSink(path: path, limit: 100)
        second.write(Array("the error that decided it\n".utf8))
        await second.close()
        let text = try contents()
        #expect(text.hasSuffix("the error that decided it\n"), "\(text)")
    }

    /// Output that reaches the cap exactly, and more after it: the notice still says so, once
    /// (found by attacking the build: a log of exactly the cap had none, though lines went on).
    @Test func outputPastACapReachedExactlyIsStillNoted() async throws {
        defer { unlink(path) }
        let sink = try LogSink(path: path, limit: 100)
        sink.write(Array(repeating: UInt8(ascii: "x"), count: 100))
        sink.write(Array("LATE-1\n".utf8))
        sink.write(Array("LATE-2\n".utf8))
        await sink.close()
        let text = try contents()
        #expect(text.hasPrefix(String(repeating: "x", count: 100)) && !text.contains("LATE-"), "\(text)")
        #expect(text.components(separatedBy: "log truncated").count == 2, "one notice: \(text)")
        let quiet = try LogSink(path: path, limit: 100)
        await quiet.close()
        #expect(try contents() == text, "no output, no notice")
    }
}
