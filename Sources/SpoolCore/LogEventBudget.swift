/// How a job's output becomes `log` events, which go to every event-stream client: at most
/// `totalLimit` bytes per job in all (the whole log, up to `log_limit_bytes`, stays in the job's
/// log file), each event at most `eventLimit` bytes, and at most one batch per interval. Output
/// without newlines is cut at a UTF-8 character boundary, never inside a character. Bytes that
/// are not UTF-8 become U+FFFD as they come in, so the limits count the text that goes out
/// (three bytes for each bad one). Pure: the scheduler hands it output and asks what to send.
public struct LogEventBudget: Sendable, Equatable {
    /// Bytes of log text one job may put in events, the closing notice included.
    public static let totalLimit = 64 << 10
    /// The most text one event carries.
    public static let eventLimit = 16 << 10
    static let notice = "\n[spool] the job printed more than 64 KiB: later output is only in its log (GET /v1/jobs/{id}/logs)\n"

    /// Text to send: valid UTF-8 but for a character whose last bytes are still to come.
    private var pending: [UInt8] = []
    /// The start of a character that has not all come yet (at most three bytes), held back
    /// until it has, so that it is not taken for bad bytes.
    private var unfinished: [UInt8] = []
    private var sent = 0
    private var lastSent: Moment?
    /// Output arrived that did not fit the budget.
    public private(set) var isTruncated = false
    private var noticeSent = false

    public init() {}

    /// Bytes still accepted before the budget is spent.
    private var room: Int { Self.totalLimit - Self.notice.utf8.count - sent - pending.count }

    /// Takes output; keeps what fits in the budget, drops (and remembers dropping) the rest.
    public mutating func take(_ bytes: some Collection<UInt8>) {
        guard !isTruncated else { return }
        unfinished += bytes
        let complete = unfinished[..<Self.characterBoundary(in: unfinished, atOrBefore: unfinished.count)]
        unfinished.removeFirst(complete.count)
        keep(complete)
    }

    /// Keeps `bytes` as text (bad bytes replaced) up to the room left, cut at a character.
    private mutating func keep(_ bytes: ArraySlice<UInt8>) {
        guard !bytes.isEmpty else { return }
        let text = Array(String(decoding: bytes, as: UTF8.self).utf8)
        let room = max(0, self.room)
        if text.count > room {
            isTruncated = true
            unfinished.removeAll()
        }
        pending += text[..<Self.characterBoundary(in: text, atOrBefore: min(room, text.count))]
    }

    /// The texts to send as events now: nothing until `interval` has passed since the last
    /// batch, unless `final` (the job ended: everything left, and the notice if output was
    /// dropped).
    public mutating func events(at now: Moment, interval: Duration, final: Bool = false) -> [String] {
        if !final, let last = lastSent, now - last < interval { return [] }
        if final {
            // A character the job's end cut short.
            let rest = unfinished[...]
            unfinished.removeAll()
            keep(rest)
        }
        var texts: [String] = []
        while !pending.isEmpty {
            var cut = min(pending.count, Self.eventLimit)
            if cut < pending.count || !final {
                // Never split a character; a character still arriving waits for its rest.
                let boundary = Self.characterBoundary(in: pending, atOrBefore: cut)
                if boundary == 0 && !final { break }
                if boundary > 0 { cut = boundary }
            }
            texts.append(String(decoding: pending[..<cut], as: UTF8.self))
            sent += cut
            pending.removeFirst(cut)
        }
        if final && isTruncated && !noticeSent {
            noticeSent = true
            texts.append(Self.notice)
        }
        if !texts.isEmpty { lastSent = now }
        return texts
    }

    /// The largest index ≤ `limit` that does not fall inside a UTF-8 character: `limit` when
    /// the bytes before it end a character, else where that last character starts.
    static func characterBoundary(in bytes: [UInt8], atOrBefore limit: Int) -> Int {
        guard limit > 0 else { return 0 }
        var start = limit - 1
        while start > 0, limit - start < 4, bytes[start] & 0xC0 == 0x80 { start -= 1 }   // continuation bytes
        let lead = bytes[start]
        let length = lead & 0x80 == 0 ? 1 : lead & 0xE0 == 0xC0 ? 2 : lead & 0xF0 == 0xE0 ? 3 : lead & 0xF8 == 0xF0 ? 4 : 1
        return start + length <= limit ? limit : start
    }
}
