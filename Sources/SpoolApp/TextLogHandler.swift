import Logging

/// `spool serve`'s text log lines: swift-log's `StreamLogHandler` lines, with the logger's own
/// metadata kept here and handed over only when a line is written.
///
/// `StreamLogHandler` renders its metadata to text whenever a key is set, and Hummingbird sets
/// the request id on every request's logger: on tiny submits that was about 1 % of the server's
/// CPU, for lines an info-level server never writes.
public struct TextLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider? = LoggingSystem.metadataProvider
    private var lines: StreamLogHandler

    public var logLevel: Logger.Level {
        get { lines.logLevel }
        set { lines.logLevel = newValue }
    }

    /// Lines go to `stream`: standard error unless a test says otherwise.
    public init(label: String, stream: (any TextOutputStream & Sendable)? = nil) {
        // The provider is merged here, in StreamLogHandler's order (the logger's, the provider's, the call's).
        lines = stream.map { StreamLogHandler(label: label, stream: $0, metadataProvider: nil) }
            ?? StreamLogHandler.standardError(label: label, metadataProvider: nil)
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var event = event
        var merged = metadata
        if let provided = metadataProvider?.get(), !provided.isEmpty { merged.merge(provided) { _, provided in provided } }
        if !merged.isEmpty { event.metadata = merged.merging(event.metadata ?? [:]) { _, explicit in explicit } }
        lines.log(event: event)
    }
}
