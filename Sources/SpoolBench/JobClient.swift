import AsyncHTTPClient
import Foundation
import NIOCore  // ByteBuffer; reached through AsyncHTTPClient (the target has no direct swift-nio dependency)
import NIOHTTP1
import SpoolCore

/// The one part of `GET /v1/queue` the harness reads.
struct QueueDocument: Decodable, Sendable {
    let queued: Int
}

/// Spool's HTTP contract as the load generator uses it, over one shared keep-alive client.
/// The `…Unparsed` calls are the timed hot paths: they check the status and drain the body but
/// decode nothing, so the harness spends as little of the machine's two cores as it can.
struct JobClient: Sendable {
    let http: HTTPClient
    let baseURL: String
    var timeout: TimeAmount = .seconds(30)
    /// Sent as `Authorization: Bearer` when set.
    var token: String? = nil

    /// A submit request body, built once and reused for every request of a batch.
    static func submitBody(type: String, inputJSON: String = "{}", priority: Int = 0) -> ByteBuffer {
        ByteBuffer(string: #"{"type":"\#(type)","input":\#(inputJSON),"priority":\#(priority)}"#)
    }

    func submit(type: String, inputJSON: String = "{}", priority: Int = 0) async throws -> JobWire {
        let body = try await submitUnparsed(Self.submitBody(type: type, inputJSON: inputJSON, priority: priority))
        return try decode(JobWire.self, body, what: "POST /v1/jobs")
    }

    /// POST /v1/jobs; throws unless the answer is 201.
    @discardableResult
    func submitUnparsed(_ body: ByteBuffer) async throws -> ByteBuffer {
        var request = HTTPClientRequest(url: baseURL + "/v1/jobs")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(body)
        return try await send(request, expecting: .created, what: "POST /v1/jobs")
    }

    /// GET /v1/jobs/{id}, optionally holding up to `wait` seconds for a state change.
    func job(_ id: String, wait: Int? = nil) async throws -> JobWire {
        let query = wait.map { "?wait=\($0)" } ?? ""
        var client = self
        if let wait { client.timeout = .seconds(Int64(wait) + 30) }
        let body = try await client.getUnparsed("/v1/jobs/\(id)\(query)")
        return try decode(JobWire.self, body, what: "GET /v1/jobs/\(id)")
    }

    /// GET `path`; throws unless the answer is 200.
    @discardableResult
    func getUnparsed(_ path: String) async throws -> ByteBuffer {
        try await send(HTTPClientRequest(url: baseURL + path), expecting: .ok, what: "GET \(path)")
    }

    func queuedCount() async throws -> Int {
        try decode(QueueDocument.self, try await getUnparsed("/v1/queue"), what: "GET /v1/queue").queued
    }

    func isHealthy() async -> Bool {
        var request = HTTPClientRequest(url: baseURL + "/healthz")
        request.method = .GET
        guard let response = try? await http.execute(request, timeout: .seconds(2)) else { return false }
        _ = try? await response.body.collect(upTo: 1 << 20)
        return response.status == .ok
    }

    /// Long-polls `GET ?wait=` until the job is in one of `states`; fails if it ends elsewhere.
    /// A wait GET holds until the state differs from the one the request found, so a job that
    /// became `running` just before the GET arrived is reported only at its next change: use
    /// `poll` to catch an intermediate state, this for a terminal one.
    func wait(for id: String, toReach states: Set<String>, within limit: Duration = .seconds(120)) async throws -> JobWire {
        try await awaitState(id, states, within: limit, wait: 10)
    }

    /// Plain GETs every 5 ms until the job is in one of `states` (used to see `running`).
    func poll(_ id: String, until states: Set<String>, within limit: Duration = .seconds(30)) async throws -> JobWire {
        try await awaitState(id, states, within: limit, wait: nil)
    }

    private func awaitState(_ id: String, _ states: Set<String>, within limit: Duration, wait: Int?) async throws -> JobWire {
        let deadline = ContinuousClock.now + limit
        while true {
            let job = try await job(id, wait: wait)
            if states.contains(job.state) { return job }
            if job.isTerminal {
                throw BenchError("job \(id) (\(job.type)) ended \(job.state) (reason \(job.reason ?? "none"), "
                    + "error \(job.error ?? "none")) while waiting for \(states.sorted().joined(separator: "/"))")
            }
            if ContinuousClock.now > deadline {
                throw BenchError("job \(id) still \(job.state) after \(limit) waiting for \(states.sorted().joined(separator: "/"))")
            }
            if wait == nil { try await Task.sleep(for: .milliseconds(5)) }
        }
    }

    private func send(_ request: HTTPClientRequest, expecting status: HTTPResponseStatus, what: String) async throws -> ByteBuffer {
        var request = request
        if let token { request.headers.add(name: "Authorization", value: "Bearer " + token) }
        let response = try await http.execute(request, timeout: timeout)
        let body = try await response.body.collect(upTo: 4 << 20)
        guard response.status == status else {
            throw BenchError("\(what) answered \(response.status.code), expected \(status.code): "
                + String(String(buffer: body).prefix(300)))
        }
        return body
    }

    private func decode<T: Decodable>(_ type: T.Type, _ body: ByteBuffer, what: String) throws -> T {
        let decoder = JSONDecoder()
        do {
            return try decoder.decode(type, from: Data(body.readableBytesView))
        } catch {
            throw BenchError("\(what): could not read \(T.self) from \(String(String(buffer: body).prefix(300))): \(error)")
        }
    }
}
