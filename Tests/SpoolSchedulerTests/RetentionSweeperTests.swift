import Foundation
import Logging
import SpoolCore
import SpoolExecutor
import SpoolScheduler
import SpoolStore
import SpoolTestSupport
import SpoolTesting
import Testing

/// Retention: a pass deletes the jobs that ended before now less the retention, with their
/// directories, and this node's old directories of jobs no longer stored; the service passes at
/// start and then every quarter of the retention (on a manual clock: no test waits for it).
@Suite struct RetentionSweeperTests {
    static let day = 86_400.0

    let manual = ManualClock()
    let clock: SpoolClock
    /// The wall clock the sweeper reads: real time at the test's start, moved with `manual`
    /// (directories carry real modification times).
    let start = WallClock.now()
    let scratch: ScratchDirectory
    var dataDirectory: String { scratch.path }

    init() throws {
        let manual = manual, start = start
        clock = SpoolClock(manual, wall: { start.adding(seconds: manual.now.offset.inSeconds) })
        scratch = try ScratchDirectory("spool-retention", subdirectories: ["jobs/.spare"])
    }

    func sweeper(_ store: any JobStore, retention: Duration = .seconds(30 * 86_400), batch: Int = 500) -> RetentionSweeper {
        var configuration = RetentionSweeper.Configuration(retention: retention)
        configuration.batch = batch
        return RetentionSweeper(store: store, dataDirectory: dataDirectory, configuration: configuration, clock: clock,
                                logger: Logger(label: "test"))
    }

    /// A job stored and, unless `running`, ended at `end` (wall time).
    func job(in store: any JobStore, endedAt end: Timestamp?, slot: Int = 0) async throws -> JobID {
        let job = Job(id: .random(), type: "noop", input: .object([:]), priority: 0, timeoutSeconds: 60, maxAttempts: 1,
                      createdAt: (end ?? start).adding(seconds: -10))
        _ = try await store.enqueue(job)
        _ = try await store.claimNext(for: SlotID(slot), now: (end ?? start).adding(seconds: -5))
        if let end { _ = try await store.finish(job.id, attempt: 1, outcome: .succeeded, now: end, claimNextFor: nil) }
        return job.id
    }

    /// A directory for `name` under `jobs/`, last changed `age` seconds before the start.
    func directory(_ name: String, age: Double) throws -> String {
        let path = dataDirectory + "/jobs/" + name
        try FileManager.default.createDirectory(atPath: path + "/outputs", withIntermediateDirectories: true)
        try Data("a line\n".utf8).write(to: URL(fileURLWithPath: path + "/log.txt"))
        let date = Date(timeIntervalSince1970: Double(start.microseconds) / 1e6 - age)
        try FileManager.default.setAttributes([.modificationDate: date], ofItemAtPath: path)
        return path
    }

    func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

    @Test func aPassDeletesOldJobsWithTheirDirectoriesAndLeavesTheRest() async throws {
        defer { try? FileManager.default.removeItem(atPath: dataDirectory) }
        let store = MemoryJobStore()
        let old = try await job(in: store, endedAt: start.adding(seconds: -40 * Self.day))
        let recent = try await job(in: store, endedAt: start.adding(seconds: -2 * Self.day))
        let running = try await job(in: store, endedAt: nil, slot: 1)
        let oldDirectory = try directory(old.rawValue, age: 40 * Self.day)
        let recentDirectory = try directory(recent.rawValue, age: 2 * Self.day)
        // A job that has run for longer than the retention keeps its directory, however old.
        let runningDirectory = try directory(running.rawValue, age: 45 * Self.day)
        // A directory whose job another node deleted (or a crash left): old, and gone from the store.
        let orphan = try directory(JobID.random().rawValue, age: 35 * Self.day)
        // The same, but recent: left until it is as old as the retention.
        let youngOrphan = try directory(JobID.random().rawValue, age: 1 * Self.day)
        let spare = try directory(".spare/0-1", age: 50 * Self.day)

        let pass = await sweeper(store).sweep()
        #expect(pass == RetentionSweeper.Pass(jobs: 1, directories: 2))
        #expect(try await store.job(old) == nil)
        #expect(try await store.job(recent) != nil)
        #expect(try await store.job(running) != nil)
        #expect(!exists(oldDirectory) && !exists(orphan))
        #expect(exists(recentDirectory) && exists(runningDirectory) && exists(youngOrphan) && exists(spare))
        // Nothing more to do.
        #expect(await sweeper(store).sweep() == RetentionSweeper.Pass())
    }

    @Test func aPassDeletesInBatchesUntilNoneIsLeft() async throws {
        defer { try? FileManager.default.removeItem(atPath: dataDirectory) }
        let store = MemoryJobStore()
        var ids: [JobID] = []
        for day in 0..<5 { ids.append(try await job(in: store, endedAt: start.adding(seconds: -Double(40 + day) * Self.day))) }
        #expect(await sweeper(store, batch: 2).sweep().jobs == 5)
        for id in ids { #expect(try await store.job(id) == nil) }
    }

    @Test func aStoreThatRefusesLeavesEverythingForTheNextPass() async throws {
        defer { try? FileManager.default.removeItem(atPath: dataDirectory) }
        let store = FlakyStore(MemoryJobStore())
        let old = try await job(in: store, endedAt: start.adding(seconds: -40 * Self.day))
        let oldDirectory = try directory(old.rawValue, age: 40 * Self.day)
        store.fail(.retention, times: 1)
        #expect(await sweeper(store).sweep() == RetentionSweeper.Pass())
        #expect(try await store.job(old) != nil && exists(oldDirectory))
        #expect(await sweeper(store).sweep() == RetentionSweeper.Pass(jobs: 1, directories: 1))
        #expect(try await store.job(old) == nil && !exists(oldDirectory))
    }

    @Test func theServicePassesAtStartAndEveryQuarterOfTheRetention() async throws {
        defer { try? FileManager.default.removeItem(atPath: dataDirectory) }
        #expect(RetentionSweeper.Configuration(retention: .seconds(8)).interval == .seconds(2))
        #expect(RetentionSweeper.Configuration(retention: .seconds(30 * 86_400)).interval == .seconds(3600))
        #expect(RetentionSweeper.Configuration(retention: .milliseconds(100)).interval == .seconds(1))

        let store = MemoryJobStore()
        let before = try await job(in: store, endedAt: start.adding(seconds: -9))
        let later = try await job(in: store, endedAt: start.adding(seconds: -1), slot: 1)
        let service = sweeper(store, retention: .seconds(8))
        let run = Task { try await service.run() }
        defer { run.cancel() }
        // The pass at start: `before` ended 9 s ago, `later` 1 s ago.
        try await within("the first pass") { await manual.waitForSleeper(within: .seconds(2)) }
        #expect(try await store.job(before) == nil)
        #expect(try await store.job(later) != nil)
        // `later` is 8 s old after 7 s more: the pass at 8 s (the fourth) deletes it, not one before.
        for second in stride(from: 2, through: 8, by: 2) {
            manual.advance(by: .seconds(2))
            try await within("the pass at \(second) s") { await manual.waitForSleeper(within: .seconds(2)) }
            let gone = try await store.job(later) == nil
            #expect(gone == (second == 8), "at \(second) s")
        }
    }
}
