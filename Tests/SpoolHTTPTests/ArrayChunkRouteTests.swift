import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import SpoolCore
import SpoolScheduler
@testable import SpoolSQLite
import SpoolStore
import SpoolTestSupport
import SpoolTesting
import Testing
@testable import SpoolHTTP

/// The array routes over a real SQLite store, which deletes an array a chunk of tasks at a time.
@Suite struct ArrayChunkRouteTests {
    /// The routes over a SQLite store at `path` that goes 10 tasks per chunk (every write checks
    /// the file is still there), with a scheduler that is not running.
    static func api(path: String, in dataDirectory: String) async throws -> (SQLiteJobStore, SpoolAPI) {
        let store = try SQLiteJobStore(path: path, fileCheckInterval: .zero)
        try await store.prepare()
        store.arrayChunkSize.store(10, ordering: .relaxed)
        let catalog = JobCatalog([JobType(name: "echo", command: try CommandTemplate(["echo", "{input.item}"]), timeoutSeconds: 60)])
        let scheduler = Scheduler(store: store, executor: ScriptedExecutor(), catalog: catalog,
                                  configuration: SchedulerConfiguration(slots: [SlotSpec(id: SlotID(0))], dataDirectory: dataDirectory),
                                  logger: Logger(label: "test"))
        return (store, SpoolAPI(store: store, scheduler: scheduler, catalog: catalog, dataDirectory: dataDirectory, storeName: "sqlite"))
    }

    /// A cancel the store fails part-way answers 503, saying that some tasks were canceled and
    /// that sending it again finishes it (found by attacking the build: a plain 503 did not).
    @Test func aCancelThatFailsPartWaySaysSomeTasksWereCanceled() async throws {
        let scratch = try ScratchDirectory("spool-array-routes")
        let path = scratch.path + "/spool.sqlite"
        let (store, api) = try await Self.api(path: path, in: scratch.path)
        store.arrayChunkGap.withLock { $0 = { _ = rename(path, path + ".aside") } }   // the database file gone after the first chunk
        try await restoringTerminationSignals {
            try await Application(router: api.router()).test(.router) { client in
                let id = try await client.execute(uri: "/v1/jobs", method: .post, headers: [.contentType: "application/json"],
                                                  body: ByteBuffer(string: #"{"type":"echo","input":{},"array":{"range":[1,25]}}"#)) { response in
                    try JSONDecoder().decode(JSONValue.self, from: Data(buffer: response.body))["id"]?.stringValue
                }
                let array = try #require(id)
                try await client.execute(uri: "/v1/arrays/\(array)/cancel", method: .post) { response in
                    #expect(response.status == .serviceUnavailable)
                    let problem = try JSONDecoder().decode(JSONValue.self, from: Data(buffer: response.body))
                    #expect(problem["detail"]?.stringValue?.contains("10 of the array's tasks were canceled before it: send the cancel again to finish") == true,
                            "\(problem)")
                }
            }
        }
    }

    /// A submit under the Idempotency-Key of an array that is being deleted is told so (409
    /// `array-being-deleted`), not that it is a different request; once the delete has answered,
    /// the same request makes a new array (found by attacking the build: seven 409s calling the
    /// same request a different one while the array shrank).
    @Test func aSubmitUnderTheKeyOfAnArrayBeingDeletedIsToldSo() async throws {
        let scratch = try ScratchDirectory("spool-array-routes")
        let (store, api) = try await Self.api(path: scratch.path + "/spool.sqlite", in: scratch.path)
        let hold = CallHold()
        store.arrayChunkGap.withLock { $0 = { await hold.pass() } }
        let body = ByteBuffer(string: #"{"type":"echo","input":{},"array":{"range":[1,25]}}"#)
        let headers: HTTPFields = [.contentType: "application/json", HTTPField.Name("Idempotency-Key")!: "frames-1"]
        try await restoringTerminationSignals {
            try await Application(router: api.router()).test(.router) { client in
                let id = try await client.execute(uri: "/v1/jobs", method: .post, headers: headers, body: body) { response in
                    #expect(response.status == .created)
                    return try JSONDecoder().decode(JSONValue.self, from: Data(buffer: response.body))["id"]?.stringValue
                }
                let array = try #require(id)
                try await client.execute(uri: "/v1/arrays/\(array)/cancel", method: .post) { #expect($0.status == .ok) }
                hold.hold()
                async let deleting = client.execute(uri: "/v1/arrays/\(array)", method: .delete) { $0.status }
                try await within("the delete to stop between two chunks") { while hold.count == 0 { try await Task.sleep(for: .milliseconds(5)) } }
                try await client.execute(uri: "/v1/jobs", method: .post, headers: headers, body: body) { response in
                    #expect(response.status == .conflict)
                    let problem = try JSONDecoder().decode(JSONValue.self, from: Data(buffer: response.body))
                    #expect(problem["type"]?.stringValue?.hasSuffix("array-being-deleted") == true, "\(problem)")
                }
                hold.release()
                #expect(try await deleting == .noContent)
                try await client.execute(uri: "/v1/jobs", method: .post, headers: headers, body: body) { response in
                    #expect(response.status == .created, "the key is free again once the array is gone")
                }
            }
        }
    }
}
