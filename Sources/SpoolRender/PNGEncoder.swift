// PNGEncoder: writes an 8-bit truecolour (RGB) PNG: signature, IHDR, one IDAT, IEND, each chunk
// with its CRC-32. Every scanline gets the adaptive filter (None/Sub/Up/Average/Paeth) whose
// output has the smallest sum of absolute signed bytes — the heuristic libpng recommends — and
// the filtered stream is compressed by Deflate inside a zlib wrapper.

public enum PNGEncoder {
    /// The 8-byte PNG file signature.
    public static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    /// A valid 8-bit RGB PNG for `image`. If `rgb` is shorter than width*height*3 (it is a public
    /// `var`), missing bytes are encoded as black; extra bytes are ignored.
    public static func encode(_ image: Image) -> [UInt8] {
        var ihdr: [UInt8] = []
        appendBigEndian(UInt32(image.width), to: &ihdr)
        appendBigEndian(UInt32(image.height), to: &ihdr)
        ihdr += [8, 2, 0, 0, 0]  // bit depth 8, colour type 2 (RGB), deflate, adaptive filters, no interlace

        let compressed = Deflate.zlibCompress(filteredScanlines(image))
        var png = signature
        png.reserveCapacity(compressed.count + 64)
        appendChunk("IHDR", ihdr, to: &png)
        appendChunk("IDAT", compressed, to: &png)
        appendChunk("IEND", [], to: &png)
        return png
    }

    static func appendBigEndian(_ value: UInt32, to bytes: inout [UInt8]) {
        bytes += [UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)]
    }

    static func appendChunk(_ type: String, _ data: [UInt8], to png: inout [UInt8]) {
        let typeBytes = Array(type.utf8)
        precondition(typeBytes.count == 4, "chunk types are four ASCII letters")
        appendBigEndian(UInt32(data.count), to: &png)
        png += typeBytes
        png += data
        appendBigEndian(CRC32.update(CRC32.checksum(typeBytes), data), to: &png)
    }

    /// The image's scanlines, each prefixed by its filter-type byte and filtered accordingly.
    static func filteredScanlines(_ image: Image) -> [UInt8] {
        let bytesPerPixel = 3
        let stride = image.width * bytesPerPixel
        var pixels = image.rgb
        let expected = stride * image.height
        if pixels.count != expected {
            pixels = Array(pixels.prefix(expected)) + [UInt8](repeating: 0, count: max(0, expected - pixels.count))
        }
        var out = [UInt8](repeating: 0, count: (stride + 1) * image.height)
        // Scratch rows, one per filter type 0...4.
        var candidates = [[UInt8]](repeating: [UInt8](repeating: 0, count: stride), count: 5)
        let zeroRow = [UInt8](repeating: 0, count: stride)

        pixels.withUnsafeBufferPointer { px in
            zeroRow.withUnsafeBufferPointer { zero in
                for y in 0..<image.height {
                    let row = UnsafeBufferPointer(rebasing: px[(y * stride)..<((y + 1) * stride)])
                    let prior = y == 0 ? zero : UnsafeBufferPointer(rebasing: px[((y - 1) * stride)..<(y * stride)])
                    var bestFilter = 0
                    var bestScore = Int.max
                    for filter in 0..<5 {
                        let score = candidates[filter].withUnsafeMutableBufferPointer { dst in
                            applyFilter(filter, row: row, prior: prior, bytesPerPixel: bytesPerPixel, into: dst)
                        }
                        if score < bestScore {
                            bestScore = score
                            bestFilter = filter
                        }
                    }
                    let base = y * (stride + 1)
                    out[base] = UInt8(bestFilter)
                    out.replaceSubrange((base + 1)..<(base + 1 + stride), with: candidates[bestFilter])
                }
            }
        }
        return out
    }

    /// Filters one row into `dst` and returns its score: Σ |byte as Int8|.
    @inline(__always)
    static func applyFilter(_ filter: Int, row: UnsafeBufferPointer<UInt8>, prior: UnsafeBufferPointer<UInt8>,
                            bytesPerPixel: Int, into dst: UnsafeMutableBufferPointer<UInt8>) -> Int {
        var score = 0
        for i in 0..<row.count {
            let x = row[i]
            let a = i >= bytesPerPixel ? row[i - bytesPerPixel] : 0
            let b = prior[i]
            let c = i >= bytesPerPixel ? prior[i - bytesPerPixel] : 0
            let predictor: UInt8
            switch filter {
            case 0: predictor = 0
            case 1: predictor = a
            case 2: predictor = b
            case 3: predictor = UInt8((Int(a) + Int(b)) >> 1)
            default: predictor = paeth(a, b, c)
            }
            let value = x &- predictor
            dst[i] = value
            let signed = Int(Int8(bitPattern: value))
            score += signed < 0 ? -signed : signed
        }
        return score
    }

    @inline(__always)
    static func paeth(_ a: UInt8, _ b: UInt8, _ c: UInt8) -> UInt8 {
        let p = Int(a) + Int(b) - Int(c)
        let pa = abs(p - Int(a))
        let pb = abs(p - Int(b))
        let pc = abs(p - Int(c))
        if pa <= pb && pa <= pc { return a }
        return pb <= pc ? b : c
    }
}
