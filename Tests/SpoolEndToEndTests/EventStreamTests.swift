import AsyncHTTPClient
import Foundation
import NIOCore
import SpoolCore
@testable import SpoolBench
import Testing

/// SSE streams, replay with Last-Event-ID (after a reconnect and after a restart), queue ETA,
/// metrics and JSON logs — through the real binary.
@Suite(.serialized) struct EventStreamTests {
    func server(_ extra: [String: JSONValue] = [:]) async throws -> ServerHarness {
        let harness = try ServerHarness(config: .object([:]))
        try Data(Fixtures.config(scratch: harness.scratch, extra: extra).canonicalText.utf8).write(to: URL(fileURLWithPath: harness.configPath))
        try await harness.start()
        return harness
    }

    @Test func aJobStreamCarriesStateProgressLogAndOutputsThenEnds() async throws {
        let server = try await server()
        defer { Task { await server.stop() } }
        let id = try #require(try await server.submit("render", .object(["width": 32, "height": 24, "samples": 1])).json["id"]?.stringValue)
        let frames = try await server.frames("/v1/jobs/\(id)/events") { _ in false }
        let states = frames.filter { $0.event == "state" }.compactMap { $0.data["state"]?.stringValue }
        #expect(states == ["queued", "running", "succeeded"])
        #expect(frames.contains { $0.event == "progress" })
        #expect(frames.last?.event == "outputs")
        #expect(frames.last?.data["outputs"].map(\.canonicalText)?.contains("render.png") == true)
        #expect(frames.map(\.id) == frames.map(\.id).sorted(), "ids increase")
    }

    /// The `outputs` event lists at most 1,000 files; one that holds only some says so, as the
    /// outputs listing does (found by attacking the build: 1,000 of 1,005, unsaid, and a page
    /// showed them as all).
    @Test func anOutputsEventThatListsSomeOfTheFilesSaysSo() async throws {
        let script = #"i=0; while [ $i -lt {input.count} ]; do : > "$SPOOL_OUTPUT_DIR/f$i"; i=$((i+1)); done"#
        let server = try await server(["job_types": .object(["many": .object([
            "command": .array(["/bin/sh", "-c", .string(script)]),
            "input_schema": .object(["type": "object", "properties": .object(["count": .object(["type": "integer"])])]),
        ])])])
        defer { Task { await server.stop() } }
        for (count, listed, truncated) in [(1005, 1000, true), (3, 3, false)] {
            let id = try #require(try await server.submit("many", .object(["count": .int(Int64(count))])).json["id"]?.stringValue)
            let frames = try await server.frames("/v1/jobs/\(id)/events") { _ in false }
            let outputs = try #require(frames.last { $0.event == "outputs" })
            #expect(outputs.data["outputs"]?.arrayValue?.count == listed)
            #expect((outputs.data["truncated"] == .bool(true)) == truncated, "\(count) files: \(outputs.data["truncated"] ?? .null)")
        }
    }

    @Test func aClientThatReconnectsWithLastEventIDGetsWhatItMissedEvenAcrossARestart() async throws {
        let server = try await server()
        defer { Task { await server.stop() } }
        let first = try #require(try await server.submit("noop").json["id"]?.stringValue)
        let seen = try await server.frames("/v1/jobs/\(first)/events") { $0.contains { $0.data["state"] == "queued" } }
        let lastSeen = try #require(seen.last?.id)
        _ = try await server.waitFor(first, ["succeeded"])
        // The client was away while the job ran; and then the server restarts.
        await server.kill9()
        try await server.start()
        let replay = try await server.frames("/v1/jobs/\(first)/events", lastEventID: lastSeen) { _ in false }
        #expect(replay.first.map { $0.id > lastSeen } == true)
        #expect(replay.filter { $0.event == "state" }.compactMap { $0.data["state"]?.stringValue } == ["running", "succeeded"])

        // The global stream resumes the same way.
        let second = try #require(try await server.submit("noop").json["id"]?.stringValue)
        _ = try await server.waitFor(second, ["succeeded"])
        let all = try await server.frames("/v1/events", lastEventID: lastSeen) { frames in
            frames.contains { $0.data["job"] == .string(second) && $0.data["state"] == "succeeded" }
        }
        #expect(all.contains { $0.data["job"] == .string(first) && $0.data["state"] == "succeeded" })
    }

    /// A stream resumed with an id past the newest event (another server's, or from before a
    /// restore) goes on from now: a job's stream ends with the job (found by attacking the build:
    /// it never ended); an empty Last-Event-ID is none, not a 400.
    @Test func aStreamResumedPastTheNewestEventGoesOnFromNow() async throws {
        let server = try await server()
        defer { Task { await server.stop() } }
        let id = try #require(try await server.submit("sleep", .object(["seconds": 1])).json["id"]?.stringValue)
        let frames = try await server.frames("/v1/jobs/\(id)/events", lastEventID: 9_223_372_036_854_775_000, limit: .seconds(30)) { _ in false }
        #expect(frames.contains { $0.data["state"] == "succeeded" }, "\(frames)")
        let empty = try await server.frames("/v1/jobs/\(id)/events", headers: [("Last-Event-ID", "")], limit: .seconds(30)) { _ in false }
        #expect(empty.filter { $0.event == "state" }.compactMap { $0.data["state"]?.stringValue } == ["queued", "running", "succeeded"])
    }

    /// The event log keeps the newest events; a job's row lasts longer (its retention). The
    /// stream of a finished job whose events were pruned ended never (found by attacking the
    /// build: 200, then keep-alives for ever — a client following the job hung): it sends the
    /// job's final state, made from the job, and ends; resumed after that, it has nothing (204).
    @Test func theStreamOfAFinishedJobWhoseEventsWerePrunedEndsWithItsFinalState() async throws {
        let server = try await server()
        defer { Task { await server.stop() } }
        let id = try #require(try await server.submit("noop").json["id"]?.stringValue)
        _ = try await server.waitFor(id, ["succeeded"])
        try await Task.sleep(for: .milliseconds(20))   // the next job's events come a clock tick later
        let later = try #require(try await server.submit("noop").json["id"]?.stringValue)
        _ = try await server.waitFor(later, ["succeeded"])
        await server.kill9()
        // The log loses its oldest events: the first job's, all of them.
        let pruned = try await runProcess("/usr/bin/env", ["python3", "-c", """
            import sqlite3, sys
            db = sqlite3.connect(sys.argv[1])
            db.execute("DELETE FROM events WHERE job_id = ?", (sys.argv[2],))
            db.commit()
            """, server.dataDirectory + "/spool.sqlite", id])
        #expect(pruned.status == 0, "\(pruned.stderr)")
        try await server.start()
        let frames = try await server.frames("/v1/jobs/\(id)/events", limit: .seconds(30)) { _ in false }
        #expect(frames.map(\.event) == ["state"] && frames.first?.data["state"] == "succeeded", "\(frames)")
        let resumed = try await server.request(.GET, "/v1/jobs/\(id)/events", headers: [("Last-Event-ID", String(frames.last?.id ?? 0))])
        #expect(resumed.status == 204)
    }

    /// A job's stream that waits while other jobs make events sleeps until its own job moves.
    /// It once kept its cursor at its job's last event, so each event of another job woke it
    /// to find nothing, again and again, without suspending: two such streams hung a 2-core
    /// server (the contract test's GET timed out). Measured as the server's CPU time while the
    /// stream waits, which a spinning stream drives to a core's worth.
    @Test func aWaitingJobStreamSleepsThroughOtherJobsEvents() async throws {
        let server = try await server(["slots": 1])
        defer { Task { await server.stop() } }
        let blocker = try #require(try await server.submit("sleep", .object(["seconds": 4])).json["id"]?.stringValue)
        _ = try await server.waitFor(blocker, ["running"])
        let waiting = try #require(try await server.submit("noop").json["id"]?.stringValue)
        let (seen, seenSink) = AsyncStream<Void>.makeStream()
        let stream = Task {
            defer { seenSink.finish() }   // a stream that fails ends the wait below too
            return try await server.frames("/v1/jobs/\(waiting)/events") { frames in
                seenSink.yield()
                return frames.contains { $0.data["state"] == "succeeded" }
            }
        }
        for await _ in seen { break }   // the stream has sent the job's "queued" event and waits
        // Another job's events land past the waiting stream's cursor.
        _ = try await server.submit("noop")
        let before = try #require(ProcessStats.cpuSeconds(of: server.pid))
        try await Task.sleep(for: .seconds(2))
        let used = try #require(ProcessStats.cpuSeconds(of: server.pid)) - before
        #expect(used < 0.5, "the server used \(used) s of CPU in 2 s while only waiting")
        let received: [ServerHarness.Frame] = try await stream.value
        let states: [String] = received.filter { $0.event == "state" }.compactMap { $0.data["state"]?.stringValue }
        #expect(states == ["queued", "running", "succeeded"])
    }

    /// A stream sends a keep-alive comment 15 s after its last write, whatever else happens on
    /// the server (found by attacking the build: a queued job's stream on a server busy with
    /// other jobs' events sent nothing for as long as they came, and proxies cut it).
    @Test func aJobsStreamKeepsAliveWhileOtherJobsMakeEvents() async throws {
        let server = try await server()
        defer { Task { await server.stop() } }
        let waiting = try #require(try await server.submit("noop", extra: ["delay_s": 120]).json["id"]?.stringValue)
        let busy = Task {
            while !Task.isCancelled {
                _ = try? await server.submit("noop")
                try? await Task.sleep(for: .seconds(1))
            }
        }
        defer { busy.cancel() }
        let began = ContinuousClock.now
        let frames = try await server.frames("/v1/jobs/\(waiting)/events", limit: .seconds(40), comments: true) { frames in
            frames.contains { $0.event == ": keep-alive" }
        }
        #expect(frames.contains { $0.event == ": keep-alive" }, "\(frames)")
        #expect(ContinuousClock.now - began < .seconds(25), "a keep-alive 15 s after the last write: \(ContinuousClock.now - began)")
    }

    @Test func queuedJobsShowAPositionAndASaneETA() async throws {
        let server = try await server()
        defer { Task { await server.stop() } }
        // Teach it the run time of `sleep` jobs (2 s), then queue one behind a running one. The
        // running job's remaining time (2 s less the time it has run) keeps the ETA clear of 0
        // even when a loaded machine is slow to send the next submit.
        let warm = try #require(try await server.submit("sleep", .object(["seconds": 2])).json["id"]?.stringValue)
        _ = try await server.waitFor(warm, ["succeeded"])
        _ = try await server.submit("sleep", .object(["seconds": 2]))
        let third = try await server.submit("sleep", .object(["seconds": 2])).json
        let eta = try #require(third["eta"]?["start_in_s"]?.doubleValue, "201 includes the ETA: \(third.canonicalText)")
        #expect(third["position"] == 2 || third["position"] == 1)
        #expect(eta > 0.1 && eta < 6, "one 2 s job at most ahead, perhaps not started yet: \(eta) s")
        #expect((third["eta"]?["method"]?.stringValue ?? "").contains("median"))
    }

    @Test func metricsParseAndMove() async throws {
        let server = try await server()
        defer { Task { await server.stop() } }
        func sample(_ name: String, _ text: String) -> Double {
            text.split(separator: "\n").filter { $0.hasPrefix(name) }.compactMap { Double($0.split(separator: " ").last ?? "") }.reduce(0, +)
        }
        let before = String(decoding: try await server.request(.GET, "/metrics").body, as: UTF8.self)
        let id = try #require(try await server.submit("noop").json["id"]?.stringValue)
        _ = try await server.waitFor(id, ["succeeded"])
        let reply = try await server.request(.GET, "/metrics")
        let after = String(decoding: reply.body, as: UTF8.self)
        #expect(reply.header("Content-Type")?.hasPrefix("text/plain") == true)
        #expect(sample("spool_jobs_finished_total", after) == sample("spool_jobs_finished_total", before) + 1)
        #expect(after.contains("spool_job_run_seconds_bucket"))
        #expect(after.contains("spool_queue_depth"))
        for line in after.split(separator: "\n") where !line.hasPrefix("#") {
            #expect(Double(line.split(separator: " ").last ?? "") != nil, "unparsable sample: \(line)")
        }
    }

    @Test func jsonLogsAreOneObjectPerLine() async throws {
        let harness = try ServerHarness(config: .object(["job_types": .object(["noop": .object(["command": .array(["/bin/true"])])])]))
        try await harness.start(["--log-format", "json", "--log-level", "info"])
        let id = try #require(try await harness.submit("noop").json["id"]?.stringValue)
        _ = try await harness.waitFor(id, ["succeeded"])
        await harness.stop()
        let lines = try String(contentsOfFile: harness.scratch + "/server.log", encoding: .utf8).split(separator: "\n")
        #expect(!lines.isEmpty)
        for line in lines {
            let object = try JSONParser.parse(line.utf8)
            #expect(object["level"]?.stringValue != nil && object["message"]?.stringValue != nil, "\(line)")
        }
        #expect(lines.contains { $0.contains("job finished") && $0.contains(id) })
    }
}
