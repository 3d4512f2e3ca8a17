import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import SpoolCore
import SpoolExecutor
import SpoolScheduler
import SpoolStore
import SpoolTestSupport
import SpoolTesting
import Testing
@testable import SpoolHTTP

/// `GET /openapi.json`: the document parses, is OpenAPI 3.1, and names exactly the paths and
/// methods the router serves; a served path asked with another method answers 405 + Allow.
/// (The live contract test, schemathesis against a running server, is `Tests/contract/run.sh`.)
@Suite struct OpenAPITests {
    /// Every route `SpoolAPI.router()` registers, in OpenAPI spelling. Add a route: add it
    /// here, to the document (`SpoolAPI+OpenAPI.swift`) and to `SpoolAPI.resources`.
    static let routes: [String: Set<String>] = [
        "/healthz": ["get"],
        "/openapi.json": ["get"],
        "/v1/types": ["get"],
        "/v1/jobs": ["get", "post"],
        "/v1/jobs/{id}": ["get", "delete"],
        "/v1/jobs/{id}/cancel": ["post"],
        "/v1/jobs/{id}/logs": ["get"],
        "/v1/jobs/{id}/outputs": ["get"],
        "/v1/jobs/{id}/outputs/{name}": ["get"],
        "/v1/jobs/{id}/events": ["get"],
        "/v1/jobs/{id}/webhooks": ["get"],
        "/v1/jobs/{id}/attempts": ["get"],
        "/v1/webhook-secret": ["get"],
        "/v1/arrays": ["get"], "/v1/arrays/{id}": ["get", "delete"], "/v1/arrays/{id}/tasks": ["get"], "/v1/arrays/{id}/outputs": ["get"],
        "/v1/arrays/{id}/cancel": ["post"], "/v1/arrays/{id}/retry": ["post"],
        "/v1/events": ["get"],
        "/v1/queue": ["get"], "/v1/nodes": ["get"], "/v1/slots/{slot}/release": ["post"],
        "/v1/session": ["get", "post", "delete"],
        "/metrics": ["get"],
        "/": ["get"],
        "/dashboard.js": ["get"],
        "/dashboard.css": ["get"],
    ]

    let store = MemoryJobStore()
    let api: SpoolAPI

    init() throws {
        let dataDirectory = NSTemporaryDirectory() + "spool-openapi-\(UUID().uuidString)"
        let catalog = JobCatalog([JobType(name: "noop", command: try CommandTemplate(["/bin/true"]), timeoutSeconds: 60)])
        let scheduler = Scheduler(store: store, executor: ScriptedExecutor(), catalog: catalog,
                                  configuration: SchedulerConfiguration(slots: [SlotSpec(id: SlotID(0))], dataDirectory: dataDirectory),
                                  logger: Logger(label: "test"))
        api = SpoolAPI(store: store, scheduler: scheduler, catalog: catalog, dataDirectory: dataDirectory, storeName: "memory")
    }

    func withClient<Value>(_ body: @escaping @Sendable (any TestClientProtocol) async throws -> Value) async throws -> Value {
        try await restoringTerminationSignals { try await Application(router: api.router()).test(.router, body) }
    }

    static func decode(_ buffer: ByteBuffer) throws -> JSONValue {
        try JSONDecoder().decode(JSONValue.self, from: Data(buffer: buffer))
    }

    /// The document as the server serves it.
    func document() async throws -> JSONValue {
        try await withClient { client in
            try await client.execute(uri: "/openapi.json", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "application/json")
                return try Self.decode(response.body)
            }
        }
    }

    static func methods(of document: JSONValue) -> [String: Set<String>] {
        let verbs: Set<String> = ["get", "put", "post", "delete", "options", "head", "patch", "trace"]
        return (document["paths"]?.objectValue ?? [:]).mapValues { Set(($0.objectValue ?? [:]).keys.filter(verbs.contains)) }
    }

    @Test func documentIsOpenAPI31JSON() async throws {
        let document = try await document()
        let version = document["openapi"]?.stringValue ?? ""
        #expect(version.hasPrefix("3.1."), "openapi is \(version)")
        #expect(document["info"]?["title"]?.stringValue == "Spool")
        #expect(document["components"]?["schemas"]?["Job"] != nil)
    }

    @Test func documentListsExactlyTheRoutesTheRouterServes() async throws {
        let documented = Self.methods(of: try await document())
        #expect(Set(documented.keys) == Set(Self.routes.keys),
                "only documented: \(Set(documented.keys).subtracting(Self.routes.keys).sorted()); undocumented: \(Set(Self.routes.keys).subtracting(documented.keys).sorted())")
        for (path, methods) in Self.routes { #expect(documented[path] == methods, "\(path)") }
        // The 405 table says the same.
        let table = Dictionary(uniqueKeysWithValues: SpoolAPI.resources.map { resource in
            (resource.path.replacingOccurrences(of: ":id", with: "{id}").replacingOccurrences(of: ":slot", with: "{slot}")
                .replacingOccurrences(of: "**", with: "{name}"),
             Set(resource.methods.map { $0.rawValue.lowercased() }))
        })
        #expect(table == Self.routes)
    }

    @Test func everyListedRouteIsServed() async throws {
        try await withClient { client in
            let id = JobID.random().rawValue
            for (path, methods) in Self.routes {
                var uri = path.replacingOccurrences(of: "{id}", with: id).replacingOccurrences(of: "{name}", with: "a/b.txt")
                // The global event stream stays open; a bad `after` gets a 400 from the route itself.
                if path == "/v1/events" { uri += "?after=x" }
                for method in methods {
                    try await client.execute(uri: uri, method: HTTPRequest.Method(method.uppercased())!) { response in
                        #expect(response.status != .methodNotAllowed, "\(method) \(uri)")
                        if response.status == .notFound {
                            // A route's own 404 (no such job), not the router's (no such route).
                            let detail = (try? Self.decode(response.body))?["detail"]?.stringValue ?? ""
                            #expect(!detail.hasPrefix("no such resource"), "\(method) \(uri): \(detail)")
                        }
                    }
                }
            }
        }
    }

    @Test func refsResolve() async throws {
        let document = try await document()
        var missing: [String] = []
        func walk(_ value: JSONValue) {
            switch value {
            case .object(let object):
                if let ref = object["$ref"]?.stringValue {
                    let parts = ref.split(separator: "/").dropFirst().map(String.init)
                    guard ref.hasPrefix("#/"), parts.reduce(Optional(document), { $0?[$1] }) != nil else { missing.append(ref); return }
                }
                object.values.forEach(walk)
            case .array(let values): values.forEach(walk)
            default: break
            }
        }
        walk(document)
        #expect(missing.isEmpty, "unresolved: \(missing)")
    }

    /// `StateEventData` forbids unknown fields, so every field `JobEvent.stateData` can write must
    /// be declared there (a delayed job's `not_before` once was not, and the contract test's
    /// fuzzer found it only on the runs that happened to delay a job).
    @Test func everyFieldAStateEventCanCarryIsInItsSchema() async throws {
        let document = try await document()
        let declared = Set(document["components"]?["schemas"]?["StateEventData"]?["properties"]?.objectValue?.keys ?? [:].keys)
        let now = Timestamp(microseconds: 1_000_000)
        var waiting = Job(id: .random(), type: "render", input: .object([:]), priority: 0, timeoutSeconds: 10, maxAttempts: 3, createdAt: now)
        waiting.owner = "alice"
        waiting.notBefore = now.adding(seconds: 30)
        waiting.cancelRequested = true
        var running = waiting
        running.state = .running
        running.slot = SlotID(1)
        running.cancelRequested = false
        var failed = running
        failed.state = .failed
        failed.reason = .exitCode
        failed.error = "exit 1"
        var canceled = waiting
        canceled.state = .canceled
        canceled.canceledBy = "bob"
        var task = running
        task.array = ArrayMembership(id: ArraySpec.newID(), index: 3, failFast: false)
        var written: Set<String> = []
        for job in [waiting, running, failed, canceled, task] {
            let event = JobEvent(id: 1, job: job.id, kind: .state, at: now, data: JobEvent.stateData(of: job))
            written.formUnion(event.wireData.objectValue?.keys ?? [:].keys)
        }
        #expect(written.isSuperset(of: ["not_before", "slot", "reason", "error", "cancel_requested", "actor", "at", "array"]))
        #expect(written.subtracting(declared).isEmpty, "undeclared in StateEventData: \(written.subtracting(declared).sorted())")
    }

    /// Every link the document declares holds for each shape its response takes. A submit
    /// answers a Job or a JobArray under the same status, so a link from it that sends `id` to
    /// the job routes sent an array's id there: 404 for a resource just created (found by the
    /// contract test's stateful phase, on the runs that happened to submit an array).
    @Test func everyDeclaredLinkLeadsToAResourceForEachShapeOfItsResponse() async throws {
        let document = try await document()
        var operations: [String: (method: String, path: String)] = [:]
        var declared: [String: [String: JSONValue]] = [:]   // "operationId status": its links
        for (path, item) in document["paths"]?.objectValue ?? [:] {
            for (method, operation) in item.objectValue ?? [:] {
                guard let operationID = operation["operationId"]?.stringValue else { continue }
                operations[operationID] = (method, path)
                for (status, response) in operation["responses"]?.objectValue ?? [:] {
                    if let links = response["links"]?.objectValue, !links.isEmpty { declared["\(operationID) \(status)"] = links }
                }
            }
        }
        #expect(!declared.isEmpty)
        let links = declared, targets = operations

        /// A response to follow links from: the operation and status it answered, the path
        /// parameters of its request, and its body.
        struct Sample { var key: String; var path: [String: String]; var body: JSONValue }
        try await withClient { client in
            func call(_ method: HTTPRequest.Method, _ uri: String, body: JSONValue? = nil,
                      headers: HTTPFields = [:]) async throws -> (HTTPResponse.Status, JSONValue?) {
                var headers = headers
                if body != nil { headers[.contentType] = "application/json" }
                return try await client.execute(uri: uri, method: method, headers: headers,
                                                body: body.map { ByteBuffer(string: $0.canonicalText) }) { response in
                    (response.status, try? Self.decode(response.body))
                }
            }
            var samples: [Sample] = []
            func submit(_ body: JSONValue, key: String) async throws -> String {
                let (created, first) = try await call(.post, "/v1/jobs", body: body, headers: [HTTPField.Name("Idempotency-Key")!: key])
                let (repeated, again) = try await call(.post, "/v1/jobs", body: body, headers: [HTTPField.Name("Idempotency-Key")!: key])
                #expect(created == .created && repeated == .ok, "\(body.canonicalText)")
                samples.append(Sample(key: "submitJob 201", path: [:], body: first ?? .null))
                samples.append(Sample(key: "submitJob 200", path: [:], body: again ?? .null))
                return first?["id"]?.stringValue ?? ""
            }
            let job = try await submit(.object(["type": .string("noop")]), key: "one")
            let array = try await submit(.object(["type": .string("noop"), "array": .object(["items": .array([.object([:]), .object([:])])])]), key: "two")
            let (_, tasks) = try await call(.get, "/v1/arrays/\(array)/tasks")
            samples.append(Sample(key: "listArrayTasks 200", path: ["id": array], body: tasks ?? .null))
            samples.append(Sample(key: "listArrays 200", path: [:], body: try await call(.get, "/v1/arrays").1 ?? .null))
            // A canceled array's retry: a new array.
            let canceled = try await submit(.object(["type": .string("noop"), "array": .object(["items": .array([.int(1)])])]), key: "three")
            _ = try await call(.post, "/v1/arrays/\(canceled)/cancel")
            let (retried, again) = try await call(.post, "/v1/arrays/\(canceled)/retry")
            #expect(retried == .created)
            samples.append(Sample(key: "retryArray 201", path: ["id": canceled], body: again ?? .null))
            let task = tasks?["tasks"]?.arrayValue?.first?["id"]?.stringValue ?? ""
            for id in [job, task] {
                samples.append(Sample(key: "getJob 200", path: ["id": id], body: try await call(.get, "/v1/jobs/\(id)").1 ?? .null))
            }
            samples.append(Sample(key: "getArray 200", path: ["id": array], body: try await call(.get, "/v1/arrays/\(array)").1 ?? .null))
            #expect(Set(links.keys).isSubset(of: samples.map(\.key)),
                    "links from a response this test does not make: \(Set(links.keys).subtracting(samples.map(\.key)).sorted())")

            var followed: Set<String> = []
            for sample in samples {
                // A delete last: the links followed after it would find its resource gone (the
                // array's cancel may have ended its tasks, so its delete may go through).
                let named = (links[sample.key] ?? [:]).sorted { first, second in
                    let deletes = [first, second].map { targets[$0.value["operationId"]?.stringValue ?? ""]?.method == "delete" }
                    return deletes[0] != deletes[1] ? deletes[1] : first.key < second.key
                }
                for (name, link) in named {
                    let target = link["operationId"]?.stringValue ?? ""
                    guard let (method, path) = targets[target] else { Issue.record("\(sample.key) \(name): no operation \(target)"); continue }
                    var uri: String? = path
                    for (parameter, expression) in link["parameters"]?.objectValue ?? [:] {
                        let value = Self.evaluate(expression.stringValue ?? "", request: sample.path, response: sample.body)
                        uri = value.flatMap { uri?.replacingOccurrences(of: "{\(parameter)}", with: $0) }
                    }
                    // A pointer that finds nothing: the link does not apply to this shape.
                    guard let uri else { continue }
                    followed.insert("\(sample.key) \(name)")
                    let (status, problem) = try await call(HTTPRequest.Method(method.uppercased())!, uri)
                    #expect(status != .notFound && status != .badRequest,
                            "\(sample.key) → \(name) \(method.uppercased()) \(uri): \(status.code) \(problem?["detail"]?.stringValue ?? "")")
                }
            }
            // An array's id at a job route is still a 404, one that says where the array is.
            let (status, problem) = try await call(.post, "/v1/jobs/\(array)/cancel")
            #expect(status == .notFound && problem?["detail"]?.stringValue == "no job \(array): that is a job array's id, under /v1/arrays/\(array)")
            let everyLink = links.flatMap { key, named in named.keys.map { "\(key) \($0)" } }
            #expect(Set(everyLink) == followed, "links that never applied: \(Set(everyLink).subtracting(followed).sorted())")
        }
    }

    /// An OpenAPI runtime expression: `$response.body#/json/pointer` or `$request.path.name`;
    /// nil where it finds nothing (or is of a form this document should not use).
    static func evaluate(_ expression: String, request: [String: String], response: JSONValue) -> String? {
        if expression.hasPrefix("$request.path.") { return request[String(expression.dropFirst("$request.path.".count))] }
        guard expression.hasPrefix("$response.body#/") else {
            Issue.record("unsupported runtime expression \(expression)")
            return nil
        }
        var value: JSONValue? = response
        for token in expression.dropFirst("$response.body#/".count).split(separator: "/", omittingEmptySubsequences: false) {
            let key = token.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
            value = Int(key).flatMap { index in value?.arrayValue.flatMap { $0.indices.contains(index) ? $0[index] : nil } } ?? value?[key]
        }
        return value?.stringValue
    }

    @Test func aServedPathWithAnotherMethodIs405WithAllow() async throws {
        try await withClient { client in
            let id = JobID.random().rawValue
            for (uri, method, allow) in [("/v1/jobs", HTTPRequest.Method.delete, "GET, HEAD, POST"), ("/v1/queue", .post, "GET, HEAD"),
                                         ("/v1/jobs/\(id)", .put, "GET, HEAD, DELETE"), ("/v1/jobs/\(id)/cancel", .get, "POST"),
                                         ("/v1/jobs/\(id)/outputs/a/b.txt", .put, "GET, HEAD"), ("/openapi.json", .options, "GET, HEAD")] {
                try await client.execute(uri: uri, method: method) { response in
                    #expect(response.status == .methodNotAllowed, "\(method) \(uri)")
                    #expect(response.headers[.allow] == allow, "\(method) \(uri)")
                    #expect(response.headers[.contentType] == "application/problem+json")
                    let problem = try Self.decode(response.body)
                    #expect(problem["status"] == .int(405))
                }
            }
            for uri in ["/v2/jobs", "/v1/jobs/\(id)/nothing", "/nothing"] {
                try await client.execute(uri: uri, method: .post) { #expect($0.status == .notFound, "\(uri)") }
            }
        }
    }

    @Test func webhookURLsThatCannotBeDeliveredAreRefused() async throws {
        try await withClient { client in
            for (webhook, status) in [("http://[", HTTPResponse.Status.unprocessableContent), ("http://", .unprocessableContent),
                                      ("http:///path", .unprocessableContent), ("http://a b/", .unprocessableContent),
                                      ("http://host:0/", .unprocessableContent), ("ftp://host/", .unprocessableContent),
                                      ("http://user:pw@203.0.113.7/", .unprocessableContent),
                                      // Loopback, private and link-local hosts are refused unless webhook_allow_private.
                                      ("http://127.0.0.1:9/hook", .unprocessableContent), ("https://[::1]:8443/x", .unprocessableContent),
                                      ("http://2130706433/", .unprocessableContent), ("http://169.254.169.254/", .unprocessableContent),
                                      ("http://203.0.113.7:9/hook", .created), ("https://[2606:4700::1111]:8443/x?y=1", .created),
                                      // A scheme is case-insensitive (RFC 3986), to the HTTP client too.
                                      ("HTTP://203.0.113.7:9/hook", .created), ("Https://[2606:4700::1111]/x", .created),
                                      // 6to4 of 127.0.0.1.
                                      ("http://[2002:7f00:1::]/", .unprocessableContent)] {
                let body = JSONValue.object(["type": .string("noop"), "webhook": .string(webhook)]).canonicalText
                try await client.execute(uri: "/v1/jobs", method: .post, headers: [.contentType: "application/json"],
                                         body: ByteBuffer(string: body)) { #expect($0.status == status, "\(webhook)") }
            }
        }
    }

    @Test func aMalformedAfterIsRefusedEvenWithLastEventID() async throws {
        try await withClient { client in
            try await client.execute(uri: "/v1/events?after=-1", method: .get, headers: [HTTPField.Name("Last-Event-ID")!: "0"]) { response in
                #expect(response.status == .badRequest)
            }
            try await client.execute(uri: "/v1/events?after=0", method: .get, headers: [HTTPField.Name("Last-Event-ID")!: "x"]) { response in
                #expect(response.status == .badRequest)
            }
            // An empty `after` is no integer (found by the contract test); an empty Last-Event-ID
            // is the SSE spec's reset, none.
            try await client.execute(uri: "/v1/events?after=", method: .get) { response in
                #expect(response.status == .badRequest)
            }
        }
    }
}
