// TestInflater: a deliberately simple, independent INFLATE (RFC 1951) + zlib (RFC 1950) decoder
// and PNG un-filter, used only to verify the encoder's output. Huffman decoding is bit-by-bit
// against canonical code tables (slow but obviously correct for small test inputs).

@testable import SpoolRender

enum TestInflater {
    struct Corrupt: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    static func zlibDecompress(_ stream: [UInt8]) throws -> [UInt8] {
        guard stream.count >= 6, stream[0] & 0x0F == 8, (Int(stream[0]) << 8 | Int(stream[1])) % 31 == 0 else {
            throw Corrupt("bad zlib header")
        }
        var reader = BitReader(bytes: stream, position: 2)
        let output = try inflate(&reader)
        let trailer = reader.alignedOffset
        guard trailer + 4 == stream.count else { throw Corrupt("trailing or missing bytes") }
        let adler = stream[trailer..<(trailer + 4)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        guard adler == Adler32.checksum(output) else { throw Corrupt("Adler-32 mismatch") }
        return output
    }

    struct BitReader {
        var bytes: [UInt8]
        var position: Int
        var bit = 0

        mutating func read(_ count: Int) throws -> Int {
            var value = 0
            for i in 0..<count {
                guard position < bytes.count else { throw Corrupt("unexpected end of data") }
                value |= Int((bytes[position] >> UInt8(bit)) & 1) << i
                bit += 1
                if bit == 8 { bit = 0; position += 1 }
            }
            return value
        }

        var alignedOffset: Int { bit == 0 ? position : position + 1 }
        mutating func align() { if bit != 0 { bit = 0; position += 1 } }
    }

    /// Canonical decoding table: code length → (first code, symbols in code order).
    struct Decoder {
        var symbolsByLength: [[Int]]
        init(lengths: [Int]) {
            symbolsByLength = Array(repeating: [], count: 16)
            for (symbol, length) in lengths.enumerated() where length > 0 { symbolsByLength[length].append(symbol) }
        }
        func decode(_ reader: inout BitReader) throws -> Int {
            var code = 0
            var first = 0
            for length in 1...15 {
                code |= try reader.read(1)
                let count = symbolsByLength[length].count
                if code - first < count { return symbolsByLength[length][code - first] }
                first = (first + count) << 1
                code <<= 1
            }
            throw Corrupt("invalid Huffman code")
        }
    }

    static func inflate(_ reader: inout BitReader) throws -> [UInt8] {
        var out: [UInt8] = []
        var final = 0
        repeat {
            final = try reader.read(1)
            switch try reader.read(2) {
            case 0:
                reader.align()
                let length = try reader.read(16)
                let complement = try reader.read(16)
                guard length ^ complement == 0xFFFF else { throw Corrupt("stored length check") }
                for _ in 0..<length { out.append(UInt8(try reader.read(8))) }
            case 1:
                let literal = Decoder(lengths: (0..<288).map { $0 < 144 ? 8 : $0 < 256 ? 9 : $0 < 280 ? 7 : 8 })
                try inflateBlock(&reader, literal, Decoder(lengths: Array(repeating: 5, count: 30)), into: &out)
            case 2:
                let literalCount = try reader.read(5) + 257
                let distanceCount = try reader.read(5) + 1
                let codeLengthCount = try reader.read(4) + 4
                var codeLengthLengths = [Int](repeating: 0, count: 19)
                for i in 0..<codeLengthCount { codeLengthLengths[Deflate.codeLengthOrder[i]] = try reader.read(3) }
                let codeLengthDecoder = Decoder(lengths: codeLengthLengths)
                var lengths: [Int] = []
                while lengths.count < literalCount + distanceCount {
                    let symbol = try codeLengthDecoder.decode(&reader)
                    switch symbol {
                    case 0...15: lengths.append(symbol)
                    case 16:
                        guard let last = lengths.last else { throw Corrupt("repeat with no previous length") }
                        lengths += Array(repeating: last, count: 3 + (try reader.read(2)))
                    case 17: lengths += Array(repeating: 0, count: 3 + (try reader.read(3)))
                    default: lengths += Array(repeating: 0, count: 11 + (try reader.read(7)))
                    }
                }
                guard lengths.count == literalCount + distanceCount else { throw Corrupt("code lengths overrun") }
                try inflateBlock(&reader, Decoder(lengths: Array(lengths[0..<literalCount])),
                                 Decoder(lengths: Array(lengths[literalCount...])), into: &out)
            default:
                throw Corrupt("reserved block type")
            }
        } while final == 0
        return out
    }

    static func inflateBlock(_ reader: inout BitReader, _ literal: Decoder, _ distance: Decoder,
                             into out: inout [UInt8]) throws {
        while true {
            let symbol = try literal.decode(&reader)
            if symbol < 256 {
                out.append(UInt8(symbol))
            } else if symbol == 256 {
                return
            } else {
                let slot = symbol - 257
                guard slot < 29 else { throw Corrupt("bad length symbol") }
                let length = Deflate.lengthBase[slot] + (try reader.read(Deflate.lengthExtra[slot]))
                let distanceSlot = try distance.decode(&reader)
                guard distanceSlot < 30 else { throw Corrupt("bad distance symbol") }
                let dist = Deflate.distanceBase[distanceSlot] + (try reader.read(Deflate.distanceExtra[distanceSlot]))
                guard dist <= out.count else { throw Corrupt("distance too far back") }
                for _ in 0..<length { out.append(out[out.count - dist]) }
            }
        }
    }

    /// Reverses PNG filtering (types 0–4) for 8-bit RGB scanlines.
    static func unfilter(_ data: [UInt8], width: Int, height: Int) -> [UInt8] {
        let stride = width * 3
        var out: [UInt8] = []
        var prior = [UInt8](repeating: 0, count: stride)
        for y in 0..<height {
            let filter = data[y * (stride + 1)]
            var row = Array(data[(y * (stride + 1) + 1)..<((y + 1) * (stride + 1))])
            for i in 0..<stride {
                let a = i >= 3 ? Int(row[i - 3]) : 0
                let b = Int(prior[i])
                let c = i >= 3 ? Int(prior[i - 3]) : 0
                let predictor: Int
                switch filter {
                case 0: predictor = 0
                case 1: predictor = a
                case 2: predictor = b
                case 3: predictor = (a + b) / 2
                default:
                    let p = a + b - c
                    let (pa, pb, pc) = (abs(p - a), abs(p - b), abs(p - c))
                    predictor = pa <= pb && pa <= pc ? a : (pb <= pc ? b : c)
                }
                row[i] = row[i] &+ UInt8(predictor)
            }
            out += row
            prior = row
        }
        return out
    }
}
