/// A point in time as microseconds since the Unix epoch (UTC). Plain integer arithmetic,
/// no Foundation: stores keep it as an integer, the wire shows RFC 3339 with microseconds
/// (`2026-11-25T14:08:27.123456Z`) so dispatch gaps below a millisecond stay visible.
public struct Timestamp: Hashable, Sendable, Comparable, Codable, CustomStringConvertible {
    public var microseconds: Int64

    public init(microseconds: Int64) { self.microseconds = microseconds }

    public init(secondsSince1970 seconds: Double) { microseconds = Int64((seconds * 1_000_000).rounded()) }

    public var secondsSince1970: Double { Double(microseconds) / 1_000_000 }

    public static func < (lhs: Timestamp, rhs: Timestamp) -> Bool { lhs.microseconds < rhs.microseconds }

    public func adding(seconds: Double) -> Timestamp {
        Timestamp(microseconds: microseconds + Int64((seconds * 1_000_000).rounded()))
    }

    /// RFC 3339 in UTC with six fractional digits.
    public var description: String {
        let micros = ((microseconds % 1_000_000) + 1_000_000) % 1_000_000
        let seconds = (microseconds - micros) / 1_000_000
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let secondOfDay = seconds - days * 86_400
        let (year, month, day) = Timestamp.civil(fromDays: days)
        func pad(_ value: Int64, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(secondOfDay / 3600, 2)):"
            + "\(pad(secondOfDay / 60 % 60, 2)):\(pad(secondOfDay % 60, 2)).\(pad(micros, 6))Z"
    }

    /// Parses what `description` writes (and the same with fewer fractional digits).
    public init?(rfc3339 text: String) {
        var bytes = Array(text.utf8)
        // A time in UTC ("…Z"), or with its offset ("…+02:00", "…-05:30"), as RFC 3339 allows
        // (found by attacking the build: an offset was refused).
        var offsetSeconds: Int64 = 0
        if bytes.count >= 25, [UInt8(ascii: "+"), UInt8(ascii: "-")].contains(bytes[bytes.count - 6]), bytes[bytes.count - 3] == UInt8(ascii: ":") {
            let sign: Int64 = bytes[bytes.count - 6] == UInt8(ascii: "+") ? 1 : -1
            let digits = [bytes[bytes.count - 5], bytes[bytes.count - 4], bytes[bytes.count - 2], bytes[bytes.count - 1]]
            guard digits.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
            let hours = Int64(digits[0] - 48) * 10 + Int64(digits[1] - 48), minutes = Int64(digits[2] - 48) * 10 + Int64(digits[3] - 48)
            guard hours < 24, minutes < 60 else { return nil }
            offsetSeconds = sign * (hours * 3600 + minutes * 60)
            bytes = Array(bytes.dropLast(6)) + [UInt8(ascii: "Z")]
        }
        // RFC 3339 (its 5.6 note) allows "t" and "z" in lower case (found by attacking the build).
        guard bytes.count >= 20, bytes.last == UInt8(ascii: "Z") || bytes.last == UInt8(ascii: "z") else { return nil }
        func number(_ range: Range<Int>) -> Int64? {
            var value: Int64 = 0
            for index in range {
                guard index < bytes.count, bytes[index] >= 48, bytes[index] <= 57 else { return nil }
                value = value * 10 + Int64(bytes[index] - 48)
            }
            return value
        }
        guard bytes[4] == UInt8(ascii: "-"), bytes[7] == UInt8(ascii: "-"), bytes[10] == UInt8(ascii: "T") || bytes[10] == UInt8(ascii: "t"),
              bytes[13] == UInt8(ascii: ":"), bytes[16] == UInt8(ascii: ":"),
              let year = number(0..<4), let month = number(5..<7), let day = number(8..<10),
              let hour = number(11..<13), let minute = number(14..<16), let second = number(17..<19),
              // :60 is a leap second (RFC 3339 allows it): read as the second after :59.
              (1...12).contains(month), hour < 24, minute < 60, second <= 60,
              day >= 1, day <= Timestamp.daysIn(month: month, year: year)
        else { return nil }
        var micros: Int64 = 0
        if bytes.count == 20 {
            // "…:SSZ": no fraction.
        } else if bytes[19] == UInt8(ascii: ".") {
            let digits = bytes[20..<(bytes.count - 1)]
            guard !digits.isEmpty, digits.count <= 9, let fraction = number(20..<(bytes.count - 1)) else { return nil }
            var scaled = fraction
            var count = digits.count
            while count < 6 { scaled *= 10; count += 1 }
            while count > 6 { scaled /= 10; count -= 1 }
            micros = scaled
        } else {
            return nil
        }
        let days = Timestamp.days(fromCivil: year, month, day)
        microseconds = ((days * 86_400 + hour * 3600 + minute * 60 + second - offsetSeconds) * 1_000_000) + micros
    }

    static func daysIn(month: Int64, year: Int64) -> Int64 {
        switch month {
        case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    // Howard Hinnant's civil-calendar algorithms.
    static func civil(fromDays z0: Int64) -> (Int64, Int64, Int64) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    static func days(fromCivil y0: Int64, _ month: Int64, _ day: Int64) -> Int64 {
        let y = month <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let value = Timestamp(rfc3339: text) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not an RFC 3339 time: \(text)")
        }
        self = value
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
