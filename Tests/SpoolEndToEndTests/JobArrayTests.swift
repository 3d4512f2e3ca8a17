import Foundation
import SpoolCore
import Testing

/// Job arrays through the real `spool serve`: one submit, N ordinary tasks, the array as what
/// they add up to, every task's outputs, cancel of the rest, fail-fast, and delete.
@Suite(.serialized) struct JobArrayTests {
    func server() async throws -> ServerHarness { try await ServerHarness.started(slots: 2) }

    func waitForArray(_ server: ServerHarness, _ id: String, _ done: @escaping @Sendable (JSONValue) -> Bool) async throws -> JSONValue {
        try await withDeadline(.seconds(60), "array \(id)") {
            while true {
                let terminal: Set<String> = ["succeeded", "failed", "canceled"]
                let array = try await server.request(.GET, "/v1/arrays/\(id)").json
                if done(array) { return array }
                if terminal.contains(array["state"]?.stringValue ?? "") {
                    throw HarnessError("array \(id) ended \(array["state"]?.stringValue ?? "?") without reaching what the test waits for")
                }
                // Held by the server until a task that has not finished changes state (a long-poll), then look again.
                let tasks = try await server.request(.GET, "/v1/arrays/\(id)/tasks?limit=500").json["tasks"]?.arrayValue ?? []
                if let open = tasks.first(where: { !terminal.contains($0["state"]?.stringValue ?? "") }), let task = open["id"]?.stringValue {
                    _ = try await server.request(.GET, "/v1/jobs/\(task)?wait=1")
                }
            }
        }
    }

    /// Submits an array of 30-s frames over `range` and returns its id once both slots run one.
    func slowArray(_ server: ServerHarness, _ range: ClosedRange<Int>) async throws -> String {
        let reply = try await server.submit("frame", .object(["fail_on": -1, "sleep": 30]),
                                            extra: ["array": .object(["range": .array([.int(Int64(range.lowerBound)), .int(Int64(range.upperBound))])])])
        let id = try #require(reply.json["id"]?.stringValue)
        _ = try await waitForArray(server, id) { $0["counts"]?["running"] == .int(2) }
        return id
    }

    /// Fail-fast holds however a task fails: tasks failed by a crash of the server (`interrupted`,
    /// found by the restart, their one attempt used) cancel the rest as an exit code does (found
    /// by attacking the build: the restart ran the queued tasks).
    @Test func tasksFailedByACrashStillCancelTheRestOfAFailFastArray() async throws {
        let server = try await server()
        defer { Task { await server.stop() } }
        let reply = try await server.submit("frame", .object(["fail_on": -1, "sleep": 30]),
                                            extra: ["array": .object(["range": .array([1, 5]), "fail_fast": true])])
        let id = try #require(reply.json["id"]?.stringValue)
        _ = try await waitForArray(server, id) { $0["counts"]?["running"] == .int(2) }
        await server.kill9()
        try await server.start(["--slots", "2"])
        let ended = try await waitForArray(server, id) { ["succeeded", "failed", "canceled"].contains($0["state"]?.stringValue) }
        #expect(ended["state"] == "failed" && ended["counts"]?["failed"] == .int(2) && ended["counts"]?["canceled"] == .int(3), "\(ended)")
        let tasks = try await server.request(.GET, "/v1/arrays/\(id)/tasks").json["tasks"]?.arrayValue ?? []
        #expect(tasks.filter { $0["state"] == "failed" }.allSatisfy { $0["reason"] == "interrupted" }, "\(tasks)")
        #expect(tasks.filter { $0["state"] == "canceled" }.allSatisfy { $0["canceled_by"] == "fail_fast" && $0["attempts"] == .int(0) }, "\(tasks)")
    }

    /// With SQLite an array's cancel and delete go a chunk of tasks per transaction: one that a
    /// crash cut short (its record left in `array_operations`, as a kill -9 between two chunks
    /// leaves it) is finished at the next start, before any task runs (found by attacking the
    /// build: the array read running, and the tasks the user had canceled ran).
    @Test func aCancelAndADeleteACrashCutShortAreFinishedAtTheNextStart() async throws {
        let server = try await server()
        defer { Task { await server.stop() } }
        let canceled = try #require(try await server.submit("frame", .object(["fail_on": -1, "sleep": 30]),
                                                            extra: ["array": .object(["range": .array([1, 40])])]).json["id"]?.stringValue)
        let deleted = try #require(try await server.submit("frame", .object(["fail_on": -1, "sleep": 0]),
                                                           extra: ["array": .object(["range": .array([1, 3])])]).json["id"]?.stringValue)
        _ = try await server.request(.POST, "/v1/arrays/\(deleted)/cancel")
        _ = try await waitForArray(server, deleted) { ["succeeded", "canceled", "failed"].contains($0["state"]?.stringValue) }
        await server.kill9()
        let cutShort = try await runProcess("/usr/bin/env", ["python3", "-c", """
            import sqlite3, sys
            db = sqlite3.connect(sys.argv[1])
            db.execute("INSERT INTO array_operations (array_id, operation, actor) VALUES (?, 'cancel', 'ann')", (sys.argv[2],))
            db.execute("INSERT INTO array_operations (array_id, operation, actor) VALUES (?, 'delete', NULL)", (sys.argv[3],))
            db.commit()
            """, server.dataDirectory + "/spool.sqlite", canceled, deleted])
        #expect(cutShort.status == 0, "\(cutShort.stderr)")
        try await server.start(["--slots", "2"])
        // The two that ran when the server died failed (interrupted: their one attempt used); the rest, canceled by ann.
        let array = try await server.request(.GET, "/v1/arrays/\(canceled)").json
        #expect(array["counts"]?["canceled"] == .int(38) && array["counts"]?["failed"] == .int(2) && array["state"] == "failed", "\(array)")
        let tasks = try await server.request(.GET, "/v1/arrays/\(canceled)/tasks?limit=500").json["tasks"]?.arrayValue ?? []
        #expect(tasks.filter { $0["state"] == "canceled" }.allSatisfy { $0["canceled_by"] == "ann" }, "\(tasks.prefix(3))")
        #expect(try await server.request(.GET, "/v1/arrays/\(deleted)").status == 404)
    }

    /// A kill -9 between two chunks of an array's delete (500 tasks a transaction): the tasks of
    /// the chunk deleted before it have no rows left, and the next start, finishing the delete,
    /// removes their directories too (found by attacking the build: with retention off, 500
    /// task directories stayed for good, their jobs 404).
    @Test func anArrayDeleteACrashCutShortLeavesNoTaskDirectoryBehind() async throws {
        let server = try ServerHarness(config: .object([:]))
        try Data(Fixtures.config(scratch: server.scratch).canonicalText.utf8).write(to: URL(fileURLWithPath: server.configPath))
        try await server.start(["--slots", "2"], environment: ["SPOOL_FAILPOINTS": "hold-array-delete-chunk"])
        defer { Task { await server.stop() } }
        let id = try #require(try await server.submit("frame", .object(["fail_on": -1, "sleep": 0]),
                                                      extra: ["array": .object(["range": .array([1, 520])])]).json["id"]?.stringValue)
        _ = try await waitForArray(server, id) { $0["state"] == "succeeded" }
        @Sendable func taskDirectories() -> Int {
            ((try? FileManager.default.contentsOfDirectory(atPath: server.dataDirectory + "/jobs")) ?? []).count { JobID($0) != nil }
        }
        #expect(taskDirectories() == 520)
        let last = try #require(try await server.request(.GET, "/v1/arrays/\(id)/tasks?cursor=519").json["tasks"]?.arrayValue?.first?["id"]?.stringValue)
        let deleting = Task { try await server.request(.DELETE, "/v1/arrays/\(id)") }   // held after its first chunk
        try await poll(.seconds(30), "the delete's first chunk, the highest indexes") {
            try await server.request(.GET, "/v1/jobs/\(last)").status == 404
        }
        await server.kill9()
        deleting.cancel()
        #expect(taskDirectories() == 520, "the directories go after the last chunk")

        try await server.start(["--slots", "2"])
        try await poll(.seconds(30), "the delete finished at the start, with every task directory") {
            try await server.request(.GET, "/v1/arrays/\(id)").status == 404 && taskDirectories() == 0
        }
    }

    /// The README's render farm: `spool submit render … --array-range` renders a turntable, each
    /// task the frame its `item` names (found by attacking the build: the built-in render refused
    /// `item`, so the README's example was a 422).
    @Test func theBuiltInRenderTakesAnArraysItemAsItsFrame() async throws {
        let server = try await server()
        defer { Task { await server.stop() } }
        let run = try await runCLI(["submit", "render", "--input", #"{"width": 16, "height": 12, "samples": 1}"#, "--array-range", "0-1",
                                    "--wait", "--server", server.url])
        #expect(run.status == 0, "\(run.stdout) \(run.stderr)")
        let id = try #require(run.stderr.split(whereSeparator: \.isWhitespace).first { $0.hasPrefix("arr_") }.map(String.init))
        let tasks = try #require(try await server.request(.GET, "/v1/arrays/\(id)/tasks").json["tasks"]?.arrayValue)
        #expect(tasks.map { $0["state"] } == ["succeeded", "succeeded"])
        // Its stdout: every task's output URL, in task order, as `--wait` prints one job's.
        let urls = run.stdout.split(separator: "\n").map(String.init)
        #expect(urls == tasks.map { server.url + "/v1/jobs/\($0["id"]?.stringValue ?? "")/outputs/render.png" })
        var images: [Data] = []
        for url in urls { images.append(try await server.request(.GET, String(url.dropFirst(server.url.count))).body) }
        #expect(images.count == 2 && images[0] != images[1], "frame 1 is seen from further round the scene")
        let log = try await server.request(.GET, "/v1/jobs/\(tasks[1]["id"]?.stringValue ?? "")/logs").body
        #expect(String(decoding: log, as: UTF8.self).contains("16x12, 1 samples per pixel, seed 1, frame 1"))
        // Items that are not frame numbers are refused at submit, naming the field.
        let words = try await server.submit("render", .object(["width": 16]), extra: ["array": .object(["items": .array(["a", "b"])])])
        #expect(words.status == 422 && String(decoding: words.body, as: UTF8.self).contains("item"))
    }

    /// An array's outputs say `truncated` when a task's listing left a file out (a name that is
    /// not UTF-8), as one job's do (found in review: the array's list said nothing).
    /// Each task stores the submit's input: an array whose tasks would store more than 64 MiB of it
    /// between them is refused, 422, nothing stored (found by attacking the build: a 50-KB input
    /// in 2,000 tasks wrote 191 MiB in one transaction, stalling every other submit); and an input
    /// that is not an object is refused rather than dropped.
    @Test func anArrayThatWouldStoreTooMuchInputOrANonObjectInputIsRefused() async throws {
        let server = try ServerHarness(config: .object(["job_types": .object([
            "noop": .object(["command": .array(["/bin/true"]), "timeout_s": 30]),
        ])]))
        try await server.start()
        defer { Task { await server.stop() } }
        let blob = JSONValue.string(String(repeating: "x", count: 40_000))
        let big = try await server.submit("noop", .object(["blob": blob]), extra: ["array": .object(["range": .array([1, 1700])])])
        #expect(big.status == 422 && big.json["type"] == "urn:spool:problem:array-too-large", "\(big.json)")
        #expect(try await server.request(.GET, "/v1/jobs?limit=1").json["jobs"]?.arrayValue?.isEmpty == true, "nothing stored")
        let small = try await server.submit("noop", .object(["blob": blob]), extra: ["array": .object(["range": .array([1, 3])])])
        #expect(small.status == 201, "\(small.json)")
        let list = try await server.submit("noop", .array(["model-a", "model-b"]), extra: ["array": .object(["range": .array([1, 2])])])
        #expect(list.status == 422 && list.json["detail"]?.stringValue?.contains("must be an object") == true, "\(list.json)")
    }

    /// A task with more outputs than a listing holds makes the array's list some of them, and
    /// says so (found by attacking the build: 10,001 of a task's 10,005 were listed as all).
    @Test func anArraysOutputsSayWhenATaskHasMoreThanAreListed() async throws {
        let server = try ServerHarness(config: .object(["job_types": .object([
            "many": .object(["command": .array(["/bin/sh", "-c", "cd \"$SPOOL_OUTPUT_DIR\" && seq 1 10005 | xargs touch"]), "timeout_s": 60]),
        ])]))
        try await server.start()
        defer { Task { await server.stop() } }
        let id = try #require(try await server.submit("many", extra: ["array": .object(["range": .array([1, 1])])]).json["id"]?.stringValue)
        _ = try await waitForArray(server, id) { $0["state"] == "succeeded" }
        let outputs = try await server.request(.GET, "/v1/arrays/\(id)/outputs").json
        #expect(outputs["truncated"] == true && outputs["outputs"]?.arrayValue?.count == 10_000)
    }

    @Test func anArraysOutputsSayWhenATaskLeftFilesOut() async throws {
        let script = #"echo a > "$SPOOL_OUTPUT_DIR/ok.txt"; printf b > "$SPOOL_OUTPUT_DIR/$(printf 'caf\351')""#
        let server = try ServerHarness(config: .object(["job_types": .object([
            "odd": .object(["command": .array(["/bin/sh", "-c", .string(script)]), "timeout_s": 30]),
        ])]))
        try await server.start()
        defer { Task { await server.stop() } }
        let id = try #require(try await server.submit("odd", extra: ["array": .object(["range": .array([1, 2])])]).json["id"]?.stringValue)
        _ = try await waitForArray(server, id) { $0["state"] == "succeeded" }
        let outputs = try await server.request(.GET, "/v1/arrays/\(id)/outputs").json
        #expect(outputs["truncated"] == true && outputs["outputs"]?.arrayValue?.map { $0["name"] } == ["ok.txt", "ok.txt"], "\(outputs)")
    }

    @Test func anArrayRunsEveryTaskAndShowsTheirSumAndOutputs() async throws {
        let server = try await server()
        defer { Task { await server.stop() } }
        let reply = try await server.submit("frame", .object(["fail_on": -1, "sleep": 0]), extra: ["array": .object(["range": .array([3, 8])])])
        #expect(reply.status == 201, "\(String(decoding: reply.body, as: UTF8.self))")
        let id = try #require(reply.json["id"]?.stringValue)
        #expect(id.hasPrefix("arr_") && reply.header("Location") == "/v1/arrays/\(id)")
        #expect(reply.json["size"] == .int(6) && reply.json["type"] == "frame")

        let done = try await waitForArray(server, id) { $0["state"] == "succeeded" }
        #expect(done["counts"]?["succeeded"] == .int(6) && done["progress"]?.doubleValue == 1)
        let tasks = try #require(try await server.request(.GET, "/v1/arrays/\(id)/tasks?limit=4").json.objectValue)
        #expect(tasks["tasks"]?.arrayValue?.map { $0["array"]?["index"] } == [3, 4, 5, 6].map { JSONValue.int($0) })
        #expect(tasks["tasks"]?.arrayValue?.first?["input"]?["item"] == .int(3))
        let rest = try await server.request(.GET, "/v1/arrays/\(id)/tasks?cursor=\(tasks["next_cursor"]?.stringValue ?? "")").json
        #expect(rest["tasks"]?.arrayValue?.count == 2 && rest["next_cursor"] == .null)
        // Any cursor the document allows is answered, one beyond 64 bits too (found by the contract test).
        let past = try await server.request(.GET, "/v1/arrays/\(id)/tasks?cursor=99999999999999999999999")
        #expect(past.status == 200 && past.json["tasks"]?.arrayValue?.isEmpty == true)
        let before = try await server.request(.GET, "/v1/arrays/\(id)/tasks?cursor=-0115368554420464579797830")
        #expect(before.status == 200 && before.json["tasks"]?.arrayValue?.count == 6)
        #expect(try await server.request(.GET, "/v1/arrays/\(id)/tasks?cursor=x1").status == 400)

        let outputs = try #require(try await server.request(.GET, "/v1/arrays/\(id)/outputs").json["outputs"]?.arrayValue)
        #expect(outputs.map { $0["name"]?.stringValue } == (3...8).map { "frame-\($0).txt" })
        let first = try #require(outputs.first?["url"]?.stringValue)
        let content = String(decoding: try await server.request(.GET, first).body, as: UTF8.self)
        #expect(content == "3 \(id)\n", "the task saw SPOOL_ARRAY_INDEX and SPOOL_ARRAY_ID")

        // A failed task does not stop the others; the array then reads failed.
        let mixed = try await server.submit("frame", .object(["fail_on": 1, "sleep": 0]), extra: ["array": .object(["items": .array([0, 1, 2])])])
        let mixedID = try #require(mixed.json["id"]?.stringValue)
        let ended = try await waitForArray(server, mixedID) { ["succeeded", "failed", "canceled"].contains($0["state"]?.stringValue) }
        #expect(ended["state"] == "failed" && ended["counts"]?["failed"] == .int(1) && ended["counts"]?["succeeded"] == .int(2))

        // Listed newest first, a page at a time; the jobs list takes them apart from jobs submitted alone.
        let alone = try #require(try await server.submit("noop").json["id"]?.stringValue)
        let listed = try await server.request(.GET, "/v1/arrays?limit=1").json
        #expect(listed["arrays"]?.arrayValue?.map { $0["id"]?.stringValue } == [mixedID])
        #expect(listed["arrays"]?.arrayValue?.first?["counts"]?["failed"] == .int(1))
        let older = try await server.request(.GET, "/v1/arrays?limit=1&cursor=\(listed["next_cursor"]?.stringValue ?? "")").json
        #expect(older["arrays"]?.arrayValue?.map { $0["id"]?.stringValue } == [id] && older["next_cursor"] == .null)
        #expect(try await server.request(.GET, "/v1/arrays?type=render").json["arrays"]?.arrayValue?.isEmpty == true)
        let single = try await server.request(.GET, "/v1/jobs?array=none").json["jobs"]?.arrayValue ?? []
        #expect(single.map { $0["id"]?.stringValue } == [alone])
        let failedTasks = try await server.request(.GET, "/v1/jobs?array=\(mixedID)&status=failed").json["jobs"]?.arrayValue ?? []
        #expect(failedTasks.map { $0["array"]?["index"] } == [.int(1)])
        let cliArrays = try await runCLI(["list", "--arrays", "--server", server.url])
        #expect(cliArrays.status == 0 && cliArrays.stdout.split(separator: "\n").map { $0.prefix(30) } == [mixedID, id].map { Substring($0) },
                "\(cliArrays.stdout)\(cliArrays.stderr)")
        #expect(cliArrays.stdout.hasPrefix("\(mixedID)  frame  failed  [####################] 100%  3/3 done, 1 failed"), "\(cliArrays.stdout)")
        let cliFailed = try await runCLI(["list", "--array", mixedID, "--status", "failed", "--server", server.url])
        #expect(cliFailed.status == 0 && cliFailed.stdout.split(separator: "\n").dropFirst().map { String($0.prefix(30)) }
                == failedTasks.compactMap { $0["id"]?.stringValue }, "\(cliFailed.stdout)\(cliFailed.stderr)")
        // Which frame failed, in the list and in the task's status (found by attacking the build: neither said).
        let failedID = try #require(failedTasks.first?["id"]?.stringValue)
        #expect(cliFailed.stdout.hasPrefix("ID                              INDEX  TYPE") && cliFailed.stdout.contains("\(failedID)  1      frame"),
                "\(cliFailed.stdout)")
        let cliTask = try await runCLI(["status", failedID, "--server", server.url])
        #expect(cliTask.stdout.contains("array:     \(mixedID) task 1"), "\(cliTask.stdout)")
        let cliRefused = try await runCLI(["list", "--arrays", "--status", "failed", "--server", server.url])
        #expect(cliRefused.status != 0 && cliRefused.stderr.contains("--arrays takes --type, --owner, --limit and --cursor only"), "\(cliRefused.stderr)")
        // Its failed task run again, as a new array with the task's index and input; the first array stays as it ended.
        let retried = try await server.request(.POST, "/v1/arrays/\(mixedID)/retry", headers: [("Idempotency-Key", "again-1")])
        #expect(retried.status == 201, "\(retried.json)")
        let retryID = try #require(retried.json["id"]?.stringValue)
        #expect(retryID != mixedID && retried.header("Location") == "/v1/arrays/\(retryID)" && retried.json["size"] == .int(1))
        let retriedTasks = try await server.request(.GET, "/v1/arrays/\(retryID)/tasks").json["tasks"]?.arrayValue ?? []
        #expect(retriedTasks.map { $0["array"]?["index"] } == [.int(1)] && retriedTasks.first?["input"]?["item"] == .int(1))
        #expect(retriedTasks.first?["input"]?["fail_on"] == .int(1) && retriedTasks.first?["type"] == "frame")
        let repeated = try await server.request(.POST, "/v1/arrays/\(mixedID)/retry", headers: [("Idempotency-Key", "again-1")])
        #expect(repeated.status == 200 && repeated.json["id"]?.stringValue == retryID)
        _ = try await waitForArray(server, retryID) { $0["state"] == "failed" }
        #expect(try await server.request(.GET, "/v1/arrays/\(mixedID)").json["counts"]?["failed"] == .int(1), "the first array is unchanged")
        // A key its own submit used names that submit, not a retry: a conflict, not the first array again.
        let keyed = try #require(try await server.submit("frame", .object(["fail_on": 0, "sleep": 0]), extra: ["array": .object(["items": .array([0])])],
                                                         key: "frames-a").json["id"]?.stringValue)
        _ = try await waitForArray(server, keyed) { $0["state"] == "failed" }
        let sameKey = try await server.request(.POST, "/v1/arrays/\(keyed)/retry", headers: [("Idempotency-Key", "frames-a")])
        #expect(sameKey.status == 409 && sameKey.json["type"] == "urn:spool:problem:idempotency-conflict", "\(sameKey.json)")
        // …and a key one retry used is a conflict for another array's retry.
        let otherRetry = try await server.request(.POST, "/v1/arrays/\(keyed)/retry", headers: [("Idempotency-Key", "again-1")])
        #expect(otherRetry.status == 409 && otherRetry.json["type"] == "urn:spool:problem:idempotency-conflict", "\(otherRetry.json)")
        let nothing = try await server.request(.POST, "/v1/arrays/\(id)/retry")
        #expect(nothing.status == 409 && nothing.json["type"] == "urn:spool:problem:nothing-to-retry", "\(nothing.json)")
        #expect(nothing.json["detail"] == .string("array \(id) has no failed or canceled task: every task succeeded"))

        for query in ["array=", "array=arr_x", "array=all", "limit=0"] {
            let refused = try await server.request(.GET, (query.hasPrefix("limit") ? "/v1/arrays?" : "/v1/jobs?") + query)
            #expect(refused.status == 400 && refused.header("Content-Type") == "application/problem+json", "\(query)")
        }

        let bad = try await server.submit("frame", .object(["sleep": 0]), extra: ["array": .object(["range": .array([1, 2])])])
        #expect(bad.status == 422 && (bad.json["detail"]?.stringValue ?? "").hasPrefix("array task 1:"))
        // A bad key is the request's fault, not a task's (found by attacking the build: "array task 1: Idempotency-Key …").
        let badKey = try await server.submit("frame", .object(["fail_on": -1, "sleep": 0]), extra: ["array": .object(["range": .array([1, 2])])],
                                             key: String(repeating: "k", count: 300))
        #expect(badKey.status == 422 && badKey.json["detail"] == "Idempotency-Key must be 1 to 255 characters", "\(badKey.json)")
        #expect(try await server.request(.GET, "/v1/arrays/arr_00000000000000000000000000").status == 404)
    }

    @Test func cancelingAnArrayCancelsTheRestAndFailFastDoesItByItself() async throws {
        let server = try await server()
        defer { Task { await server.stop() } }
        let slowID = try await slowArray(server, 1...6)
        // A retry while tasks still run takes those canceled so far; repeated with its key once
        // more have been, it answers the array it made (200), as any idempotent repeat does.
        let slowTasks = try await server.request(.GET, "/v1/arrays/\(slowID)/tasks").json["tasks"]?.arrayValue?.compactMap { $0["id"]?.stringValue } ?? []
        _ = try await server.request(.POST, "/v1/jobs/\(slowTasks[5])/cancel")
        let partial = try await server.request(.POST, "/v1/arrays/\(slowID)/retry", headers: [("Idempotency-Key", "partial")])
        #expect(partial.status == 201 && partial.json["size"] == .int(1), "\(partial.json)")
        _ = try await server.request(.POST, "/v1/jobs/\(slowTasks[4])/cancel")
        let partialAgain = try await server.request(.POST, "/v1/arrays/\(slowID)/retry", headers: [("Idempotency-Key", "partial")])
        #expect(partialAgain.status == 200 && partialAgain.json["id"] == partial.json["id"], "\(partialAgain.json)")
        _ = try await server.request(.POST, "/v1/arrays/\(partial.json["id"]?.stringValue ?? "")/cancel")
        let canceled = try await server.request(.POST, "/v1/arrays/\(slowID)/cancel")
        #expect(canceled.status == 202 && canceled.json["counts"]?["canceled"] == .int(4))
        let stopped = try await waitForArray(server, slowID) { $0["state"] == "canceled" }
        #expect(stopped["counts"]?["canceled"] == .int(6))
        #expect(try await server.request(.POST, "/v1/arrays/\(slowID)/cancel").status == 409)

        // Fail-fast: the first task fails at once; the others (queued or running) are canceled
        // (2 s tasks: under a loaded test run the cancel can take longer than a short task).
        let failing = try await server.submit("frame", .object(["fail_on": 0, "sleep": 2]),
                                              extra: ["array": .object(["range": .array([0, 5]), "fail_fast": true])])
        let failingID = try #require(failing.json["id"]?.stringValue)
        let ended = try await waitForArray(server, failingID) { ["succeeded", "failed", "canceled"].contains($0["state"]?.stringValue) }
        #expect(ended["state"] == "failed" && ended["counts"]?["failed"] == .int(1))
        #expect((ended["counts"]?["canceled"]?.intValue ?? 0) >= 3, "\(ended)")
        let tasks = try await server.request(.GET, "/v1/arrays/\(failingID)/tasks").json["tasks"]?.arrayValue ?? []
        #expect(tasks.filter { $0["state"] == "canceled" }.allSatisfy { $0["canceled_by"] == "fail_fast" })
        // Its retry takes the failed task and those canceled, by index, fail-fast still; the CLI says so too.
        let retry = try await runCLI(["retry", failingID, "--server", server.url])
        #expect(retry.status == 0, "\(retry.stderr)")
        let retryID = String(retry.stdout.prefix(30))
        let retried = try await server.request(.GET, "/v1/arrays/\(retryID)").json
        #expect(retried["fail_fast"] == true && retried["size"] == .int(Int64(tasks.filter { $0["state"] != "succeeded" }.count)), "\(retried)")
        let retriedIndices = try await server.request(.GET, "/v1/arrays/\(retryID)/tasks").json["tasks"]?.arrayValue?.map { $0["array"]?["index"] }
        #expect(retriedIndices == tasks.filter { $0["state"] != "succeeded" }.map { $0["array"]?["index"] })
        _ = try await waitForArray(server, retryID) { ["failed", "canceled"].contains($0["state"]?.stringValue) }

        // An Idempotency-Key names the array: the same request again gets it (200), another one is a conflict.
        let body: [String: JSONValue] = ["array": .object(["items": .array([10, 11])])]
        let once = try await server.submit("frame", .object(["fail_on": -1, "sleep": 0]), extra: body, key: "frames-1")
        let again = try await server.submit("frame", .object(["fail_on": -1, "sleep": 0]), extra: body, key: "frames-1")
        #expect(once.status == 201 && again.status == 200 && again.json["id"] == once.json["id"])
        let changed = try await server.submit("frame", .object(["fail_on": -1, "sleep": 1]), extra: body, key: "frames-1")
        #expect(changed.status == 409)
        // Other items (same count, same first) are another request too (found by attacking the
        // build: answered 200 with the first array; the second request's items never ran).
        let otherItems = try await server.submit("frame", .object(["fail_on": -1, "sleep": 0]),
                                                 extra: ["array": .object(["items": .array([10, 12])])], key: "frames-1")
        #expect(otherItems.status == 409, "\(otherItems.json)")
        let otherSchedule = try await server.submit("frame", .object(["fail_on": -1, "sleep": 0]),
                                                    extra: body.merging(["delay_s": 600]) { $1 }, key: "frames-1")
        #expect(otherSchedule.status == 409, "\(otherSchedule.json)")
        // A delayed array sent again later is the same request, though its start time is counted anew.
        let delayed = body.merging(["delay_s": 600]) { $1 }
        let delayedOnce = try await server.submit("frame", .object(["fail_on": -1, "sleep": 0]), extra: delayed, key: "frames-delayed")
        try await Task.sleep(for: .milliseconds(20))
        let delayedAgain = try await server.submit("frame", .object(["fail_on": -1, "sleep": 0]), extra: delayed, key: "frames-delayed")
        #expect(delayedOnce.status == 201 && delayedAgain.status == 200 && delayedAgain.json["id"] == delayedOnce.json["id"])
        _ = try await server.request(.POST, "/v1/arrays/\(delayedOnce.json["id"]?.stringValue ?? "")/cancel")
        // The same request sent many times at once: one makes the array, every other gets it (200), none a conflict.
        let racing = try await withThrowingTaskGroup(of: (Int, String?).self) { group in
            for _ in 0..<12 {
                group.addTask {
                    let reply = try await server.submit("frame", .object(["fail_on": -1, "sleep": 0]), extra: body, key: "frames-race")
                    return (reply.status, reply.json["id"]?.stringValue)
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(racing.filter { $0.0 == 201 }.count == 1 && racing.allSatisfy { [200, 201].contains($0.0) }, "\(racing)")
        #expect(Set(racing.map(\.1)).count == 1, "\(racing)")
        // One key never makes both a job and an array, whichever came first.
        let job = try await server.submit("frame", .object(["fail_on": -1, "sleep": 0, "item": 10]), key: "frames-1")
        #expect(job.status == 409 && job.json["detail"]?.stringValue?.hasSuffix("(array \(once.json["id"]?.stringValue ?? "?"))") == true,
                "\(job.json)")
        let solo = try await server.submit("frame", .object(["fail_on": -1, "sleep": 0, "item": 10]), key: "solo-1")
        let soloID = try #require(solo.json["id"]?.stringValue)
        let clash = try await server.submit("frame", .object(["fail_on": -1, "sleep": 0]), extra: body, key: "solo-1")
        #expect(clash.status == 409 && clash.json["detail"]?.stringValue?.hasSuffix("(job \(soloID))") == true, "\(clash.json)")
    }

    /// An array goes whole once every task has ended — rows, events and files — and not before;
    /// a task alone is refused with the way to delete its array; the Idempotency-Key is free again.
    @Test func anEndedArrayIsDeletedWholeAndOneWithTasksLeftIsNot() async throws {
        let server = try await server()
        defer { Task { await server.stop() } }
        let slowID = try await slowArray(server, 1...3)
        let refusedCLI = try await runCLI(["delete", slowID, "--server", server.url])
        #expect(refusedCLI.status == 1 && refusedCLI.stderr.hasPrefix("spool: array \(slowID) has 3 tasks not ended yet"), "\(refusedCLI.stderr)")
        let refused = try await server.request(.DELETE, "/v1/arrays/\(slowID)")
        #expect(refused.status == 409 && refused.json["type"] == "urn:spool:problem:not-ended", "\(refused.json)")
        #expect(refused.json["detail"]?.stringValue?.contains("has 3 tasks not ended yet") == true, "\(refused.json)")
        #expect(try await server.request(.GET, "/v1/arrays/\(slowID)").json["size"] == .int(3), "nothing went")
        let canceled = try await runCLI(["cancel", slowID, "--server", server.url])
        #expect(canceled.status == 0 && canceled.stdout.hasPrefix(slowID), "\(canceled.stdout)\(canceled.stderr)")
        _ = try await waitForArray(server, slowID) { $0["state"] == "canceled" }

        let body: [String: JSONValue] = ["array": .object(["items": .array([4, 5])])]
        let done = try await server.submit("frame", .object(["fail_on": -1, "sleep": 0]), extra: body, key: "frames-delete")
        let doneID = try #require(done.json["id"]?.stringValue)
        _ = try await waitForArray(server, doneID) { $0["state"] == "succeeded" }
        let tasks = try await server.request(.GET, "/v1/arrays/\(doneID)/tasks").json["tasks"]?.arrayValue?.compactMap { $0["id"]?.stringValue } ?? []
        #expect(tasks.count == 2)
        let task = try #require(tasks.first)
        let alone = try await server.request(.DELETE, "/v1/jobs/\(task)")
        #expect(alone.status == 409 && alone.json["type"] == "urn:spool:problem:array-task")
        #expect(alone.json["detail"]?.stringValue?.contains("DELETE /v1/arrays/\(doneID)") == true, "\(alone.json)")
        let directories = tasks.map { JobPaths(dataDirectory: server.dataDirectory, job: JobID($0)!).directory }
        #expect(directories.allSatisfy { FileManager.default.fileExists(atPath: $0) }, "each task left its output")

        #expect(try await server.request(.DELETE, "/v1/arrays/\(doneID)").status == 204)
        let cli = try await runCLI(["delete", slowID, "--server", server.url])
        #expect(cli.status == 0 && cli.stdout == "\(slowID): deleted\n", "\(cli.stderr)")
        #expect(try await server.request(.GET, "/v1/arrays/\(doneID)").status == 404)
        for id in tasks { #expect(try await server.request(.GET, "/v1/jobs/\(id)").status == 404) }
        #expect(directories.allSatisfy { !FileManager.default.fileExists(atPath: $0) }, "the tasks' files went with them")
        #expect(try await server.request(.DELETE, "/v1/arrays/\(doneID)").status == 404)
        // The same key makes the array anew.
        #expect(try await server.submit("frame", .object(["fail_on": -1, "sleep": 0]), extra: body, key: "frames-delete").status == 201)
    }
}
