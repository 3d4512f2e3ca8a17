// DynamicHeader: the code-length section of a dynamic-Huffman DEFLATE block (RFC 1951 §3.2.7).
// Literal/length and distance code lengths are concatenated and run-length coded with symbols
// 16 (repeat previous 3–6×), 17 (zeros 3–10×) and 18 (zeros 11–138×); those symbols are in turn
// Huffman coded with a ≤7-bit code whose lengths are sent in the fixed permuted order.

struct DynamicHeader {
    private let literalCount: Int   // HLIT + 257
    private let distanceCount: Int  // HDIST + 1
    private let codeLengthCount: Int  // HCLEN + 4
    /// Run-length symbols with their extra-bit payloads.
    private var symbols: [(symbol: Int, extra: UInt32, extraBits: Int)] = []
    private let codeLengthCode: HuffmanCode
    /// Size of the header in bits (after the 3 block-type bits).
    let bitCount: Int

    init(literal: HuffmanCode, distance: HuffmanCode) {
        literalCount = max(257, (literal.lengths.lastIndex { $0 > 0 } ?? 0) + 1)
        distanceCount = max(1, (distance.lengths.lastIndex { $0 > 0 } ?? 0) + 1)
        let lengths = Array(literal.lengths[0..<literalCount]) + Array(distance.lengths[0..<distanceCount])

        var symbols: [(symbol: Int, extra: UInt32, extraBits: Int)] = []
        var i = 0
        while i < lengths.count {
            let length = lengths[i]
            var run = 1
            while i + run < lengths.count && lengths[i + run] == length { run += 1 }
            var remaining = run
            if length == 0 {
                while remaining >= 11 {
                    let count = min(remaining, 138)
                    symbols.append((18, UInt32(count - 11), 7))
                    remaining -= count
                }
                if remaining >= 3 {
                    symbols.append((17, UInt32(remaining - 3), 3))
                    remaining = 0
                }
            } else {
                symbols.append((Int(length), 0, 0))
                remaining -= 1
                while remaining >= 3 {
                    let count = min(remaining, 6)
                    symbols.append((16, UInt32(count - 3), 2))
                    remaining -= count
                }
            }
            while remaining > 0 {
                symbols.append((Int(length), 0, 0))
                remaining -= 1
            }
            i += run
        }
        self.symbols = symbols

        var frequencies = [Int](repeating: 0, count: 19)
        for entry in symbols { frequencies[entry.symbol] += 1 }
        codeLengthCode = HuffmanCode(frequencies: frequencies, maxLength: 7)
        var count = 19
        while count > 4 && codeLengthCode.lengths[Deflate.codeLengthOrder[count - 1]] == 0 { count -= 1 }
        codeLengthCount = count

        var bits = 5 + 5 + 4 + 3 * count
        for entry in symbols { bits += Int(codeLengthCode.lengths[entry.symbol]) + entry.extraBits }
        bitCount = bits
    }

    func write(to writer: inout BitWriter) {
        writer.write(UInt32(literalCount - 257), bitCount: 5)
        writer.write(UInt32(distanceCount - 1), bitCount: 5)
        writer.write(UInt32(codeLengthCount - 4), bitCount: 4)
        for index in 0..<codeLengthCount {
            writer.write(UInt32(codeLengthCode.lengths[Deflate.codeLengthOrder[index]]), bitCount: 3)
        }
        for entry in symbols {
            codeLengthCode.write(entry.symbol, to: &writer)
            if entry.extraBits > 0 { writer.write(entry.extra, bitCount: entry.extraBits) }
        }
    }
}
