// RenderParameters and Image: the public value types of the renderer. Parameters outside their
// documented ranges are clamped by `Renderer.render` (see `clamped`) rather than trapping, so a
// caller can never crash the process with a bad request.

public struct RenderParameters: Sendable, Equatable {
    public static let widthRange = 1...4096
    public static let heightRange = 1...4096
    public static let samplesRange = 1...10_000

    /// Image width in pixels, 1...4096.
    public var width: Int
    /// Image height in pixels, 1...4096.
    public var height: Int
    /// Samples (paths) per pixel, 1...10_000.
    public var samples: Int
    /// Seed of the pseudo-random sample streams; equal parameters give identical images.
    public var seed: UInt64
    /// Frame of an animation: the camera circles the scene once every `framesPerTurn` frames
    /// (frame 0 is the still view), so a job array over frame numbers renders a turntable.
    public var frame: Int

    /// Frames in one turn of the camera around the scene (1.5° a frame).
    public static let framesPerTurn = 240

    public init(width: Int, height: Int, samples: Int, seed: UInt64, frame: Int = 0) {
        self.width = width
        self.height = height
        self.samples = samples
        self.seed = seed
        self.frame = frame
    }

    /// Whether every field is within its documented range.
    public var isValid: Bool {
        Self.widthRange.contains(width) && Self.heightRange.contains(height) && Self.samplesRange.contains(samples)
    }

    /// A copy with every field clamped into its documented range.
    public var clamped: RenderParameters {
        RenderParameters(width: width.clamped(to: Self.widthRange),
                         height: height.clamped(to: Self.heightRange),
                         samples: samples.clamped(to: Self.samplesRange),
                         seed: seed, frame: max(frame, 0))
    }
}

/// An 8-bit sRGB-ish image: `rgb` holds width*height*3 bytes, row-major, top row first.
public struct Image: Sendable, Equatable {
    public let width: Int
    public let height: Int
    public var rgb: [UInt8]

    public init(width: Int, height: Int, rgb: [UInt8]) {
        precondition(width > 0 && height > 0, "Image dimensions must be positive")
        precondition(rgb.count == width * height * 3, "rgb must hold width*height*3 bytes")
        self.width = width
        self.height = height
        self.rgb = rgb
    }
}

extension Comparable {
    @inline(__always)
    func clamped(to range: ClosedRange<Self>) -> Self {
        min(max(self, range.lowerBound), range.upperBound)
    }
}
