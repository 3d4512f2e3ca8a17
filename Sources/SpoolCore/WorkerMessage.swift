import Foundation

/// A message from a warm worker (protocol version 2, see docs/worker-protocol.md).
public enum WorkerMessage: Sendable, Equatable {
    case ready(info: JSONValue?)
    case heartbeat
    case progress(job: String, JobProgress, preview: String?)
    case log(job: String, line: String)
    case output(job: String, name: String)
    case succeeded(job: String, result: JSONValue?)
    case failed(job: String, error: String)
    /// Well-formed, of a type this server does not know: ignored.
    case unknown(type: String)

    /// `note`: told of what was read otherwise than sent (a fraction outside 0…1, clamped).
    public init(line: some Collection<UInt8>, note: (String) -> Void = { _ in }) throws(JobMessage.Malformed) {
        try JobMessage.checkLength(line)
        // Half a surrogate pair reads as U+FFFD: a worker in Python that sends a file name as
        // `json.dumps` writes it loses a character, not its whole `succeeded` (found by attacking
        // the build: the line was dropped, and the job ran on to its timeout).
        let value: JSONValue
        do { value = try JSONParser.parse(line, replacingLoneSurrogates: true) } catch {
            throw JobMessage.Malformed(description: "not valid JSON (\(error))")
        }
        guard case .object(let fields) = value, let type = fields["type"]?.stringValue
        else { throw JobMessage.Malformed(description: "not a JSON object with a \"type\"") }
        func text(_ key: String) throws(JobMessage.Malformed) -> String {
            guard let value = fields[key]?.stringValue else {
                throw JobMessage.Malformed(description: "a \(type) message needs a string \"\(key)\"")
            }
            return value
        }
        switch type {
        case "ready": self = .ready(info: fields["info"])
        case "heartbeat": self = .heartbeat
        case "progress":
            guard let fraction = fields["fraction"]?.doubleValue, fraction.isFinite else {
                throw JobMessage.Malformed(description: "a progress message needs a numeric \"fraction\" between 0 and 1")
            }
            if let said = JobMessage.rangeNote(fraction) { note(said) }
            self = .progress(job: try text("job"), JobProgress(fraction: fraction, message: fields["message"]?.stringValue.map { String($0.prefix(500)) }),
                             preview: fields["preview"]?.stringValue)
        case "log": self = .log(job: try text("job"), line: try text("line"))
        case "output": self = .output(job: try text("job"), name: try text("name"))
        case "succeeded":
            let result = fields["result"]
            self = .succeeded(job: try text("job"), result: result == .null ? nil : result)
        case "failed": self = .failed(job: try text("job"), error: fields["error"]?.stringValue ?? "the worker reported a failure")
        default: self = .unknown(type: type)
        }
    }
}

/// A command to a warm worker.
public enum WorkerCommand: Sendable, Equatable {
    /// `array`: for a task of a job array, its array and index (`array_id`, `array_index` on the wire).
    case job(id: JobID, input: JSONValue, inputFile: String, outputDirectory: String, attempt: Int, timeoutSeconds: Double,
             array: ArrayMembership? = nil)
    case cancel(JobID)
    case shutdown

    /// The line written to `$SPOOL_COMMANDS`.
    public var line: String {
        let value: JSONValue = switch self {
        case .job(let id, let input, let inputFile, let outputDirectory, let attempt, let timeout, let array):
            .object(["type": .string("job"), "job": .string(id.rawValue), "input": input, "input_file": .string(inputFile),
                     "output_dir": .string(outputDirectory), "attempt": .int(Int64(attempt)), "timeout_s": .double(timeout)]
                .merging(array.map { ["array_id": .string($0.id), "array_index": .int($0.index)] } ?? [:]) { first, _ in first })
        case .cancel(let id): .object(["type": .string("cancel"), "job": .string(id.rawValue)])
        case .shutdown: .object(["type": .string("shutdown")])
        }
        return value.canonicalText + "\n"
    }
}
