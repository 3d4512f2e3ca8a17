// LZ77Matcher: greedy LZ77 over a 32 KiB window with hash chains (3-byte hash → most recent
// position, `previous` links older positions with the same hash). Chains are cut after
// `maxChain` candidates and matching stops early at `niceLength`, trading a little ratio for
// predictable speed. Output is a token stream consumed by Deflate:
//   literal: the byte value (< 256)
//   match:   0x8000_0000 | length << 16 | distance   (length 3...258, distance 1...32768)

struct LZ77Matcher {
    static let windowSize = 32768
    static let minMatch = 3
    static let maxMatch = 258
    static let hashBits = 15

    var maxChain = 48
    var niceLength = 128

    @inline(__always) static func isMatch(_ token: UInt32) -> Bool { token & 0x8000_0000 != 0 }
    @inline(__always) static func matchLength(_ token: UInt32) -> Int { Int((token >> 16) & 0x1FF) }
    @inline(__always) static func matchDistance(_ token: UInt32) -> Int { Int(token & 0xFFFF) }
    @inline(__always) static func bytesCovered(_ token: UInt32) -> Int { isMatch(token) ? matchLength(token) : 1 }

    func tokenize(_ data: [UInt8]) -> [UInt32] {
        let n = data.count
        var tokens: [UInt32] = []
        tokens.reserveCapacity(n / 2 + 16)
        var head = [Int32](repeating: -1, count: 1 << LZ77Matcher.hashBits)
        var previous = [Int32](repeating: -1, count: LZ77Matcher.windowSize)
        let mask = LZ77Matcher.windowSize - 1
        let maxChain = self.maxChain
        let niceLength = self.niceLength

        data.withUnsafeBufferPointer { d in
            head.withUnsafeMutableBufferPointer { head in
                previous.withUnsafeMutableBufferPointer { previous in
                    @inline(__always) func hash(_ i: Int) -> Int {
                        let v = UInt32(d[i]) | UInt32(d[i + 1]) << 8 | UInt32(d[i + 2]) << 16
                        return Int((v &* 0x9E37_79B1) >> UInt32(32 - LZ77Matcher.hashBits))
                    }
                    @inline(__always) func insert(_ i: Int, _ h: Int) {
                        previous[i & mask] = head[h]
                        head[h] = Int32(i)
                    }
                    var i = 0
                    while i < n {
                        if i + LZ77Matcher.minMatch <= n {
                            let h = hash(i)
                            let maxLength = min(LZ77Matcher.maxMatch, n - i)
                            let oldest = i - LZ77Matcher.windowSize
                            var candidate = Int(head[h])
                            var bestLength = LZ77Matcher.minMatch - 1
                            var bestDistance = 0
                            var chain = maxChain
                            while candidate >= 0 && candidate >= oldest && chain > 0 {
                                if d[candidate + bestLength] == d[i + bestLength] && d[candidate] == d[i] {
                                    var length = 1
                                    while length < maxLength && d[candidate + length] == d[i + length] { length += 1 }
                                    if length > bestLength {
                                        bestLength = length
                                        bestDistance = i - candidate
                                        if length >= niceLength || length == maxLength { break }
                                    }
                                }
                                candidate = Int(previous[candidate & mask])
                                chain -= 1
                            }
                            insert(i, h)
                            if bestLength >= LZ77Matcher.minMatch {
                                tokens.append(0x8000_0000 | UInt32(bestLength) << 16 | UInt32(bestDistance))
                                let end = i + bestLength
                                var k = i + 1
                                while k < end {
                                    if k + LZ77Matcher.minMatch <= n { insert(k, hash(k)) }
                                    k += 1
                                }
                                i = end
                                continue
                            }
                        }
                        tokens.append(UInt32(d[i]))
                        i += 1
                    }
                }
            }
        }
        return tokens
    }
}
