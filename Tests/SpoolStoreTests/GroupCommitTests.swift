// GroupCommitTests: concurrent submits share commits, every caller gets its own result,
// and a failed commit fails only the batch it carried.

import SpoolStore
import Synchronization
import Testing

/// Records the batches a GroupCommit hands to its commit function. The first commit can be
/// held until a number of submitters have arrived, so batching is forced, not hoped for.
final class CommitRecorder: Sendable {
    private struct State {
        var batches: [[Int]] = []
        var arrivals = 0
        var held: CheckedContinuation<Void, Never>?
        var released = false
    }

    private let state = Mutex(State())
    let holdFirstCommitUntil: Int

    init(holdFirstCommitUntil: Int = 0) { self.holdFirstCommitUntil = holdFirstCommitUntil }

    var batches: [[Int]] { state.withLock { $0.batches } }

    /// A submitter is about to submit.
    func arrive() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.arrivals += 1
            guard state.arrivals >= holdFirstCommitUntil, !state.released else { return nil }
            state.released = true
            defer { state.held = nil }
            return state.held
        }
        waiter?.resume()
    }

    /// Records the batch; the first one waits until every expected submitter has arrived.
    func record(_ batch: [Int]) async {
        let isFirst = state.withLock { state in
            state.batches.append(batch)
            return state.batches.count == 1
        }
        guard isFirst, holdFirstCommitUntil > 0 else { return }
        await withCheckedContinuation { continuation in
            let proceed = state.withLock { state in
                if state.released || state.arrivals >= holdFirstCommitUntil {
                    state.released = true
                    return true
                }
                state.held = continuation
                return false
            }
            if proceed { continuation.resume() }
        }
    }
}

struct Poisoned: Error {}

/// A one-shot event tasks can wait for.
final class Latch: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func open() {
        let waiters = state.withLock { state in
            state.open = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    func wait() async {
        await withCheckedContinuation { continuation in
            let isOpen = state.withLock { state in
                if !state.open { state.waiters.append(continuation) }
                return state.open
            }
            if isOpen { continuation.resume() }
        }
    }
}

@Suite struct GroupCommitTests {
    @Test func singleSubmitCommitsAloneAndGetsItsResult() async throws {
        let recorder = CommitRecorder()
        let group = GroupCommit<Int, String> { items in
            await recorder.record(items)
            return items.map { .success("done-\($0)") }
        }
        #expect(try await group.submit(1) == "done-1")
        #expect(try await group.submit(2) == "done-2")
        #expect(recorder.batches == [[1], [2]])
    }

    @Test func concurrentSubmitsAreBatchedAndEachGetsItsOwnResult() async throws {
        let count = 300
        let recorder = CommitRecorder(holdFirstCommitUntil: count)
        let group = GroupCommit<Int, String> { items in
            await recorder.record(items)
            return items.map { .success("done-\($0)") }
        }
        try await withThrowingTaskGroup(of: (Int, String).self) { tasks in
            for item in 0..<count {
                tasks.addTask {
                    recorder.arrive()
                    return (item, try await group.submit(item))
                }
            }
            for try await (item, result) in tasks { #expect(result == "done-\(item)") }
        }
        let batches = recorder.batches
        #expect(batches.flatMap { $0 }.sorted() == Array(0..<count), "every item committed exactly once")
        #expect(batches.count < count, "submits that wait share a commit")
        #expect(batches.contains { $0.count > 1 })
    }

    @Test func batchesNeverExceedMaxBatch() async throws {
        let count = 100
        let recorder = CommitRecorder(holdFirstCommitUntil: count)
        let group = GroupCommit<Int, Int>(maxBatch: 8) { items in
            await recorder.record(items)
            return items.map { .success($0 * 2) }
        }
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for item in 0..<count {
                tasks.addTask {
                    recorder.arrive()
                    let doubled = try await group.submit(item)
                    #expect(doubled == item * 2)
                }
            }
            try await tasks.waitForAll()
        }
        let batches = recorder.batches
        #expect(batches.allSatisfy { $0.count <= 8 })
        #expect(batches.contains { $0.count == 8 }, "the held-up submitters fill whole batches")
        #expect(batches.flatMap { $0 }.sorted() == Array(0..<count))
    }

    /// A leader answers its caller once its own batch is committed: the callers queued meanwhile
    /// commit in the next round under one of them, not under the first leader (which, leading
    /// round after round, answered only once the queue ran dry).
    @Test func aLeaderAnswersAfterItsOwnBatchAndHandsTheLeadOn() async throws {
        let batches = Mutex<[[Int]]>([])
        let firstStarted = Latch(), followersQueued = Latch(), secondHeld = Latch(), releaseSecond = Latch()
        let group = GroupCommit<Int, Int> { items in
            let round = batches.withLock { $0.append(items); return $0.count }
            if round == 1 { firstStarted.open(); await followersQueued.wait() }
            if round == 2 { secondHeld.open(); await releaseSecond.wait() }
            return items.map { .success($0 * 10) }
        }
        let leader = Task { try await group.submit(0) }
        await firstStarted.wait()
        let followers = (1...5).map { item in Task { try await group.submit(item) } }
        while group.waiting < 5 { await Task.yield() }
        followersQueued.open()
        await secondHeld.wait()
        // The second round is held: the first leader must have answered already. (A leader that
        // led that round too answers only once it is released, which a failing run does after 10 s.)
        let first = await withTaskGroup(of: String.self) { race in
            race.addTask { _ = try? await leader.value; return "leader" }
            race.addTask {
                try? await Task.sleep(for: .seconds(10))
                releaseSecond.open()
                return "timeout"
            }
            defer { race.cancelAll() }
            return await race.next() ?? ""
        }
        #expect(first == "leader", "the first leader was still leading the second round")
        #expect(try await leader.value == 0)
        releaseSecond.open()
        for (item, follower) in zip(1...5, followers) { #expect(try await follower.value == item * 10) }
        #expect(batches.withLock { $0 }.map { $0.sorted() } == [[0], [1, 2, 3, 4, 5]])
    }

    @Test func perItemFailureFailsOnlyThatCaller() async throws {
        let group = GroupCommit<Int, Int> { items in
            items.map { $0 < 0 ? .failure(Poisoned()) : .success($0) }
        }
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for item in -20..<20 {
                tasks.addTask {
                    if item < 0 {
                        await #expect(throws: Poisoned.self) { try await group.submit(item) }
                    } else {
                        let value = try await group.submit(item)
                        #expect(value == item)
                    }
                }
            }
            try await tasks.waitForAll()
        }
    }

    @Test func failedCommitFailsOnlyItsBatchAndLaterSubmitsStillWork() async throws {
        let count = 200
        let poison = 17
        let recorder = CommitRecorder(holdFirstCommitUntil: count)
        let group = GroupCommit<Int, Int> { items in
            await recorder.record(items)
            if items.contains(poison) { throw Poisoned() }
            return items.map { .success($0) }
        }
        let failures = await withTaskGroup(of: (Int, Bool).self) { tasks in
            for item in 0..<count {
                tasks.addTask {
                    recorder.arrive()
                    do {
                        return (item, try await group.submit(item) != item)
                    } catch {
                        return (item, true)
                    }
                }
            }
            return await tasks.reduce(into: Set<Int>()) { failed, outcome in if outcome.1 { failed.insert(outcome.0) } }
        }
        let poisonedBatch = try #require(recorder.batches.first { $0.contains(poison) })
        #expect(failures == Set(poisonedBatch))
        #expect(failures.count < count, "other batches committed")
        // The group is not wedged by the failure: a lone submit leads and commits again.
        #expect(try await group.submit(1_000) == 1_000)
        await #expect(throws: Poisoned.self) { try await group.submit(poison) }
        #expect(try await group.submit(1_001) == 1_001)
    }

    // Regression test for a fixed bug: the leader runs every later batch inside its own task, so when the leader's
    // task is cancelled, followers' items fail with CancellationError although their tasks were
    // not cancelled. GRDB's async `pool.write` checks `Task.checkCancellation()` exactly like the
    // commit below, so SQLiteJobStore.enqueue has this failure mode (one client's cancelled
    // submit fails the submits of others batched behind it).
    @Test func cancelingTheLeaderDoesNotFailOtherCallersItems() async throws {
        let followers = 50
        let recorder = CommitRecorder(holdFirstCommitUntil: followers)
        let leading = Latch()
        let group = GroupCommit<Int, Int> { items in
            if recorder.batches.isEmpty { leading.open() }
            await recorder.record(items) // the first batch waits here until every follower arrived
            try Task.checkCancellation() // what GRDB's async write does
            return items.map { .success($0) }
        }
        let leader = Task { try await group.submit(0) }
        await leading.wait()
        leader.cancel()
        let failed = await withTaskGroup(of: Int?.self) { tasks in
            for item in 1...followers {
                tasks.addTask {
                    recorder.arrive()
                    do { return try await group.submit(item) == item ? nil : item } catch { return item }
                }
            }
            return await tasks.reduce(into: [Int]()) { failed, item in if let item { failed.append(item) } }
        }
        _ = await leader.result
        #expect(failed.isEmpty, "\(failed.count) of \(followers) uncancelled submits failed")
    }
}
