// HuffmanCode: canonical, length-limited prefix codes for DEFLATE.
//
// Lengths come from a classic two-queue Huffman construction over the symbol frequencies; if the
// longest code exceeds the limit (15 for literals/distances, 7 for the code-length alphabet) the
// frequencies are halved (keeping every used symbol ≥ 1) and the tree rebuilt, which converges
// quickly and always yields a complete code. At least two symbols are always given a code, since
// zlib's inflate rejects incomplete code-length trees. Codes are stored bit-reversed, ready for
// the LSB-first BitWriter.

struct HuffmanCode {
    /// Code length per symbol; 0 means the symbol has no code.
    private(set) var lengths: [UInt8]
    /// Bit-reversed canonical code per symbol.
    private(set) var codes: [UInt32]

    /// Canonical code for the given lengths (RFC 1951 §3.2.2).
    init(lengths: [UInt8]) {
        self.lengths = lengths
        let maxBits = Int(lengths.max() ?? 0)
        var lengthCounts = [Int](repeating: 0, count: maxBits + 1)
        for length in lengths where length > 0 { lengthCounts[Int(length)] += 1 }
        var nextCode = [UInt32](repeating: 0, count: maxBits + 2)
        var code: UInt32 = 0
        if maxBits >= 1 {
            for bits in 1...maxBits {
                code = (code + UInt32(lengthCounts[bits - 1])) << 1
                nextCode[bits] = code
            }
        }
        codes = [UInt32](repeating: 0, count: lengths.count)
        for symbol in lengths.indices where lengths[symbol] > 0 {
            let length = Int(lengths[symbol])
            codes[symbol] = HuffmanCode.reverse(nextCode[length], bitCount: length)
            nextCode[length] += 1
        }
    }

    /// An optimal-ish code for `frequencies`, with no code longer than `maxLength` bits.
    init(frequencies: [Int], maxLength: Int) {
        self.init(lengths: HuffmanCode.limitedLengths(frequencies, maxLength: maxLength))
    }

    /// Total bits needed to code symbols with these frequencies (extra bits not included).
    func cost(_ frequencies: [Int]) -> Int {
        var total = 0
        for symbol in frequencies.indices { total += frequencies[symbol] * Int(lengths[symbol]) }
        return total
    }

    @inline(__always)
    func write(_ symbol: Int, to writer: inout BitWriter) {
        writer.write(codes[symbol], bitCount: Int(lengths[symbol]))
    }

    static func reverse(_ code: UInt32, bitCount: Int) -> UInt32 {
        var value = code
        var result: UInt32 = 0
        for _ in 0..<bitCount {
            result = result << 1 | (value & 1)
            value >>= 1
        }
        return result
    }

    static func limitedLengths(_ frequencies: [Int], maxLength: Int) -> [UInt8] {
        precondition(frequencies.count >= 2, "need an alphabet of at least two symbols")
        var weights = frequencies
        let used = weights.indices.filter { weights[$0] > 0 }
        if used.isEmpty {
            weights[0] = 1
            weights[1] = 1
        } else if used.count == 1 {
            weights[used[0] == 0 ? 1 : 0] = 1
        }
        while true {
            let lengths = unlimitedLengths(weights)
            if Int(lengths.max() ?? 0) <= maxLength { return lengths }
            for i in weights.indices where weights[i] > 0 { weights[i] = max(1, weights[i] >> 1) }
        }
    }

    /// Plain Huffman code lengths via the two-queue method (leaves sorted by weight).
    private static func unlimitedLengths(_ weights: [Int]) -> [UInt8] {
        let leaves = weights.indices.filter { weights[$0] > 0 }
            .sorted { (weights[$0], $0) < (weights[$1], $1) }
        let leafCount = leaves.count
        let nodeCount = 2 * leafCount - 1
        var weight = leaves.map { weights[$0] }
        weight.reserveCapacity(nodeCount)
        var parent = [Int](repeating: -1, count: nodeCount)
        var nextLeaf = 0
        var nextInternal = leafCount
        func takeLightest() -> Int {
            if nextLeaf < leafCount && (nextInternal >= weight.count || weight[nextLeaf] <= weight[nextInternal]) {
                nextLeaf += 1
                return nextLeaf - 1
            }
            nextInternal += 1
            return nextInternal - 1
        }
        while weight.count < nodeCount {
            let a = takeLightest()
            let b = takeLightest()
            parent[a] = weight.count
            parent[b] = weight.count
            weight.append(weight[a] + weight[b])
        }
        // Parents always have larger indices, so one backward pass assigns every depth.
        var depth = [Int](repeating: 0, count: nodeCount)
        for node in stride(from: nodeCount - 2, through: 0, by: -1) {
            depth[node] = depth[parent[node]] + 1
        }
        var lengths = [UInt8](repeating: 0, count: weights.count)
        for (index, symbol) in leaves.enumerated() { lengths[symbol] = UInt8(min(depth[index], 255)) }
        return lengths
    }
}
