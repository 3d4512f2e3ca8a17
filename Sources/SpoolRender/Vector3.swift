// Vector3: a plain three-component Double vector used for points, directions and linear RGB
// colours alike. Everything is a value type with trivially inlinable operators so the path
// tracer's inner loop never allocates; there is deliberately no SIMD or Foundation dependency.
//
// The C library import below is for linking only: on Linux, `squareRoot()` and `rounded(.down)`
// can lower to libm calls (`sqrt`, `floor`), and importing the platform module makes the compiler
// auto-link libm for this module so clients that don't import it still link.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#elseif canImport(ucrt)
import ucrt
#endif

struct Vector3: Sendable, Equatable {
    var x: Double
    var y: Double
    var z: Double

    @inline(__always)
    init(_ x: Double, _ y: Double, _ z: Double) {
        self.x = x
        self.y = y
        self.z = z
    }

    static let zero = Vector3(0, 0, 0)
    static let one = Vector3(1, 1, 1)

    @inline(__always) static func + (a: Vector3, b: Vector3) -> Vector3 { Vector3(a.x + b.x, a.y + b.y, a.z + b.z) }
    @inline(__always) static func - (a: Vector3, b: Vector3) -> Vector3 { Vector3(a.x - b.x, a.y - b.y, a.z - b.z) }
    @inline(__always) static prefix func - (a: Vector3) -> Vector3 { Vector3(-a.x, -a.y, -a.z) }
    /// Component-wise (Hadamard) product, used for colour attenuation.
    @inline(__always) static func * (a: Vector3, b: Vector3) -> Vector3 { Vector3(a.x * b.x, a.y * b.y, a.z * b.z) }
    @inline(__always) static func * (a: Vector3, s: Double) -> Vector3 { Vector3(a.x * s, a.y * s, a.z * s) }
    @inline(__always) static func * (s: Double, a: Vector3) -> Vector3 { Vector3(a.x * s, a.y * s, a.z * s) }
    @inline(__always) static func / (a: Vector3, s: Double) -> Vector3 { a * (1 / s) }
    @inline(__always) static func += (a: inout Vector3, b: Vector3) { a = a + b }
    @inline(__always) static func *= (a: inout Vector3, b: Vector3) { a = a * b }
    @inline(__always) static func *= (a: inout Vector3, s: Double) { a = a * s }

    @inline(__always) func dot(_ b: Vector3) -> Double { x * b.x + y * b.y + z * b.z }

    @inline(__always) func cross(_ b: Vector3) -> Vector3 {
        Vector3(y * b.z - z * b.y, z * b.x - x * b.z, x * b.y - y * b.x)
    }

    @inline(__always) var lengthSquared: Double { x * x + y * y + z * z }
    @inline(__always) var length: Double { lengthSquared.squareRoot() }
    @inline(__always) var normalized: Vector3 { self * (1 / length) }
    @inline(__always) var maxComponent: Double { max(x, max(y, z)) }
    @inline(__always) var isFinite: Bool { x.isFinite && y.isFinite && z.isFinite }

    /// Mirror reflection of `self` about the unit normal `n`.
    @inline(__always) func reflected(about n: Vector3) -> Vector3 { self - n * (2 * dot(n)) }

    /// Linear interpolation: `a` at t = 0, `b` at t = 1.
    @inline(__always) static func lerp(_ a: Vector3, _ b: Vector3, _ t: Double) -> Vector3 {
        a * (1 - t) + b * t
    }
}

/// A ray `origin + t * direction`; `direction` is always kept unit length.
struct Ray: Sendable {
    var origin: Vector3
    var direction: Vector3

    @inline(__always) func at(_ t: Double) -> Vector3 { origin + direction * t }
}
