import Logging
import Synchronization
import Testing
@testable import SpoolApp

/// The server's text log lines: what `StreamLogHandler` writes, with the logger's metadata
/// merged in at the line, not kept rendered.
@Suite struct LogHandlerTests {
    final class Lines: TextOutputStream, Sendable {
        let text = Mutex("")
        func write(_ string: String) { text.withLock { $0 += string } }
    }

    @Test func aLineCarriesTheLoggersMetadataAndTheCallsWithTheCallsWinning() {
        let lines = Lines(), reference = Lines()
        var logger = Logger(label: "spool") { TextLogHandler(label: $0, stream: lines) }
        var plain = Logger(label: "spool") { StreamLogHandler(label: $0, stream: reference) }
        logger[metadataKey: "request"] = "r1"
        logger[metadataKey: "job"] = "j1"
        plain[metadataKey: "request"] = "r1"
        plain[metadataKey: "job"] = "j1"
        logger.info("job finished", metadata: ["job": "j2", "state": "succeeded"])
        plain.info("job finished", metadata: ["job": "j2", "state": "succeeded"])
        logger.debug("not written at info")
        let line = lines.text.withLock { $0 }
        #expect(line.contains("info spool: job=j2 request=r1 state=succeeded [SpoolHTTPTests] job finished\n"), "\(line)")
        #expect(line.split(separator: "\n").count == 1)
        // The same line StreamLogHandler writes, but for its time stamp.
        let expected = reference.text.withLock { $0 }
        #expect(line.drop { $0 != " " } == expected.drop { $0 != " " })
    }

    @Test func theLevelIsTheHandlers() {
        let lines = Lines()
        var logger = Logger(label: "spool") { TextLogHandler(label: $0, stream: lines) }
        logger.logLevel = .warning
        logger.info("quiet")
        logger.warning("loud")
        #expect(lines.text.withLock { $0 }.contains("warning spool: [SpoolHTTPTests] loud"))
        #expect(!lines.text.withLock { $0 }.contains("quiet"))
    }

    /// The logger's own metadata, then a metadata provider's, then the call's: StreamLogHandler's order.
    @Test func aProvidersMetadataGoesOverTheLoggersAndTheCallsOverBoth() {
        let lines = Lines()
        var logger = Logger(label: "spool") { label in
            var handler = TextLogHandler(label: label, stream: lines)
            handler.metadataProvider = Logger.MetadataProvider { ["trace": "t1", "job": "from-provider"] }
            return handler
        }
        logger[metadataKey: "job"] = "from-logger"
        logger[metadataKey: "request"] = "r1"
        logger.info("one", metadata: ["trace": "from-call"])
        #expect(lines.text.withLock { $0 }.contains("job=from-provider request=r1 trace=from-call"), "\(lines.text.withLock { $0 })")
    }
}
