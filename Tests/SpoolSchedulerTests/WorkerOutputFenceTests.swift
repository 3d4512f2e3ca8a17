import Foundation
import SpoolCore
@testable import SpoolExecutor
import SpoolScheduler
import SpoolStore
import SpoolTesting
import Testing

/// A warm worker's end of a job waits for the output it wrote before saying so: the server puts
/// a fence in the worker's output and ends the job once the fence is read. Here the fake worker's
/// fences come through only when the test passes them on, as a pipe would deliver them later,
/// over the real scheduler and worker pool and a manual clock.
@Suite struct WorkerOutputFenceTests {
    let launcher = FakeLauncher(behaviour: .init(isWorker: true, fencesOutput: true))

    func rig() throws -> SchedulerRig {
        let launcher = self.launcher
        return try SchedulerRig(types: [WorkerSupervisionTests.workerType()], executor: { catalog, clock, dataDirectory in
            let settings = Worker.Settings(dataDirectory: dataDirectory, killGrace: .seconds(10), logLimitBytes: 1 << 20,
                                           launcher: launcher, clock: clock, logger: SchedulerRig.quiet("fence-test"))
            return JobExecutors(catalog: catalog,
                                processes: ProcessJobExecutor(catalog: catalog, configuration: .init(dataDirectory: dataDirectory),
                                                              launcher: launcher, clock: clock),
                                workers: WorkerPool(catalog: catalog, slots: [SlotSpec(id: SlotID(0))], settings: settings))
        })
    }

    /// Submits a job and returns it with the worker that got its command.
    func started(_ rig: SchedulerRig, on worker: FakeChild? = nil) async throws -> (Job, FakeChild) {
        let job = try await rig.submit("w")
        let worker = if let worker { worker } else { try await launcher.children.next("the worker") }
        #expect(try await worker.commands.next("the job command").contains(job.id.rawValue))
        return (job, worker)
    }

    func log(_ rig: SchedulerRig, _ job: Job) -> String {
        (try? String(contentsOfFile: JobPaths(dataDirectory: rig.dataDirectory, job: job.id).log, encoding: .utf8)) ?? ""
    }

    @Test func theEndWaitsForTheFenceAndTheOutputBeforeItIsTheJobs() async throws {
        let rig = try rig()
        try await rig.run { _ in
            let (job, worker) = try await started(rig)
            await worker.print("line 1\n")
            await worker.succeed(job.id)
            let fence = try await worker.fences.next("the job's fence")
            await worker.print("still the job's\n")   // written before the fence was read
            #expect(try await rig.job(job.id).state != .succeeded, "the end waits for its fence")
            await worker.print(bytes: Array(fence.prefix(5)))   // split across two reads
            await worker.print(bytes: Array(fence.dropFirst(5)) + Array("after the end\n".utf8))
            #expect(try await rig.waitFor(job.id, .succeeded).state == .succeeded)
            let text = log(rig, job)
            #expect(text == "line 1\nstill the job's\n", "exactly the job's output, no marker: \(text.debugDescription)")
            let (next, _) = try await started(rig, on: worker)
            await worker.succeed(next.id)
            await worker.print(bytes: try await worker.fences.next("the next job's fence"))
            _ = try await rig.waitFor(next.id, .succeeded)
            #expect(!log(rig, next).contains("after the end"), "what came after an end is no job's")
        }
    }

    /// Messages about a job that come after its `succeeded` (while its output is still read to
    /// the fence) change nothing: worker-protocol.md says only the first end counts, and what comes
    /// after it is no job's (found by attacking the build: late progress and log lines landed on
    /// the finished job).
    @Test func messagesAfterTheEndChangeNothing() async throws {
        let rig = try rig()
        try await rig.run { _ in
            let (job, worker) = try await started(rig)
            await worker.say(["type": .string("progress"), "job": .string(job.id.rawValue), "fraction": .double(0.9), "message": .string("nearly")])
            await worker.succeed(job.id)
            let fence = try await worker.fences.next("the job's fence")
            await worker.say(["type": .string("progress"), "job": .string(job.id.rawValue), "fraction": .double(0.1), "message": .string("late")])
            await worker.say(["type": .string("log"), "job": .string(job.id.rawValue), "line": .string("a late line")])
            await worker.print(bytes: fence)
            let ended = try await rig.waitFor(job.id, .succeeded)
            #expect(ended.progress?.message != "late" && ended.progress?.fraction != 0.1, "\(String(describing: ended.progress))")
            #expect(!log(rig, job).contains("a late line"), "\(log(rig, job))")
        }
    }

    @Test func aFenceGivenUpStillComesOutOfTheNextJobsOutput() async throws {
        let rig = try rig()
        try await rig.run { _ in
            let (first, worker) = try await started(rig)
            await worker.succeed(first.id)
            let late = try await worker.fences.next("the first job's fence")
            try await rig.advance(by: .milliseconds(500), until: "the end to stop waiting for its fence") {
                try await rig.job(first.id).state == .succeeded
            }
            #expect(log(rig, first).contains("did not wait for the rest of its output"))
            let (second, _) = try await started(rig, on: worker)
            await worker.print(bytes: Array("late for the first\n".utf8) + late + Array("the second's\n".utf8))
            await worker.succeed(second.id)
            await worker.print(bytes: try await worker.fences.next("the second job's fence"))
            _ = try await rig.waitFor(second.id, .succeeded)
            let text = log(rig, second)
            #expect(text == "the second's\n", "not the first's late output, no marker: \(text.debugDescription)")
        }
    }

    @Test func aSecondEndForTheSameJobIsIgnored() async throws {
        let rig = try rig()
        try await rig.run { _ in
            let (job, worker) = try await started(rig)
            await worker.succeed(job.id, result: .object(["first": .bool(true)]))
            await worker.say(["type": .string("failed"), "job": .string(job.id.rawValue), "error": .string("second thoughts")])
            await worker.print(bytes: try await worker.fences.next("the job's fence"))
            let ended = try await rig.waitFor(job.id, .succeeded)
            #expect(ended.result?["first"] == .bool(true))
            #expect(worker.fencesWritten == 1, "one fence for one end")
        }
    }

    @Test func aWorkerThatExitsWhileItsFenceIsPendingStillEndsTheJobAsItSaid() async throws {
        let rig = try rig()
        try await rig.run { _ in
            let (job, worker) = try await started(rig)
            await worker.print("done\n")
            await worker.succeed(job.id)
            _ = try await worker.fences.next("the job's fence")
            worker.exit(with: .exited(0))
            let ended = try await rig.waitFor(job.id, .succeeded)
            #expect(ended.reason == nil)
            #expect(log(rig, job).hasPrefix("done\n"))
        }
    }
}
