import Foundation

/// How the harness starts Spool: a config file with the job types the scenarios submit, and
/// `spool serve` on 127.0.0.1, port 0, one slot, its own data dir.
enum SpoolServer {
    /// Job types: `noop` (/bin/true), `busy` (a CPU-bound Python loop, the same one the baseline
    /// runs) and `hold` (/bin/sleep: keeps the slot occupied without taking one of the machine's
    /// two cores away from the server and the load generator, as a GPU job would).
    static func configJSON(python: String) throws -> Data {
        let seconds: [String: Any] = ["type": "object", "properties": ["seconds": ["type": "number"]]]
        let types: [String: Any] = [
            "noop": ["command": ["/bin/true"], "timeout_s": 60],
            "busy": [
                "command": [python, "-c", "import time\nt=time.time()\nwhile time.time()-t < {input.seconds}: pass"],
                "timeout_s": 3600, "input_schema": seconds,
            ],
            "hold": ["command": ["/bin/sleep", "{input.seconds}"], "timeout_s": 7200, "input_schema": seconds],
        ]
        // Short graces: at the end of a scenario the `hold` job is still running, and the default
        // 30 s shutdown grace would make every stop wait (or be escalated to SIGKILL).
        let settings: [String: Any] = ["job_types": types, "shutdown_grace_s": 1, "kill_grace_s": 1]
        return try JSONSerialization.data(withJSONObject: settings, options: [.prettyPrinted, .sortedKeys])
    }

    static func launch(binary: String, in directory: String, python: String, extraArguments: [String]) throws -> ServerLaunch {
        let config = directory + "/spool.json"
        try configJSON(python: python).write(to: URL(fileURLWithPath: config))
        return ServerLaunch(
            label: "spool", executable: binary,
            arguments: ["serve", "--config", config, "--host", "127.0.0.1", "--port", "0",
                        "--data-dir", directory + "/data", "--slots", "1"] + extraArguments,
            workingDirectory: directory, logPath: directory + "/server.log")
    }
}
