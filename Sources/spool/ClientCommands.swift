import ArgumentParser
import Foundation
import SpoolCore
import SpoolExecutor
import NIOCore
import NIOHTTP1

struct SubmitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "submit", abstract: "Submit a job; with --wait, follow it to the end.")

    @Argument(help: "The job type, e.g. render.") var type: String
    @Option(help: "The job's input as JSON, e.g. '{\"width\": 640}'; @FILE reads it from a file.") var input: String = "{}"
    // Unconditional: a negative number is a value, not an option (`--priority -5`).
    @Option(parsing: .unconditional, help: "Higher runs first (default 0; negative runs after the rest).") var priority: Int?
    @Option(name: .customLong("timeout"), parsing: .unconditional, help: "Seconds before the job is stopped (at most the type's limit).") var timeout: Double?
    @Option(name: .customLong("idempotency-key"), help: "Resubmitting with the same key returns the first job.") var idempotencyKey: String?
    @Option(help: "Attempts in all if it fails (retry with exponential back-off and jitter).") var retry: Int?
    @Option(parsing: .unconditional, help: "With --retry: the first back-off's upper bound in seconds (default 1).") var backoff: Double?
    @Option(name: .customLong("retry-on"), help: "With --retry: failure reasons and/or exit codes that retry, e.g. timeout,75.") var retryOn: String?
    @Option(parsing: .unconditional, help: "Start no sooner than this many seconds from now.") var delay: Double?
    @Option(name: .customLong("at"), help: "Start no sooner than this UTC time (RFC 3339, e.g. 2026-12-24T18:00:00Z).") var runAt: String?
    @Option(name: .customLong("start-within"), parsing: .unconditional, help: "Cancel the job (reason deadline) if it has not started within this many seconds; refused at once if the queue's estimate says it cannot.") var startWithin: Double?
    @Option(name: .customLong("array-range"), help: "Make a job array with one task per number, e.g. 1-240 (each task's input gets item = the number).") var arrayRange: String?
    @Option(name: .customLong("array-items"), help: "Make a job array with one task per item of this JSON list (@FILE reads it from a file).") var arrayItems: String?
    @Flag(name: .customLong("fail-fast"), help: "With an array: cancel the other tasks once one fails.") var failFast = false
    @Option(help: "Reuse an identical job instead of running twice: queued (join one queued or running) or a number of seconds (also reuse one that succeeded that recently).") var dedup: String?
    @Option(name: .customLong("dedup-key"), help: "The identity for --dedup in place of the type and input.") var dedupKey: String?
    @Flag(help: "Wait for the job (or array) to finish, showing its progress; exit 2 if it does not succeed.") var wait = false
    @OptionGroup var server: ServerOptions

    func validate() throws {
        if retry == nil, backoff != nil || retryOn != nil { throw ValidationError("--backoff and --retry-on need --retry N") }
        if arrayRange != nil, arrayItems != nil { throw ValidationError("give --array-range or --array-items, not both") }
        if failFast, arrayRange == nil, arrayItems == nil { throw ValidationError("--fail-fast needs --array-range or --array-items") }
        if let dedup, dedup != "queued", Double(dedup).map({ !$0.isFinite }) ?? true { throw ValidationError("--dedup takes queued or a number of seconds") }
        // Not NaN or infinity, which no JSON can carry (found by attacking the build: the server
        // was sent them and answered that the body it got was not JSON).
        for (flag, value) in [("--timeout", timeout), ("--backoff", backoff), ("--delay", delay), ("--start-within", startWithin)] {
            if let value, !value.isFinite { throw ValidationError("\(flag) takes a number of seconds") }
        }
        // Checked here, with the command line's other mistakes (exit 64 and the usage).
        if arrayRange != nil { _ = try arraySpec() }
    }

    /// The `array` field from --array-range / --array-items.
    func arraySpec() throws -> JSONValue? {
        var spec: [String: JSONValue]
        if let arrayRange {
            let bounds = arrayRange.split(separator: "-", maxSplits: 1).compactMap { Int64($0.trimmingCharacters(in: .whitespaces)) }
            guard bounds.count == 2 || (bounds.count == 1 && !arrayRange.contains("-")) else {
                throw ValidationError("--array-range takes FIRST-LAST, e.g. 1-240")
            }
            spec = ["range": .array([.int(bounds[0]), .int(bounds.last!)])]
        } else if let arrayItems {
            spec = ["items": try parseJSONArgument(arrayItems, name: "--array-items")]
        } else {
            return nil
        }
        if failFast { spec["fail_fast"] = .bool(true) }
        return .object(spec)
    }

    func run() async throws {
        await clientCommand {
            let client = try server.client
            var body: [String: JSONValue] = ["type": .string(type), "input": try parseJSONArgument(input, name: "--input")]
            if let priority { body["priority"] = .int(Int64(priority)) }
            if let timeout { body["timeout_s"] = .double(timeout) }
            if let retry {
                var policy: [String: JSONValue] = ["max_attempts": .int(Int64(retry))]
                if let backoff { policy["backoff_s"] = .double(backoff) }
                if let retryOn {
                    policy["on"] = .array(retryOn.split(separator: ",").map { item in
                        let text = item.trimmingCharacters(in: .whitespaces)
                        return Int64(text).map(JSONValue.int) ?? .string(text)
                    })
                }
                body["retry"] = .object(policy)
            }
            if let delay { body["delay_s"] = .double(delay) }
            if let runAt { body["run_at"] = .string(runAt) }
            if let startWithin { body["start_within_s"] = .double(startWithin) }
            if let dedup { body["dedup"] = dedup == "queued" ? .string("queued") : .object(["succeeded_within_s": .double(Double(dedup)!)]) }
            if let dedupKey { body["dedup_key"] = .string(dedupKey) }
            let array = try arraySpec()
            if let array { body["array"] = array }
            // A key always (one of its own when none is given): a submit whose answer did not come in
            // time may have been stored, and sent again with the same key it is stored once (found by
            // attacking the build: the CLI said the server could not be reached, and the job ran).
            let key = idempotencyKey ?? "spool-cli-" + UUID().uuidString.lowercased()
            let (headers, reply): (HTTPHeaders, ByteBuffer)
            do {
                (_, headers, reply) = try await client.post("/v1/jobs", json: .object(body), headers: [("Idempotency-Key", key)])
            } catch let failure as SpoolClient.Failure where failure.timedOut {
                throw SpoolClient.Failure(description: failure.description + "; the job may have been stored: run the same command with "
                                          + "--idempotency-key \(key) to submit it at most once", exitCode: failure.exitCode)
            }
            // A job, or with --array-… the array; without --wait, just its id.
            let id = try JSONParser.parse(reply.readableBytesView)["id"]?.stringValue ?? ""
            if let reuse = headers.first(name: "Spool-Dedup") {
                StandardStreams.error("\(reuse) \(id): an identical request (--dedup)\n")
            }
            guard wait else { return print(id) }
            let succeeded: Bool
            if array != nil {
                let created = try client.decode(ArrayWire.self, reply)
                StandardStreams.error("submitted \(created.id) (\(created.size) tasks)\n")
                succeeded = try await followArray(created, client: client).state == "succeeded"
                // As for one job: every task's outputs, in task order (a failed task's are there too).
                struct Outputs: Decodable { struct File: Decodable { let url: String }; let outputs: [File]; let truncated: Bool? }
                let outputs = try client.decode(Outputs.self, try await client.getRidingOutRestarts("/v1/arrays/\(created.id)/outputs").2)
                for file in outputs.outputs { print(client.base + file.url) }
                if outputs.truncated == true { warnSomeOutputs(listed: outputs.outputs.count, of: created.id) }
            } else {
                StandardStreams.error("submitted \(id)\n")
                let final = try await follow(try client.decode(JobWire.self, reply), client: client)
                try await printOutputs(of: final, client: client)
                succeeded = final.state == "succeeded"
            }
            if !succeeded { throw ExitCode(2) }
        }
    }
}

func printOutputs(of job: JobWire, client: SpoolClient) async throws {
    let (files, truncated) = try await client.outputs(of: job.id)
    for output in files { print(client.base + output.url) }
    if truncated { warnSomeOutputs(listed: files.count, of: job.id) }
}

/// The list printed holds only some of the outputs (found by attacking the build: `--wait`
/// printed 10,000 of 10,005 and said nothing).
func warnSomeOutputs(listed: Int, of id: String) {
    StandardStreams.error("spool: the server lists only some of \(id)'s outputs (\(listed) above); fetch the others by name (GET …/outputs/NAME)\n")
}

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show a job.")
    @Argument(help: "The job id.") var id: String
    @Flag(help: "Print the raw JSON.") var json = false
    @Flag(help: "List every attempt: how it ended, and when a retry was due.") var attempts = false
    @OptionGroup var server: ServerOptions

    func run() async throws {
        requireID(id)
        await clientCommand {
            let client = try server.client
            if attempts { return try await printAttempts(client) }
            if id.hasPrefix("arr_") {
                let (_, _, body) = try await client.get("/v1/arrays/\(id)")
                if json { print(String(buffer: body)); return }
                print(ArrayWire.line(try client.decode(ArrayWire.self, body)))
                return
            }
            let (_, _, body) = try await client.get("/v1/jobs/\(id)")
            if json { print(String(buffer: body)); return }
            let job = try client.decode(JobWire.self, body)
            var lines = ["id:        \(job.id)", "type:      \(job.type)",
                         "state:     \(job.state)" + (job.reason.map { " (\($0))" } ?? "") + (job.cancelRequested == true ? " (stopping: a cancel was asked)" : "")]
            // Which task of which array, and who canceled it (found by attacking the build: an
            // operator could not tell which frame failed without --json).
            if let array = job.array { lines.append("array:     \(array.id) task \(array.index)") }
            if let by = job.canceledBy { lines.append("canceled by: \(by == "fail_fast" ? "fail-fast (another task of its array failed)" : by)") }
            if let position = job.position { lines.append("position:  \(position)") }
            if let eta = job.eta, job.state == "queued" {
                lines.append("starts in: " + (eta.startInSeconds < 1 ? "under 1 s" : "about \(formatSeconds(eta.startInSeconds))") + " (\(eta.method))")
            }
            if let waiting = job.waitingReason { lines.append("waiting:   \(waiting)") }
            if let notBefore = job.notBefore { lines.append("not before: \(notBefore)") }
            if let startBy = job.startBy { lines.append("start by:  \(startBy) (else canceled)") }
            if let retry = job.retry { lines.append("retry:     \(retry.canonicalText)") }
            if let owner = job.owner { lines.append("owner:     \(owner)") }
            if let node = job.node { lines.append("node:      \(node)") }
            if let progress = job.progress {
                lines.append("progress:  \(Int(progress.fraction * 100))%" + (progress.message.map { " \($0)" } ?? ""))
            }
            lines.append("priority:  \(job.priority)    attempts: \(job.attempts)" + (job.slot.map { "    slot: \($0)" } ?? ""))
            lines.append("created:   \(job.createdAt)")
            if let started = job.startedAt { lines.append("started:   \(started)") }
            if let finished = job.finishedAt { lines.append("finished:  \(finished)") }
            if let code = job.exitCode { lines.append("exit code: \(code)") }
            if let signal = job.signal { lines.append("signal:    \(signal)") }
            if let error = job.error { lines.append("error:     \(error)") }
            // A field's own line breaks are indented under it: a job's progress message or error
            // cannot print a line that looks like another field (found by attacking the build: a
            // progress message "…\nstate:     succeeded" did).
            print(lines.map { $0.terminalSafe.replacingOccurrences(of: "\n", with: "\n           ") }.joined(separator: "\n"))
        }
    }

    private func printAttempts(_ client: SpoolClient) async throws {
        let (_, _, body) = try await client.get("/v1/jobs/\(id)/attempts")
        if json { print(String(buffer: body)); return }
        let list = try JSONParser.parse(body.readableBytesView)
        let attempts = list["attempts"]?.arrayValue ?? []
        if attempts.isEmpty { StandardStreams.error("no attempts yet\n") }
        for attempt in attempts {
            var line = "#\(attempt["attempt"]?.intValue ?? 0)  \(attempt["state"]?.stringValue ?? "?")"
            if let reason = attempt["reason"]?.stringValue { line += " (\(reason))" }
            if attempt["counted"]?.boolValue == false { line += " (handed back, not counted)" }
            if let slot = attempt["slot"]?.intValue { line += "  slot \(slot)" }
            if let started = attempt["started_at"]?.stringValue { line += "  started \(started)" }
            if let ended = attempt["ended_at"]?.stringValue { line += "  ended \(ended)" }
            if let retryAt = attempt["retry_at"]?.stringValue { line += "  retry at \(retryAt)" }
            if let error = attempt["error"]?.stringValue { line += "\n    \(error.terminalSafe)" }
            print(line.terminalSafe)
        }
    }
}

struct ListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List jobs, or job arrays, newest first.")
    @Option(help: "Only jobs in this state (queued, running, succeeded, failed, canceled).") var status: String?
    @Option(help: "Only jobs of this type.") var type: String?
    @Option(help: "Only jobs submitted alone (none), or only the tasks of this array (arr_…).") var array: String?
    @Option(help: "Only this tenant's (a token's name; an administrator's token may name any).") var owner: String?
    @Flag(help: "List job arrays instead, with their progress.") var arrays = false
    @Option(help: "How many (1-500, default 20).") var limit: Int = 20
    @Option(help: "Continue after a previous page (its next cursor).") var cursor: String?
    @OptionGroup var server: ServerOptions

    func validate() throws {
        if arrays, status != nil || array != nil { throw ValidationError("--arrays takes --type, --owner, --limit and --cursor only") }
    }

    func run() async throws {
        await clientCommand {
            var query = ["limit=\(limit)"]
            if let status { query.append("status=\(status)") }
            if let type { query.append("type=\(type.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed) ?? type)") }
            if let array { query.append("array=\(array.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? array)") }
            if let owner { query.append("owner=\(owner.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? owner)") }
            if let cursor { query.append("cursor=\(cursor)") }
            let client = try server.client
            if arrays {
                struct Page: Decodable { let arrays: [ArrayWire]; let next_cursor: String? }
                let page = try client.decode(Page.self, try await client.get("/v1/arrays?" + query.joined(separator: "&")).2)
                if page.arrays.isEmpty { StandardStreams.error("no arrays\n") }
                for array in page.arrays { print(ArrayWire.line(array)) }
                if let next = page.next_cursor { StandardStreams.error("more: the same command with --cursor \(next)\n") }
                return
            }
            struct Page: Decodable { let jobs: [JobWire]; let next_cursor: String? }
            let page = try client.decode(Page.self, try await client.get("/v1/jobs?" + query.joined(separator: "&")).2)
            // Columns as wide as their longest value: a type name is never cut.
            let typeWidth = max(4, page.jobs.map(\.type.count).max() ?? 0)
            let states = page.jobs.map { $0.state + ($0.reason.map { "(\($0))" } ?? "") }
            let stateWidth = max(5, states.map(\.count).max() ?? 0)
            func column(_ text: String, _ width: Int) -> String { text.padding(toLength: width, withPad: " ", startingAt: 0) }
            // With array tasks among them, which task each is (found by attacking the build: `list
            // --array … --status failed` did not say which frames failed).
            let tasks = page.jobs.contains { $0.array != nil }
            let indexWidth = max(5, page.jobs.compactMap { $0.array.map { String($0.index).count } }.max() ?? 0)
            if !page.jobs.isEmpty {
                print(([column("ID", 30)] + (tasks ? [column("INDEX", indexWidth)] : []) + [column("TYPE", typeWidth), column("STATE", stateWidth), "CREATED"])
                    .joined(separator: "  "))
            } else {
                StandardStreams.error("no jobs\n")
            }
            for (job, state) in zip(page.jobs, states) {
                let index = tasks ? [column(job.array.map { String($0.index) } ?? "-", indexWidth)] : []
                print(([column(job.id, 30)] + index + [column(job.type, typeWidth), column(state, stateWidth), job.createdAt]).joined(separator: "  "))
            }
            if let next = page.next_cursor { StandardStreams.error("more: the same command with --cursor \(next)\n") }
        }
    }
}

struct LogsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "logs", abstract: "Print a job's stdout and stderr.")
    @Argument(help: "The job id.") var id: String
    @Flag(help: "Keep printing as the job writes, until it finishes.") var follow = false
    @OptionGroup var server: ServerOptions

    func run() async throws {
        requireID(id, arrays: false)
        await clientCommand {
            let client = try server.client
            var offset = 0
            var answered = false   // a restart is ridden out once the server has answered (not a wrong --server)
            while true {
                let path = "/v1/jobs/\(id)/logs?offset=\(offset)"
                let (_, headers, body) = follow && answered ? try await client.getRidingOutRestarts(path) : try await client.get(path)
                answered = true
                if headers.first(name: "Spool-Log-Trimmed") != nil {
                    StandardStreams.error("spool: the log was cut at its head since (a job run again keeps max_attempts + 2 runs' worth); what is left follows\n")
                }
                if body.readableBytes > 0 { StandardStreams.output(body.readableBytesView) }
                offset = headers.first(name: "Spool-Next-Offset").flatMap(Int.init) ?? offset + body.readableBytes
                guard follow else { return }
                if body.readableBytes == 0 {
                    let job = try client.decode(JobWire.self, try await client.getRidingOutRestarts("/v1/jobs/\(id)").2)
                    if job.isTerminal {
                        // One last read: the job may have written between the two requests.
                        let (_, _, rest) = try await client.get("/v1/jobs/\(id)/logs?offset=\(offset)")
                        StandardStreams.output(rest.readableBytesView)
                        return
                    }
                    try await Task.sleep(for: .milliseconds(300))
                }
            }
        }
    }
}

struct OutputsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "outputs", abstract: "List a job's output files, or download them.")
    @Argument(help: "The job id.") var id: String
    @Option(help: "Download every output into this directory.") var download: String?
    @OptionGroup var server: ServerOptions

    func run() async throws {
        requireID(id, arrays: false)
        await clientCommand {
            let client = try server.client
            let (outputs, truncated) = try await client.outputs(of: id)
            let partial = SpoolClient.Failure(description: "the server lists only some of \(id)'s outputs (\(outputs.count)): the rest were "
                                              + (download == nil ? "not listed" : "not downloaded")
                                              + " (past 10,000 files, fetch them by name; names that are not UTF-8, or files the server cannot read, it cannot serve;"
                                              + " with a shared store, files past shared_file_limit_bytes stay on the node that ran the job, as the end of its log says)")
            guard let download else {
                // The job chose the names: its control characters are written out (found in review).
                for output in outputs { print("\(output.name.terminalSafe)\t\(output.size)\t\(output.content_type)\t\(client.base + output.url)") }
                if truncated { throw partial }
                return
            }
            let interrupts = PartialDownload.removedOnInterrupt()
            defer { for source in interrupts { source.cancel() } }
            for output in outputs {
                // A name is relative and stays inside the folder (a server could name "../x").
                let parts = output.name.split(separator: "/", omittingEmptySubsequences: false)
                guard !output.name.hasPrefix("/"), !parts.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) else {
                    throw SpoolClient.Failure(description: "the server named an output \"\(output.name)\", which would land outside \(download); nothing was written for it")
                }
                let destination = URL(fileURLWithPath: download).appendingPathComponent(output.name)
                try FileManager.default.createDirectory(at: destination.deletingLastPathComponent(), withIntermediateDirectories: true)
                try await client.download(output.url, to: destination)
                print(destination.path.terminalSafe)
            }
            if truncated { throw partial }
        }
    }
}

/// A job array as `/v1/arrays/{id}` shows it (the fields the CLI prints).
struct ArrayWire: Decodable {
    struct ETA: Decodable {
        var last_start_in_s: Double
        var done_in_s: Double?
    }

    var id: String
    var type: String
    var state: String
    var size: Int
    var counts: [String: Int]
    var progress: Double
    var eta: ETA?

    var isTerminal: Bool { ["succeeded", "failed", "canceled"].contains(state) }

    /// One line with a bar: `arr_…  render  running  [########............] 40%  96/240 done, 2 running, 1 failed  ~3 min left`.
    static func line(_ array: ArrayWire) -> String {
        let filled = Int((array.progress * 20).rounded(.down))
        var text = "\(array.id)  \(array.type)  \(array.state)  [" + String(repeating: "#", count: filled)
            + String(repeating: ".", count: 20 - filled) + "] \(Int((array.progress * 100).rounded(.down)))%"
        let done = ["succeeded", "failed", "canceled"].reduce(0) { $0 + array.counts[$1, default: 0] }
        var parts = ["\(done)/\(array.size) done"]
        for state in ["running", "failed", "canceled"] where array.counts[state, default: 0] > 0 {
            parts.append("\(array.counts[state]!) \(state)")
        }
        text += "  " + parts.joined(separator: ", ")
        if !array.isTerminal, let left = array.eta?.done_in_s { text += left < 1 ? "  under 1 s left" : "  ~\(formatSeconds(left)) left" }
        return text
    }
}
