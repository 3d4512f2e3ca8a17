// PathTracer: a unidirectional Monte Carlo path tracer with next-event estimation for the sun.
//
// At each diffuse vertex the sun is sampled explicitly with a shadow ray (soft shadows from the
// finite disk), and the path continues in a cosine-weighted direction, so the albedo is the
// whole throughput weight. Once a path has made a diffuse bounce, hitting the sun disk no longer
// counts (it was already accounted for by the shadow ray), which keeps the estimator unbiased
// for direct light; sun caustics through glass are therefore not rendered (they would be pure
// fireflies at low sample counts). Metal and glass are delta-like and pass the sun through.
// Russian roulette terminates long paths without bias.

struct PathTracer: Sendable {
    var scene: Scene
    var maxDepth = 12
    var rouletteDepth = 3
    /// Offset used to avoid self-intersection at ray origins.
    static let epsilon = 1e-4
    /// Distance from the scene origin where the ground checker starts fading, and over how far.
    static let checkerFadeStart = 9.0
    static let checkerFadeLength = 30.0

    init(scene: Scene) {
        self.scene = scene
    }

    /// One Monte Carlo estimate of the radiance arriving along `cameraRay`.
    func radiance(_ cameraRay: Ray, rng: inout RandomSource) -> Vector3 {
        var ray = cameraRay
        var throughput = Vector3.one
        var result = Vector3.zero
        var sunVisible = true  // no diffuse bounce yet on this path
        var depth = 0
        while depth < maxDepth {
            guard let hit = scene.hit(ray, tMin: PathTracer.epsilon, tMax: .infinity) else {
                result += throughput * scene.environment(ray.direction, includeSun: sunVisible)
                break
            }
            switch hit.material {
            case .diffuse(let albedo):
                ray = diffuseBounce(hit, albedo: albedo, throughput: &throughput, result: &result, rng: &rng)
                sunVisible = false
            case .checker(let even, let odd, let scale):
                let ix = Int((hit.point.x / scale).rounded(.down))
                let iz = Int((hit.point.z / scale).rounded(.down))
                var albedo = (ix &+ iz) & 1 == 0 ? even : odd
                // Crude texture filtering: far squares shrink below a pixel and would only add
                // noise/moiré near the horizon, so blend them towards the average colour.
                let distance2 = hit.point.x * hit.point.x + hit.point.z * hit.point.z
                if distance2 > PathTracer.checkerFadeStart * PathTracer.checkerFadeStart {
                    let fade = min(1, (distance2.squareRoot() - PathTracer.checkerFadeStart) / PathTracer.checkerFadeLength)
                    albedo = Vector3.lerp(albedo, (even + odd) * 0.5, fade)
                }
                ray = diffuseBounce(hit, albedo: albedo, throughput: &throughput, result: &result, rng: &rng)
                sunVisible = false
            case .metal(let albedo, let fuzz):
                var direction = ray.direction.reflected(about: hit.normal)
                if fuzz > 0 { direction = (direction + rng.inUnitSphere() * fuzz).normalized }
                if direction.dot(hit.normal) <= 0 { return result }  // scattered below the surface
                throughput *= albedo
                ray = Ray(origin: hit.point, direction: direction)
            case .glass(let refractiveIndex):
                ray = Ray(origin: hit.point,
                          direction: refract(ray.direction, hit: hit, refractiveIndex: refractiveIndex, rng: &rng))
            }
            depth += 1
            if depth >= rouletteDepth {
                let survival = min(0.95, throughput.maxComponent)
                if rng.nextDouble() >= survival { break }
                throughput *= 1 / survival
            }
        }
        return result
    }

    /// Adds the sun's direct contribution at a Lambertian vertex and returns the next path ray.
    @inline(__always)
    private func diffuseBounce(_ hit: HitRecord, albedo: Vector3, throughput: inout Vector3,
                               result: inout Vector3, rng: inout RandomSource) -> Ray {
        let n = hit.normal
        let toSun = scene.sampleSunDirection(&rng)
        let cosine = n.dot(toSun)
        if cosine > 0 && !scene.isOccluded(Ray(origin: hit.point, direction: toSun), tMin: PathTracer.epsilon) {
            // f = albedo/π, estimator = f · L · cosθ / pdf with pdf = 1/solidAngle.
            let weight = cosine * scene.sunSolidAngle * (1 / Double.pi)
            result += throughput * albedo * scene.sunRadiance * weight
        }
        throughput *= albedo
        // Cosine-weighted hemisphere sample: normal + uniform unit vector.
        var direction = n + rng.unitVector()
        let l2 = direction.lengthSquared
        direction = l2 < 1e-12 ? n : direction * (1 / l2.squareRoot())
        return Ray(origin: hit.point, direction: direction)
    }

    /// Chooses reflection or refraction at a dielectric boundary (Schlick Fresnel, chosen stochastically).
    @inline(__always)
    private func refract(_ d: Vector3, hit: HitRecord, refractiveIndex: Double,
                         rng: inout RandomSource) -> Vector3 {
        let eta = hit.frontFace ? 1 / refractiveIndex : refractiveIndex
        let n = hit.normal
        let cosTheta = min(1, -d.dot(n))
        let sin2Theta = max(0, 1 - cosTheta * cosTheta)
        let cannotRefract = eta * eta * sin2Theta > 1
        var r0 = (1 - eta) / (1 + eta)
        r0 *= r0
        let m = 1 - cosTheta
        let m2 = m * m
        let reflectance = r0 + (1 - r0) * m2 * m2 * m
        if cannotRefract || rng.nextDouble() < reflectance {
            return d.reflected(about: n)
        }
        let perpendicular = (d + n * cosTheta) * eta
        let parallel = n * -(max(0, 1 - perpendicular.lengthSquared).squareRoot())
        return (perpendicular + parallel).normalized
    }
}
