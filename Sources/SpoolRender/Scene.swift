// Scene: the fixed demo world — an infinite checkered ground plane (y = 0), a handful of spheres
// with diffuse / metal / glass materials, and an environment made of a sky gradient plus a small
// sun disk. The sun is the main light; the integrator samples it explicitly (a cone of ~4°),
// which is what produces the soft shadows. Everything is plain value types in contiguous arrays
// so intersection tests in the hot loop involve no reference counting or dynamic dispatch.

/// Surface response. Diffuse surfaces are Lambertian; metal is a (possibly fuzzy) mirror;
/// glass is a smooth dielectric with Schlick-approximated Fresnel reflection.
enum Material: Sendable {
    case diffuse(albedo: Vector3)
    case checker(even: Vector3, odd: Vector3, scale: Double)
    case metal(albedo: Vector3, fuzz: Double)
    case glass(refractiveIndex: Double)
}

struct Sphere: Sendable {
    var center: Vector3
    var radius: Double
    var material: Material
}

/// A ray/surface intersection. `normal` always faces against the incoming ray;
/// `frontFace` records whether the ray hit the outside of the surface.
struct HitRecord {
    var t: Double
    var point: Vector3
    var normal: Vector3
    var frontFace: Bool
    var material: Material
}

struct Scene: Sendable {
    var spheres: ContiguousArray<Sphere>
    var groundMaterial: Material
    var skyHorizon: Vector3
    var skyZenith: Vector3
    /// Unit vector pointing towards the sun, plus an orthonormal basis around it.
    var sunDirection: Vector3
    var sunTangent: Vector3
    var sunBitangent: Vector3
    /// cos of the sun's angular radius, and its solid angle 2π(1 - cosMax).
    var sunCosMax: Double
    var sunSolidAngle: Double
    var sunRadiance: Vector3

    init(spheres: [Sphere], groundMaterial: Material, skyHorizon: Vector3, skyZenith: Vector3,
         sunDirection: Vector3, sunSinRadius: Double, sunIrradiance: Vector3) {
        self.spheres = ContiguousArray(spheres)
        self.groundMaterial = groundMaterial
        self.skyHorizon = skyHorizon
        self.skyZenith = skyZenith
        let w = sunDirection.normalized
        let helper = abs(w.x) > 0.9 ? Vector3(0, 1, 0) : Vector3(1, 0, 0)
        let t = w.cross(helper).normalized
        self.sunDirection = w
        self.sunTangent = t
        self.sunBitangent = w.cross(t)
        self.sunCosMax = (1 - sunSinRadius * sunSinRadius).squareRoot()
        self.sunSolidAngle = 2 * Double.pi * (1 - sunCosMax)
        // Radiance chosen so the disk delivers `sunIrradiance` at normal incidence.
        self.sunRadiance = sunIrradiance * (1 / sunSolidAngle)
    }

    /// Closest intersection with t in (tMin, tMax), or nil.
    @inline(__always)
    func hit(_ ray: Ray, tMin: Double, tMax: Double) -> HitRecord? {
        var closest = tMax
        var hitIndex = -1
        let o = ray.origin
        let d = ray.direction
        spheres.withUnsafeBufferPointer { buffer in
            for i in 0..<buffer.count {
                let s = buffer[i]
                let oc = o - s.center
                let halfB = oc.dot(d)
                let c = oc.lengthSquared - s.radius * s.radius
                let discriminant = halfB * halfB - c
                if discriminant <= 0 { continue }
                let root = discriminant.squareRoot()
                var t = -halfB - root
                if t <= tMin || t >= closest {
                    t = -halfB + root
                    if t <= tMin || t >= closest { continue }
                }
                closest = t
                hitIndex = i
            }
        }
        // Ground plane y = 0.
        var groundHit = false
        if d.y != 0 {
            let t = -o.y / d.y
            if t > tMin && t < closest {
                closest = t
                groundHit = true
            }
        }
        if groundHit {
            let p = ray.at(closest)
            let up = d.y < 0
            return HitRecord(t: closest, point: Vector3(p.x, 0, p.z), normal: Vector3(0, up ? 1 : -1, 0),
                             frontFace: up, material: groundMaterial)
        }
        if hitIndex < 0 { return nil }
        let s = spheres[hitIndex]
        let p = ray.at(closest)
        let outward = (p - s.center) * (1 / s.radius)
        let front = outward.dot(d) < 0
        return HitRecord(t: closest, point: p, normal: front ? outward : -outward,
                         frontFace: front, material: s.material)
    }

    /// Whether anything blocks `ray` (used for shadow rays towards the sun, which is at infinity).
    @inline(__always)
    func isOccluded(_ ray: Ray, tMin: Double) -> Bool {
        let o = ray.origin
        let d = ray.direction
        if d.y < 0 && o.y > tMin { return true }  // heads into the ground
        return spheres.withUnsafeBufferPointer { buffer in
            for i in 0..<buffer.count {
                let s = buffer[i]
                let oc = o - s.center
                let halfB = oc.dot(d)
                let c = oc.lengthSquared - s.radius * s.radius
                let discriminant = halfB * halfB - c
                if discriminant <= 0 { continue }
                let root = discriminant.squareRoot()
                if -halfB + root > tMin { return true }  // far root in front => segment crosses sphere
            }
            return false
        }
    }

    /// Radiance arriving from the environment along unit direction `d`.
    /// The sun disk is only added when the caller has not already sampled it explicitly.
    @inline(__always)
    func environment(_ d: Vector3, includeSun: Bool) -> Vector3 {
        let t = max(0, d.y)
        var sky = Vector3.lerp(skyHorizon, skyZenith, t.squareRoot())
        if includeSun && d.dot(sunDirection) >= sunCosMax { sky += sunRadiance }
        return sky
    }

    /// A direction sampled uniformly inside the sun's cone (pdf = 1 / sunSolidAngle).
    @inline(__always)
    func sampleSunDirection(_ rng: inout RandomSource) -> Vector3 {
        let cosTheta = 1 - rng.nextDouble() * (1 - sunCosMax)
        let sinTheta = max(0, 1 - cosTheta * cosTheta).squareRoot()
        // A uniform angle without trig: normalise a uniform point of the unit disk.
        var (a, b) = rng.inUnitDisk()
        let r = (a * a + b * b).squareRoot()
        if r < 1e-12 { (a, b) = (1, 0) } else { a /= r; b /= r }
        return sunDirection * cosTheta + sunTangent * (sinTheta * a) + sunBitangent * (sinTheta * b)
    }
}
