import Foundation
import SpoolCore

/// Job types the end-to-end tests run. Each records what it saw itself (start/end times,
/// overlap detected through an flock the kernel drops when a holder dies), so the checks do
/// not take the server's word for it.
enum Fixtures {
    static func config(scratch: String, extra: [String: JSONValue] = [:]) -> JSONValue {
        // `gated` jobs do not end before the test creates the `gate` file: a step that must
        // happen while the job runs (a kill of the server) does not race the job's end.
        func stampScript(gated: Bool) -> String {
            """
            exec 9>>"$LOCK"
            flock -n 9 || echo "OVERLAP {input.n}" >> "$STAMPS"
            echo "start {input.n} $(date +%s%N)" >> "$STAMPS"
            \(gated ? "while [ ! -e \"$GATE\" ]; do sleep 0.02; done" : "")
            sleep {input.sleep}
            echo "end {input.n} $(date +%s%N)" >> "$STAMPS"
            """
        }
        let stampEnv = ["STAMPS": scratch + "/stamps.txt", "LOCK": scratch + "/slot.lock", "GATE": gate(in: scratch)]
        let integer: JSONValue = .object(["type": "integer", "minimum": 0])
        let seconds: JSONValue = .object(["type": "number", "minimum": 0, "maximum": 600])
        func type(_ argv: [String], timeout: Double = 300, attempts: Int = 1, schema: [String: JSONValue]? = nil,
                  env: [String: String] = [:]) -> JSONValue {
            var definition: [String: JSONValue] = [
                "command": .array(argv.map(JSONValue.string)), "timeout_s": .double(timeout), "max_attempts": .int(Int64(attempts)),
            ]
            if let schema {
                definition["input_schema"] = .object(["type": "object", "required": .array(schema.keys.sorted().map(JSONValue.string)),
                                                      "properties": .object(schema)])
            }
            if !env.isEmpty { definition["env"] = .object(env.mapValues(JSONValue.string)) }
            return .object(definition)
        }
        var settings: [String: JSONValue] = [
            "kill_grace_s": 1,
            "job_types": .object([
                "stamp": type(["/bin/sh", "-c", stampScript(gated: false)], attempts: 2, schema: ["n": integer, "sleep": seconds], env: stampEnv),
                "gated-stamp": type(["/bin/sh", "-c", stampScript(gated: true)], attempts: 2, schema: ["n": integer, "sleep": seconds],
                                    env: stampEnv),
                "busy": type(["/usr/bin/python3", "-c", "import time\nend = time.time() + {input.seconds}\nwhile time.time() < end: pass"],
                             schema: ["seconds": seconds]),
                "sleep": type(["sleep", "{input.seconds}"], schema: ["seconds": seconds]),
                "fail": type(["/bin/sh", "-c", "echo failing; exit {input.code}"], schema: ["code": integer]),
                "crash": type(["/bin/sh", "-c", "kill -SEGV $$"]),
                "hang": type(["/bin/sh", "-c", "sleep 300 & echo $! > \"$SPOOL_OUTPUT_DIR/grandchild\"; wait"], timeout: 1),
                "noop": type(["/bin/true"]),
                // Exits 75 (EX_TEMPFAIL) until its attempt reaches `succeed_on`.
                "flaky": type(["/bin/sh", "-c", "echo attempt $SPOOL_ATTEMPT; [ \"$SPOOL_ATTEMPT\" -ge {input.succeed_on} ] || exit 75"],
                              schema: ["succeed_on": integer]),
                // A task of a job array: writes its index to an output named by its item; fails on `fail_on`.
                "frame": type(["/bin/sh", "-c", "echo $SPOOL_ARRAY_INDEX $SPOOL_ARRAY_ID > \"$SPOOL_OUTPUT_DIR/frame-{input.item}.txt\"; sleep {input.sleep}; [ {input.item} != {input.fail_on} ] || exit 3"],
                              schema: ["item": integer, "fail_on": .object(["type": "integer"]), "sleep": seconds]),
            ]),
        ]
        settings.merge(extra) { _, new in new }
        return .object(settings)
    }

    /// The file whose creation lets `gated-stamp` jobs end.
    static func gate(in scratch: String) -> String { scratch + "/gate" }

    struct Stamp: Equatable {
        var kind: String
        var n: Int
        var nanoseconds: Int64
    }

    static func stamps(in scratch: String) throws -> [Stamp] {
        guard FileManager.default.fileExists(atPath: scratch + "/stamps.txt") else { return [] }
        return try String(contentsOfFile: scratch + "/stamps.txt", encoding: .utf8).split(separator: "\n").map { line in
            let parts = line.split(separator: " ")
            return Stamp(kind: String(parts[0]), n: Int(parts[1]) ?? -1, nanoseconds: parts.count > 2 ? Int64(parts[2]) ?? 0 : 0)
        }
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
}

extension JSONValue: ExpressibleByBooleanLiteral, ExpressibleByFloatLiteral {
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
}
