#if canImport(Glibc)
import Glibc
#endif
import AsyncHTTPClient
import Foundation
import Subprocess
import Synchronization
import SystemPackage

/// How to start one server under test (Spool or the baseline).
struct ServerLaunch: Sendable {
    var label: String
    var executable: String
    var arguments: [String]
    var workingDirectory: String
    /// Everything the server writes to stdout and stderr goes here.
    var logPath: String
}

/// A server that printed its listening line and answers `GET /healthz`.
struct RunningServer: Sendable {
    let label: String
    let pid: pid_t
    let port: Int
    let logPath: String

    var baseURL: String { "http://127.0.0.1:\(port)" }
    var residentBytes: Int? { ProcessStats.residentBytes(of: pid) }
    var cpuSeconds: Double? { ProcessStats.cpuSeconds(of: pid) }
    var cpuTimes: (user: Double, system: Double)? { ProcessStats.cpuTimes(of: pid) }
}

/// Runs a server for the length of a closure. The server is a child of swift-subprocess's `run`,
/// awaited asynchronously (nothing blocks a thread). Its combined output is drained into a log
/// file, the port is read from the `listening on http://HOST:PORT` line, and readiness is
/// `GET /healthz` answering 200. On the way out, also after an error: SIGTERM, up to 10 s for a
/// graceful exit, then SIGKILL; then SIGKILL for every descendant seen while it ran (job children,
/// the baseline's pool worker) that is still alive.
enum ServerProcess {
    static func with<R: Sendable>(
        _ launch: ServerLaunch,
        http: HTTPClient,
        startupLimit: Duration = .seconds(60),
        body: (RunningServer) async throws -> R
    ) async throws -> R {
        let executable: Executable = launch.executable.contains("/")
            ? .path(FilePath(launch.executable)) : .name(launch.executable)
        var options = PlatformOptions()
        // Only used if this task is cancelled while the server runs.
        options.teardownSequence = [.send(signal: .terminate, allowedDurationToNextStep: .seconds(5))]
        let platformOptions = options
        let result = try await Subprocess.run(
            executable, arguments: Arguments(launch.arguments),
            workingDirectory: FilePath(launch.workingDirectory), platformOptions: platformOptions,
            input: .none, output: .sequence, error: .combinedWithOutput
        ) { execution -> R in
            let pid = execution.processIdentifier.value
            let tail = OutputTail()
            let (ports, portSink) = AsyncStream.makeStream(of: Int.self)
            let output = execution.standardOutput
            return try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await drain(output, to: launch.logPath, tail: tail, ports: portSink) }
                do {
                    guard let port = try await firstPort(ports, within: startupLimit, label: launch.label, tail: tail) else {
                        throw BenchError("\(launch.label) exited before printing its listening line; last output:\n\(tail.text)")
                    }
                    let server = RunningServer(label: launch.label, pid: pid, port: port, logPath: launch.logPath)
                    try await waitUntilHealthy(server, http: http, within: startupLimit, tail: tail)
                    let value = try await body(server)
                    await stop(pid, label: launch.label)
                    group.cancelAll()
                    return value
                } catch {
                    await stop(pid, label: launch.label)
                    group.cancelAll()
                    throw error
                }
            }
        }
        return result.closureResult
    }

    /// Sends SIGTERM, escalates to SIGKILL, then kills whatever the server left behind.
    private static func stop(_ pid: pid_t, label: String) async {
        var seen = ProcessStats.descendants(of: pid)
        if ProcessStats.isAlive(pid) { kill(pid, SIGTERM) }
        if !(await waitForExit(pid, within: .seconds(10), collecting: &seen)) {
            progress("    \(label) (pid \(pid)) still running 10 s after SIGTERM: sending SIGKILL")
            kill(pid, SIGKILL)
            _ = await waitForExit(pid, within: .seconds(5), collecting: &seen)
        }
        let leftovers = seen.filter { ProcessStats.isAlive($0.pid) }
        if !leftovers.isEmpty {
            progress("    \(label) left \(leftovers.count) process(es) behind after exiting: sending SIGKILL")
        }
        let leftoverCPU = leftovers.compactMap { ProcessStats.cpuSeconds(of: $0.pid) }.reduce(0, +)
        ProcessStats.leftoverCPUSeconds.withLock { $0 += leftoverCPU }
        for child in leftovers { ProcessStats.killIfStillRunning(child) }
    }

    private static func waitForExit(_ pid: pid_t, within limit: Duration, collecting seen: inout Set<ProcessStats.ProcessRef>) async -> Bool {
        let deadline = ContinuousClock.now + limit
        while ProcessStats.isAlive(pid) {
            seen.formUnion(ProcessStats.descendants(of: pid))
            if ContinuousClock.now > deadline { return false }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return true
    }

    private static func firstPort(_ ports: AsyncStream<Int>, within limit: Duration, label: String, tail: OutputTail) async throws -> Int? {
        try await withThrowingTaskGroup(of: Int?.self) { group in
            group.addTask {
                for await port in ports { return port }
                return nil
            }
            group.addTask {
                try await Task.sleep(for: limit)
                throw BenchError("\(label) printed no `listening on http://…` line within \(limit); last output:\n\(tail.text)")
            }
            defer { group.cancelAll() }
            return try await group.next() ?? nil
        }
    }

    private static func waitUntilHealthy(_ server: RunningServer, http: HTTPClient, within limit: Duration, tail: OutputTail) async throws {
        let client = JobClient(http: http, baseURL: server.baseURL)
        let deadline = ContinuousClock.now + limit
        while !(await client.isHealthy()) {
            guard ProcessStats.isAlive(server.pid) else {
                throw BenchError("\(server.label) exited before GET /healthz answered 200; last output:\n\(tail.text)")
            }
            guard ContinuousClock.now < deadline else {
                throw BenchError("\(server.label) on port \(server.port): GET /healthz not 200 within \(limit)")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Copies the server's output to its log file (buffered), keeps the last lines for error
    /// messages, and reports the port from the first listening line.
    private static func drain(_ output: SubprocessOutputSequence, to path: String, tail: OutputTail, ports: AsyncStream<Int>.Continuation) async {
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        let file = FileHandle(forWritingAtPath: path)
        var pending = Data()
        var reported = false
        do {
            for try await line in output.strings(bufferingPolicy: .unbounded) {
                pending.append(contentsOf: line.utf8)
                pending.append(10)
                if pending.count > 64 * 1024 { file?.write(pending); pending.removeAll(keepingCapacity: true) }
                tail.append(line)
                if !reported, let port = listeningPort(in: line) {
                    reported = true
                    ports.yield(port)
                }
            }
        } catch {
            tail.append("[bench] reading server output failed: \(error)")
        }
        file?.write(pending)
        try? file?.close()
        ports.finish()
    }

    /// The port in a line containing `listening on http://HOST:PORT`.
    static func listeningPort(in line: String) -> Int? {
        guard let marker = line.range(of: "listening on http://") else { return nil }
        let rest = line[marker.upperBound...]
        let hostPort = rest.prefix(while: { !$0.isWhitespace && $0 != "/" })
        guard let colon = hostPort.lastIndex(of: ":") else { return nil }
        return Int(hostPort[hostPort.index(after: colon)...].prefix(while: \.isNumber))
    }
}

/// The last lines a server printed, for error messages.
final class OutputTail: Sendable {
    private let lines = Mutex<[String]>([])

    func append(_ line: String) {
        lines.withLock { lines in
            lines.append(line)
            if lines.count > 40 { lines.removeFirst(lines.count - 40) }
        }
    }

    var text: String { lines.withLock { $0.joined(separator: "\n") } }
}
