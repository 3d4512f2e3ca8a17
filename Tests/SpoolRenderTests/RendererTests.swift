// RendererTests: determinism, progress reporting and basic output shape of the path tracer,
// plus end-to-end PNG structure checks (signature, IHDR, per-chunk CRC). Images are tiny and
// sample counts low because these run in debug builds.

import Testing
@testable import SpoolRender

@Suite struct RendererTests {
    static let small = RenderParameters(width: 16, height: 12, samples: 2, seed: 42)

    @Test func sameSeedGivesIdenticalBytes() {
        let a = Renderer.render(Self.small) { _, _ in }
        let b = Renderer.render(Self.small) { _, _ in }
        #expect(a.rgb == b.rgb)
        #expect(PNGEncoder.encode(a) == PNGEncoder.encode(b))
    }

    @Test func differentSeedGivesDifferentBytes() {
        var other = Self.small
        other.seed = 43
        let a = Renderer.render(Self.small) { _, _ in }
        let b = Renderer.render(other) { _, _ in }
        #expect(a.rgb != b.rgb)
    }

    /// A turntable: the camera circles the scene once every `framesPerTurn` frames.
    @Test func framesCircleTheSceneOncePerTurn() {
        var frame = Self.small
        let still = Renderer.render(frame) { _, _ in }
        frame.frame = 60
        let quarter = Renderer.render(frame) { _, _ in }
        frame.frame = RenderParameters.framesPerTurn
        let turned = Renderer.render(frame) { _, _ in }
        #expect(still.rgb != quarter.rgb)
        #expect(still.rgb == turned.rgb)
    }

    @Test func tinyImageRenders() {
        let image = Renderer.render(RenderParameters(width: 8, height: 6, samples: 1, seed: 1)) { _, _ in }
        #expect(image.width == 8)
        #expect(image.height == 6)
        #expect(image.rgb.count == 8 * 6 * 3)
        // The demo scene is neither black nor blown out.
        let mean = image.rgb.reduce(0) { $0 + Int($1) } / image.rgb.count
        #expect(mean > 30 && mean < 240)
    }

    @Test func singlePixelRenders() {
        let image = Renderer.render(RenderParameters(width: 1, height: 1, samples: 1, seed: 0)) { _, _ in }
        #expect(image.rgb.count == 3)
    }

    @Test func progressIsMonotonicAndReachesTotal() {
        var calls: [(Int, Int)] = []
        _ = Renderer.render(RenderParameters(width: 4, height: 250, samples: 1, seed: 9)) { calls.append(($0, $1)) }
        #expect(!calls.isEmpty)
        #expect(calls.count <= Renderer.maxProgressCalls)
        #expect(calls.allSatisfy { $0.1 == 250 })
        #expect(zip(calls, calls.dropFirst()).allSatisfy { $0.0 < $1.0 })
        #expect(calls.last.map { $0 == (250, 250) } == true)
    }

    @Test(arguments: [1, 7, 99, 100, 101, 199])
    func progressCallCountIsBounded(height: Int) {
        var calls: [Int] = []
        _ = Renderer.render(RenderParameters(width: 1, height: height, samples: 1, seed: 3)) { done, _ in calls.append(done) }
        #expect(calls.count <= Renderer.maxProgressCalls)
        #expect(calls.last == height)
    }

    @Test func outOfRangeParametersAreClamped() {
        let p = RenderParameters(width: 0, height: -3, samples: 0, seed: 5)
        #expect(!p.isValid)
        #expect(p.clamped == RenderParameters(width: 1, height: 1, samples: 1, seed: 5))
        #expect(RenderParameters(width: 5000, height: 4096, samples: 20_000, seed: 5).clamped
            == RenderParameters(width: 4096, height: 4096, samples: 10_000, seed: 5))
        let image = Renderer.render(p) { _, _ in }
        #expect(image.width == 1 && image.height == 1)
    }

    @Test func pngHasSignatureAndIHDR() throws {
        let image = Renderer.render(RenderParameters(width: 8, height: 6, samples: 1, seed: 1)) { _, _ in }
        let png = PNGEncoder.encode(image)
        #expect(Array(png.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        let chunks = try PNGChunk.parse(png)
        #expect(chunks.map(\.type) == ["IHDR", "IDAT", "IEND"])
        let ihdr = chunks[0].data
        #expect(ihdr.count == 13)
        #expect(PNGChunk.bigEndian(ihdr, at: 0) == 8)
        #expect(PNGChunk.bigEndian(ihdr, at: 4) == 6)
        #expect(Array(ihdr[8...]) == [8, 2, 0, 0, 0])
        // zlib header: deflate, 32 KiB window, valid FCHECK.
        let idat = chunks[1].data
        #expect(idat[0] & 0x0F == 8)
        #expect((Int(idat[0]) << 8 | Int(idat[1])) % 31 == 0)
        #expect(chunks[2].data.isEmpty)
    }

    @Test func pngChunkCRCsAreCorrect() throws {
        let image = Renderer.render(RenderParameters(width: 13, height: 5, samples: 1, seed: 77)) { _, _ in }
        let png = PNGEncoder.encode(image)
        let chunks = try PNGChunk.parse(png)
        #expect(chunks.count == 3)
        for chunk in chunks {
            #expect(chunk.storedCRC == referenceCRC32(Array(chunk.type.utf8) + chunk.data), "chunk \(chunk.type)")
        }
    }
}

/// A chunk parsed straight from PNG bytes, independent of the encoder's own helpers.
struct PNGChunk {
    struct Malformed: Error {}
    var type: String
    var data: [UInt8]
    var storedCRC: UInt32

    static func bigEndian(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        bytes[offset..<(offset + 4)].reduce(0) { $0 << 8 | UInt32($1) }
    }

    static func parse(_ png: [UInt8]) throws -> [PNGChunk] {
        var chunks: [PNGChunk] = []
        var offset = 8
        while offset < png.count {
            guard offset + 12 <= png.count else { throw Malformed() }
            let length = Int(bigEndian(png, at: offset))
            guard offset + 12 + length <= png.count else { throw Malformed() }
            let type = String(decoding: png[(offset + 4)..<(offset + 8)], as: UTF8.self)
            let data = Array(png[(offset + 8)..<(offset + 8 + length)])
            chunks.append(PNGChunk(type: type, data: data, storedCRC: bigEndian(png, at: offset + 8 + length)))
            offset += 12 + length
        }
        return chunks
    }
}

/// Bit-by-bit CRC-32 (reflected, polynomial 0xEDB88320), deliberately not table-driven.
func referenceCRC32(_ bytes: [UInt8]) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    for byte in bytes {
        crc ^= UInt32(byte)
        for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
    }
    return ~crc
}
