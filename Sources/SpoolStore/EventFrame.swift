import SpoolCore
import Synchronization

/// An event with its Server-Sent Events frame (`id:`, `event:`, `data:` and the blank line),
/// encoded once, by the first reader that needs it. The notifier keeps its recent events this
/// way, so that 500 streams sending the same event share one copy of its bytes instead of each
/// building the JSON text again (500 streams × 150 events/s of `canonicalText` was most of a
/// core on the 2-core benchmark box) — and an event nobody streams is never encoded (encoding
/// each one as it was published was 3 % of a submit's CPU, on its path).
public struct EventFrame: Sendable, Equatable {
    public let event: JobEvent
    private let encoded: Encoded
    /// About how many bytes its event's data takes (its strings, mostly): what the notifier's
    /// memory counts it for (`EventNotifier.memoryBytes`).
    public let weight: Int

    public init(_ event: JobEvent) {
        self.event = event
        self.encoded = Encoded()
        weight = 128 + Self.weight(of: event.data)
    }

    static func weight(of value: JSONValue) -> Int {
        switch value {
        case .string(let text): text.utf8.count + 2
        case .array(let items): items.reduce(2) { $0 + 1 + weight(of: $1) }
        case .object(let fields): fields.reduce(2) { $0 + 4 + $1.key.utf8.count + weight(of: $1.value) }
        case .null, .bool, .int, .double: 8
        }
    }

    /// UTF-8 text of the whole frame, ready to write; shared, never copied per reader.
    public var bytes: [UInt8] {
        encoded.bytes.withLock { bytes in
            if let bytes { return bytes }
            let made = Array("id: \(event.id)\nevent: \(event.kind.rawValue)\ndata: \(event.wireData.canonicalText)\n\n".utf8)
            bytes = made
            return made
        }
    }

    public static func == (lhs: EventFrame, rhs: EventFrame) -> Bool { lhs.event == rhs.event }

    private final class Encoded: Sendable {
        let bytes = Mutex<[UInt8]?>(nil)
    }

    public var id: Int64 { event.id }

    public var endsJob: Bool { event.endsJob }
}

extension JobEvent {
    /// A state event whose state is final (succeeded, failed, canceled).
    public var endsJob: Bool {
        guard kind == .state, let state = data["state"]?.stringValue.flatMap(JobState.init(rawValue:)) else { return false }
        return state.isTerminal
    }
}
