// TimestampTests: RFC 3339 text with microseconds, both ways, including before 1970; and
// JobID's shape, randomness and validation.

import Foundation
import Testing
import SpoolCore

@Suite struct TimestampTests {
    @Test(arguments: [
        (Int64(0), "1970-01-01T00:00:00.000000Z"),
        (951_782_400_123_456, "2000-02-29T00:00:00.123456Z"),
        (1_700_000_000_000_001, "2023-11-14T22:13:20.000001Z"),
        (4_107_542_400_000_000, "2100-03-01T00:00:00.000000Z"),
        (253_402_300_799_999_999, "9999-12-31T23:59:59.999999Z"),
        (-1, "1969-12-31T23:59:59.999999Z"),
        (-1_000_000, "1969-12-31T23:59:59.000000Z"),
        (-86_400_000_000, "1969-12-31T00:00:00.000000Z"),
        (-86_400_000_001, "1969-12-30T23:59:59.999999Z"),
        (-62_135_596_800_000_000, "0001-01-01T00:00:00.000000Z"),
    ])
    func knownInstantsHaveTheirRFC3339Text(microseconds: Int64, text: String) {
        let time = Timestamp(microseconds: microseconds)
        #expect(time.description == text)
        #expect(Timestamp(rfc3339: text) == time)
    }

    @Test func descriptionRoundTripsForRandomInstants() {
        var random = SplitMix64(seed: 99)
        let range: ClosedRange<Int64> = -62_135_596_800_000_000...253_402_300_799_999_999
        for _ in 0..<10_000 {
            let time = Timestamp(microseconds: Int64.random(in: range, using: &random))
            let text = time.description
            #expect(text.utf8.count == 27, "\(text)")
            #expect(Timestamp(rfc3339: text) == time, "\(text)")
        }
    }

    @Test func fewerFractionalDigitsAreScaled() {
        #expect(Timestamp(rfc3339: "2000-02-29T00:00:00Z")?.microseconds == 951_782_400_000_000)
        #expect(Timestamp(rfc3339: "2000-02-29T00:00:00.5Z")?.microseconds == 951_782_400_500_000)
        #expect(Timestamp(rfc3339: "2000-02-29T00:00:00.123Z")?.microseconds == 951_782_400_123_000)
        #expect(Timestamp(rfc3339: "2000-02-29T00:00:00.123456789Z")?.microseconds == 951_782_400_123_456)
    }

    @Test(arguments: [
        "", "2000-02-29", "2000-02-29T00:00:00", "2000-02-29T00:00:00.Z", "2000-02-29T00:00:00+24:00", "2000-02-29T00:00:00+02:60",
        "2000-02-29T00:00:00+0200", "2000-02-29T00:00:00+02:0x", "2000-02-29T00:00:00Z+02:00",
        "2000-02-29T00:00:00.1234567890Z", "2000-0a-29T00:00:00Z", "20O0-02-29T00:00:00.000000Z", "2000-02-29T00:00:00.12x4Z",
    ])
    func textThatIsNotRFC3339IsRejected(text: String) {
        #expect(Timestamp(rfc3339: text) == nil)
    }

    // Regression test for a fixed bug: `init(rfc3339:)` checks only that the digits are digits and the text ends in
    // "Z"; it never looks at the separators, at anything between the seconds and the "Z"
    // when there is no ".", or at field ranges, so these are read as real (normalised) times.
    @Test(arguments: [
        "2000-02-29T00:00:00junkZ", "2000x02x29T00:00:00Z", "2000-13-45T25:61:61Z", "2000-02-30T00:00:00Z",
    ])
    func textWithWrongSeparatorsOrOutOfRangeFieldsIsRejected(text: String) {
        #expect(Timestamp(rfc3339: text) == nil)
    }

    /// A time with its offset is the UTC time it names (found by attacking the build: a `run_at`
    /// with "+02:00", valid RFC 3339, was refused).
    @Test func anOffsetNamesTheUTCTimeItMeans() {
        #expect(Timestamp(rfc3339: "2000-02-29T02:00:00+02:00") == Timestamp(rfc3339: "2000-02-29T00:00:00Z"))
        #expect(Timestamp(rfc3339: "1999-12-31T19:00:00.5-05:00") == Timestamp(rfc3339: "2000-01-01T00:00:00.5Z"))
        #expect(Timestamp(rfc3339: "2000-02-29T00:00:00+00:00") == Timestamp(rfc3339: "2000-02-29T00:00:00Z"))
        #expect(Timestamp(rfc3339: "2000-03-01T05:30:00+05:30")?.description == "2000-03-01T00:00:00.000000Z")
    }

    /// RFC 3339 allows a lower-case "t" and "z" (its 5.6 note) and a leap second, :60 (found by
    /// attacking the build: each `run_at` was refused, 422). A leap second is the second after :59.
    @Test func lowerCaseSeparatorsAndALeapSecondAreTaken() {
        #expect(Timestamp(rfc3339: "2016-12-31t23:59:59z") == Timestamp(rfc3339: "2016-12-31T23:59:59Z"))
        #expect(Timestamp(rfc3339: "2016-12-31T23:59:59.5z") == Timestamp(rfc3339: "2016-12-31T23:59:59.5Z"))
        #expect(Timestamp(rfc3339: "2016-12-31T23:59:60Z") == Timestamp(rfc3339: "2017-01-01T00:00:00Z"))
        #expect(Timestamp(rfc3339: "2016-12-31T18:59:60-05:00") == Timestamp(rfc3339: "2017-01-01T00:00:00Z"))
        #expect(Timestamp(rfc3339: "2016-12-31T23:59:61Z") == nil)
        #expect(Timestamp(rfc3339: "2016-12-31x23:59:59Z") == nil)
    }

    @Test func codableUsesTheRFC3339Text() throws {
        let time = Timestamp(microseconds: 951_782_400_123_456)
        let data = try JSONEncoder().encode([time])
        #expect(String(decoding: data, as: UTF8.self) == #"["2000-02-29T00:00:00.123456Z"]"#)
        #expect(try JSONDecoder().decode([Timestamp].self, from: data) == [time])
        #expect(throws: DecodingError.self) { try JSONDecoder().decode([Timestamp].self, from: Data(#"["yesterday"]"#.utf8)) }
    }

    @Test func secondsConvertAndAddWithMicrosecondRounding() {
        #expect(Timestamp(secondsSince1970: 1.5).microseconds == 1_500_000)
        #expect(Timestamp(secondsSince1970: -0.000_001_4).microseconds == -1)
        #expect(Timestamp(microseconds: 2_500_000).secondsSince1970 == 2.5)
        #expect(Timestamp(microseconds: 10).adding(seconds: 0.000_002) == Timestamp(microseconds: 12))
        #expect(Timestamp(microseconds: 1) < Timestamp(microseconds: 2))
        #expect(Timestamp(microseconds: -5) < Timestamp(microseconds: 0))
    }
}

@Suite struct JobIDTests {
    static let alphabet = Set("0123456789abcdefghjkmnpqrstvwxyz")

    @Test func randomIDsHaveThePrefixAndThirtyCrockfordCharacters() {
        for _ in 0..<1_000 {
            let id = JobID.random()
            #expect(id.rawValue.count == 30)
            #expect(id.rawValue.hasPrefix("job_"))
            #expect(id.rawValue.dropFirst(4).allSatisfy(Self.alphabet.contains))
            #expect(JobID(id.rawValue) == id, "a generated id passes validation")
            #expect(id.description == id.rawValue)
        }
    }

    @Test func tenThousandRandomIDsAreUnique() {
        let ids = (0..<10_000).map { _ in JobID.random() }
        #expect(Set(ids).count == ids.count)
    }

    @Test func randomIDsUseTheWholeAlphabet() {
        var seen = Set<Character>()
        for _ in 0..<200 { seen.formUnion(JobID.random().rawValue.dropFirst(4)) }
        #expect(seen == Self.alphabet)
    }

    @Test(arguments: [
        "", "job_", "job_0123456789abcdefghjkmnpqr", "job_0123456789abcdefghjkmnpqrst",
        "JOB_0123456789abcdefghjkmnpqrs", "job_0123456789ABCDEFGHJKMNPQRS", "job_0123456789abcdefghjkmnpqri",
        "job_0123456789abcdefghjkmnpqrl", "job_0123456789abcdefghjkmnpqro", "job_0123456789abcdefghjkmnpqru",
        "jobx0123456789abcdefghjkmnpqrs", "job_0123456789abcdefghjkmnpq/s",
    ])
    func initRefusesAnythingButAValidID(text: String) {
        #expect(JobID(text) == nil)
    }

    @Test func initAcceptsAWellFormedID() {
        #expect(JobID("job_0123456789abcdefghjkmnpqrs")?.rawValue == "job_0123456789abcdefghjkmnpqrs")
    }

    @Test func codableValidatesTheText() throws {
        let id = JobID.random()
        let data = try JSONEncoder().encode([id])
        #expect(try JSONDecoder().decode([JobID].self, from: data) == [id])
        #expect(throws: DecodingError.self) { try JSONDecoder().decode([JobID].self, from: Data(#"["job_1"]"#.utf8)) }
    }
}
