/// What a token may do besides seeing its own jobs.
public struct TenantLimits: Sendable, Equatable, Hashable {
    /// Most jobs it may have queued at once (429 beyond).
    public var maxQueued: Int?
    /// Most jobs of its running at once, over every slot and node (more wait in the queue).
    public var maxRunning: Int?
    /// Most submits per second, sustained (a burst of up to one second's worth is allowed).
    public var rate: Double?
    /// Its share of the slots against other tenants of the same priority (2 = twice as often as 1).
    public var weight: Double = 1
    /// The highest priority its jobs may have (403 above): fair share holds within a priority
    /// only, so a tenant free to pick any priority could go before every other tenant's jobs.
    public var maxPriority: Int?

    public init(maxQueued: Int? = nil, maxRunning: Int? = nil, rate: Double? = nil, weight: Double = 1, maxPriority: Int? = nil) {
        self.maxQueued = maxQueued
        self.maxRunning = maxRunning
        self.rate = rate
        self.weight = weight
        self.maxPriority = maxPriority
    }

    /// Refuses a job of `priority` above `maxPriority`.
    public func check(priority: Int) throws(PriorityNotAllowed) {
        if let maxPriority, priority > maxPriority { throw PriorityNotAllowed(priority: priority, maxPriority: maxPriority) }
    }

    public static let weightRange: ClosedRange<Double> = 0.01...100
}

/// A job's priority above what its token allows (`TenantLimits.maxPriority`).
public struct PriorityNotAllowed: Error, Sendable, CustomStringConvertible {
    public var priority: Int
    public var maxPriority: Int
    public var description: String {
        "priority \(priority) is above this token's max_priority of \(maxPriority): submit at \(maxPriority) or lower"
    }
}

/// Who is asking. A token's name is the tenant: the owner recorded on every job it submits.
public struct Principal: Sendable, Equatable {
    /// The token's name; nil when authentication is off (then every caller is an administrator).
    public var name: String?
    public var isAdmin: Bool
    public var limits: TenantLimits
    /// The public id of the token it came from (nil without one): a request that lasts — an
    /// event stream, a long poll — checks that this very token still exists, not its name,
    /// which a rotation (revoke, then create the same name) gives to a new token.
    public var tokenID: String?
    /// When the dashboard session it came with began (nil: it came with the token itself): a
    /// request that lasts ends with a log out of that session's token too.
    public var sessionBegan: Timestamp?

    public init(name: String?, isAdmin: Bool, limits: TenantLimits = TenantLimits(), tokenID: String? = nil) {
        self.name = name
        self.isAdmin = isAdmin
        self.limits = limits
        self.tokenID = tokenID
    }

    /// Authentication off: no name, every right.
    public static let anonymous = Principal(name: nil, isAdmin: true)

    /// Whether it may see (and act on) a job submitted by `owner`.
    public func canSee(owner: String?) -> Bool { isAdmin || (name != nil && owner == name) }

    /// The owner to restrict listings and streams to; nil for an administrator (everything).
    public var ownerFilter: String? { isAdmin ? nil : name }
}

/// An API token as the store keeps it: the secret only as its SHA-256 digest.
public struct TokenRecord: Sendable, Equatable {
    /// The token's public part (its first characters), by which it is found.
    public var id: String
    public var name: String
    public var secretDigest: [UInt8]
    public var isAdmin: Bool
    public var limits: TenantLimits
    public var createdAt: Timestamp
    /// Dashboard sessions of this token started before this have ended (a log out).
    public var sessionsSince: Timestamp?

    public init(id: String, name: String, secretDigest: [UInt8], isAdmin: Bool, limits: TenantLimits, createdAt: Timestamp,
                sessionsSince: Timestamp? = nil) {
        self.id = id
        self.name = name
        self.secretDigest = secretDigest
        self.isAdmin = isAdmin
        self.limits = limits
        self.createdAt = createdAt
        self.sessionsSince = sessionsSince
    }

    public var principal: Principal { Principal(name: name, isAdmin: isAdmin, limits: limits, tokenID: id) }

    public static let namePattern = "1 to 64 letters, digits, '-', '_', '.' or '@'"

    public static func isValidName(_ name: String) -> Bool {
        (1...64).contains(name.utf8.count) && name.utf8.allSatisfy { byte in
            (byte >= 48 && byte <= 57) || (byte >= 65 && byte <= 90) || (byte >= 97 && byte <= 122)
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "@")
        }
    }
}

/// A token's text: `spool_` + a 10-character public id + `_` + a 52-character secret, both in
/// Crockford base 32 (the secret: 260 random bits). The id finds the stored token; the secret
/// is compared by its digest in constant time.
public enum TokenText {
    static let alphabet: [UInt8] = Array("0123456789abcdefghjkmnpqrstvwxyz".utf8)
    public static let idLength = 10
    public static let secretLength = 52

    /// A new token's id and secret, from the system's cryptographic random source.
    public static func generate() -> (id: String, secret: String) {
        var generator = SystemRandomNumberGenerator()
        func draw(_ count: Int) -> String {
            String(decoding: (0..<count).map { _ in alphabet[Int(generator.next(upperBound: UInt8(32)))] }, as: UTF8.self)
        }
        return (draw(idLength), draw(secretLength))
    }

    public static func format(id: String, secret: String) -> String { "spool_\(id)_\(secret)" }

    /// The id and secret of a well-formed token text, else nil.
    public static func parse(_ text: some StringProtocol) -> (id: String, secret: String)? {
        let bytes = Array(text.utf8)
        guard bytes.count == 6 + idLength + 1 + secretLength, bytes.starts(with: Array("spool_".utf8)),
              bytes[6 + idLength] == UInt8(ascii: "_")
        else { return nil }
        let id = bytes[6..<(6 + idLength)], secret = bytes[(7 + idLength)...]
        guard id.allSatisfy(alphabet.contains), secret.allSatisfy(alphabet.contains) else { return nil }
        return (String(decoding: id, as: UTF8.self), String(decoding: secret, as: UTF8.self))
    }

    /// Equal byte strings, compared in time that depends only on their length.
    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }
}

/// Fair share within one priority: each queued job carries a tag, and the queue runs in
/// (priority, tag, submission) order. A job's tag is its owner's previous queued job's tag plus
/// the owner's stride (1/weight), or — when the owner has nothing queued at that priority —
/// just after the job at the head of the queue. So a tenant that was idle goes next, tenants
/// with backlogs take turns (A, B, C, A, B, C, … in proportion to their weights), and a tenant
/// with 1,000 queued jobs delays a newcomer by at most one more of its jobs per slot. Requeued
/// jobs keep their tags and go first. The tag is worked out once, when the job is stored; a
/// claim is still one index read.
public enum FairShare {
    /// The stride of weight 1.
    public static let unit: Int64 = 1_000_000

    public static func stride(weight: Double) -> Int64 {
        let weight = min(max(weight, TenantLimits.weightRange.lowerBound), TenantLimits.weightRange.upperBound)
        return max(1, Int64((Double(unit) / weight).rounded()))
    }

    /// The tag of a job its owner submits now: `ownerLast` is the largest tag among the owner's
    /// queued jobs of that priority, `head` the smallest among everyone's, `served` the largest
    /// among the priority's running jobs — where the queue is being served. A head that cannot
    /// start yet (a delayed job, a capped tenant's) would otherwise hold the clock back, and a
    /// tenant joining late put its whole burst before every other tenant's next job (found by
    /// attacking the build); a tenant whose queued jobs are behind that point likewise.
    public static func tag(ownerLast: Int64?, head: Int64?, served: Int64?, weight: Double) -> Int64 {
        let now = max(head ?? 0, served ?? 0) + 1
        guard let ownerLast else { return now }
        return max(ownerLast + stride(weight: weight), now)
    }
}
