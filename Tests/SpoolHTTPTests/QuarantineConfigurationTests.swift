import SpoolCore
import Testing
@testable import SpoolApp

/// The GPU quarantine settings: defaults, the forms each takes (file, variable, flag), and the
/// one-line errors for bad values.
@Suite struct QuarantineConfigurationTests {
    @Test func defaultsAndValidValues() throws {
        var configuration = ServerConfiguration()
        #expect(configuration.quarantineAfterFailures == 3 && configuration.gpuHealthIntervalSeconds == 30)
        #expect(configuration.gpuSelfTest == nil && configuration.gpuSelfTestTimeoutSeconds == 120)
        try configuration.apply("quarantine_after_failures", .int(0), from: "spool.json")
        try configuration.apply("gpu_health_interval_s", .double(2.5), from: "spool.json")
        try configuration.apply("gpu_self_test", .array([.string("/opt/gpu-check"), .string("--quick")]), from: "spool.json")
        try configuration.apply("gpu_self_test_timeout_s", .int(30), from: "spool.json")
        #expect(configuration.quarantineAfterFailures == 0 && configuration.gpuHealthIntervalSeconds == 2.5)
        #expect(configuration.gpuSelfTest == ["/opt/gpu-check", "--quick"] && configuration.gpuSelfTestTimeoutSeconds == 30)
        try configuration.load(environment: ["SPOOL_GPU_SELF_TEST": "nvidia-smi -q", "SPOOL_QUARANTINE_AFTER_FAILURES": "5"])
        #expect(configuration.gpuSelfTest == ["nvidia-smi", "-q"] && configuration.quarantineAfterFailures == 5)
        try configuration.apply(text: #"["/bin/sh", "-c", "exit 0"]"#, to: "gpu_self_test", from: "--gpu-self-test")
        #expect(configuration.gpuSelfTest == ["/bin/sh", "-c", "exit 0"])
    }

    @Test func badValuesAreOneLineErrors() {
        var configuration = ServerConfiguration()
        let cases: [(String, JSONValue, String)] = [
            ("quarantine_after_failures", .int(-1), "spool.json: quarantine_after_failures must be an integer from 0 to 1000, not -1"),
            ("gpu_health_interval_s", .string("soon"), "spool.json: gpu_health_interval_s must be 0 (never) or a number of seconds from 0.1 to 86400, not \"soon\""),
            ("gpu_health_interval_s", .double(0.0004), "spool.json: gpu_health_interval_s must be 0 (never) or a number of seconds from 0.1 to 86400, not 0.0004"),
            ("gpu_self_test", .array([]), "spool.json: gpu_self_test must be a command as a list of strings"),
            ("gpu_self_test", .array([.string("ok"), .int(3)]), "spool.json: gpu_self_test must be a command as a list of strings"),
            ("gpu_self_test_timeout_s", .int(0), "spool.json: gpu_self_test_timeout_s must be a number of seconds above 0"),
        ]
        for (key, value, message) in cases {
            #expect(throws: ConfigurationError.self, "\(key): \(value)") { try configuration.apply(key, value, from: "spool.json") }
            do { try configuration.apply(key, value, from: "spool.json") } catch {
                #expect(error.description.hasPrefix(message), "\(error.description)")
                #expect(!error.description.contains("\n"))
            }
        }
    }
}
