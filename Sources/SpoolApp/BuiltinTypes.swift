import SpoolCore

/// Job types every server has without configuration.
public enum BuiltinTypes {
    /// `render`: the built-in path tracer, run as a child process (the `spool` binary
    /// re-executing itself as `spool render-job`). Input: width, height, samples, seed.
    public static func render(executable: String) -> JobType {
        let schema = try! InputSchema(.object([
            "type": .string("object"),
            "additionalProperties": .bool(false),
            "properties": .object([
                "width": .object(["type": .string("integer"), "minimum": .int(1), "maximum": .int(4096)]),
                "height": .object(["type": .string("integer"), "minimum": .int(1), "maximum": .int(4096)]),
                "samples": .object(["type": .string("integer"), "minimum": .int(1), "maximum": .int(10_000)]),
                "seed": .object(["type": .string("integer"), "minimum": .int(0)]),
            ]),
        ]))
        return JobType(name: "render", command: try! CommandTemplate([executable, "render-job"]),
                       timeoutSeconds: 900, maxAttempts: 2, inputSchema: schema)
    }
}
