import Synchronization
import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import SpoolCore
import SpoolExecutor

/// `--server`, `--token` and `--cacert`, shared by the client commands.
struct ServerOptions: ParsableArguments {
    @Option(name: .long, help: "The server's URL (default: $SPOOL_URL, else http://127.0.0.1:8080).")
    var server: String?
    @Option(name: .long, help: "An API token (default: $SPOOL_TOKEN); sent as Authorization: Bearer, never in a URL.")
    var token: String?
    @Option(name: .long, help: "A PEM file of the CA that signed an https:// server's certificate (default: the system's).")
    var cacert: String?

    var client: SpoolClient {
        get throws {
            let environment = ProcessInfo.processInfo.environment
            let base = server ?? environment["SPOOL_URL"] ?? "http://127.0.0.1:8080"
            // Likely `--token "$TOKEN"` with the variable unset: sent, it would be a puzzling 401.
            if token?.isEmpty == true { throw SpoolClient.Failure(description: "--token is empty (leave it out to send $SPOOL_TOKEN, or none)") }
            return SpoolClient(base: try SpoolClient.checkedBase(base), token: token ?? environment["SPOOL_TOKEN"].flatMap { $0.isEmpty ? nil : $0 },
                               http: try SpoolClient.http(trusting: cacert))
        }
    }
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
    var token: String?
    var http: HTTPClient = Self.shared

    /// Fails fast when nothing listens (the default client retries connecting until the
    /// request's deadline, which for a long poll is minutes).
    static let shared = makeHTTPClient(trusting: nil)

    static func makeHTTPClient(trusting roots: [NIOSSLCertificate]?) -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.timeout.connect = .seconds(5)
        configuration.connectionPool.retryConnectionEstablishment = false
        if let roots {
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .certificates(roots)
            configuration.tlsConfiguration = tls
        }
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    /// Clients made for a `--cacert`, shut down with the shared one when a command ends.
    static let opened = Mutex<[HTTPClient]>([])

    /// Shuts down every client this process opened (HTTPClient insists on it before deinit).
    static func shutdownAll() async {
        try? await shared.shutdown()
        for client in opened.withLock({ $0 }) { try? await client.shutdown() }
    }

    /// The shared client, or one that trusts the CA in `cacert`.
    static func http(trusting cacert: String?) throws -> HTTPClient {
        guard let cacert else { return shared }
        do {
            let client = makeHTTPClient(trusting: try NIOSSLCertificate.fromPEMFile(cacert))
            opened.withLock { $0.append(client) }
            return client
        } catch {
            throw Failure(description: "--cacert: cannot read a PEM certificate from \(cacert)")
        }
    }

    /// A server URL this client can use: http:// or https:// with a host.
    static func checkedBase(_ text: String) throws -> String {
        let base = text.hasSuffix("/") ? String(text.dropLast()) : text
        guard let url = URL(string: base), ["http", "https"].contains(url.scheme?.lowercased() ?? ""), url.host?.isEmpty == false else {
            throw Failure(description: "the server URL must look like http://HOST:PORT or https://HOST:PORT, not \"\(text)\"")
        }
        return base
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
        var exitCode: Int32 = 1
        /// The server's answer, when it answered.
        var status: UInt?
        /// The request went out and no answer came in time: it may have been carried out.
        var timedOut = false
    }

    func get(_ path: String, timeout: TimeAmount = .seconds(90)) async throws -> (HTTPResponseStatus, HTTPHeaders, ByteBuffer) {
        try await send(HTTPClientRequest(url: base + path), timeout: timeout)
    }

    /// How long a command that follows a job waits for a server that went away (a restart, a
    /// deploy) to answer again: nothing accepted is lost, so the job goes on after it.
    static let restartPatience: Duration = .seconds(120)

    /// `get`, for a command following a job: a server that cannot be reached, or answers 503
    /// (draining for a restart, a store that failed for a moment), is asked again — every
    /// second, saying so once — for up to `restartPatience` (found by attacking the build:
    /// `submit --wait` exited 3 on a one-second restart, though the job then succeeded).
    func getRidingOutRestarts(_ path: String) async throws -> (HTTPResponseStatus, HTTPHeaders, ByteBuffer) {
        var since: ContinuousClock.Instant?
        while true {
            do {
                let answer = try await get(path)
                if since != nil { StandardStreams.error("spool: the server answers again\n") }
                return answer
            } catch let failure as Failure where failure.exitCode == 3 || failure.status == 503 {
                let now = ContinuousClock.now
                if since == nil {
                    since = now
                    StandardStreams.error("spool: \(failure.description); waiting for it (up to \(Int(Self.restartPatience.components.seconds)) s)\n")
                }
                guard now - since! < Self.restartPatience else { throw failure }
                try await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// A request to `path` with the token, if any.
    func request(_ path: String) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: base + path)
        if let token { request.headers.add(name: "Authorization", value: "Bearer " + token) }
        return request
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

    func delete(_ path: String) async throws -> (HTTPResponseStatus, HTTPHeaders, ByteBuffer) {
        var request = HTTPClientRequest(url: base + path)
        request.method = .DELETE
        return try await send(request, timeout: .seconds(30))
    }

    /// The job's output files, and whether the server listed only some of them (past its limit).
    func outputs(of job: String) async throws -> (files: [OutputView], truncated: Bool) {
        struct List: Decodable {
            let outputs: [OutputView]
            let truncated: Bool?
        }
        let list = try decode(List.self, try await get("/v1/jobs/\(job)/outputs").2)
        return (list.outputs, list.truncated ?? false)
    }

    func decode<T: Decodable>(_ type: T.Type, _ buffer: ByteBuffer) throws -> T {
        do { return try JSONDecoder().decode(T.self, from: Data(buffer.readableBytesView)) } catch {
            throw Failure(description: "the server at \(base) sent a reply this client does not understand")
        }
    }

    /// One line saying why the server could not be reached and what to try.
    static func unreachable(_ base: String, _ error: any Error) -> String {
        let text = String(describing: error)
        if text.contains("WRONG_VERSION_NUMBER"), base.lowercased().hasPrefix("https://") {
            // What answered is no TLS server (found by attacking the build: this read as an untrusted certificate).
            return "the server at \(base) answers, but not HTTPS; if it serves plain HTTP, use http://\(base.dropFirst("https://".count))"
        }
        if text.contains("failedToValidateHostname") {
            // Trusted, but issued for other names (found by attacking the build: this read as a server that could not be reached).
            let host = URLComponents(string: base)?.host ?? base
            return "the server at \(base) answers with a certificate that does not name \(host); connect by a name the certificate lists, "
                + "or reissue it to name \(host)"
        }
        if text.contains("CERTIFICATE_VERIFY_FAILED") || text.contains("handshakeFailed") {
            return "the server at \(base) has a certificate this client does not trust; pass the CA that signed it with --cacert FILE.pem"
        }
        if text.contains("connectTimeout") {
            return "no answer from \(base) within 5 s; is the address right and is `spool serve` running there?"
        }
        if text.contains("connectionRefused") || text.contains("Connection refused") || text.contains("ECONNREFUSED") {
            return "nothing listens at \(base) (connection refused); start it with `spool serve`, or set --server / SPOOL_URL"
        }
        return "cannot reach the server at \(base) (\(error)); is `spool serve` running? (set --server or SPOOL_URL)"
    }

    /// Sends a request; non-2xx answers become a `Failure` with the problem's detail.
    private func send(_ request: HTTPClientRequest, timeout: TimeAmount) async throws -> (HTTPResponseStatus, HTTPHeaders, ByteBuffer) {
        let response = try await execute(request, timeout: timeout)
        // A job's whole log (`spool logs`) is the biggest reply read whole: `log_limit_bytes` a run.
        let body = try await response.body.collect(upTo: 1 << 30)
        return (response.status, response.headers, body)
    }

    /// Sends a request and answers its response with the body still to read; a non-2xx answer
    /// becomes a `Failure` with the problem's detail.
    private func execute(_ request: HTTPClientRequest, timeout: TimeAmount) async throws -> HTTPClientResponse {
        var request = request
        if let token, !request.headers.contains(name: "Authorization") { request.headers.add(name: "Authorization", value: "Bearer " + token) }
        request.headers.replaceOrAdd(name: "User-Agent", value: "spool-cli/\(SpoolVersion.current)")
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: timeout)
        } catch let error as HTTPClientError where "\(error)".contains("invalidHeaderField") {
            // Not the server's fault: a header this request cannot carry (a newline in a token or key).
            throw Failure(description: "a header of this request cannot be sent (a line break or control character in --token, "
                                       + "SPOOL_TOKEN or --idempotency-key?)")
        } catch where "\(error)".contains("deadlineExceeded") || "\(error)".contains("readTimeout") {
            throw Failure(description: "the server at \(base) did not answer within \(timeout.nanoseconds / 1_000_000_000) s", exitCode: 3, timedOut: true)
        } catch {
            throw Failure(description: Self.unreachable(base, error), exitCode: 3)
        }
        guard (200..<300).contains(response.status.code) else {
            let body = try await response.body.collect(upTo: 1 << 20)
            struct Problem: Decodable { let detail: String?; let errors: [String]? }
            let problem = try? JSONDecoder().decode(Problem.self, from: Data(body.readableBytesView))
            // Not problem+json: a short plain-text answer says it itself (an HTTPS port asked in
            // plain HTTP answers that it speaks HTTPS).
            let plain = response.headers.first(name: "Content-Type")?.lowercased().hasPrefix("text/plain") == true && body.readableBytes <= 500
                ? String(decoding: body.readableBytesView, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines).terminalSafe : ""
            var message = problem?.detail ?? (plain.isEmpty ? "the server answered \(response.status)" : "the server answered \(response.status): \(plain)")
            if let errors = problem?.errors, !errors.isEmpty { message += ": " + errors.joined(separator: "; ") }
            throw Failure(description: message, status: response.status.code)
        }
        return response
    }

    /// Downloads `path` into the file `destination`, written as it arrives — never held in
    /// memory whole (found by attacking the build: a 1-GiB output was refused, and a big one
    /// took its size in RAM). It goes to a hidden file beside `destination`, renamed once whole,
    /// so a download cut short leaves nothing under the file's name. However long it takes, it
    /// fails once no byte came for `stall` (the client's deadline ends when the answer starts).
    func download(_ path: String, to destination: URL, stall: Duration = .seconds(60)) async throws {
        let response = try await execute(HTTPClientRequest(url: base + path), timeout: .seconds(90))
        // A name no output of the job takes (found by attacking the build: an output named
        // `.x.spool-part` was overwritten by the download of `x`).
        let partial = destination.deletingLastPathComponent()
            .appendingPathComponent(".\(destination.lastPathComponent).spool-part-\(UInt64.random(in: 0...UInt64.max))")
        defer { PartialDownload.current.withLock { $0 = nil } }
        let file = try await BlockingIO.run { () throws -> FileHandle in
            // Made and named under the lock Ctrl-C's handler takes: never one it missed.
            try PartialDownload.current.withLock { current in
                current = partial.path
                guard FileManager.default.createFile(atPath: partial.path, contents: nil), let handle = FileHandle(forWritingAtPath: partial.path) else {
                    throw Failure(description: "cannot write \(partial.path) (\(String(cString: strerror(errno))))")
                }
                return handle
            }
        }
        final class Received: Sendable { let bytes = Atomic<Int64>(0) }
        let received = Received()
        let name = destination.lastPathComponent
        let expected = response.headers.first(name: "Content-Length").flatMap(Int64.init)
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for try await chunk in response.body {
                        do {
                            try await BlockingIO.run { try file.write(contentsOf: chunk.readableBytesView) }
                        } catch {
                            throw Failure(description: "cannot write \(destination.path): \((error as NSError).localizedDescription)")
                        }
                        received.bytes.add(Int64(chunk.readableBytes), ordering: .relaxed)
                    }
                }
                group.addTask { [base] in
                    var (seen, since) = (Int64(0), ContinuousClock.now)
                    while true {
                        try await Task.sleep(for: stall / 4)
                        let now = received.bytes.load(ordering: .relaxed)
                        if now != seen { (seen, since) = (now, .now) }
                        guard ContinuousClock.now - since < stall else {
                            throw Failure(description: "the download of \(name) from \(base) stalled: nothing came for "
                                                       + "\(stall.components.seconds) s after \(now) bytes", exitCode: 3)
                        }
                    }
                }
                defer { group.cancelAll() }
                try await group.next()
            }
            let written = received.bytes.load(ordering: .relaxed)
            if let expected, written != expected {
                throw Failure(description: "the download of \(name) broke off after \(written) of its \(expected) bytes", exitCode: 3)
            }
            try await BlockingIO.run {
                // On disk before it takes the name: a crash leaves no empty file under it.
                try file.synchronize()
                try file.close()
                guard rename(partial.path, destination.path) == 0 else {
                    throw Failure(description: "cannot write \(destination.path) (\(String(cString: strerror(errno))))")
                }
            }
        } catch {
            try? file.close()
            unlink(partial.path)
            if error is Failure { throw error }
            // The connection ended or failed mid-way.
            let written = received.bytes.load(ordering: .relaxed)
            throw Failure(description: "the download of \(name) broke off after \(written)\(expected.map { " of its \($0)" } ?? "") bytes (\(error))",
                          exitCode: 3)
        }
    }
}

/// The file a download is writing now: Ctrl-C (or SIGTERM) removes it on the way out
/// (`removedOnInterrupt`) — found by attacking the build: it was left behind, hidden.
enum PartialDownload {
    static let current = Mutex<String?>(nil)

    /// From now on SIGINT and SIGTERM remove the download under way, then end the command by
    /// that signal (a shell's loop sees it so and stops). One ignored when the command began (a
    /// background job of a script) stays ignored.
    static func removedOnInterrupt() -> [any DispatchSourceSignal] {
        [SIGINT, SIGTERM].compactMap { number in
            let previous = signal(number, SIG_IGN)
            guard unsafeBitCast(previous, to: Int.self) != unsafeBitCast(SIG_IGN, to: Int.self) else { return nil }
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                // Under the lock: the download that makes its file takes it too.
                current.withLock { path in
                    if let path { unlink(path) }
                    // Its default action, on this thread (dispatch keeps the signal blocked).
                    signal(number, SIG_DFL)
                    var set = sigset_t()
                    sigemptyset(&set)
                    sigaddset(&set, number)
                    pthread_sigmask(SIG_UNBLOCK, &set, nil)
                    raise(number)
                    Foundation.exit(128 + number)   // were it still not delivered
                }
            }
            source.resume()
            return source
        }
    }
}

/// Runs a client command body, turning failures into one line on stderr and an exit code.
func clientCommand(_ body: () async throws -> Void) async {
    do {
        try await body()
        await SpoolClient.shutdownAll()
    } catch let failure as SpoolClient.Failure {
        fail(failure.description, code: failure.exitCode)
    } catch let exit as ExitCode {
        Foundation.exit(exit.rawValue)
    } catch {
        fail("\(error)")
    }
}

/// A JSON argument, read as the server reads JSON (strictly): `VALUE`, or `@FILE` for a file's.
func parseJSONArgument(_ text: String, name: String) throws -> JSONValue {
    var source = Array(text.utf8)
    if text.hasPrefix("@") {
        let path = String(text.dropFirst())
        guard let data = FileManager.default.contents(atPath: path) else {
            let reason = FileManager.default.fileExists(atPath: path) ? "cannot be read" : "does not exist"
            throw SpoolClient.Failure(description: "\(name): the file \(path) \(reason)")
        }
        // As bytes: invalid UTF-8 is an error, not replaced (found by attacking the build: a
        // Latin-1 file went in as "caf\u{FFFD}"), and integers beyond 64 bits are refused, not
        // rounded, as the server does.
        source = Array(data)
    }
    do { return try JSONParser.parse(source, exactIntegers: true) } catch {
        let text = String(decoding: source.prefix(80), as: UTF8.self)
        throw SpoolClient.Failure(description: "\(name) is not valid JSON (\(error)): \(text)\(source.count > 80 ? "…" : "")")
    }
}
