/// A job's identifier: `job_` followed by 26 Crockford base-32 characters drawn from 130 bits
/// of the system's cryptographic random source, so ids are unguessable and never sequential.
public struct JobID: Hashable, Sendable, Codable, CustomStringConvertible, Comparable {
    public let rawValue: String

    public init?(_ rawValue: String) {
        guard rawValue.utf8.count == 30, rawValue.hasPrefix("job_"),
              rawValue.utf8.dropFirst(4).allSatisfy({ JobID.alphabet.contains($0) })
        else { return nil }
        self.rawValue = rawValue
    }

    private init(unchecked rawValue: String) { self.rawValue = rawValue }

    /// A fresh random id. `SystemRandomNumberGenerator` reads getrandom(2) on Linux: three
    /// 64-bit draws give the 130 bits (one draw per character was 26 system calls a submit).
    public static func random() -> JobID {
        var generator = SystemRandomNumberGenerator()
        let words = [generator.next(), generator.next(), generator.next()] as [UInt64]
        var characters = Array("job_".utf8)
        characters.reserveCapacity(30)
        for index in 0..<26 {
            let bit = index * 5, word = words[bit / 64], shift = UInt64(bit % 64)
            // A character's 5 bits may straddle two words (bits 60…64 and 120…124).
            var value = word >> shift
            if shift > 59 { value |= words[bit / 64 + 1] << (64 - shift) }
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
