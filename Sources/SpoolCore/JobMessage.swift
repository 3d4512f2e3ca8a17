import Foundation

/// A message a running job sends to the server: one JSON object per line, written to the
/// FIFO named by `$SPOOL_MESSAGES` (protocol version `$SPOOL_PROTOCOL`, now 1). Lines of at
/// most 4096 bytes are written atomically, so several writers never interleave.
///
/// ```
/// {"type":"progress","fraction":0.25,"message":"row 60 of 240"}
/// ```
/// Unknown `type`s are ignored, so later protocol versions (the warm-worker messages) extend
/// this one rather than replace it.
public enum JobMessage: Sendable, Equatable {
    case progress(JobProgress)
    /// A well-formed message of a type this server does not know.
    case unknown(type: String)

    public struct Malformed: Error, CustomStringConvertible {
        public var description: String
    }

    /// The fields this server reads; one of the wrong kind is not a failure of the whole line, so
    /// the refusal can name it (found by attacking the build: `"message": 42` read as "not a JSON
    /// object with a \"type\""). A fraction that is no number reads as none.
    private struct Wire: Decodable {
        var type: String
        var fraction: Double?
        var message: String?
        var messageIsNoString = false

        enum CodingKeys: String, CodingKey { case type, fraction, message }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            type = try container.decode(String.self, forKey: .type)
            fraction = (try? container.decodeIfPresent(Double.self, forKey: .fraction)) ?? nil
            do { message = try container.decodeIfPresent(String.self, forKey: .message) } catch { messageIsNoString = true }
        }
    }

    /// The longest line a message may be (one atomic write to a pipe). A longer one reaches the
    /// parsers cut to one byte past this, and is refused as too long; the rest of it is dropped.
    public static let maxLineBytes = 4096

    /// What a progress fraction outside 0…1 (it is clamped) is said as, or nil for one inside (or
    /// outside by a rounding error). Found by attacking the build: a job that sent percentages saw
    /// its progress at 100 % from its first message, and nothing said why.
    static func rangeNote(_ fraction: Double) -> String? {
        let slack = 1e-6
        guard fraction < -slack || fraction > 1 + slack else { return nil }
        func number(_ value: Double) -> String {
            value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : "\(value)"
        }
        let hint = fraction > 1 && fraction <= 100 ? " (send \(number(fraction / 100)) for \(number(fraction)) %)" : ""
        return "a progress \"fraction\" of \(number(fraction)) is outside 0…1 and reads as \(fraction < 0 ? 0 : 1)" + hint
    }

    /// A line as a note quotes it: its first 120 bytes or so (as UTF-8, a broken character
    /// replaced; one the cut went through left out), in quotes, control characters (C0 and C1)
    /// and quotes escaped, and its length when cut (a line over `maxLineBytes` reaches here cut
    /// to one byte past it: "over" that).
    public static func quoted(_ line: some Collection<UInt8>) -> String {
        var head = Array(line.prefix(120))
        if line.count > head.count {
            // Not the start of a character the cut went through: its continuation bytes, then its lead.
            var end = head.count
            while end > 0, head[end - 1] & 0xC0 == 0x80 { end -= 1 }
            if end > 0, head[end - 1] >= 0xC0, head.count - end + 1 < Self.sequenceLength(head[end - 1]) { head.removeSubrange((end - 1)...) }
        }
        let shown = String(decoding: head, as: UTF8.self)
        var text = "\""
        for scalar in shown.unicodeScalars {
            switch scalar {
            case "\"": text += "\\\""
            case "\\": text += "\\\\"
            case "\t": text += "\\t"
            case "\n": text += "\\n"
            case "\r": text += "\\r"
            case _ where scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value):
                let hex = String(scalar.value, radix: 16)
                text += "\\u{" + String(repeating: "0", count: max(0, 2 - hex.count)) + hex + "}"
            default: text.unicodeScalars.append(scalar)
            }
        }
        text += "\""
        guard line.count > head.count else { return text }
        return text + (line.count > maxLineBytes ? "… (over \(maxLineBytes) bytes)" : "… (\(line.count) bytes)")
    }

    /// How many bytes the UTF-8 sequence that `lead` begins has.
    private static func sequenceLength(_ lead: UInt8) -> Int { lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2 }

    /// Refuses a line cut at `maxLineBytes` (see there), naming why.
    static func checkLength(_ line: some Collection<UInt8>) throws(Malformed) {
        guard line.count <= maxLineBytes else {
            throw Malformed(description: "a line over \(maxLineBytes) bytes (all of it was dropped)")
        }
    }

    /// `note`: told of what was read otherwise than sent (a fraction outside 0…1, clamped).
    public init(line: some Collection<UInt8>, note: (String) -> Void = { _ in }) throws(Malformed) {
        try Self.checkLength(line)
        let wire: Wire
        do {
            wire = try JSONDecoder().decode(Wire.self, from: Data(line))
        } catch {
            throw Malformed(description: "not a JSON object with a \"type\"")
        }
        switch wire.type {
        case "progress":
            guard !wire.messageIsNoString else {
                throw Malformed(description: "a progress message's \"message\" must be a string")
            }
            guard let fraction = wire.fraction, fraction.isFinite else {
                throw Malformed(description: "a progress message needs a numeric \"fraction\" between 0 and 1")
            }
            if let said = Self.rangeNote(fraction) { note(said) }
            self = .progress(JobProgress(fraction: fraction, message: wire.message.map { String($0.prefix(500)) }))
        default:
            self = .unknown(type: wire.type)
        }
    }
}
