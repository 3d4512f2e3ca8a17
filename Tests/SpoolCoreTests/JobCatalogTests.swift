// JobCatalogTests: turning a client's submission into a queued job, and every reason one
// is refused (unknown type, bad input, limits on timeout, priority and idempotency key).

import Testing
import SpoolCore

@Suite struct JobCatalogTests {
    let now = Timestamp(microseconds: 1_700_000_000_000_000)

    func catalog() throws -> JobCatalog {
        let schema = try InputSchema(json(#"""
            {"type":"object","required":["size"],"additionalProperties":false,
             "properties":{"size":{"type":"integer","minimum":1,"maximum":4096},"name":{"type":"string"}}}
            """#))
        return JobCatalog([
            JobType(name: "render", command: try CommandTemplate(["render", "--size={input.size}"]),
                    timeoutSeconds: 120, maxAttempts: 3, inputSchema: schema),
            JobType(name: "echo", command: try CommandTemplate(["echo", "{input.text}"])),
        ])
    }

    func rejection(_ submission: Submission) throws -> SubmissionRejection? {
        do {
            _ = try catalog().admit(submission, id: JobID.random(), now: now)
            return nil
        } catch let error as SubmissionRejection {
            return error
        }
    }

    @Test func goodSubmissionBecomesAQueuedJobWithTheTypesLimits() throws {
        let id = JobID.random()
        let input = try json(#"{"size":256,"name":"teapot"}"#)
        let job = try catalog().admit(Submission(type: "render", input: input, priority: 7, idempotencyKey: "k-1"), id: id, now: now)
        #expect(job.id == id)
        #expect(job.type == "render")
        #expect(job.input == input)
        #expect(job.priority == 7)
        #expect(job.timeoutSeconds == 120)
        #expect(job.maxAttempts == 3)
        #expect(job.state == .queued)
        #expect(job.attempts == 0)
        #expect(job.createdAt == now)
        #expect(job.idempotencyKey == "k-1")
        #expect(job.startedAt == nil && job.finishedAt == nil && job.slot == nil && !job.cancelRequested)
    }

    /// A `dedup_key` names what counts as the same job; how long a finished one is reused stays
    /// the type's rule (found by attacking the build: a key alone turned a type's
    /// `succeeded_within_s` into queued-only, and finished frames named by key ran again).
    @Test func aDedupKeyKeepsTheTypesReuseWindow() throws {
        var type = JobType(name: "thumb", command: try CommandTemplate(["thumb"]))
        type.dedup = Dedup(succeededWithin: 3600)
        let catalog = JobCatalog([type, JobType(name: "plain", command: try CommandTemplate(["plain"]))])
        var keyed = Submission(type: "thumb")
        keyed.dedupKey = "frame-2"
        #expect(try catalog.admit(keyed, id: .random(), now: now).dedup == Dedup(succeededWithin: 3600))
        // A request's own `dedup` still wins over the type's.
        keyed.dedup = Dedup()
        #expect(try catalog.admit(keyed, id: .random(), now: now).dedup == Dedup())
        // A key on a type without `dedup`: joins queued or running jobs under that key.
        var plain = Submission(type: "plain")
        plain.dedupKey = "frame-2"
        #expect(try catalog.admit(plain, id: .random(), now: now).dedup == Dedup())
        #expect(try catalog.admit(Submission(type: "plain"), id: .random(), now: now).dedup == nil)
    }

    @Test func typeWithoutSettingsGetsTheDefaults() throws {
        let job = try catalog().admit(Submission(type: "echo", input: .object(["text": .string("hi")])), id: JobID.random(), now: now)
        #expect(job.timeoutSeconds == 600)
        #expect(job.maxAttempts == 1)
        #expect(job.priority == 0)
        #expect(job.idempotencyKey == nil)
    }

    @Test func unknownTypeIsRefusedAndTheKnownTypesListed() throws {
        let error = try #require(try rejection(Submission(type: "nope")))
        #expect(error.kind == .unknownType)
        #expect(error.message.contains("\"nope\""))
        #expect(error.problems == ["known types: echo, render"])
    }

    @Test func inputThatBreaksTheSchemaIsRefusedWithEveryProblem() throws {
        let error = try #require(try rejection(Submission(type: "render", input: json(#"{"size":0,"extra":1}"#))))
        #expect(error.kind == .invalidInput)
        #expect(Set(error.problems) == ["/size: must be ≥ 1", "/extra: is not an allowed property"])
        #expect(error.description.contains("/size"))
    }

    @Test func aNULThatWouldCutACommandArgumentIsInvalidInput() throws {
        let refused = try #require(try rejection(Submission(type: "echo", input: .object(["text": .string("a\u{0}b")]))))
        #expect(refused.kind == .invalidInput)
        #expect(refused.problems.contains { $0.contains("NUL") })
    }

    @Test func inputTheCommandCannotUseIsRefused() throws {
        // No schema on `echo`: the command's own placeholders are still checked at submit.
        let error = try #require(try rejection(Submission(type: "echo", input: json(#"{"text":{"nested":true}}"#))))
        #expect(error.kind == .invalidInput)
        #expect(error.problems.count == 1)
        #expect(error.problems.first?.contains("{input.text}") == true)
        let missing = try #require(try rejection(Submission(type: "echo")))
        #expect(missing.kind == .invalidInput)
    }

    @Test func timeoutMayBeShortenedButNeverRaisedAboveTheTypesLimit() throws {
        let catalog = try catalog()
        let input = try json(#"{"size":1}"#)
        let shorter = try catalog.admit(Submission(type: "render", input: input, timeoutSeconds: 30), id: JobID.random(), now: now)
        #expect(shorter.timeoutSeconds == 30)
        let exact = try catalog.admit(Submission(type: "render", input: input, timeoutSeconds: 120), id: JobID.random(), now: now)
        #expect(exact.timeoutSeconds == 120)
        for timeout in [120.5, 0, -1, .infinity, .nan] {
            let error = try #require(try rejection(Submission(type: "render", input: input, timeoutSeconds: timeout)), "\(timeout)")
            #expect(error.kind == .invalidRequest)
            #expect(error.message.contains("120"))
        }
    }

    @Test(arguments: [-1_000_001, 1_000_001, Int.max, Int.min])
    func priorityOutsideTheRangeIsRefused(priority: Int) throws {
        let error = try #require(try rejection(Submission(type: "render", input: json(#"{"size":1}"#), priority: priority)))
        #expect(error.kind == .invalidRequest)
    }

    @Test(arguments: [-1_000_000, 0, 1_000_000])
    func priorityAtTheEdgesOfTheRangeIsAccepted(priority: Int) throws {
        let job = try catalog().admit(Submission(type: "render", input: json(#"{"size":1}"#), priority: priority), id: JobID.random(), now: now)
        #expect(job.priority == priority)
    }

    @Test func idempotencyKeyMustBeOneTo255Bytes() throws {
        let input = try json(#"{"size":1}"#)
        for key in ["", String(repeating: "k", count: 256), String(repeating: "é", count: 128)] {
            let error = try #require(try rejection(Submission(type: "render", input: input, idempotencyKey: key)))
            #expect(error.kind == .invalidRequest)
        }
        for key in ["k", String(repeating: "k", count: 255)] {
            #expect(try rejection(Submission(type: "render", input: input, idempotencyKey: key)) == nil)
        }
    }

    @Test func laterTypeWithTheSameNameWins() throws {
        let catalog = JobCatalog([
            JobType(name: "t", command: try CommandTemplate(["a"]), maxAttempts: 1),
            JobType(name: "t", command: try CommandTemplate(["b"]), maxAttempts: 2),
        ])
        #expect(catalog["t"]?.maxAttempts == 2)
        #expect(catalog.types.count == 1)
    }

    @Test func typeNamesAreLimitedToASafeAlphabet() {
        #expect(JobType.isValidName("render-v2.1_x"))
        #expect(!JobType.isValidName(""))
        #expect(!JobType.isValidName("a b"))
        #expect(!JobType.isValidName("a/b"))
        #expect(!JobType.isValidName("ünï"))
        #expect(JobType.isValidName(String(repeating: "a", count: 64)))
        #expect(!JobType.isValidName(String(repeating: "a", count: 65)))
    }
}
