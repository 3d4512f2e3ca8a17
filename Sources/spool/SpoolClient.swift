import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import SpoolCore

/// `--server`, shared by the client commands.
struct ServerOptions: ParsableArguments {
    @Option(name: .long, help: "The server's URL (default: $SPOOL_URL, else http://127.0.0.1:8080).")
    var server: String?

    var client: SpoolClient {
        let base = server ?? ProcessInfo.processInfo.environment["SPOOL_URL"] ?? "http://127.0.0.1:8080"
        return SpoolClient(base: base.hasSuffix("/") ? String(base.dropLast()) : base)
    }
}

/// A job as the CLI reads it from the API.
struct JobView: Decodable {
    struct Progress: Decodable { let fraction: Double; let message: String? }
    let id: String
    let type: String
    let state: String
    let reason: String?
    let priority: Int
    let attempts: Int
    let position: Int?
    let progress: Progress?
    let error: String?
    let created_at: String
    let started_at: String?
    let finished_at: String?
    let exit_code: Int?
    let signal: Int?
    let slot: Int?

    var isTerminal: Bool { ["succeeded", "failed", "canceled"].contains(state) }
}

struct OutputView: Decodable {
    let name: String
    let size: Int64
    let content_type: String
    let url: String
}

/// A thin HTTP client for the v1 API. Every failure becomes one readable line.
struct SpoolClient {
    let base: String

    /// Fails fast when nothing listens (the default client retries connecting until the
    /// request's deadline, which for a long poll is minutes).
    static let http: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.timeout.connect = .seconds(5)
        configuration.connectionPool.retryConnectionEstablishment = false
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    struct Failure: Error, CustomStringConvertible {
        var description: String
        var exitCode: Int32 = 1
    }

    func get(_ path: String, timeout: TimeAmount = .seconds(90)) async throws -> (HTTPResponseStatus, HTTPHeaders, ByteBuffer) {
        try await send(HTTPClientRequest(url: base + path), timeout: timeout)
    }

    func post(_ path: String, json: JSONValue?, headers: [(String, String)] = []) async throws -> (HTTPResponseStatus, HTTPHeaders, ByteBuffer) {
        var request = HTTPClientRequest(url: base + path)
        request.method = .POST
        if let json {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: json.canonicalText))
        }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        return try await send(request, timeout: .seconds(30))
    }

    /// The job's output files.
    func outputs(of job: String) async throws -> [OutputView] {
        struct List: Decodable { let outputs: [OutputView] }
        return try decode(List.self, try await get("/v1/jobs/\(job)/outputs").2).outputs
    }

    func decode<T: Decodable>(_ type: T.Type, _ buffer: ByteBuffer) throws -> T {
        do { return try JSONDecoder().decode(T.self, from: Data(buffer.readableBytesView)) } catch {
            throw Failure(description: "the server at \(base) sent a reply this client does not understand")
        }
    }

    /// Sends a request; non-2xx answers become a `Failure` with the problem's detail.
    private func send(_ request: HTTPClientRequest, timeout: TimeAmount) async throws -> (HTTPResponseStatus, HTTPHeaders, ByteBuffer) {
        let response: HTTPClientResponse
        do {
            response = try await Self.http.execute(request, timeout: timeout)
        } catch {
            throw Failure(description: "cannot reach the server at \(base) (\(error)); is `spool serve` running? (set --server or SPOOL_URL)", exitCode: 3)
        }
        let body = try await response.body.collect(upTo: 1 << 30)
        guard (200..<300).contains(response.status.code) else {
            struct Problem: Decodable { let detail: String?; let errors: [String]? }
            let problem = try? JSONDecoder().decode(Problem.self, from: Data(body.readableBytesView))
            var message = problem?.detail ?? "the server answered \(response.status)"
            if let errors = problem?.errors, !errors.isEmpty { message += ": " + errors.joined(separator: "; ") }
            throw Failure(description: message)
        }
        return (response.status, response.headers, body)
    }
}

/// Runs a client command body, turning failures into one line on stderr and an exit code.
func clientCommand(_ body: () async throws -> Void) async {
    do {
        try await body()
        try? await SpoolClient.http.shutdown()
    } catch let failure as SpoolClient.Failure {
        fail(failure.description, code: failure.exitCode)
    } catch let exit as ExitCode {
        Foundation.exit(exit.rawValue)
    } catch {
        fail("\(error)")
    }
}

func parseJSONArgument(_ text: String, name: String) throws -> JSONValue {
    do { return try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)) } catch {
        throw SpoolClient.Failure(description: "\(name) is not valid JSON: \(text)")
    }
}
