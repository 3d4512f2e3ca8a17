import Foundation
import SpoolCore

/// The `job_types` setting: each type's definition checked and turned into a `JobType` (its
/// command, limits, retry and dedup rules, input schema, environment and working directory),
/// and a worker type's `WorkerPolicy`.
extension ServerConfiguration {
    static func jobType(_ name: String, _ definition: JSONValue, source: String, baseDirectory: String) throws(ConfigurationError) -> JobType {
        let path = "\(source): job_types.\(name)"
        guard JobType.isValidName(name) else { throw ConfigurationError("\(path): a type name may use \(JobType.namePattern)") }
        guard case .object(let fields) = definition else { throw ConfigurationError("\(path) must be an object") }
        if let unknown = fields.keys.filter({ !jobTypeKeys.contains($0) }).sorted().first {
            throw ConfigurationError("\(path): unknown key \"\(unknown)\" (known: \(jobTypeKeys.sorted().joined(separator: ", ")))")
        }
        guard case .array(let argv)? = fields["command"], !argv.isEmpty, argv.allSatisfy({ $0.stringValue != nil }) else {
            throw ConfigurationError("\(path).command must be a non-empty list of strings (an argv, run without a shell)")
        }
        // An argument reaches exec as a C string: a NUL would cut it there, silently.
        if argv.contains(where: { $0.stringValue?.contains("\u{0}") == true }) {
            throw ConfigurationError("\(path).command: an argument cannot hold a NUL character (exec would cut it there)")
        }
        let command: CommandTemplate
        do { command = try CommandTemplate(argv.compactMap(\.stringValue)) } catch {
            throw ConfigurationError("\(path).command: \(error)")
        }
        var type = JobType(name: name, command: command)
        if let timeout = fields["timeout_s"] {
            guard let seconds = timeout.doubleValue, seconds > 0, seconds <= 7 * 86_400 else {
                throw ConfigurationError("\(path).timeout_s must be a number of seconds greater than 0 (at most a week)")
            }
            type.timeoutSeconds = seconds
        }
        if let attempts = fields["max_attempts"] {
            guard let count = attempts.intValue, (1...100).contains(count) else {
                throw ConfigurationError("\(path).max_attempts must be an integer from 1 to 100")
            }
            type.maxAttempts = Int(count)
        }
        if let retry = fields["retry"], retry != .null {
            do { type.retry = try RetryPolicy(json: retry, what: "job_types.\(name).retry") } catch {
                throw ConfigurationError("\(source): \(error)")
            }
        }
        if let dedup = fields["dedup"], dedup != .null {
            do { type.dedup = try Dedup(json: dedup, what: "job_types.\(name).dedup") } catch {
                throw ConfigurationError("\(source): \(error)")
            }
        }
        if let schema = fields["input_schema"] {
            do { type.inputSchema = try InputSchema(schema, at: "input_schema") } catch {
                throw ConfigurationError("\(path).\(error)")
            }
        }
        if let environment = fields["env"] {
            guard case .object(let variables) = environment, variables.values.allSatisfy({ $0.stringValue != nil }) else {
                throw ConfigurationError("\(path).env must map variable names to strings")
            }
            // NAME=value is how the environment is passed: a name with `=` (or empty), or a NUL
            // anywhere, cannot be, and every job of the type would fail to start.
            if let bad = variables.first(where: { name, value in
                name.isEmpty || name.contains("=") || name.contains("\u{0}") || value.stringValue?.contains("\u{0}") == true
            }) {
                throw ConfigurationError("\(path).env: \"\(bad.key)\" cannot be passed to a process (a name must be non-empty, "
                                         + "without \"=\"; no NUL in a name or value)")
            }
            type.environment = variables.compactMapValues(\.stringValue)
        }
        switch fields["mode"] {
        case nil, .string("process")?:
            if let stray = fields.keys.filter(workerKeys.contains).sorted().first {
                throw ConfigurationError("\(path).\(stray) only applies with \"mode\": \"worker\"")
            }
        case .string("worker")?:
            guard command.referencedKeys.isEmpty else {
                throw ConfigurationError("\(path).command: a worker's command is started once per slot, so it cannot use {input.…} placeholders (the worker gets each job's input over the protocol)")
            }
            type.mode = .worker(try workerPolicy(fields, path: path))
        default:
            throw ConfigurationError("\(path).mode must be \"process\" (a fresh process per job) or \"worker\" (a warm worker per slot)")
        }
        if let directory = fields["working_dir"] {
            guard let text = directory.stringValue, !text.isEmpty else {
                throw ConfigurationError("\(path).working_dir must be a directory path")
            }
            // Relative to the config file, so a config can sit beside the code it runs.
            type.workingDirectory = text.hasPrefix("/") ? text
                : URL(fileURLWithPath: text, relativeTo: URL(fileURLWithPath: baseDirectory, isDirectory: true)).standardizedFileURL.path
        }
        return type
    }

    static func workerPolicy(_ fields: [String: JSONValue], path: String) throws(ConfigurationError) -> WorkerPolicy {
        var policy = WorkerPolicy()
        func count(_ key: String, _ range: ClosedRange<Int64>) throws(ConfigurationError) -> Int? {
            guard let value = fields[key] else { return nil }
            guard let number = value.intValue, range.contains(number) else {
                throw ConfigurationError("\(path).\(key) must be an integer from \(range.lowerBound) to \(range.upperBound)")
            }
            return Int(number)
        }
        func seconds(_ key: String) throws(ConfigurationError) -> Double? {
            guard let value = fields[key] else { return nil }
            guard let number = value.doubleValue, number > 0, number <= 86_400 else {
                throw ConfigurationError("\(path).\(key) must be a number of seconds greater than 0")
            }
            return number
        }
        policy.maxJobsPerWorker = try count("max_jobs_per_worker", 1...1_000_000_000)
        policy.maxRSSMegabytes = try count("max_rss_mb", 1...10_000_000)
        policy.maxVRAMMegabytes = try count("max_vram_mb", 1...10_000_000)
        policy.vramGrowthMegabytes = try count("vram_growth_mb", 1...10_000_000)
        policy.idleTimeoutSeconds = try seconds("idle_timeout_s")
        if let heartbeat = try seconds("heartbeat_s") {
            // A worker cannot promise a beat much faster (found by attacking the build: 0.0001 s
            // lost every job as worker_lost, "0.0 s apart").
            guard heartbeat >= 0.1 else { throw ConfigurationError("\(path).heartbeat_s must be a number of seconds from 0.1 to 86400") }
            policy.heartbeatSeconds = heartbeat
        }
        if let setup = try seconds("setup_timeout_s") { policy.setupTimeoutSeconds = setup }
        if let failures = try count("max_setup_failures", 1...1000) { policy.maxSetupFailures = failures }
        return policy
    }
}
