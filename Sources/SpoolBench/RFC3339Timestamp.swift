/// An RFC 3339 instant as whole seconds since the Unix epoch plus nanoseconds, parsed by hand:
/// Foundation's `ISO8601DateFormatter` keeps only milliseconds, and the dispatch-gap target is
/// 1 ms, so gaps are computed exactly from the digits the server wrote.
struct RFC3339Timestamp: Sendable, Comparable {
    let seconds: Int64
    let nanoseconds: Int64
    /// How many fractional-second digits the server wrote (3 = milliseconds, 6 = microseconds).
    let fractionDigits: Int

    /// Parses `2026-11-25T14:10:35.123456Z` or `...+01:00`; nil for anything else.
    init?(_ text: String) {
        let b = Array(text.utf8)
        func number(_ from: Int, _ count: Int) -> Int64? {
            guard from + count <= b.count else { return nil }
            var value: Int64 = 0
            for byte in b[from..<(from + count)] {
                guard byte >= 48, byte <= 57 else { return nil }
                value = value * 10 + Int64(byte - 48)
            }
            return value
        }
        guard b.count >= 20, b[4] == 45, b[7] == 45, b[10] == 84 || b[10] == 116 || b[10] == 32,
              b[13] == 58, b[16] == 58,
              let year = number(0, 4), let month = number(5, 2), let day = number(8, 2),
              let hour = number(11, 2), let minute = number(14, 2), let second = number(17, 2),
              (1...12).contains(month), (1...31).contains(day)
        else { return nil }
        var index = 19
        var nanos: Int64 = 0
        var digits = 0
        if index < b.count, b[index] == 46 {  // "."
            index += 1
            while index < b.count, b[index] >= 48, b[index] <= 57 {
                if digits < 9 { nanos = nanos * 10 + Int64(b[index] - 48) }
                digits += 1
                index += 1
            }
            for _ in Swift.min(digits, 9)..<9 { nanos *= 10 }
        }
        guard index < b.count else { return nil }
        var offset: Int64 = 0
        switch b[index] {
        case 90, 122:  // "Z" / "z"
            guard index + 1 == b.count else { return nil }
        case 43, 45:  // "+" / "-"
            guard index + 6 == b.count, b[index + 3] == 58,
                  let oh = number(index + 1, 2), let om = number(index + 4, 2) else { return nil }
            offset = (oh * 3600 + om * 60) * (b[index] == 43 ? 1 : -1)
        default:
            return nil
        }
        let days = Self.daysFromCivil(year: year, month: month, day: day)
        seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset
        nanoseconds = nanos
        fractionDigits = digits
    }

    /// Nanoseconds since the Unix epoch (CLOCK_REALTIME's scale).
    var epochNanoseconds: Int64 { seconds * 1_000_000_000 + nanoseconds }

    /// Milliseconds from `self` to `later` (negative if `later` is earlier).
    func milliseconds(to later: RFC3339Timestamp) -> Double {
        Double(later.seconds - seconds) * 1_000 + Double(later.nanoseconds - nanoseconds) / 1e6
    }

    static func < (a: Self, b: Self) -> Bool {
        (a.seconds, a.nanoseconds) < (b.seconds, b.nanoseconds)
    }

    static func == (a: Self, b: Self) -> Bool {
        a.seconds == b.seconds && a.nanoseconds == b.nanoseconds
    }

    /// Days since 1970-01-01 in the proleptic Gregorian calendar (Howard Hinnant's algorithm).
    private static func daysFromCivil(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }
}
