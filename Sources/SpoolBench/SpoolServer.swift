import Foundation

/// How the harness starts Spool: a config file with the job types the scenarios submit, and
/// `spool serve` on 127.0.0.1, port 0, one slot, its own data dir.
enum SpoolServer {
    /// Job types: `noop` (/bin/true), `busy` (a CPU-bound Python loop, the same one the baseline
    /// runs), `hold` (/bin/sleep: keeps the slot occupied without taking one of the machine's
    /// two cores away from the server and the load generator, as a GPU job would), `stamp` (the
    /// compiled `Benchmarks/jobs/stamp.c`, writing to `input.file`) when it is available, and the
    /// scenario's own `extraTypes` (a JSON object of type definitions: the warm-worker types).
    static func configJSON(python: String, stampBinary: String?, extraTypes: String) throws -> Data {
        let seconds: [String: Any] = ["type": "object", "properties": ["seconds": ["type": "number"]]]
        var types: [String: Any] = [
            "noop": ["command": ["/bin/true"], "timeout_s": 60],
            "busy": [
                "command": [python, "-c", "import time\nt=time.time()\nwhile time.time()-t < {input.seconds}: pass"],
                "timeout_s": 3600, "input_schema": seconds,
            ],
            "hold": ["command": ["/bin/sleep", "{input.seconds}"], "timeout_s": 7200, "input_schema": seconds],
        ]
        if let stampBinary {
            let file: [String: Any] = ["type": "object", "required": ["file", "ms"],
                                       "properties": ["file": ["type": "string"], "ms": ["type": "integer"]]]
            types["stamp"] = ["command": [stampBinary, "{input.file}", "{input.ms}"], "timeout_s": 60, "input_schema": file]
        }
        if let extra = try JSONSerialization.jsonObject(with: Data(extraTypes.utf8)) as? [String: Any] {
            types.merge(extra) { _, new in new }
        }
        // Short graces: at the end of a scenario the `hold` job is still running, and the default
        // 30 s shutdown grace would make every stop wait (or be escalated to SIGKILL).
        let settings: [String: Any] = ["job_types": types, "shutdown_grace_s": 1, "kill_grace_s": 1]
        return try JSONSerialization.data(withJSONObject: settings, options: [.prettyPrinted, .sortedKeys])
    }

    /// A JSON object of job type definitions, for `extraTypes`.
    static func typesJSON(_ types: [String: Any]) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: types, options: [.sortedKeys]), as: UTF8.self)
    }

    /// A warm-worker type running the bench worker (`Benchmarks/workers/noop_worker.py`), which
    /// appends its per-job timestamps to `stamps` and sleeps `setupSeconds` before `ready`.
    static func workerType(python: String, script: String, stamps: String, setupSeconds: Double = 0,
                           maxJobsPerWorker: Int? = nil) -> [String: Any] {
        var type: [String: Any] = [
            "command": [python, script], "mode": "worker", "timeout_s": 60,
            "env": ["SPOOL_BENCH_STAMPS": stamps, "SPOOL_BENCH_SETUP_S": String(setupSeconds)],
        ]
        if let maxJobsPerWorker { type["max_jobs_per_worker"] = maxJobsPerWorker }
        return type
    }

    static func launch(binary: String, in directory: String, python: String, stampBinary: String?, extraTypes: String,
                       extraArguments: [String]) throws -> ServerLaunch {
        let config = directory + "/spool.json"
        try configJSON(python: python, stampBinary: stampBinary, extraTypes: extraTypes).write(to: URL(fileURLWithPath: config))
        return ServerLaunch(
            label: "spool", executable: binary,
            arguments: ["serve", "--config", config, "--host", "127.0.0.1", "--port", "0",
                        "--data-dir", directory + "/data", "--slots", "1"] + extraArguments,
            workingDirectory: directory, logPath: directory + "/server.log")
    }
}
