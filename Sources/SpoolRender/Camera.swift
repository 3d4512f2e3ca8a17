// Camera: a thin-lens pinhole camera. Rays start on a small lens disk (radius aperture/2) and
// pass through the focus plane, giving a gentle depth of field. Screen coordinates (s, t) run
// 0...1 left→right and top→bottom so that row 0 of the image is the top of the picture.

struct Camera: Sendable {
    var origin: Vector3
    var topLeft: Vector3
    var horizontal: Vector3
    var vertical: Vector3  // points down the image
    var u: Vector3
    var v: Vector3
    var lensRadius: Double

    init(lookFrom: Vector3, lookAt: Vector3, up: Vector3, tanHalfFieldOfView: Double,
         aspectRatio: Double, aperture: Double, focusDistance: Double) {
        let viewportHeight = 2 * tanHalfFieldOfView
        let viewportWidth = aspectRatio * viewportHeight
        let w = (lookFrom - lookAt).normalized
        let u = up.cross(w).normalized
        let v = w.cross(u)
        origin = lookFrom
        horizontal = u * (viewportWidth * focusDistance)
        vertical = -v * (viewportHeight * focusDistance)
        topLeft = lookFrom - horizontal * 0.5 - vertical * 0.5 - w * focusDistance
        self.u = u
        self.v = v
        lensRadius = aperture / 2
    }

    @inline(__always)
    func ray(s: Double, t: Double, rng: inout RandomSource) -> Ray {
        let (a, b) = rng.inUnitDisk()
        let offset = u * (a * lensRadius) + v * (b * lensRadius)
        let start = origin + offset
        let target = topLeft + horizontal * s + vertical * t
        return Ray(origin: start, direction: (target - start).normalized)
    }
}
