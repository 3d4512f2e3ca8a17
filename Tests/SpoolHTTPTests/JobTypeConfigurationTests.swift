import SpoolCore
import Testing
@testable import SpoolApp

/// A job type that could never run as written stops startup with one line: a command argument
/// with a NUL (exec would cut it there), an environment name with `=` or empty, a NUL in a
/// variable (every job would fail to start). Found by attacking the build.
@Suite struct JobTypeConfigurationTests {
    func type(_ definition: JSONValue) throws(ConfigurationError) -> JobType {
        try ServerConfiguration.jobType("t", definition, source: "spool.json", baseDirectory: "/")
    }

    @Test func argumentsAndVariablesThatCannotReachAProcessAreRefused() throws {
        let plain = try type(.object(["command": .array([.string("/bin/echo"), .string("a b")]), "env": .object(["MODE": .string("fast")])]))
        #expect(plain.environment == ["MODE": "fast"])
        let refused: [(JSONValue, String)] = [
            (.object(["command": .array([.string("/bin/echo"), .string("abc\u{0}--dangerous")])]), "an argument cannot hold a NUL"),
            (.object(["command": .array([.string("/bin/true")]), "env": .object(["A=B": .string("1")])]), "\"A=B\" cannot be passed"),
            (.object(["command": .array([.string("/bin/true")]), "env": .object(["": .string("1")])]), "\"\" cannot be passed"),
            (.object(["command": .array([.string("/bin/true")]), "env": .object(["A": .string("x\u{0}y")])]), "\"A\" cannot be passed"),
        ]
        for (definition, message) in refused {
            do {
                _ = try type(definition)
                Issue.record("\(definition.canonicalText) was taken")
            } catch {
                #expect(error.description.hasPrefix("spool.json: job_types.t") && error.description.contains(message), "\(error.description)")
            }
        }
    }

    /// A heartbeat below a tenth of a second is refused (found by attacking the build: 0.0001 s
    /// lost every job as worker_lost, its beats "0.0 s apart").
    @Test func aHeartbeatTooFastToKeepIsRefused() throws {
        let worker: (Double) -> JSONValue = { .object(["command": .array([.string("/bin/true")]), "mode": .string("worker"), "heartbeat_s": .double($0)]) }
        #expect(try type(worker(0.5)).workerPolicy?.heartbeatSeconds == 0.5)
        do {
            _ = try type(worker(0.0001))
            Issue.record("heartbeat_s 0.0001 was taken")
        } catch {
            #expect(error.description.contains("heartbeat_s must be a number of seconds from 0.1 to 86400"), "\(error.description)")
        }
    }
}
