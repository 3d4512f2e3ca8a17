import ArgumentParser
import SpoolApp
import SpoolCore
import SpoolExecutor

@main
struct Spool: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spool",
        abstract: "A durable job server for exclusive hardware: one job per GPU slot, nothing accepted ever lost.",
        discussion: """
            Start a server with `spool serve`, then submit work with `spool submit render --wait`.
            Client commands talk to the server at --server (or $SPOOL_URL, default http://127.0.0.1:8080).
            Exit codes: 0 success, 1 error, 2 the job did not succeed, 3 the server could not be reached, 64 a command line it cannot parse.
            """,
        version: BuildVersion.line,
        subcommands: [
            ServeCommand.self, AgentCommand.self, TokenCommand.self, SubmitCommand.self, StatusCommand.self, ListCommand.self, CancelCommand.self, DeleteCommand.self, RetryCommand.self,
            ReleaseSlotCommand.self, LogsCommand.self, OutputsCommand.self, BenchCommand.self, BenchFloorCommand.self, RenderJobCommand.self, RenderWorkerCommand.self, GuardCommand.self,
        ]
    )

    /// The command, then a check that what it printed was written (`print` says nothing of a
    /// full disk: found by attacking the build, `spool list > /dev/full` exited 0).
    static func main() async {
        StandardStreams.reserve()
        await main(nil)
        StandardStreams.finishOutput()
    }
}
