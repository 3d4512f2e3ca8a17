import SpoolCore
import Testing

struct JobIDRandomnessTests {
    /// Every character of an id carries its own 5 random bits: over 4,000 ids, each of the 26
    /// positions shows all 32 symbols, each near its expected share — a position built from a
    /// stuck or a shared bit (the two that straddle the 64-bit draws) would not.
    @Test func everyPositionOfAnIdIsUniformOverTheAlphabet() {
        let ids = (0..<4_000).map { _ in JobID.random().rawValue }
        #expect(Set(ids).count == ids.count)
        #expect(ids.allSatisfy { JobID($0) != nil })
        for position in 4..<30 {
            var counts: [UInt8: Int] = [:]
            for id in ids { counts[Array(id.utf8)[position], default: 0] += 1 }
            #expect(counts.count == 32, "position \(position) used \(counts.count) symbols")
            #expect(counts.values.allSatisfy { (60...200).contains($0) }, "position \(position): \(counts.values.sorted())")
        }
    }
}
