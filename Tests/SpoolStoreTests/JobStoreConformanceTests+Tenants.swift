// The conformance suite, part three: tenants. Fair share within a priority (tenants take
// turns, by weight; a newcomer is not stuck behind another tenant's backlog), max_running,
// queue limits, owner-scoped listings, events and idempotency keys, who canceled, and the token
// store. Every driver passes the same tests.

import SpoolCore
import SpoolStore
import Testing

extension JobStoreConformanceTests {
    func owned(_ owner: String?, priority: Int = 0, weight: Double = 1, key: String? = nil) -> Job {
        var job = makeJob(priority: priority, key: key)
        job.owner = owner
        job.shareWeight = weight
        return job
    }

    func withTokenStore(_ kind: StoreKind, _ body: (any JobStore & TokenStore) async throws -> Void) async throws {
        try await withStore(kind) { store in
            try await body(try #require(store as? any JobStore & TokenStore, "every driver keeps tokens"))
        }
    }

    func token(_ name: String, admin: Bool = false, limits: TenantLimits = TenantLimits()) -> TokenRecord {
        let (id, _) = TokenText.generate()
        return TokenRecord(id: id, name: name, secretDigest: Array(repeating: 7, count: 32), isAdmin: admin, limits: limits, createdAt: at(1))
    }

    // MARK: fair share

    @Test(arguments: StoreKind.allCases)
    func tenantsWithBacklogsTakeTurns(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            var expected: [String] = []
            for owner in ["a", "b", "c"] { for _ in 0..<5 { _ = try await store.create(owned(owner)) } }
            for _ in 0..<5 { expected += ["a", "b", "c"] }
            let order = try await store.drain().map { $0.owner ?? "-" }
            #expect(order == expected, "A, B, C, A, B, C… from a backlog of A×5, B×5, C×5")
        }
    }

    @Test(arguments: StoreKind.allCases)
    func aNewcomerWaitsForAtMostOneMoreJobOfATenantWithABacklog(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            for _ in 0..<1000 { _ = try await store.create(owned("a")) }
            // Two slots busy with A's first jobs when B submits.
            _ = try await store.claimNext(for: SlotID(0), now: at(2_000))
            _ = try await store.claimNext(for: SlotID(1), now: at(2_000))
            let b = try await store.create(owned("b"))
            #expect(b.position == 2, "one more A job, then B's: \(b.position ?? -1)")
            var before = 0
            while let next = try await store.claimNext(for: SlotID(0), now: at(3_000)), next.owner == "a" { before += 1 }
            #expect(before <= 2, "B started after \(before) more A jobs on 2 slots")
            #expect(try await store.require(b.id).state == .running)
        }
    }

    /// A job at the queue's head that cannot start yet (a delayed one; a capped tenant's) does
    /// not hold the fair-share clock back: a tenant that joins late goes after the job being
    /// served, not at that old head — where all its burst went before every other tenant's next
    /// job (found by attacking the build: 30 of a newcomer's jobs in a row).
    @Test(arguments: StoreKind.allCases)
    func aJobThatCannotStartYetDoesNotLetANewcomerJumpTheQueue(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            var delayed = owned("a")
            delayed.notBefore = at(1_000_000)
            _ = try await store.create(delayed)
            for _ in 0..<10 { _ = try await store.create(owned("b")) }
            for _ in 0..<5 {
                let job = try #require(try await store.claimNext(for: SlotID(0), now: at(2_000)))
                _ = try await store.finish(job.id, attempt: job.attempts, outcome: .succeeded, now: at(2_001), claimNextFor: nil)
            }
            _ = try #require(try await store.claimNext(for: SlotID(0), now: at(2_000)), "B's sixth runs")
            for _ in 0..<3 { _ = try await store.create(owned("c")) }
            var order: [String] = []
            for slot in 1...4 { order.append(try await store.claimNext(for: SlotID(slot), now: at(3_000))?.owner ?? "-") }
            #expect(order == ["c", "b", "c", "b"], "C takes turns with B from where B is served: \(order)")
        }
    }

    @Test(arguments: StoreKind.allCases)
    func aTenantWithTwiceTheWeightRunsTwiceAsOften(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            for _ in 0..<10 { _ = try await store.create(owned("heavy", weight: 2)) }
            for _ in 0..<10 { _ = try await store.create(owned("light", weight: 1)) }
            let first = try await store.drain().prefix(9).map { $0.owner ?? "-" }
            #expect(first.filter { $0 == "heavy" }.count == 6, "\(first)")
        }
    }

    @Test(arguments: StoreKind.allCases)
    func priorityStillComesFirstAndFairShareOrdersWithinIt(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            for _ in 0..<3 { _ = try await store.create(owned("a")) }
            let urgent = try await store.create(owned("b", priority: 5))
            #expect(urgent.position == 1)
            let b = try await store.create(owned("b"))
            #expect(b.position == 3, "behind the urgent job and A's head")
            let order = try await store.drain().map(\.id)
            #expect(order.first == urgent.id && order[2] == b.id)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func positionsFollowTheFairShareOrder(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            var jobs: [Job] = []
            for owner in ["a", "a", "a", "b", "b", "c"] { jobs.append(try await store.create(owned(owner))) }
            var positions: [JobID: Int] = [:]
            for job in jobs { positions[job.id] = try await store.require(job.id).position }
            let claimed = try await store.drain()
            for (index, job) in claimed.enumerated() { #expect(positions[job.id] == index + 1, "job \(index) of \(job.owner ?? "-")") }
        }
    }

    @Test(arguments: StoreKind.allCases)
    func positionsFromEitherEndOfALongerQueueFollowTheClaimOrder(_ kind: StoreKind) async throws {
        // Three tenants of different weights over three priorities, in a random order: a job in
        // the back half of its priority is placed by counting the jobs behind it. The position a
        // submit answers is the one a read of the job gives right after it.
        try await withStore(kind) { store in
            var random = SplitMix64(seed: 7)
            var jobs: [Job] = []
            for index in 0..<45 {
                let owner = ["a", "b", "c"][random.roll(3)]
                let weight = ["a": 1.0, "b": 2.0, "c": 0.5][owner]!
                let job = try await store.create(owned(owner, priority: [0, 0, 1, 5][random.roll(4)], weight: weight))
                #expect(job.position == (try await store.require(job.id).position), "submit \(index): \(owner) at priority \(job.priority)")
                jobs.append(job)
            }
            var positions: [JobID: Int] = [:]
            for job in jobs { positions[job.id] = try await store.require(job.id).position }
            let claimed = try await store.drain()
            #expect(claimed.count == jobs.count)
            for (index, job) in claimed.enumerated() {
                #expect(positions[job.id] == index + 1, "job \(index): \(job.owner ?? "-") at priority \(job.priority)")
            }
        }
    }

    // MARK: max_running and queue limits

    @Test(arguments: StoreKind.allCases)
    func aTenantAtItsMaxRunningWaitsWhileOthersRun(_ kind: StoreKind) async throws {
        try await withTokenStore(kind) { store in
            try await store.createToken(token("a", limits: TenantLimits(maxRunning: 1)))
            for _ in 0..<3 { _ = try await store.create(owned("a")) }
            let b = try await store.create(owned("b"))
            let first = try #require(try await store.claimNext(for: SlotID(0), now: at(2_000)))
            #expect(first.owner == "a")
            let second = try #require(try await store.claimNext(for: SlotID(1), now: at(2_000)))
            #expect(second.id == b.id, "A is at its max_running of 1")
            #expect(try await store.claimNext(for: SlotID(2), now: at(2_000)) == nil, "A's other jobs wait")
            let next = try await store.finish(first.id, attempt: 1, outcome: .succeeded, now: at(3_000), claimNextFor: SlotID(0)).next
            #expect(next?.owner == "a", "one of A's finished: the next may start")
        }
    }

    @Test(arguments: StoreKind.allCases)
    func queueLimitsRefuseASubmitAndStoreNothing(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            for _ in 0..<2 { _ = try await store.enqueue(owned("a"), limits: QueueLimits(owner: 2)) }
            await #expect { try await store.enqueue(owned("a"), limits: QueueLimits(owner: 2)) } throws: { error in
                (error as? StoreError)?.code == .queueFull && (error as? StoreError)?.limit == .owner
            }
            #expect(try await store.queuedCount(owner: "a") == 2)
            _ = try await store.enqueue(owned("b"), limits: QueueLimits(total: 3, owner: 2))
            await #expect { try await store.enqueue(owned("c"), limits: QueueLimits(total: 3)) } throws: { error in
                (error as? StoreError)?.code == .queueFull && (error as? StoreError)?.limit == .server
            }
            #expect(try await store.queuedCount() == 3)
            // A repeat of a stored job is answered even when the queue is full.
            let keyed = try await store.create(owned("b", key: "k"))
            #expect(try await store.enqueue(owned("b", key: "k"), limits: QueueLimits(total: 1)).existing?.id == keyed.id)
        }
    }

    // MARK: owners

    @Test(arguments: StoreKind.allCases)
    func listingsAndEventsCanBeScopedToAnOwner(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let a = try await store.create(owned("a"))
            let b = try await store.create(owned("b"))
            let anonymous = try await store.create(owned(nil))
            #expect(try await store.jobs(JobQuery(owner: "a")).jobs.map(\.id) == [a.id])
            #expect(Set(try await store.jobs(JobQuery()).jobs.map(\.id)) == [a.id, b.id, anonymous.id])
            #expect(try await store.require(a.id).owner == "a")
            #expect(try await store.require(anonymous.id).owner == nil)
            _ = try await store.claimNext(for: SlotID(0), now: at(2_000))
            try await store.appendEvent(.log, job: a.id, data: .object(["text": .string("hi")]), now: at(2_100))
            let events = try await store.events(owner: "a") { $0.contains { $0.kind == .log } }
            #expect(!events.isEmpty && events.allSatisfy { $0.job == a.id && $0.owner == "a" })
            #expect(events.contains { $0.kind == .log })
            #expect(try await store.events(after: 0, job: b.id, owner: "a", limit: 100).isEmpty, "another owner's job shows nothing")
            #expect(try await store.events(after: 0, job: nil, owner: nil, limit: 100).contains { $0.job == b.id })
        }
    }

    @Test(arguments: StoreKind.allCases)
    func idempotencyKeysBelongToTheirOwner(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let mine = try await store.create(owned("a", key: "order-1"))
            let theirs = try await store.enqueue(owned("b", key: "order-1"))
            #expect(theirs.created != nil, "another tenant's key is not mine to see")
            #expect(theirs.job.id != mine.id)
            #expect(try await store.enqueue(owned("a", key: "order-1")).existing?.id == mine.id)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func aCancelRecordsWhoAskedAndTheStateEventSaysSo(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let queued = try await store.create(owned("a"))
            let running = try await store.create(owned("a"))
            _ = try await store.cancel(queued.id, by: "admin", now: at(2_000))
            #expect(try await store.require(queued.id).canceledBy == "admin")
            _ = try await store.claimNext(for: SlotID(0), now: at(2_000))
            guard case .stopping = try await store.cancel(running.id, by: "a", now: at(2_100)) else {
                Issue.record("a running job's cancel goes to its slot")
                return
            }
            _ = try await store.finish(running.id, attempt: 1, outcome: .canceled, now: at(2_200), claimNextFor: nil)
            let canceled = try await store.require(running.id)
            #expect(canceled.state == .canceled && canceled.canceledBy == "a")
            let states = try await store.events(after: 0, job: queued.id, limit: 10).filter { $0.kind == .state }
            #expect(states.first?.data["actor"] == .string("a"), "submitted by a")
            #expect(states.last?.data["actor"] == .string("admin"), "canceled by admin")
        }
    }

    // MARK: tokens

    @Test(arguments: StoreKind.allCases)
    func tokensAreStoredListedAndRevoked(_ kind: StoreKind) async throws {
        try await withTokenStore(kind) { store in
            let limits = TenantLimits(maxQueued: 10, maxRunning: 2, rate: 5.5, weight: 3)
            let alice = token("alice", admin: true, limits: limits)
            try await store.createToken(alice)
            try await store.createToken(token("bob"))
            await #expect { try await store.createToken(token("bob")) } throws: { ($0 as? StoreError)?.code == .conflict }
            let listed = try await store.tokens()
            #expect(listed.map(\.name) == ["alice", "bob"])
            #expect(listed.first == alice, "every field round-trips: \(listed.first.map { "\($0)" } ?? "")")
            #expect(try await store.revokeToken(named: "bob"))
            #expect(try await store.revokeToken(named: "bob") == false)
            #expect(try await store.tokens().map(\.name) == ["alice"])
            let key = try await store.sessionKey()
            #expect(key.count == 32)
            #expect(try await store.sessionKey() == key, "made once, then the same")
        }
    }

    /// Once a token was created, the store says so with every token revoked (`auth: auto` stays
    /// closed); a fresh store says no.
    @Test(arguments: StoreKind.allCases)
    func aStoreRemembersThatTokensWereCreated(_ kind: StoreKind) async throws {
        try await withTokenStore(kind) { store in
            #expect(try await store.tokensWereCreated() == false)
            try await store.createToken(token("only"))
            #expect(try await store.revokeToken(named: "only"))
            #expect(try await store.tokens().isEmpty)
            #expect(try await store.tokensWereCreated())
        }
    }
}
