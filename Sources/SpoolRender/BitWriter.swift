// BitWriter: DEFLATE's LSB-first bit packer. Huffman codes are stored pre-reversed by the
// caller (see HuffmanCode), so every write is simply "append `count` low bits of `value`".

struct BitWriter {
    private(set) var bytes: [UInt8] = []
    private var buffer: UInt64 = 0
    private var count = 0

    init(reservingCapacity capacity: Int = 0) {
        bytes.reserveCapacity(capacity)
    }

    /// Appends the low `bitCount` bits of `value` (bitCount ≤ 32).
    @inline(__always)
    mutating func write(_ value: UInt32, bitCount: Int) {
        buffer |= UInt64(value) << UInt64(count)
        count += bitCount
        while count >= 8 {
            bytes.append(UInt8(truncatingIfNeeded: buffer))
            buffer >>= 8
            count -= 8
        }
    }

    /// Pads with zero bits up to the next byte boundary.
    mutating func alignToByte() {
        if count > 0 {
            bytes.append(UInt8(truncatingIfNeeded: buffer))
            buffer = 0
            count = 0
        }
    }

    /// Appends whole bytes; only valid when byte-aligned.
    mutating func appendAligned(_ data: ArraySlice<UInt8>) {
        precondition(count == 0, "appendAligned requires byte alignment")
        bytes.append(contentsOf: data)
    }
}
