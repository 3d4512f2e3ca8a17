// Renderer: the public entry point. Renders the demo scene row by row on the calling thread.
// Each pixel owns a RandomSource derived from (seed, pixel index), so the output is a pure
// function of the parameters. Samples are averaged in linear space, then converted to bytes with
// a gamma-2 curve (square root) and clamping. Progress is reported once per band of rows, with
// at most ~100 calls per render and the last call always (height, height).

public enum Renderer {
    /// The most progress callbacks a single render makes.
    public static let maxProgressCalls = 100

    /// Renders the demo scene. Out-of-range parameters are clamped (see `RenderParameters.clamped`).
    /// `progress` is called with (rowsDone, totalRows) after each band of rows, from the calling thread.
    public static func render(_ parameters: RenderParameters, progress: (Int, Int) -> Void) -> Image {
        let p = parameters.clamped
        let width = p.width
        let height = p.height
        let samples = p.samples
        let camera = Camera.demo(aspectRatio: Double(width) / Double(height), frame: p.frame)
        let tracer = PathTracer(scene: .demo())
        let band = max(1, (height + maxProgressCalls - 1) / maxProgressCalls)
        let inverseWidth = 1 / Double(width)
        let inverseHeight = 1 / Double(height)
        let inverseSamples = 1 / Double(samples)

        var rgb = [UInt8](repeating: 0, count: width * height * 3)
        rgb.withUnsafeMutableBufferPointer { out in
            for y in 0..<height {
                for x in 0..<width {
                    let pixelIndex = y * width + x
                    var rng = RandomSource(seed: p.seed, stream: UInt64(pixelIndex))
                    var sum = Vector3.zero
                    for _ in 0..<samples {
                        let s = (Double(x) + rng.nextDouble()) * inverseWidth
                        let t = (Double(y) + rng.nextDouble()) * inverseHeight
                        let ray = camera.ray(s: s, t: t, rng: &rng)
                        let sample = tracer.radiance(ray, rng: &rng)
                        if sample.isFinite { sum += sample }  // never let a NaN poison the pixel
                    }
                    let color = sum * inverseSamples
                    let o = pixelIndex * 3
                    out[o] = encode(color.x)
                    out[o + 1] = encode(color.y)
                    out[o + 2] = encode(color.z)
                }
                if (y + 1) % band == 0 || y + 1 == height {
                    progress(y + 1, height)
                }
            }
        }
        return Image(width: width, height: height, rgb: rgb)
    }

    /// Linear radiance → display byte: clamp to [0, 1], gamma 2 (square root), round.
    @inline(__always)
    static func encode(_ linear: Double) -> UInt8 {
        let clamped = min(1, max(0, linear))
        return UInt8(clamped.squareRoot() * 255 + 0.5)
    }
}
