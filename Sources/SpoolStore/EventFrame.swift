import SpoolCore

/// An event with its Server-Sent Events frame (`id:`, `event:`, `data:` and the blank line),
/// encoded once. The notifier keeps its recent events this way, so that 500 streams sending the
/// same event share one copy of its bytes instead of each building the JSON text again (500
/// streams × 150 events/s of `canonicalText` was most of a core on the 2-core benchmark box).
public struct EventFrame: Sendable, Equatable {
    public let event: JobEvent
    /// UTF-8 text of the whole frame, ready to write; shared, never copied per reader.
    public let bytes: [UInt8]

    public init(_ event: JobEvent) {
        self.event = event
        self.bytes = Array("id: \(event.id)\nevent: \(event.kind.rawValue)\ndata: \(event.wireData.canonicalText)\n\n".utf8)
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
