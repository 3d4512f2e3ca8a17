// How a job's output becomes log events: bounded per event and per job, batched by interval,
// never split inside a UTF-8 character.
import SpoolCore
import Testing

@Suite struct LogEventBudgetTests {
    let interval = Duration.milliseconds(250)
    func at(_ milliseconds: Int) -> Moment { Moment(sinceStart: .milliseconds(milliseconds)) }

    @Test func outputIsSentAtMostOncePerInterval() {
        var budget = LogEventBudget()
        budget.take(Array("first\n".utf8))
        #expect(budget.events(at: at(0), interval: interval) == ["first\n"])
        budget.take(Array("second\n".utf8))
        #expect(budget.events(at: at(100), interval: interval).isEmpty, "within the interval it waits")
        budget.take(Array("third\n".utf8))
        #expect(budget.events(at: at(250), interval: interval) == ["second\nthird\n"])
        budget.take(Array("last".utf8))
        #expect(budget.events(at: at(260), interval: interval, final: true) == ["last"], "the job's end flushes at once")
    }

    @Test func fiftyMegabytesWithoutANewlineMakeBoundedEventsOf64KiBInAll() {
        var budget = LogEventBudget()
        var texts: [String] = []
        let chunk = [UInt8](repeating: UInt8(ascii: "y"), count: 1 << 20)
        for step in 0..<50 {
            budget.take(chunk)
            texts += budget.events(at: at(step * 300), interval: interval)
        }
        texts += budget.events(at: at(50 * 300), interval: interval, final: true)
        #expect(texts.allSatisfy { $0.utf8.count <= LogEventBudget.eventLimit })
        #expect(texts.reduce(0) { $0 + $1.utf8.count } <= LogEventBudget.totalLimit)
        #expect(texts.last?.contains("more than 64 KiB") == true, "the stream says where it stops")
        #expect(budget.isTruncated)
    }

    @Test func aCharacterSplitAcrossChunksIsNeverCut() {
        var budget = LogEventBudget()
        let text = Array("héllo ✓ wörld 🎉".utf8)
        var sent = ""
        // Hand it over one byte at a time, asking each time.
        for (index, byte) in text.enumerated() {
            budget.take([byte])
            for piece in budget.events(at: at(index * 300), interval: interval) {
                #expect(!piece.contains("\u{FFFD}"), "a character was cut: \(piece)")
                sent += piece
            }
        }
        sent += budget.events(at: at(100_000), interval: interval, final: true).joined()
        #expect(sent == "héllo ✓ wörld 🎉")
    }

    @Test func eventsOfABigBurstAreCutAtCharacterBoundaries() {
        var budget = LogEventBudget()
        budget.take(Array(String(repeating: "é", count: 20_000).utf8))   // 40,000 bytes
        let texts = budget.events(at: at(0), interval: interval, final: true)
        #expect(texts.count == 3)
        #expect(texts.allSatisfy { $0.utf8.count <= LogEventBudget.eventLimit && !$0.contains("\u{FFFD}") })
        #expect(texts.joined() == String(repeating: "é", count: 20_000))
    }

    /// Bytes that are not UTF-8 become U+FFFD (three bytes each) before they are counted: the
    /// limits hold for the text that goes out, not for the bytes that came in.
    @Test func outputThatIsNotUTF8StaysWithinTheLimitsAsTheTextSent() {
        var budget = LogEventBudget()
        var texts: [String] = []
        for step in 0..<8 {
            budget.take([UInt8](repeating: 0xFF, count: 16_000) + [UInt8(ascii: "\n")])
            texts += budget.events(at: at(step * 300), interval: interval)
        }
        texts += budget.events(at: at(10_000), interval: interval, final: true)
        #expect(texts.allSatisfy { $0.utf8.count <= LogEventBudget.eventLimit }, "\(texts.map(\.utf8.count))")
        #expect(texts.reduce(0) { $0 + $1.utf8.count } <= LogEventBudget.totalLimit, "\(texts.map(\.utf8.count))")
        #expect(texts.dropLast().joined().allSatisfy { $0 == "\u{FFFD}" || $0 == "\n" } && budget.isTruncated)
        // A bad byte beside good characters, and a character cut short by the job's end.
        var mixed = LogEventBudget()
        mixed.take(Array("ok ".utf8) + [0xC3])
        mixed.take([0xA9, 0xFF] + Array(" ✓".utf8) + [0xE2, 0x9C])
        #expect(mixed.events(at: at(0), interval: interval, final: true).joined() == "ok é\u{FFFD} ✓\u{FFFD}")
    }
}
