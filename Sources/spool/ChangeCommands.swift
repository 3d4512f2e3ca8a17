import ArgumentParser
import SpoolCore

// Client commands that change something on the server: cancel or delete a job or a job array, retry an array's
// failed tasks, release a slot.

struct CancelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cancel", abstract: "Cancel a queued or running job, or what is left of a job array.")
    @Argument(help: "The job id, or a job array's (arr_…).") var id: String
    @OptionGroup var server: ServerOptions

    func run() async throws {
        requireID(id)
        await clientCommand {
            let client = try server.client
            if id.hasPrefix("arr_") {
                let (_, _, body) = try await client.post("/v1/arrays/\(id)/cancel", json: nil)
                print(ArrayWire.line(try client.decode(ArrayWire.self, body)))
                return
            }
            let (status, _, body) = try await client.post("/v1/jobs/\(id)/cancel", json: nil)
            let job = try client.decode(JobWire.self, body)
            print(status.code == 202 ? "\(job.id): stopping (SIGTERM, then SIGKILL after the grace period)" : "\(job.id): \(job.state)")
        }
    }
}

struct DeleteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete", abstract: "Delete an ended job, or a job array whose tasks have all ended, with logs and outputs.",
        discussion: """
            A queued or running job is refused: cancel it first. A task of a job array goes with its array \
            (spool delete arr_…). The server deletes ended jobs itself after retention_days.
            """)
    @Argument(help: "The job id, or a job array's (arr_…).") var id: String
    @OptionGroup var server: ServerOptions

    func run() async throws {
        requireID(id)
        await clientCommand {
            _ = try await server.client.delete(id.hasPrefix("arr_") ? "/v1/arrays/\(id)" : "/v1/jobs/\(id)")
            print("\(id): deleted")
        }
    }
}

struct RetryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retry", abstract: "Run a job array's failed and canceled tasks again, as a new array.",
        discussion: """
            Each task keeps its index and input; the array itself does not change (an ended job is final). \
            Prints the new array; follow it with spool status.
            """)
    @Argument(help: "The job array's id (arr_…).") var id: String
    @Option(name: .customLong("idempotency-key"), help: "Retrying with the same key returns the first retry's array.") var idempotencyKey: String?
    @OptionGroup var server: ServerOptions

    func validate() throws {
        guard id.hasPrefix("arr_") else { throw ValidationError("retry takes a job array's id (arr_…); a job's end is final: submit it again") }
    }

    func run() async throws {
        requireID(id)
        await clientCommand {
            let client = try server.client
            let (_, _, body) = try await client.post("/v1/arrays/\(id)/retry", json: nil, headers: idempotencyKey.map { [("Idempotency-Key", $0)] } ?? [])
            print(ArrayWire.line(try client.decode(ArrayWire.self, body)))
        }
    }
}

struct ReleaseSlotCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "release-slot",
                                                    abstract: "Bring a quarantined GPU slot back (an administrator's token).")
    @Argument(help: "The slot number (see /v1/queue).") var slot: Int
    @OptionGroup var server: ServerOptions

    func run() async throws {
        await clientCommand {
            let client = try server.client
            struct Answer: Decodable { let slot: Int; let released: Bool }
            let answer = try client.decode(Answer.self, try await client.post("/v1/slots/\(slot)/release", json: nil).2)
            print(answer.released ? "slot \(answer.slot): released; it takes jobs again" : "slot \(answer.slot): was not quarantined")
        }
    }
}
