// RandomSource: xoshiro256** seeded through SplitMix64. The renderer creates one per pixel from
// (render seed, pixel index), so every pixel's sample stream — and therefore the whole image —
// is a pure function of the seed, independent of traversal order. All sampling helpers use
// rejection or closed forms built from stdlib arithmetic only (no libm trig).

struct RandomSource: Sendable {
    private var s0: UInt64
    private var s1: UInt64
    private var s2: UInt64
    private var s3: UInt64

    /// SplitMix64 step: advances `state` and returns a well-mixed 64-bit value.
    @inline(__always)
    static func splitMix(_ state: inout UInt64) -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A generator for one independent stream (e.g. one pixel) of a seeded render.
    init(seed: UInt64, stream: UInt64) {
        var state = seed ^ (stream &* 0xD6E8_FEB8_6659_FD93)
        _ = RandomSource.splitMix(&state)
        state ^= stream
        s0 = RandomSource.splitMix(&state)
        s1 = RandomSource.splitMix(&state)
        s2 = RandomSource.splitMix(&state)
        s3 = RandomSource.splitMix(&state)
        if s0 | s1 | s2 | s3 == 0 { s0 = 1 }  // all-zero state is xoshiro's only fixed point
    }

    @inline(__always)
    mutating func next() -> UInt64 {
        let result = ((s1 &* 5) << 7 | (s1 &* 5) >> 57) &* 9
        let t = s1 << 17
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = s3 << 45 | s3 >> 19
        return result
    }

    /// Uniform in [0, 1).
    @inline(__always)
    mutating func nextDouble() -> Double {
        Double(next() >> 11) * 0x1p-53
    }

    /// Uniform point inside the unit disk (z = 0), by rejection.
    @inline(__always)
    mutating func inUnitDisk() -> (Double, Double) {
        while true {
            let a = 2 * nextDouble() - 1
            let b = 2 * nextDouble() - 1
            if a * a + b * b < 1 { return (a, b) }
        }
    }

    /// Uniform point inside the unit ball, by rejection.
    @inline(__always)
    mutating func inUnitSphere() -> Vector3 {
        while true {
            let p = Vector3(2 * nextDouble() - 1, 2 * nextDouble() - 1, 2 * nextDouble() - 1)
            if p.lengthSquared < 1 { return p }
        }
    }

    /// Uniform direction on the unit sphere.
    @inline(__always)
    mutating func unitVector() -> Vector3 {
        while true {
            let p = Vector3(2 * nextDouble() - 1, 2 * nextDouble() - 1, 2 * nextDouble() - 1)
            let l2 = p.lengthSquared
            if l2 > 1e-12 && l2 < 1 { return p * (1 / l2.squareRoot()) }
        }
    }
}
