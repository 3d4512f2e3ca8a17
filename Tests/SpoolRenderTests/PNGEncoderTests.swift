// PNGEncoderTests: checksums against published vectors, canonical Huffman code properties,
// scanline filtering round-trips, and DEFLATE output checked by a small inflater written here
// (stored, fixed and dynamic blocks), so the zlib stream is verified without Foundation.

import Testing
@testable import SpoolRender

@Suite struct PNGEncoderTests {
    @Test func checksumsMatchKnownVectors() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(CRC32.checksum([UInt8]()) == 0)
        #expect(Adler32.checksum(Array("Wikipedia".utf8)) == 0x11E6_0398)
        #expect(Adler32.checksum([]) == 1)
        let long = [UInt8](repeating: 0xFF, count: 20_000)
        #expect(CRC32.checksum(long) == referenceCRC32(long))
    }

    @Test func huffmanCodesAreCompleteAndLengthLimited() {
        // Fibonacci-like frequencies force very deep unlimited trees.
        var frequencies = [Int](repeating: 0, count: 30)
        var a = 1, b = 1
        for i in frequencies.indices { frequencies[i] = a; (a, b) = (b, a + b) }
        for limit in [7, 15] {
            let code = HuffmanCode(frequencies: frequencies, maxLength: limit)
            #expect(code.lengths.allSatisfy { $0 >= 1 && Int($0) <= limit })
            let kraft = code.lengths.reduce(0.0) { $0 + 1.0 / Double(1 << Int($1)) }
            #expect(kraft == 1.0)
        }
        // A single used symbol still gets a complete two-symbol code.
        let single = HuffmanCode(frequencies: [0, 0, 5, 0], maxLength: 15)
        #expect(single.lengths.filter { $0 > 0 }.count == 2)
    }

    @Test func filteredScanlinesRoundTrip() {
        var generator = RandomSource(seed: 1, stream: 1)
        let width = 7, height = 5
        let rgb = (0..<(width * height * 3)).map { i in UInt8(truncatingIfNeeded: i % 3 == 0 ? generator.next() : UInt64(i * 3)) }
        let filtered = PNGEncoder.filteredScanlines(Image(width: width, height: height, rgb: rgb))
        #expect(filtered.count == height * (width * 3 + 1))
        #expect(TestInflater.unfilter(filtered, width: width, height: height) == rgb)
    }

    @Test(arguments: ["empty", "zeros", "random", "text", "mixed"])
    func deflateRoundTrips(kind: String) throws {
        var generator = RandomSource(seed: 3, stream: 0)
        let data: [UInt8]
        switch kind {
        case "empty": data = []
        case "zeros": data = [UInt8](repeating: 0, count: 70_000)
        case "random": data = (0..<70_000).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        case "text": data = Array(String(repeating: "spool render path tracer ", count: 900).utf8)
        default: data = (0..<40_000).map { i in i % 3000 < 1500 ? UInt8(truncatingIfNeeded: generator.next() % 6) : UInt8(i % 11) }
        }
        let stream = Deflate.zlibCompress(data)
        #expect(stream.count <= data.count + data.count / 100 + 32)
        let inflated = try TestInflater.zlibDecompress(stream)
        #expect(inflated == data)
    }

    @Test func pngImageDataDecodesToThePixels() throws {
        let image = Renderer.render(RenderParameters(width: 10, height: 7, samples: 1, seed: 5)) { _, _ in }
        let chunks = try PNGChunk.parse(PNGEncoder.encode(image))
        let scanlines = try TestInflater.zlibDecompress(chunks[1].data)
        #expect(TestInflater.unfilter(scanlines, width: 10, height: 7) == image.rgb)
    }
}
