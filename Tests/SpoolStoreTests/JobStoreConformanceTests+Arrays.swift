// JobStoreConformanceTests: listing job arrays (`arrays`), newest first by their first task, a
// page at a time, by owner and type; and listing jobs by their array (`JobQuery.array`).

import SpoolCore
import SpoolStore
import Testing

extension JobStoreConformanceTests {
    @Test(arguments: StoreKind.allCases)
    func arraysAreListedNewestFirstWithWhatTheirTasksAddUpTo(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let first = ArraySpec.newID(), second = ArraySpec.newID(), third = ArraySpec.newID()
            let stored = try await store.enqueueArray(tasks(first, count: 3, owner: "ann"), limits: QueueLimits())
            _ = try await store.create(makeJob())   // a job alone is not an array
            // Indices need not start at 0 (`"range": [5, 6]`): the head is the first task stored.
            _ = try await store.enqueueArray(tasks(second, count: 2, first: 5, owner: "bob"), limits: QueueLimits())
            _ = try await store.enqueueArray(tasks(third, count: 1, owner: "ann"), limits: QueueLimits())
            try await end(stored[0], in: store, at: 2_000)

            let page = try await store.arrays(ArrayQuery())
            #expect(page.arrays.map(\.id) == [third, second, first])
            #expect(page.nextCursor == nil)
            let summary = try #require(page.arrays.last)
            #expect(summary == (try await store.arraySummary(first)))
            #expect(summary.counts == [.succeeded: 1, .queued: 2] && summary.owner == "ann")
            #expect(page.arrays[1].size == 2)

            #expect(try await store.arrays(ArrayQuery(owner: "ann")).arrays.map(\.id) == [third, first])
            #expect(try await store.arrays(ArrayQuery(owner: "cy")).arrays.isEmpty)
            #expect(try await store.arrays(ArrayQuery(type: "render")).arrays.count == 3)
            #expect(try await store.arrays(ArrayQuery(type: "echo")).arrays.isEmpty)

            // Deleted whole, an array leaves the list.
            _ = try await store.cancelArray(third, by: nil, now: at(3_000))
            let thirdTasks = try await store.arrayTasks(third, after: nil, limit: 10).map(\.id)
            #expect(try await store.deleteArray(third) == .deleted(thirdTasks))
            #expect(try await store.arrays(ArrayQuery()).arrays.map(\.id) == [second, first])
        }
    }

    @Test(arguments: StoreKind.allCases, [1, 2, 5])
    func pagingThroughArraysVisitsEachOnce(_ kind: StoreKind, limit: Int) async throws {
        try await withStore(kind) { store in
            var ids: [String] = []
            for count in [3, 1, 2, 4, 1] {
                let id = ArraySpec.newID()
                _ = try await store.enqueueArray(tasks(id, count: count), limits: QueueLimits())
                ids.append(id)
            }
            var seen: [String] = []
            var cursor: Int64?
            repeat {
                let page = try await store.arrays(ArrayQuery(limit: limit, before: cursor))
                #expect(page.arrays.count <= limit)
                seen += page.arrays.map(\.id)
                cursor = page.nextCursor
            } while cursor != nil && seen.count <= ids.count
            #expect(seen == ids.reversed())
        }
    }

    @Test(arguments: StoreKind.allCases)
    func jobsAreListedAloneOrByTheirArray(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let id = ArraySpec.newID(), other = ArraySpec.newID()
            let alone = try await store.create(makeJob())
            let stored = try await store.enqueueArray(tasks(id, count: 3), limits: QueueLimits())
            let later = try await store.create(makeJob(type: "echo"))
            _ = try await store.enqueueArray(tasks(other, count: 2), limits: QueueLimits())
            _ = try await store.cancel(stored[1].id, now: at(2_000))

            #expect(try await store.jobs(JobQuery(array: .alone)).jobs.map(\.id) == [later.id, alone.id])
            #expect(try await store.jobs(JobQuery(type: "echo", array: .alone)).jobs.map(\.id) == [later.id])
            #expect(try await store.jobs(JobQuery(array: .tasks(of: id))).jobs.map(\.id) == stored.reversed().map(\.id))
            #expect(try await store.jobs(JobQuery(state: .canceled, array: .tasks(of: id))).jobs.map(\.id) == [stored[1].id])
            #expect(try await store.jobs(JobQuery(array: .tasks(of: ArraySpec.newID()))).jobs.isEmpty)
            let page = try await store.jobs(JobQuery(limit: 2, array: .tasks(of: id)))
            #expect(page.jobs.map(\.id) == [stored[2].id, stored[1].id])
            #expect(try await store.jobs(JobQuery(before: page.nextCursor, array: .tasks(of: id))).jobs.map(\.id) == [stored[0].id])
        }
    }
}

extension JobStoreConformanceTests {
    /// An array refused (its key held, the queue full) refuses only itself: the writes that
    /// share its transaction (SQLite commits concurrent writes together) are stored all the same.
    @Test(arguments: StoreKind.allCases)
    func aRefusedArrayLeavesTheWritesBesideItStored(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let id = ArraySpec.newID()
            let outcomes = try await withThrowingTaskGroup(of: String.self) { group in
                for round in 0..<8 {
                    group.addTask {
                        // The same request, and (every other round) another one under the same key.
                        var same = tasks(id, count: round.isMultiple(of: 2) ? 2 : 3)
                        same[0].idempotencyKey = "one-array"
                        do {
                            _ = try await store.enqueueArray(same, limits: QueueLimits())
                            return "array"
                        } catch let error as StoreError where error.code == .idempotencyConflict {
                            return "conflict"
                        }
                    }
                    group.addTask {
                        do {
                            _ = try await store.enqueueArray(tasks(ArraySpec.newID(), count: 3), limits: QueueLimits(total: 2))
                            return "too many stored"
                        } catch let error as StoreError where error.code == .queueFull {
                            return "full"
                        }
                    }
                    group.addTask { try await store.enqueue(makeJob(key: "job-\(round)")).created != nil ? "job" : "job not created" }
                }
                return try await group.reduce(into: [String: Int]()) { $0[$1, default: 0] += 1 }
            }
            #expect(outcomes == ["array": 1, "conflict": 7, "full": 8, "job": 8], "\(outcomes)")
            let size = try #require(try await store.arraySummary(id)?.size)
            #expect(try await store.jobs(JobQuery(limit: 100)).jobs.count == 8 + size)
        }
    }
}

extension JobStoreConformanceTests {
    /// Indices run over all of Int64 (`"range": [first, last]`): the first page starts at the
    /// very first (found by attacking the build: index Int64.min was never listed).
    @Test(arguments: StoreKind.allCases)
    func tasksAreListedFromTheLowestIndexThereIs(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let id = ArraySpec.newID()
            let stored = try await store.enqueueArray(tasks(id, count: 3, first: .min), limits: QueueLimits())
            #expect(try await store.arrayTasks(id, after: nil, limit: 10).map(\.id) == stored.map(\.id))
            #expect(try await store.arrayTasks(id, after: .min, limit: 10).map(\.id) == Array(stored.dropFirst().map(\.id)))
            #expect(try await store.arrays(ArrayQuery()).arrays.first?.size == 3)
        }
    }
}
