/// A job's identifier: `job_` followed by 26 Crockford base-32 characters laid out as a ULID —
/// the submit's time in milliseconds (48 bits, 10 characters), then 80 bits from the system's
/// cryptographic random source (16 characters). Ids are unguessable (80 random bits) and sort by
/// creation time, so a store's index on them grows at its right edge instead of touching a random
/// page per insert (with fully random ids, a 100,000-job queue's id index missed SQLite's page
/// cache on most submits; BENCHMARKS.md).
public struct JobID: Hashable, Sendable, Codable, CustomStringConvertible, Comparable {
    public let rawValue: String

    public init?(_ rawValue: String) {
        guard rawValue.utf8.count == 30, rawValue.hasPrefix("job_"),
              rawValue.utf8.dropFirst(4).allSatisfy({ JobID.alphabet.contains($0) })
        else { return nil }
        self.rawValue = rawValue
    }

    private init(unchecked rawValue: String) { self.rawValue = rawValue }

    /// A fresh id for a job created at `time` (two getrandom(2) calls for the 80 random bits).
    public static func random(at time: Timestamp = WallClock.now()) -> JobID {
        var generator = SystemRandomNumberGenerator()
        let high = generator.next() as UInt64, low = generator.next() as UInt64
        let milliseconds = UInt64(max(0, time.microseconds / 1000)) & (1 << 48 - 1)
        var characters = Array("job_".utf8)
        characters.reserveCapacity(30)
        // 10 characters of time (50 bits, the top two zero), most significant first.
        for index in (0..<10).reversed() { characters.append(alphabet[Int((milliseconds >> UInt64(index * 5)) & 31)]) }
        // 16 characters of randomness: 64 bits of `high`, then 16 of `low`.
        for index in 0..<16 {
            let bit = index * 5
            var value = bit < 64 ? high >> UInt64(bit) : low >> UInt64(bit - 64)
            if bit < 64, bit > 59 { value |= low << UInt64(64 - bit) }   // straddles the two words
            characters.append(alphabet[Int(value & 31)])
        }
        return JobID(unchecked: String(decoding: characters, as: UTF8.self))
    }

    public var description: String { rawValue }

    public static func < (lhs: JobID, rhs: JobID) -> Bool { lhs.rawValue < rhs.rawValue }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let string = try container.decode(String.self)
        guard let id = JobID(string) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not a job id: \(string)")
        }
        self = id
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }

    private static let alphabet: [UInt8] = Array("0123456789abcdefghjkmnpqrstvwxyz".utf8)
}

/// The index of an execution slot (one per GPU, or `--slots N` on a machine without one).
public struct SlotID: Hashable, Sendable, Codable, CustomStringConvertible, Comparable {
    public let rawValue: Int
    public init(_ rawValue: Int) { self.rawValue = rawValue }
    public var description: String { String(rawValue) }
    public static func < (lhs: SlotID, rhs: SlotID) -> Bool { lhs.rawValue < rhs.rawValue }
    public init(from decoder: any Decoder) throws { rawValue = try decoder.singleValueContainer().decode(Int.self) }
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}
