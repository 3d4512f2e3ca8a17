import SpoolCore

/// Job types every server has without configuration.
public enum BuiltinTypes {
    /// `render`: the built-in path tracer, run as a warm worker per slot (the `spool` binary
    /// re-executing itself as `spool render-worker`, speaking the worker protocol). Input:
    /// width, height, samples, seed, and the frame of a turntable (`frame`, or a job array's `item`).
    public static func render(executable: String) -> JobType {
        let schema = try! InputSchema(.object([
            "type": .string("object"),
            "additionalProperties": .bool(false),
            "properties": .object([
                "width": .object(["type": .string("integer"), "minimum": .int(1), "maximum": .int(4096)]),
                "height": .object(["type": .string("integer"), "minimum": .int(1), "maximum": .int(4096)]),
                "samples": .object(["type": .string("integer"), "minimum": .int(1), "maximum": .int(10_000)]),
                "seed": .object(["type": .string("integer"), "minimum": .int(0)]),
                // A turntable: the camera circles the scene every 240 frames. A job array's task
                // renders the frame its `item` names (found by attacking the build: the README's
                // `spool submit render … --array-range 1-240` was a 422, `item` not allowed).
                "frame": .object(["type": .string("integer"), "minimum": .int(0), "maximum": .int(1_000_000)]),
                "item": .object(["type": .string("integer"), "minimum": .int(0), "maximum": .int(1_000_000)]),
            ]),
        ]))
        var policy = WorkerPolicy()
        policy.maxJobsPerWorker = 500
        policy.maxRSSMegabytes = 1024
        policy.idleTimeoutSeconds = 600
        policy.heartbeatSeconds = 2
        return JobType(name: "render", command: try! CommandTemplate([executable, "render-worker"]),
                       timeoutSeconds: 900, maxAttempts: 2, inputSchema: schema, mode: .worker(policy))
    }
}
