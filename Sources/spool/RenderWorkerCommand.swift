import ArgumentParser
import Foundation
import SpoolCore
import SpoolRender
import SpoolExecutor

/// The built-in `render` type's warm worker (`spool render-worker`), started by the server
/// once per slot. Speaks protocol version 2 (docs/worker-protocol.md) like any user worker:
/// `ready`, then jobs from $SPOOL_COMMANDS, progress and results to $SPOOL_MESSAGES, a
/// heartbeat from its own thread. Blocking reads are fine here: this is the child, not the server.
struct RenderWorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "render-worker",
        abstract: "Run the built-in render worker (started by the server; speaks the worker protocol).",
        shouldDisplay: false
    )

    func run() throws {
        let environment = ProcessInfo.processInfo.environment
        guard environment["SPOOL_MODE"] == "worker", let messagesPath = environment["SPOOL_MESSAGES"],
              let commandsPath = environment["SPOOL_COMMANDS"],
              let messages = FileHandle(forWritingAtPath: messagesPath), let commands = FileHandle(forReadingAtPath: commandsPath)
        else { fail("render-worker runs under `spool serve` as a warm worker (SPOOL_MODE=worker, SPOOL_MESSAGES, SPOOL_COMMANDS)") }
        let channel = MessageWriter(handle: messages)
        let heartbeat = Double(environment["SPOOL_HEARTBEAT_S"] ?? "") ?? 5
        Thread.detachNewThread {
            while true {
                Thread.sleep(forTimeInterval: heartbeat / 2)
                channel.send(.object(["type": .string("heartbeat")]))
            }
        }
        // The scene is built per render; "setup" is only the binary being loaded.
        channel.send(.object(["type": .string("ready"), "info": .object(["renderer": .string("spool path tracer")])]))
        // Commands are read on their own thread, so a cancel arrives while a render runs.
        let jobs = JobQueue()
        Thread.detachNewThread {
            for line in CommandLines(handle: commands) {
                guard let command = try? JSONParser.parse(line.utf8) else { continue }
                switch command["type"]?.stringValue {
                case "job":
                    jobs.push(command)
                case "cancel":
                    // A render cannot be interrupted: give the job up and exit; the server
                    // replaces the worker (it always does after a canceled job).
                    if let job = command["job"]?.stringValue, job == jobs.current {
                        channel.send(.object(["type": .string("failed"), "job": .string(job), "error": .string("canceled")]))
                        Foundation.exit(0)
                    }
                case "shutdown":
                    Foundation.exit(0)
                default:
                    continue
                }
            }
            Foundation.exit(0)
        }
        while true {
            let command = jobs.pop()
            render(command, channel: channel)
            jobs.finished()
        }
    }

    func render(_ command: JSONValue, channel: MessageWriter) {
        guard let job = command["job"]?.stringValue, let outputDirectory = command["output_dir"]?.stringValue else { return }
        let input = command["input"] ?? .object([:])
        let parameters = RenderParameters(input: input)
        say(parameters.described)
        let start = Date()
        let image = Renderer.render(parameters) { done, total in
            channel.send(.object(["type": .string("progress"), "job": .string(job),
                                  "fraction": .double(Double(done) / Double(max(total, 1))),
                                  "message": .string("row \(done) of \(total)")]))
        }
        let png = PNGEncoder.encode(image)
        let path = outputDirectory + "/render.png"
        do {
            try Data(png).write(to: URL(fileURLWithPath: path))
        } catch {
            channel.send(.object(["type": .string("failed"), "job": .string(job), "error": .string("cannot write \(path): \(error)")]))
            return
        }
        let seconds = Date().timeIntervalSince(start)
        // The output's name, not its path: a job's log is shown to its tenant, who has no business with the server's folders.
        say(String(format: "wrote render.png (%d bytes) in %.2f s", png.count, seconds))
        channel.send(.object(["type": .string("output"), "job": .string(job), "name": .string("render.png")]))
        channel.send(.object(["type": .string("succeeded"), "job": .string(job), "result": .object([
            "width": .int(Int64(parameters.width)), "height": .int(Int64(parameters.height)),
            "samples": .int(Int64(parameters.samples)), "png_bytes": .int(Int64(png.count)),
            "seconds": .double((seconds * 1000).rounded() / 1000),
        ])]))
    }
}

/// A line on stdout (the job's log), written at once: stdout is a pipe, so `print` would
/// buffer it until the job ends.
func say(_ line: String) {
    StandardStreams.output((line + "\n"))
}

/// Jobs handed from the reader thread to the rendering thread.
final class JobQueue: @unchecked Sendable {
    private let condition = NSCondition()
    private var pending: [JSONValue] = []
    private var running: String?

    var current: String? { condition.lock(); defer { condition.unlock() }; return running }

    func push(_ command: JSONValue) {
        condition.lock()
        pending.append(command)
        condition.signal()
        condition.unlock()
    }

    func pop() -> JSONValue {
        condition.lock()
        defer { condition.unlock() }
        while pending.isEmpty { condition.wait() }
        let command = pending.removeFirst()
        running = command["job"]?.stringValue
        return command
    }

    func finished() {
        condition.lock()
        running = nil
        condition.unlock()
    }
}

/// Writes protocol messages, one line each, one write per line (atomic up to 4096 bytes).
final class MessageWriter: @unchecked Sendable {
    private let handle: FileHandle
    private let lock = NSLock()
    init(handle: FileHandle) { self.handle = handle }
    func send(_ message: JSONValue) {
        let line = Data((message.canonicalText + "\n").utf8)
        lock.lock()
        defer { lock.unlock() }
        handle.write(line)
    }
}

/// Lines read from a file handle, blocking, until end of file.
struct CommandLines: Sequence, IteratorProtocol {
    let handle: FileHandle
    var buffer = Data()

    init(handle: FileHandle) { self.handle = handle }

    mutating func next() -> String? {
        while true {
            if let newline = buffer.firstIndex(of: 0x0A) {
                let line = String(decoding: buffer[buffer.startIndex..<newline], as: UTF8.self)
                buffer.removeSubrange(buffer.startIndex...newline)
                return line
            }
            let chunk = handle.availableData
            if chunk.isEmpty { return nil }
            buffer.append(chunk)
        }
    }
}
