import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import SpoolCore
import Synchronization
import Testing

/// Starts the real `spool serve` binary (built next to this test bundle) on a free loopback
/// port with its own data directory, and talks to it over HTTP. Every process it starts is
/// killed by pid when the test is done.
final class ServerHarness: @unchecked Sendable {
    let dataDirectory: String
    let configPath: String
    private(set) var process: Process?
    private(set) var url = ""
    private var exited: Task<Int32, Never>?

    /// One client for every test: bodies as the server sent them (no `Accept-Encoding`; the
    /// shared client asks for gzip and refuses highly compressible answers, like a repeated log).
    static let http: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.decompression = .disabled
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    /// A started server with the end-to-end job types (`Fixtures.config`) and `slots` slots.
    static func started(slots: Int) async throws -> ServerHarness {
        let harness = try ServerHarness(config: .object([:]))
        try Data(Fixtures.config(scratch: harness.scratch).canonicalText.utf8).write(to: URL(fileURLWithPath: harness.configPath))
        try await harness.start(["--slots", String(slots)])
        return harness
    }

    static let binary: String = {
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var directory = URL(fileURLWithPath: executable).deletingLastPathComponent()
        // swift-testing runs from the .xctest bundle; the binary sits beside it in the build directory.
        while !FileManager.default.isExecutableFile(atPath: directory.appendingPathComponent("spool").path), directory.path != "/" {
            directory = directory.deletingLastPathComponent()
        }
        return directory.appendingPathComponent("spool").path
    }()

    init(config: JSONValue) throws {
        let root = NSTemporaryDirectory() + "spool-e2e-\(UUID().uuidString.prefix(8))"
        dataDirectory = root + "/data"
        configPath = root + "/config.json"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try Data(config.canonicalText.utf8).write(to: URL(fileURLWithPath: configPath))
    }

    var scratch: String { URL(fileURLWithPath: configPath).deletingLastPathComponent().path }

    /// The scratch directory goes with the harness (after its test and its `stop()`): each holds
    /// a data directory of about 10 MB, a full run starts about a hundred, and they were left in
    /// the temporary directory for good (4 GB after a morning of runs).
    deinit { if getenv("SPOOL_KEEP_SCRATCH") == nil { try? FileManager.default.removeItem(atPath: scratch) } }

    /// Starts the server (`spool serve`, or `spool agent` with `agent`) and waits until it
    /// listens (an agent: until it runs).
    /// `user`: run the server as this uid (and its gid), through `setpriv` (needs root).
    /// `through`: a command that runs the server (`["/usr/bin/nohup"]`), its path first.
    func start(_ extra: [String] = [], agent: Bool = false, environment: [String: String] = [:], user: UInt32? = nil,
               through wrapper: [String] = []) async throws {
        let process = Process()
        let runner = user.map { ["/usr/bin/setpriv", "--reuid", "\($0)", "--regid", "\($0)", "--clear-groups"] } ?? wrapper
        process.executableURL = URL(fileURLWithPath: runner.first ?? Self.binary)
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new } }
        process.arguments = (runner.isEmpty ? [] : Array(runner.dropFirst()) + [Self.binary])
            + (agent ? ["agent"] : ["serve", "--port", "0"])
            + ["--config", configPath, "--data-dir", dataDirectory, "--gpus", "none", "--log-level", "warning"] + extra
        let output = Pipe()
        process.standardOutput = output
        // Appending: a killed server's guard may still write to it while the next start does.
        let logDescriptor = open(scratch + "/server.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard logDescriptor >= 0 else { throw HarnessError("cannot open \(scratch)/server.log: \(String(cString: strerror(errno)))") }
        process.standardError = FileHandle(fileDescriptor: logDescriptor, closeOnDealloc: true)
        let (termination, terminated) = AsyncStream<Int32>.makeStream()
        process.terminationHandler = { terminated.yield($0.terminationStatus); terminated.finish() }
        let (lines, lineSink) = AsyncStream<String>.makeStream()
        try process.run()
        // The server's stdout, read by blocking reads on a thread of its own until end-of-file.
        // Not FileHandle's readabilityHandler: its dispatch read source, torn down from its own
        // handler while the pipe closes, is the likeliest cause of the rare crash in
        // libdispatch's event loop (`_dispatch_event_loop_drain`) that test runs have shown.
        Thread.detachNewThread {
            let descriptor = output.fileHandleForReading.fileDescriptor   // `output` is held until the end
            var text = ""
            var chunk = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { break }
                text += String(decoding: chunk[..<count], as: UTF8.self)
                while let newline = text.firstIndex(of: "\n") {
                    lineSink.yield(String(text[..<newline]))
                    text = String(text[text.index(after: newline)...])
                }
            }
            lineSink.finish()
        }
        self.process = process
        exited = Task { for await status in termination { return status }; return -1 }
        let listening = try await withDeadline(.seconds(60), "the server to say it is listening") {
            for await line in lines {
                if let marker = line.range(of: "listening on ") { return String(line[marker.upperBound...]) }
                if line.contains("agent running jobs") { return "" }
            }
            throw HarnessError("the server exited before listening; see \(self.scratch)/server.log")
        }
        url = listening
    }

    var pid: Int32 { process?.processIdentifier ?? -1 }

    /// What the server has written to its stderr (its log), every start's.
    var log: String { (try? String(contentsOfFile: scratch + "/server.log", encoding: .utf8)) ?? "" }

    func kill9() async {
        guard let process, process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        _ = await waitForExit()
    }

    /// A kill -9 of the server and of its guard, which would otherwise kill what the server left:
    /// what the next start's own sweep is for. The server is stopped first, so that it starts no
    /// other guard meanwhile.
    func kill9WithoutGuard() async {
        guard let process, process.isRunning else { return }
        let guards = guardPIDs
        kill(process.processIdentifier, SIGSTOP)
        for pid in guards { kill(pid, SIGKILL) }
        while guards.contains(where: isAlive) { try? await Task.sleep(for: .milliseconds(10)) }
        await kill9()
    }

    func terminate(_ signal: Int32 = SIGTERM) { if let process, process.isRunning { kill(process.processIdentifier, signal) } }

    func waitForExit() async -> Int32 { await exited?.value ?? -1 }

    /// Stops the server (SIGKILL) and any job processes still running from its data directory.
    func stop() async {
        await kill9()
        let jobs = (try? FileManager.default.contentsOfDirectory(atPath: dataDirectory + "/jobs")) ?? []
        let ids = Set(jobs.compactMap(JobID.init))
        _ = try? await killJobProcesses(ids, workersUnder: dataDirectory)
    }

    // MARK: - HTTP

    struct Reply {
        var status: Int
        var headers: [(String, String)]
        var body: Data
        var json: JSONValue { (try? JSONDecoder().decode(JSONValue.self, from: body)) ?? .null }
        func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
    }

    func request(_ method: HTTPMethod, _ path: String, body: Data? = nil, headers: [(String, String)] = [],
                 timeout: TimeAmount = .seconds(90)) async throws -> Reply {
        var request = HTTPClientRequest(url: url + path)
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
        let response = try await Self.http.execute(request, timeout: timeout)
        let bytes = try await response.body.collect(upTo: 64 << 20)
        return Reply(status: Int(response.status.code), headers: response.headers.map { ($0.name, $0.value) }, body: Data(bytes.readableBytesView))
    }

    func submit(_ type: String, _ input: JSONValue = .object([:]), extra: [String: JSONValue] = [:], key: String? = nil,
                token: String? = nil) async throws -> Reply {
        var body = extra
        body["type"] = .string(type)
        body["input"] = input
        return try await request(.POST, "/v1/jobs", body: Data(JSONValue.object(body).canonicalText.utf8),
                                 headers: [("Content-Type", "application/json")] + (key.map { [("Idempotency-Key", $0)] } ?? [])
                                     + bearer(token))
    }

    /// The Authorization header for `token`, if any.
    func bearer(_ token: String?) -> [(String, String)] { token.map { [("Authorization", "Bearer \($0)")] } ?? [] }

    /// `spool token create` against this server's store (the config's `store`, or its data directory).
    func createToken(_ name: String, _ options: [String] = []) async throws -> String {
        let result = try await runCLI(["token", "create", "--config", configPath, "--data-dir", dataDirectory, "--name", name] + options)
        guard result.status == 0, let token = result.stdout.split(separator: "\n").last.map(String.init), token.hasPrefix("spool_") else {
            throw HarnessError("spool token create failed (\(result.status)): \(result.stderr)")
        }
        return token
    }

    func job(_ id: String, token: String? = nil) async throws -> JSONValue {
        try await request(.GET, "/v1/jobs/\(id)", headers: bearer(token)).json
    }

    /// Long-polls until the job is in one of `states`.
    func waitFor(_ id: String, _ states: Set<String>, timeout: Duration = .seconds(120), token: String? = nil) async throws -> JSONValue {
        try await withDeadline(timeout, "job \(id) to reach \(states.sorted())") {
            // `?wait=` answers when the state differs from the one the server sees at the request,
            // so a short state (running) that began between two requests is only seen on a short wait.
            let terminal: Set<String> = ["succeeded", "failed", "canceled"]
            let wait = states.isSubset(of: terminal) ? 5 : 1
            var job = try await self.job(id, token: token)
            while !states.contains(job["state"]?.stringValue ?? "") {
                let state = job["state"]?.stringValue ?? ""
                if terminal.contains(state) { throw HarnessError("job \(id) ended \(state) before reaching \(states.sorted())") }
                job = try await self.request(.GET, "/v1/jobs/\(id)?wait=\(wait)", headers: self.bearer(token)).json
            }
            return job
        }
    }
}

extension ServerHarness {
    struct Frame: Equatable, Sendable {
        var id: Int64
        var event: String
        var data: JSONValue
    }

    /// Reads SSE frames until `done` says so (or the stream ends); with `comments`, a comment
    /// (`: keep-alive`) is a frame too, with id -1 and its text as its event.
    func frames(_ path: String, lastEventID: Int64? = nil, headers: [(String, String)] = [], limit: Duration = .seconds(60),
                comments: Bool = false, until done: @escaping @Sendable ([Frame]) -> Bool) async throws -> [Frame] {
        var request = HTTPClientRequest(url: url + path)
        if let lastEventID { request.headers.add(name: "Last-Event-ID", value: String(lastEventID)) }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        let prepared = request
        return try await withDeadline(limit, "SSE frames from \(path)") {
            let response = try await Self.http.execute(prepared, timeout: .seconds(60))
            #expect(response.headers.first(name: "Content-Type") == "text/event-stream")
            var text = ""
            var frames: [Frame] = []
            for try await chunk in response.body {
                text += String(buffer: chunk)
                while let end = text.range(of: "\n\n") {
                    let block = String(text[..<end.lowerBound])
                    text = String(text[end.upperBound...])
                    var id: Int64?, event = "message", data = ""
                    for line in block.split(separator: "\n") {
                        if line.hasPrefix("id: ") { id = Int64(line.dropFirst(4)) }
                        if line.hasPrefix("event: ") { event = String(line.dropFirst(7)) }
                        if line.hasPrefix("data: ") { data += line.dropFirst(6) }
                    }
                    if let id { frames.append(Frame(id: id, event: event, data: (try? JSONParser.parse(data.utf8)) ?? .null)) }
                    if comments, block.hasPrefix(":") { frames.append(Frame(id: -1, event: block.trimmingCharacters(in: .whitespaces), data: .null)) }
                    if done(frames) { return frames }
                }
            }
            return frames
        }
    }
}

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Runs `body`, failing with a sentence that says what was awaited if it takes too long.
func withDeadline<T: Sendable>(_ limit: Duration, _ what: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask { try await Task.sleep(for: limit); return nil }
        guard let first = try await group.next(), let value = first else {
            group.cancelAll()
            throw HarnessError("timed out after \(limit) waiting for \(what)")
        }
        group.cancelAll()
        return value
    }
}

/// Kills processes whose environment names one of these jobs (leftovers of a killed server).
func killJobProcesses(_ ids: Set<JobID>, workersUnder dataDirectory: String? = nil) async throws -> Int {
    var killed = 0
    for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
        guard let pid = Int32(entry), let environ = FileManager.default.contents(atPath: "/proc/\(entry)/environ") else { continue }
        for variable in environ.split(separator: 0) {
            let text = String(decoding: variable, as: UTF8.self)
            let isWorker = dataDirectory.map { text.hasPrefix("SPOOL_MESSAGES=" + $0 + "/workers/") } ?? false
            if isWorker || (text.hasPrefix("SPOOL_JOB_ID=") && JobID(String(text.dropFirst(13))).map(ids.contains) == true) {
                kill(pid, SIGKILL)
                killed += 1
            }
        }
    }
    return killed
}

/// The live processes whose environment names this job (`SPOOL_JOB_ID`).
func processes(ofJob id: String) -> [Int32] {
    let marker = Array("SPOOL_JOB_ID=\(id)".utf8)
    return ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { entry in
        guard let pid = Int32(entry), let environ = FileManager.default.contents(atPath: "/proc/\(entry)/environ"),
              environ.split(separator: 0).contains(where: { $0.elementsEqual(marker) }), isAlive(pid) else { return nil }
        return pid
    }
}

extension ServerHarness {
    /// The live warm workers of this server's data directory (`SPOOL_MESSAGES` under `workers/`).
    var workerPIDs: [Int32] {
        let prefix = Array("SPOOL_MESSAGES=\(dataDirectory)/workers/".utf8)
        return ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { entry in
            guard let pid = Int32(entry), let environ = FileManager.default.contents(atPath: "/proc/\(entry)/environ"),
                  environ.split(separator: 0).contains(where: { $0.starts(with: prefix) }), isAlive(pid) else { return nil }
            return pid
        }
    }

    /// The live guard processes of this server's data directory (`spool guard --data-dir DIR`).
    var guardPIDs: [Int32] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { entry in
            guard let pid = Int32(entry), let line = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { return nil }
            let arguments = line.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            guard arguments.count > 3, arguments[1] == "guard", arguments[2] == "--data-dir", arguments[3] == dataDirectory,
                  isAlive(pid) else { return nil }
            return pid
        }
    }
}

/// True while the process exists and is not a zombie.
func isAlive(_ pid: Int32) -> Bool {
    guard kill(pid, 0) == 0, let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return false }
    return stat[stat.index(close, offsetBy: 2)] != "Z"
}

/// A plain TCP connection to 127.0.0.1 for what an HTTP client library will not send.
final class RawConnection {
    let fd: Int32

    /// `receiveBuffer`: the socket's receive buffer, fixed (no growing window: a slow reader's).
    init(port: UInt16, receiveBuffer: Int32? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HarnessError("socket: \(errno)") }
        if var size = receiveBuffer { setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size)) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { Glibc.close(fd); throw HarnessError("connect: \(errno)") }
    }

    func send(_ text: String) throws {
        let bytes = Array(text.utf8)
        guard Glibc.send(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL)) == bytes.count else { throw HarnessError("send: \(errno)") }
    }

    /// Reads until `marker` has arrived (or the connection ends), for at most `seconds`.
    func read(until marker: String, within seconds: Int) throws -> String {
        try read(within: seconds) { $0.contains(marker) }
    }

    /// Reads until the server closes the connection, for at most `seconds`.
    func readToEnd(within seconds: Int) throws -> String {
        try read(within: seconds) { _ in false }
    }

    /// What arrived until `done` says so, the server closed the connection, or it was silent
    /// for `seconds` (then what arrived so far; the caller's checks say what was missing).
    func read(within seconds: Int, done: (String) -> Bool) throws -> String {
        try receive(within: seconds, done: done).text
    }

    /// Whether the server closes the connection (rather than staying silent) within `seconds`.
    func awaitClose(within seconds: Int) throws -> Bool {
        try receive(within: seconds) { _ in false }.closed
    }

    private func receive(within seconds: Int, done: (String) -> Bool) throws -> (text: String, closed: Bool) {
        var limit = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !done(String(decoding: received, as: UTF8.self)) {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count == 0 || (count < 0 && errno == ECONNRESET) { return (String(decoding: received, as: UTF8.self), true) }
            if count < 0 { break }   // silent for `seconds`
            received += buffer[..<count]
        }
        return (String(decoding: received, as: UTF8.self), false)
    }

    func close() { Glibc.close(fd) }

    /// Closes with a reset (SO_LINGER 0), as a client that crashed or lost its network does.
    func reset() {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        Glibc.close(fd)
    }
}
