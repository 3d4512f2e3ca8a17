// StoreFixtures: the drivers the conformance suite runs against, a temp directory per
// test, and a job factory. A new driver joins the suite by adding a `StoreKind` case.

import Foundation
import Logging
import SpoolCore
import SpoolPostgres
@testable import SpoolSQLite
import SpoolStore
import SpoolTestSupport
import Testing

enum StoreKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case memory
    case sqlite
    /// A fresh database on the test PostgreSQL server (see `TestPostgres`).
    case postgres

    var testDescription: String { rawValue }
}

/// Runs `body` against a fresh, prepared store of `kind` in its own temp directory.
/// SQLite runs with `synchronous = NORMAL` here for speed; `SQLiteJobStoreTests` covers `FULL`.
/// The SQLite file is closed before its directory goes: removed while open, the directory
/// lost its files and kept the ones the connections wrote after.
func withStore<T>(_ kind: StoreKind, _ body: (any JobStore) async throws -> T) async throws -> T {
    switch kind {
    case .postgres:
        return try await TestPostgres.withStore { store in try await body(store) }
    case .memory:
        let store = MemoryJobStore()
        try await store.prepare()
        return try await body(store)
    case .sqlite:
        let directory = try ScratchDirectory("spool-store")
        let store = try SQLiteJobStore(path: directory.file("spool.sqlite"), synchronous: .normal)
        defer { try? store.pool.close() }
        try await store.prepare()
        return try await body(store)
    }
}

/// A job as `JobCatalog.admit` would build it.
func makeJob(
    type: String = "render", priority: Int = 0, input: JSONValue = .object(["size": .int(64)]),
    maxAttempts: Int = 1, timeout: Double = 60, key: String? = nil, createdAt: Int64 = 1_000
) -> Job {
    Job(id: JobID.random(), type: type, input: input, priority: priority, timeoutSeconds: timeout,
        maxAttempts: maxAttempts, createdAt: Timestamp(microseconds: createdAt), idempotencyKey: key)
}

func at(_ microseconds: Int64) -> Timestamp { Timestamp(microseconds: microseconds) }

/// The tasks of job array `array`, as the API would build them: indices from `first`, each
/// input holding its item (the index).
func tasks(_ array: String, count: Int, first: Int64 = 0, owner: String? = nil, failFast: Bool = false) -> [Job] {
    (0..<Int64(count)).map { offset in
        var task = makeJob(input: .object(["item": .int(first + offset)]))
        task.array = ArrayMembership(id: array, index: first + offset, failFast: failFast)
        task.owner = owner
        return task
    }
}

extension JobStore {
    /// Enqueues and requires a newly created job.
    func create(_ job: Job, sourceLocation: SourceLocation = #_sourceLocation) async throws -> Job {
        try #require(try await enqueue(job).created, "expected a new job", sourceLocation: sourceLocation)
    }

    /// Reads a job that must exist.
    func require(_ id: JobID, sourceLocation: SourceLocation = #_sourceLocation) async throws -> Job {
        try #require(try await job(id), sourceLocation: sourceLocation)
    }

    /// The events a reader sees once `satisfied` holds (a shared store shows events once every
    /// earlier id is committed): waits on the store's event notifier, 5 s at most.
    func events(after: Int64 = 0, job: JobID? = nil, owner: String? = nil,
                until satisfied: ([JobEvent]) -> Bool) async throws -> [JobEvent] {
        let deadline = ContinuousClock.now + .seconds(5)
        var events = try await self.events(after: after, job: job, owner: owner, limit: 1000)
        while !satisfied(events), ContinuousClock.now < deadline {
            _ = await eventNotifier.wait(after: eventNotifier.latest, timeout: .milliseconds(50))
            events = try await self.events(after: after, job: job, owner: owner, limit: 1000)
        }
        return events
    }

    /// Claims every queued job on slot 0, in claim order.
    func drain(now: Timestamp = at(5_000)) async throws -> [Job] {
        var claimed: [Job] = []
        while let job = try await claimNext(for: SlotID(0), now: now) { claimed.append(job) }
        return claimed
    }
}

extension EnqueueResult {
    var created: Job? { if case .created(let job) = self { job } else { nil } }
    var existing: Job? { if case .existing(let job) = self { job } else { nil } }
}

/// A small seeded generator (SplitMix64), so "random" orders are reproducible.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE5_E4B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A number in `0..<bound`.
    mutating func roll(_ bound: Int) -> Int { Int(next(upperBound: UInt64(bound))) }
}
