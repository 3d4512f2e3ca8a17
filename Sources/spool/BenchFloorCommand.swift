import ArgumentParser
import Foundation
import Hummingbird
import Logging
import SpoolExecutor

/// `spool bench-floor-server`: Hummingbird with nothing of Spool's on it, for `spool bench`'s
/// scenario 1d — what the HTTP framework alone costs per submit on this machine, measured with the
/// same load as Spool's submits. `POST /v1/jobs` reads the body and answers 201 with Spool's own
/// answer for a `noop` job (no parsing, no store, no scheduler); `GET /healthz` answers 200.
/// Default server settings, as a new Hummingbird application has them.
struct BenchFloorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-floor-server",
        abstract: "Run a bare Hummingbird server for spool bench (the HTTP framework's own cost).",
        shouldDisplay: false
    )

    @Option(name: .long, help: "Port to listen on on 127.0.0.1; 0 picks a free one.") var port = 0

    /// Spool's 201 for a `noop` job, byte for byte (587 bytes), so both write the same answer.
    static let answer = #"{"attempts":0,"created_at":"2026-12-06T00:35:23.368930Z","error":null,"eta":null,"exit_code":null,"#
        + #""finished_at":null,"id":"job_01m94cdrk88pv00hz6fg1yvxyt","input":{},"links":{"#
        + #""cancel":"/v1/jobs/job_01m94cdrk88pv00hz6fg1yvxyt/cancel","logs":"/v1/jobs/job_01m94cdrk88pv00hz6fg1yvxyt/logs","#
        + #""outputs":"/v1/jobs/job_01m94cdrk88pv00hz6fg1yvxyt/outputs","self":"/v1/jobs/job_01m94cdrk88pv00hz6fg1yvxyt"},"#
        + #""max_attempts":1,"owner":null,"position":1,"priority":0,"progress":null,"reason":null,"result":null,"signal":null,"#
        + #""slot":null,"started_at":null,"state":"queued","timeout_s":60,"type":"noop"}"#

    func run() async throws {
        let router = Router()
        router.get("/healthz") { _, _ in "ok" }
        router.post("/v1/jobs") { request, _ -> Response in
            _ = try await request.body.collect(upTo: 1 << 20)
            return Response(status: .created, headers: [.contentType: "application/json", .location: "/v1/jobs/job_01m94cdrk88pv00hz6fg1yvxyt"],
                            body: .init(byteBuffer: ByteBuffer(string: Self.answer)))
        }
        var logger = Logger(label: "bench-floor")
        logger.logLevel = .warning
        let application = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? 0
                StandardStreams.write(Array("bench-floor-server: listening on http://127.0.0.1:\(port)\n".utf8), to: STDOUT_FILENO)
            },
            logger: logger)
        try await application.runService()
    }
}
