// JobArrayTests: the `array` of a submit (items or a range, fail_fast) and its refusals, what
// each task gets (input.item, SPOOL_ARRAY_* in process mode, array_id/array_index in a warm
// worker's job command), array ids, and how a summary adds tasks up.

import SpoolCore
import Testing

@Suite struct JobArrayTests {
    @Test func itemsAndRangesBecomeIndexedItems() throws {
        let items = try ArraySpec(json: try json(#"{"items": ["a", {"frame": 2}, 3]}"#))
        #expect(items.count == 3 && !items.failFast)
        #expect(items.items.map(\.index) == [0, 1, 2] && items.items.map(\.item) == [.string("a"), .object(["frame": .int(2)]), .int(3)])
        let range = try ArraySpec(json: try json(#"{"range": [5, 8], "fail_fast": true}"#))
        #expect(range.count == 4 && range.failFast)
        #expect(range.items.map(\.index) == [5, 6, 7, 8] && range.items.map(\.item) == [5, 6, 7, 8].map { JSONValue.int($0) })
        #expect(try ArraySpec(json: try json(#"{"range": [-2, -2]}"#)).items.map(\.index) == [-2])
    }

    @Test(arguments: [
        (#"[1, 2]"#, "must be an object"),
        (#"{}"#, "takes either items"),
        (#"{"items": [1], "range": [1, 2]}"#, "takes either items"),
        (#"{"items": []}"#, "1 to 10000 items"),
        (#"{"range": [3, 1]}"#, "first ≤ last"),
        (#"{"range": [1, 10001]}"#, "at most 10000"),
        // A span past Int64 (found by attacking the build: the subtraction trapped, and the server died).
        (#"{"range": [-5000000000000000000, 5000000000000000000]}"#, "at most 10000"),
        (#"{"range": [-9223372036854775808, 9223372036854775807]}"#, "at most 10000"),
        (#"{"range": [1]}"#, "[first, last]"),
        (#"{"range": [1, 2], "fail_fast": "yes"}"#, "fail_fast must be true or false"),
        (#"{"range": [1, 2], "frames": 3}"#, "unknown field \"frames\""),
    ])
    func aBadArrayIsRefusedWithASentence(text: String, message: String) throws {
        let value = try json(text)
        do {
            _ = try ArraySpec(json: value)
            Issue.record("accepted; expected: \(message)")
        } catch {
            #expect(error.description.hasPrefix("\"array\"") && error.description.contains(message), "\(error.description)")
        }
    }

    @Test func aTaskGetsItsItemInItsInputAndItsPlaceInItsEnvironmentOrCommand() throws {
        #expect(ArraySpec.taskInput(.object(["width": .int(640)]), item: .int(7)) == .object(["width": .int(640), "item": .int(7)]))
        #expect(ArraySpec.taskInput(.null, item: .string("x")) == .object(["item": .string("x")]))

        let id = ArraySpec.newID()
        #expect(ArraySpec.isValidID(id) && !ArraySpec.isValidID("job_" + id.dropFirst(4)) && !ArraySpec.isValidID("arr_x"))
        var job = Job(id: .random(), type: "frame", input: .object(["item": .int(7)]), priority: 0, timeoutSeconds: 10, maxAttempts: 1,
                      createdAt: Timestamp(microseconds: 0))
        job.array = ArrayMembership(id: id, index: 7, failFast: false)
        let type = JobType(name: "frame", command: try CommandTemplate(["render", "--frame={input.item}"]))
        let plan = try LaunchPlan(job: job, type: type, slot: SlotSpec(id: SlotID(0)), paths: JobPaths(dataDirectory: "/data", job: job.id))
        #expect(plan.argv == ["render", "--frame=7"])
        #expect(plan.environment["SPOOL_ARRAY_ID"] == id && plan.environment["SPOOL_ARRAY_INDEX"] == "7")

        let line = WorkerCommand.job(id: job.id, input: job.input, inputFile: "/in", outputDirectory: "/out", attempt: 1, timeoutSeconds: 5,
                                     array: job.array).line
        let command = try json(line)
        #expect(command["array_id"] == .string(id) && command["array_index"] == .int(7))
        let plain = try json(WorkerCommand.job(id: job.id, input: job.input, inputFile: "/in", outputDirectory: "/out", attempt: 1,
                                               timeoutSeconds: 5).line)
        #expect(plain["array_id"] == nil && plain["array_index"] == nil)
    }

    @Test func aSummaryAddsTasksUpAndReadsAsTheArraysState() {
        let id = ArraySpec.newID()
        func task(_ index: Int64, _ state: JobState, progress: Double? = nil) -> Job {
            var job = Job(id: .random(), type: "frame", input: .object([:]), priority: 0, timeoutSeconds: 10, maxAttempts: 1,
                          state: state, createdAt: Timestamp(microseconds: 0))
            job.array = ArrayMembership(id: id, index: index, failFast: true)
            job.progress = progress.map { JobProgress(fraction: $0) }
            return job
        }
        let tasks = [task(0, .succeeded), task(1, .running, progress: 0.5), task(2, .queued), task(3, .queued)]
        let summary = try! #require(ArraySummary(tasks: tasks))
        #expect(summary.size == 4 && summary.state == .running && summary.failFast && summary.lastQueued == tasks[3].id)
        #expect(summary.progress == 1.5 / 4)
        #expect(ArraySummary(tasks: [task(0, .succeeded), task(1, .failed), task(2, .canceled)])?.state == .failed)
        #expect(ArraySummary(tasks: [task(0, .succeeded), task(1, .canceled)])?.state == .canceled)
        #expect(ArraySummary(tasks: [task(0, .succeeded)])?.state == .succeeded)
        #expect(ArraySummary(tasks: []) == nil)
    }
}
