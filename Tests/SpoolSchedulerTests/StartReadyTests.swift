import Foundation
import Logging
import SpoolCore
@testable import SpoolExecutor
import SpoolScheduler
import SpoolStore
import SpoolTesting
import Synchronization
import Testing

/// Process mode with real processes: a job started ahead starts from the scheduler's hand-over
/// (`JobExecutor.startReady`), and its attempt's `run` carries on with that very process — the
/// job runs once, its output in its log, and the look-ahead's bookkeeping is left empty.
@Suite struct StartReadyTests {
    final class Count: Sendable { let value = Atomic<Int>(0) }

    /// The process executor, counting the starts `startReady` made.
    struct Counting: JobExecutor {
        let inner: ProcessJobExecutor
        let ready: Count

        func startReady(_ job: Job, on slot: SlotSpec, observer: ExecutionObserver) -> Bool {
            let started = inner.startReady(job, on: slot, observer: observer)
            if started { ready.value.add(1, ordering: .relaxed) }
            return started
        }
        func run(_ job: Job, on slot: SlotSpec, stops: AsyncStream<StopReason>, observer: ExecutionObserver) async -> ExecutionResult {
            await inner.run(job, on: slot, stops: stops, observer: observer)
        }
        func prepare(_ job: Job, on slot: SlotSpec) async { await inner.prepare(job, on: slot) }
        func slotIdle(_ slot: SlotID) async { await inner.slotIdle(slot) }
        func dropPrepared(on slot: SlotID) async { await inner.dropPrepared(on: slot) }
        func ended(_ job: JobID, on slot: SlotID) async { await inner.ended(job, on: slot) }
        func shutdown() async { await inner.shutdown() }
    }

    /// The processes with `variable` (`NAME=value`) in their environment.
    static func processes(with variable: String) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { pid in
            guard let environment = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return false }
            return environment.split(separator: 0).contains { Array($0) == Array(variable.utf8) }
        }
    }

    @Test func aJobStartedAheadStartsFromTheHandOverAndRunsOnce() async throws {
        let type = JobType(name: "t", command: try CommandTemplate([
            "/bin/sh", "-c", "echo $$ >> \"$SPOOL_OUTPUT_DIR/pids\"; echo done-{input.n}; sleep {input.sleep}",
        ]), timeoutSeconds: 60, maxAttempts: 1)
        let ready = Count()
        let executor = Mutex<ProcessJobExecutor?>(nil)
        let rig = try SchedulerRig(types: [type], executor: { catalog, clock, dataDirectory in
            let processes = ProcessJobExecutor(catalog: catalog, configuration: .init(dataDirectory: dataDirectory),
                                               launcher: SubprocessLauncher(logger: SchedulerRig.quiet("launcher-test")), clock: clock)
            executor.withLock { $0 = processes }
            return Counting(inner: processes, ready: ready)
        })
        try await rig.run({ _ in
            // The first runs long enough for the slot to look up the second, start it behind its
            // gate, and look at its executable when the first exits (the rig's clock stands still:
            // that look stays fresh).
            let first = try await rig.submit(input: .object(["n": .int(1), "sleep": .double(0.3)]))
            let second = try await rig.submit(input: .object(["n": .int(2), "sleep": .int(0)]))
            let gated = try await within("the second job's process started ahead") {
                while true {
                    if let pid = Self.processes(with: "SPOOL_JOB_ID=\(second.id)").first { return pid }
                    try await Task.sleep(for: .milliseconds(5))
                }
            }
            _ = try await rig.waitFor(first.id, .succeeded)
            let done = try await rig.waitFor(second.id, .succeeded)
            #expect(done.attempts == 1)
            #expect(ready.value.load(ordering: .relaxed) == 1, "the second job started from the hand-over")
            let paths = JobPaths(dataDirectory: rig.dataDirectory, job: second.id)
            let pids = try String(contentsOfFile: paths.outputs + "/pids", encoding: .utf8).split(separator: "\n")
            #expect(pids == ["\(gated)"], "the job ran once, as the process started ahead: \(pids), not \(gated)")
            let log = try String(contentsOfFile: paths.log, encoding: .utf8)
            #expect(log.components(separatedBy: "done-2").count == 2, "its output, once, in its log: \(log)")
            let ahead = try #require(executor.withLock { $0 }).ahead
            #expect(ahead.isEmpty, "the look-ahead's bookkeeping is empty once the jobs ended")
        })
    }
}
