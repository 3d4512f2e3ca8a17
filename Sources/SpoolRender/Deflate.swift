// Deflate: a raw DEFLATE (RFC 1951) encoder plus the zlib (RFC 1950) wrapper PNG needs.
//
// The LZ77 token stream is cut into blocks of `tokensPerBlock` tokens. For each block the
// encoder computes the exact bit cost of three encodings — dynamic Huffman (codes built from the
// block's own statistics), fixed Huffman, and stored — and writes the cheapest. Noisy rendered
// images mostly win with dynamic codes; incompressible data falls back to stored blocks, so the
// output is never much larger than the input.

enum Deflate {
    static let tokensPerBlock = 16384

    static let lengthBase: [Int] = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31,
                                    35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258]
    static let lengthExtra: [Int] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2,
                                     3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0]
    static let distanceBase: [Int] = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385,
                                      513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577]
    static let distanceExtra: [Int] = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7,
                                       8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13]
    /// Order in which code-length-code lengths are transmitted.
    static let codeLengthOrder: [Int] = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]

    /// Length 3...258 → index into lengthBase (symbol = 257 + index).
    static let lengthIndex: [UInt8] = (0...258).map { length in
        UInt8(max(0, (lengthBase.lastIndex { $0 <= length }) ?? 0))
    }
    /// Distance 1...32768 → distance code.
    static let distanceCode: [UInt8] = (0...32768).map { distance in
        UInt8(max(0, (distanceBase.lastIndex { $0 <= distance }) ?? 0))
    }

    static let fixedLiteralCode = HuffmanCode(lengths: (0..<288).map { symbol in
        symbol < 144 ? 8 : symbol < 256 ? 9 : symbol < 280 ? 7 : 8
    })
    static let fixedDistanceCode = HuffmanCode(lengths: [UInt8](repeating: 5, count: 30))

    /// A zlib stream: header, DEFLATE data, big-endian Adler-32 of `data`.
    static func zlibCompress(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x78, 0x9C]  // 32 KiB window, default level; (0x789C % 31 == 0)
        out.append(contentsOf: compress(data))
        let adler = Adler32.checksum(data)
        out.append(contentsOf: [UInt8(adler >> 24), UInt8(adler >> 16 & 0xFF), UInt8(adler >> 8 & 0xFF), UInt8(adler & 0xFF)])
        return out
    }

    /// Raw DEFLATE data for `data`.
    static func compress(_ data: [UInt8], matcher: LZ77Matcher = LZ77Matcher()) -> [UInt8] {
        let tokens = matcher.tokenize(data)
        var writer = BitWriter(reservingCapacity: data.count / 2 + 64)
        var tokenStart = 0
        var byteStart = 0
        repeat {
            let tokenEnd = min(tokens.count, tokenStart + tokensPerBlock)
            var byteEnd = byteStart
            for index in tokenStart..<tokenEnd { byteEnd += LZ77Matcher.bytesCovered(tokens[index]) }
            writeBlock(tokens: tokens[tokenStart..<tokenEnd], raw: data[byteStart..<byteEnd],
                       isFinal: tokenEnd == tokens.count, to: &writer)
            tokenStart = tokenEnd
            byteStart = byteEnd
        } while tokenStart < tokens.count
        writer.alignToByte()
        return writer.bytes
    }

    private static func writeBlock(tokens: ArraySlice<UInt32>, raw: ArraySlice<UInt8>, isFinal: Bool,
                                   to writer: inout BitWriter) {
        var literalFrequencies = [Int](repeating: 0, count: 286)
        var distanceFrequencies = [Int](repeating: 0, count: 30)
        var extraBits = 0
        for token in tokens {
            if LZ77Matcher.isMatch(token) {
                let lengthSlot = Int(lengthIndex[LZ77Matcher.matchLength(token)])
                let distanceSlot = Int(distanceCode[LZ77Matcher.matchDistance(token)])
                literalFrequencies[257 + lengthSlot] += 1
                distanceFrequencies[distanceSlot] += 1
                extraBits += lengthExtra[lengthSlot] + distanceExtra[distanceSlot]
            } else {
                literalFrequencies[Int(token)] += 1
            }
        }
        literalFrequencies[256] = 1  // end of block

        let literalCode = HuffmanCode(frequencies: literalFrequencies, maxLength: 15)
        let distanceCodeTree = HuffmanCode(frequencies: distanceFrequencies, maxLength: 15)
        let header = DynamicHeader(literal: literalCode, distance: distanceCodeTree)
        let dynamicBits = 3 + header.bitCount + literalCode.cost(literalFrequencies)
            + distanceCodeTree.cost(distanceFrequencies) + extraBits
        let fixedBits = 3 + fixedLiteralCode.cost(literalFrequencies + [0, 0])
            + fixedDistanceCode.cost(distanceFrequencies) + extraBits
        let storedChunks = max(1, (raw.count + 65534) / 65535)
        let storedBits = (raw.count + 5 * storedChunks) * 8 + 7

        if storedBits < min(dynamicBits, fixedBits) {
            writeStored(raw, isFinal: isFinal, to: &writer)
            return
        }
        writer.write(isFinal ? 1 : 0, bitCount: 1)
        if dynamicBits < fixedBits {
            writer.write(2, bitCount: 2)
            header.write(to: &writer)
            writeTokens(tokens, literal: literalCode, distance: distanceCodeTree, to: &writer)
        } else {
            writer.write(1, bitCount: 2)
            writeTokens(tokens, literal: fixedLiteralCode, distance: fixedDistanceCode, to: &writer)
        }
    }

    private static func writeTokens(_ tokens: ArraySlice<UInt32>, literal: HuffmanCode, distance: HuffmanCode,
                                    to writer: inout BitWriter) {
        for token in tokens {
            if LZ77Matcher.isMatch(token) {
                let length = LZ77Matcher.matchLength(token)
                let dist = LZ77Matcher.matchDistance(token)
                let lengthSlot = Int(lengthIndex[length])
                literal.write(257 + lengthSlot, to: &writer)
                if lengthExtra[lengthSlot] > 0 {
                    writer.write(UInt32(length - lengthBase[lengthSlot]), bitCount: lengthExtra[lengthSlot])
                }
                let distanceSlot = Int(distanceCode[dist])
                distance.write(distanceSlot, to: &writer)
                if distanceExtra[distanceSlot] > 0 {
                    writer.write(UInt32(dist - distanceBase[distanceSlot]), bitCount: distanceExtra[distanceSlot])
                }
            } else {
                literal.write(Int(token), to: &writer)
            }
        }
        literal.write(256, to: &writer)
    }

    private static func writeStored(_ raw: ArraySlice<UInt8>, isFinal: Bool, to writer: inout BitWriter) {
        var start = raw.startIndex
        repeat {
            let end = min(raw.endIndex, start + 65535)
            let last = end == raw.endIndex
            writer.write(isFinal && last ? 1 : 0, bitCount: 1)
            writer.write(0, bitCount: 2)
            writer.alignToByte()
            let length = UInt32(end - start)
            writer.write(length, bitCount: 16)
            writer.write(~length & 0xFFFF, bitCount: 16)
            writer.appendAligned(raw[start..<end])
            start = end
        } while start < raw.endIndex
    }
}
