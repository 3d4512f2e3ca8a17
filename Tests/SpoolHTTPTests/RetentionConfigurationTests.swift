import SpoolCore
import Testing
@testable import SpoolApp

/// `retention_days`: 30 by default, any number of days from 0 (forever) to 100 years, from the
/// file, a variable or the flag; anything else is a one-line error.
@Suite struct RetentionConfigurationTests {
    @Test func defaultsAndValidValues() throws {
        var configuration = ServerConfiguration()
        #expect(configuration.retentionDays == 30)
        try configuration.apply("retention_days", .int(0), from: "spool.json")
        #expect(configuration.retentionDays == 0)
        try configuration.load(environment: ["SPOOL_RETENTION_DAYS": "7"])
        #expect(configuration.retentionDays == 7)
        try configuration.apply(text: "0.5", to: "retention_days", from: "--retention-days")
        #expect(configuration.retentionDays == 0.5)
    }

    @Test func badValuesAreOneLineErrors() {
        var configuration = ServerConfiguration()
        for value in [JSONValue.int(-1), .double(36_501), .string("a week"), .bool(true)] {
            do {
                try configuration.apply("retention_days", value, from: "spool.json")
                Issue.record("\(value.canonicalText) was taken")
            } catch {
                #expect(error.description == "spool.json: retention_days must be a number of days (0 to 36500; 0 keeps ended jobs forever), not \(value.canonicalText)")
            }
        }
    }
}
