import SpoolCore
import Testing

struct JobIDRandomnessTests {
    /// Every character of an id's random part carries its own 5 random bits: over 4,000 ids, each
    /// of its 16 positions shows all 32 symbols, each near its expected share — a position built
    /// from a stuck or a shared bit (the one that straddles the two 64-bit draws) would not.
    @Test func everyPositionOfTheRandomPartIsUniformOverTheAlphabet() {
        let now = WallClock.now()
        let ids = (0..<4_000).map { _ in JobID.random(at: now).rawValue }
        #expect(Set(ids).count == ids.count)
        #expect(ids.allSatisfy { JobID($0) != nil })
        #expect(Set(ids.map { $0.prefix(14) }).count == 1, "one moment, one time part")
        for position in 14..<30 {
            var counts: [UInt8: Int] = [:]
            for id in ids { counts[Array(id.utf8)[position], default: 0] += 1 }
            #expect(counts.count == 32, "position \(position) used \(counts.count) symbols")
            #expect(counts.values.allSatisfy { (60...200).contains($0) }, "position \(position): \(counts.values.sorted())")
        }
    }

    /// The first 10 characters are the time in milliseconds, most significant first (a ULID's
    /// layout), so ids made later sort after ids made earlier, whatever their random parts.
    @Test func idsSortByTheMillisecondTheyWereMadeIn() {
        let epoch = JobID.random(at: Timestamp(microseconds: 0)).rawValue
        #expect(epoch.hasPrefix("job_0000000000"))
        // 1,796,342,400,123 ms (2026-12-04T00:00:00.123Z), in 48 bits.
        let moment = Timestamp(microseconds: 1_796_342_400_123_000)
        #expect(JobID.random(at: moment).rawValue.prefix(14) == "job_" + Self.crockford(1_796_342_400_123, digits: 10))
        var previous = JobID.random(at: moment)
        for step in 1...1_000 {
            let next = JobID.random(at: Timestamp(microseconds: moment.microseconds + Int64(step) * 1_000))
            #expect(previous < next)
            previous = next
        }
    }

    private static func crockford(_ value: UInt64, digits: Int) -> String {
        let alphabet = Array("0123456789abcdefghjkmnpqrstvwxyz")
        return String((0..<digits).reversed().map { alphabet[Int((value >> UInt64($0 * 5)) & 31)] })
    }
}
