import Foundation
import Logging
import SpoolCore
import SpoolStore
import SpoolExecutor

/// One JSON object per line on stderr (`spool serve --log-format json`), for log shippers:
/// `{"ts":"…","level":"info","label":"spool","message":"job finished","job":"job_…",…}`.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    let label: String

    public init(label: String) { self.label = label }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields: [String: JSONValue] = [
            "ts": .string(WallClock.now().description), "level": .string(event.level.rawValue),
            "label": .string(label), "message": .string(event.message.description), "source": .string(event.source),
        ]
        for (key, value) in metadata.merging(event.metadata ?? [:], uniquingKeysWith: { _, new in new }) where fields[key] == nil {
            fields[key] = .string(value.description)
        }
        StandardStreams.error((JSONValue.object(fields).canonicalText + "\n"))
    }
}
