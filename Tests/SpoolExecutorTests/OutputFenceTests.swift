import Testing
@testable import SpoolExecutor

/// Finding the server's marker in a worker's output read in chunks: the bytes before it are
/// handed on, whatever the chunk boundaries, and the marker itself never is.
@Suite struct OutputFenceTests {
    let marker = Array("\u{0}spool-fence-0123456789abcdef\u{0}".utf8)

    /// Feeds `stream` (the job's text, the marker, the text after) in chunks of `size` bytes.
    func feed(_ stream: [UInt8], chunk size: Int) -> (before: [UInt8], after: [UInt8]?) {
        var fence = OutputFence(marker: marker)
        var before: [UInt8] = []
        var after: [UInt8]?
        var offset = 0
        while offset < stream.count {
            let chunk = Array(stream[offset..<min(stream.count, offset + size)])
            offset += size
            if after != nil {
                after! += chunk
                continue
            }
            let scan = fence.scan(chunk)
            before += scan.before
            after = scan.after
        }
        return (before, after)
    }

    @Test(arguments: [1, 2, 3, 5, 17, 33, 34, 1000])
    func theBytesBeforeTheMarkerAreHandedOnWhateverTheChunks(size: Int) {
        // The job's text starts like the marker twice, so a careless match would cut it.
        let job = Array("rendered \u{0}spool-fen frame 7\n\u{0}spool-fence-01 done\n".utf8)
        let later = Array("after\n".utf8)
        let (before, after) = feed(job + marker + later, chunk: size)
        #expect(before == job)
        #expect(after == later)
    }

    @Test func aPossibleStartOfTheMarkerIsKeptBackUntilTheNextChunkSays() {
        var fence = OutputFence(marker: marker)
        let scan = fence.scan(Array("line\n\u{0}spool".utf8))
        #expect(scan.before == Array("line\n".utf8))
        #expect(scan.after == nil)
        let next = fence.scan(Array("ed\n".utf8))
        #expect(next.before == Array("\u{0}spooled\n".utf8), "what was kept back was the job's after all")
        #expect(next.after == nil)
    }

    @Test func aMarkerAtTheVeryStartLeavesNothingBefore() {
        var fence = OutputFence(marker: marker)
        let scan = fence.scan(marker)
        #expect(scan.before.isEmpty)
        #expect(scan.after == [])
    }
}
