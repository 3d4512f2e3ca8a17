// Checksum: CRC-32 (ISO-HDLC, the one PNG chunks use) and Adler-32 (the zlib trailer).
// The CRC uses a lazily built 256-entry table; Adler-32 defers the modulo to every 5552 bytes,
// the largest run for which the 32-bit sums cannot overflow.

enum CRC32 {
    static let table: [UInt32] = (0..<256).map { (n: Int) -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 {
            c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1
        }
        return c
    }

    /// Continues a CRC: pass the previous result as `crc` (0 to start).
    static func update(_ crc: UInt32, _ bytes: some Sequence<UInt8>) -> UInt32 {
        var c = ~crc
        table.withUnsafeBufferPointer { t in
            for byte in bytes {
                c = t[Int((c ^ UInt32(byte)) & 0xFF)] ^ (c >> 8)
            }
        }
        return ~c
    }

    static func checksum(_ bytes: some Sequence<UInt8>) -> UInt32 { update(0, bytes) }
}

enum Adler32 {
    static func checksum(_ bytes: [UInt8]) -> UInt32 {
        let modulus: UInt32 = 65521
        var a: UInt32 = 1
        var b: UInt32 = 0
        bytes.withUnsafeBufferPointer { buffer in
            var index = 0
            while index < buffer.count {
                let end = min(buffer.count, index + 5552)
                while index < end {
                    a &+= UInt32(buffer[index])
                    b &+= a
                    index += 1
                }
                a %= modulus
                b %= modulus
            }
        }
        return b << 16 | a
    }
}
