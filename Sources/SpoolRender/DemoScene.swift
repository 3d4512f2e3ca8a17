// DemoScene: the one fixed, hand-placed scene the renderer draws (no randomness, so the image
// depends only on RenderParameters). A large glass ball in the middle, a terracotta diffuse ball
// and a polished gold ball either side, a blue ball behind (visible through the glass), and a
// scatter of small balls in the foreground, all on a checkered floor under a late-morning sun.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#elseif canImport(ucrt)
import ucrt
#endif

extension Scene {
    static func demo() -> Scene {
        func rgb(_ r: Double, _ g: Double, _ b: Double) -> Vector3 { Vector3(r, g, b) }
        let spheres: [Sphere] = [
            // Hero spheres.
            Sphere(center: rgb(0, 1, 0), radius: 1, material: .glass(refractiveIndex: 1.5)),
            Sphere(center: rgb(-2.25, 1, -0.7), radius: 1, material: .diffuse(albedo: rgb(0.75, 0.28, 0.18))),
            Sphere(center: rgb(2.25, 1, -0.7), radius: 1, material: .metal(albedo: rgb(0.92, 0.72, 0.38), fuzz: 0.02)),
            Sphere(center: rgb(0.4, 1.5, -4.2), radius: 1.5, material: .diffuse(albedo: rgb(0.18, 0.32, 0.75))),
            // Foreground and background scatter.
            Sphere(center: rgb(-1.15, 0.3, 1.6), radius: 0.3, material: .diffuse(albedo: rgb(0.3, 0.7, 0.5))),
            Sphere(center: rgb(1.2, 0.3, 1.7), radius: 0.3, material: .metal(albedo: rgb(0.85, 0.85, 0.88), fuzz: 0.12)),
            Sphere(center: rgb(0.1, 0.25, 2.3), radius: 0.25, material: .glass(refractiveIndex: 1.5)),
            Sphere(center: rgb(-2.6, 0.35, 1.3), radius: 0.35, material: .diffuse(albedo: rgb(0.85, 0.75, 0.2))),
            Sphere(center: rgb(2.55, 0.35, 1.25), radius: 0.35, material: .diffuse(albedo: rgb(0.55, 0.3, 0.7))),
            Sphere(center: rgb(-3.9, 0.45, -2.6), radius: 0.45, material: .metal(albedo: rgb(0.9, 0.55, 0.45), fuzz: 0.05)),
            Sphere(center: rgb(3.9, 0.55, -2.4), radius: 0.55, material: .diffuse(albedo: rgb(0.35, 0.6, 0.25))),
        ]
        return Scene(
            spheres: spheres,
            groundMaterial: .checker(even: rgb(0.72, 0.72, 0.68), odd: rgb(0.22, 0.25, 0.3), scale: 1.0),
            skyHorizon: rgb(0.62, 0.7, 0.82),
            skyZenith: rgb(0.18, 0.32, 0.68),
            sunDirection: rgb(-0.8, 0.5, -0.25),
            sunSinRadius: 0.07,
            sunIrradiance: rgb(3.4, 3.1, 2.6)
        )
    }
}

extension Camera {
    /// The demo viewpoint: slightly above the spheres, looking down at the glass ball; at `frame`
    /// it has circled the scene by `frame / RenderParameters.framesPerTurn` of a turn.
    static func demo(aspectRatio: Double, frame: Int = 0) -> Camera {
        let at = Vector3(0, 0.8, 0)
        let turn = Double(frame % RenderParameters.framesPerTurn) / Double(RenderParameters.framesPerTurn)
        let angle = 2 * Double.pi * turn
        let from = frame % RenderParameters.framesPerTurn == 0 ? Vector3(0, 1.7, 7.5)
            : Vector3(7.5 * sin(angle), 1.7, 7.5 * cos(angle))
        return Camera(lookFrom: from, lookAt: at, up: Vector3(0, 1, 0),
                      tanHalfFieldOfView: 0.36397023426620234,  // tan(20°): 40° vertical field of view
                      aspectRatio: aspectRatio, aperture: 0.06, focusDistance: (from - at).length)
    }
}
