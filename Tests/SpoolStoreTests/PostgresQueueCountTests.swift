// PostgresQueueCountTests: `queue_counts`, the per-priority counts of queued jobs kept by
// triggers on PostgreSQL — exact while nodes submit, claim, cancel and expire jobs at once;
// unchanged by folding the rows of ended sessions; filled in by the migration for the jobs a
// database already holds.

import SpoolCore
import PostgresNIO
@testable import SpoolPostgres
import SpoolTestSupport
import SpoolStore
import Synchronization
import Testing

@Suite struct PostgresQueueCountTests {
    /// Runs `body` with `count` nodes sharing one fresh database, and the database's URL.
    func withNodes(_ count: Int, _ body: ([PostgresJobStore], String) async throws -> Void) async throws {
        let url = try await TestPostgres.createDatabase()
        let nodes = try (0..<count).map { index in
            try PostgresJobStore(location: PostgresLocation(url: url), node: "node-\(index)", connections: 6, logger: TestPostgres.logger)
        }
        defer { for node in nodes { node.close() } }
        for node in nodes { try await node.prepare() }
        try await body(nodes, url)
        for node in nodes { node.close() }
        try await TestPostgres.dropDatabase(url)
    }

    /// Queued jobs per priority, as the counters have them and as counted in `jobs`, and the
    /// sessions (backend pids) that hold counter rows.
    func counts(_ url: String) async throws -> (counters: [Int: Int], counted: [Int: Int], sessions: Set<Int>) {
        var counters: [Int: Int] = [:], counted: [Int: Int] = [:], sessions: Set<Int> = []
        try await TestPostgres.withClient(url) { client in
            for try await (priority, sum) in try await client.query(
                "SELECT priority, CAST(sum(queued) AS bigint) FROM queue_counts GROUP BY priority").decode((Int, Int64).self) where sum != 0 {
                counters[priority] = Int(sum)
            }
            for try await (priority, count) in try await client.query(
                "SELECT priority, count(*) FROM jobs WHERE state = 'queued' GROUP BY priority").decode((Int, Int64).self) {
                counted[priority] = Int(count)
            }
            for try await backend in try await client.query("SELECT DISTINCT backend FROM queue_counts").decode(Int.self) {
                sessions.insert(backend)
            }
        }
        return (counters, counted, sessions)
    }

    @Test func theCountersMatchTheQueueWhileNodesChurnAtOnce() async throws {
        try await withNodes(3) { nodes, url in
            let ids = IDBox()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (index, node) in nodes.enumerated() {
                    group.addTask {   // submits over three priorities, some with a deadline long past
                        for number in 0..<60 {
                            var job = makeJob(priority: (number + index) % 3)
                            if number % 10 == 0 { job.startBy = at(5) }
                            ids.add(try await node.create(job).id)
                        }
                    }
                    group.addTask {   // a slot that claims, and finishes claiming the next
                        var job = try await node.claimNext(for: SlotID(index), now: at(10))
                        for _ in 0..<40 {
                            guard let current = job else {
                                job = try await node.claimNext(for: SlotID(index), now: at(10))
                                continue
                            }
                            job = try await node.finish(current.id, attempt: current.attempts, outcome: .succeeded, now: at(20),
                                                        claimNextFor: SlotID(index)).next
                        }
                    }
                    group.addTask {   // cancels of whatever was submitted, queued or not
                        for number in 0..<30 {
                            if let id = ids.pick(number * 7 + index) { _ = try await node.cancel(id, now: at(30)) }
                            if number % 10 == 0 { _ = try await node.expireDeadlines(now: at(40)) }
                        }
                    }
                }
                try await group.waitForAll()
            }
            let (counters, counted, _) = try await counts(url)
            #expect(!counted.isEmpty, "the churn left jobs queued")
            #expect(counters == counted)
            #expect(try await nodes[0].queuedCount() == counted.values.reduce(0, +))
            #expect(try await nodes[1].queuedCount(priorityAtLeast: 1, dueBy: at(50)) == (counted[1] ?? 0) + (counted[2] ?? 0))
        }
    }

    @Test func foldingTheRowsOfEndedSessionsKeepsTheCounts() async throws {
        try await withNodes(2) { nodes, url in
            // Many sessions of one node each add rows of their own.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for number in 0..<24 { group.addTask { _ = try await nodes[0].create(makeJob(priority: number % 3)) } }
                try await group.waitForAll()
            }
            let before = try await counts(url)
            #expect(before.counters == [0: 8, 1: 8, 2: 8] && before.counted == before.counters)
            #expect(!before.sessions.isEmpty)
            nodes[0].close()
            // Its sessions end when its connections close, one by one: fold until none of their
            // rows is left (a minute at most: on a loaded run the server took more than ten
            // seconds to end them). Each fold lands in the session that ran it, so sessions that
            // end between two folds may leave their counts to more than one of the folder's.
            let deadline = ContinuousClock.now + .seconds(60)
            var after = before
            repeat {
                await nodes[1].foldQueueCounts()
                after = try await counts(url)
            } while !after.sessions.isDisjoint(with: before.sessions) && ContinuousClock.now < deadline
            #expect(after.sessions.isDisjoint(with: before.sessions), "no row of the ended sessions is left")
            #expect(after.counters == before.counters)
            #expect(try await nodes[1].queuedCount() == 24)
            let job = try await nodes[1].create(makeJob(priority: 1))
            #expect(job.position == 8 + 9)
        }
    }

    @Test func theMigrationCountsTheJobsAlreadyQueued() async throws {
        try await withNodes(1) { nodes, url in
            for number in 0..<9 { _ = try await nodes[0].create(makeJob(priority: number % 2 == 0 ? 5 : 0)) }
            _ = try await nodes[0].claimNext(for: SlotID(0), now: at(10))
            nodes[0].close()
            // The database as Spool left it before the counters.
            try await TestPostgres.withClient(url) { client in
                try await client.query("DROP TABLE queue_counts")
                try await client.query("DROP FUNCTION spool_count_queued, spool_count_cleared CASCADE")
                try await client.query("DELETE FROM spool_migrations WHERE version = 9")
            }
            let upgraded = try PostgresJobStore(location: PostgresLocation(url: url), node: "node-0", logger: TestPostgres.logger)
            defer { upgraded.close() }
            try await upgraded.prepare()
            let (counters, counted, _) = try await counts(url)
            #expect(counters == [5: 4, 0: 4] && counted == counters)
        }
    }
}

/// The ids submitted so far, for the tasks that cancel them.
private final class IDBox: Sendable {
    private let ids = Mutex<[JobID]>([])
    func add(_ id: JobID) { ids.withLock { $0.append(id) } }
    func pick(_ number: Int) -> JobID? { ids.withLock { $0.isEmpty ? nil : $0[number % $0.count] } }
}
