import Foundation
import SpoolCore
import Testing

/// The real `spool serve` binary over loopback. Serialized: each test loads the 2-core
/// machine with real jobs, and timing-sensitive checks should not fight each other.
@Suite(.serialized) struct EndToEndTests {
    func server(extra: [String: JSONValue] = [:]) throws -> ServerHarness {
        let harness = try ServerHarness(config: .object([:]))
        try Data(Fixtures.config(scratch: harness.scratch, extra: extra).canonicalText.utf8)
            .write(to: URL(fileURLWithPath: harness.configPath))
        return harness
    }

    /// Waits (at most a minute) until job `n` has written its `kind` stamp. The stamps are a file
    /// the jobs' shells append to: there is nothing to wait on but the file itself.
    func waitForStamp(_ kind: String, of n: Int, on server: ServerHarness) async throws {
        try await withDeadline(.seconds(60), "job \(n)'s \(kind) stamp") {
            while try !Fixtures.stamps(in: server.scratch).contains(where: { $0.kind == kind && $0.n == n }) {
                try await Task.sleep(for: .milliseconds(20))
            }
        }
    }

    func id(_ reply: ServerHarness.Reply) throws -> String {
        try #require(reply.json["id"]?.stringValue, "no id in \(String(decoding: reply.body, as: UTF8.self))")
    }

    /// A job type missing from the configuration for one start (a typo, a rename in a deploy)
    /// leaves its jobs queued, saying why, and a later start that has the type again runs them
    /// (found by attacking the build: every queued job of the type failed for good, spawn_failed,
    /// "this server has no job type").
    @Test func jobsOfATypeTheServerLacksWaitForOneThatHasIt() async throws {
        let server = try server()
        defer { Task { await server.stop() } }
        try await server.start()
        // The blocker keeps the queued job from starting; the kill -9 interrupts it (its one attempt).
        let blocker = try id(try await server.submit("sleep", .object(["seconds": 600])))
        _ = try await server.waitFor(blocker, ["running"])
        let queued = try id(try await server.submit("noop"))
        await server.kill9()
        var withoutNoop = Fixtures.config(scratch: server.scratch)
        if case .object(var settings) = withoutNoop, case .object(var types)? = settings["job_types"] {
            types["noop"] = nil
            settings["job_types"] = .object(types)
            withoutNoop = .object(settings)
        }
        try Data(withoutNoop.canonicalText.utf8).write(to: URL(fileURLWithPath: server.configPath))
        try await server.start()
        _ = try await server.waitFor(blocker, ["failed"])
        // Looked at and handed back (or not taken at all): it stays queued, its attempts unused, and says why.
        try await withDeadline(.seconds(30), "the job of the missing type to say why it waits") {
            while true {
                let job = try await server.request(.GET, "/v1/jobs/\(queued)").json
                try #require(job["state"] == "queued", "\(job)")
                if case .string(let reason)? = job["waiting_reason"] {
                    #expect(reason.contains("this server has no job type \"noop\""), "\(reason)")
                    #expect(job["attempts"] == 0)
                    return
                }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        let other = try id(try await server.submit("sleep", .object(["seconds": 0])))
        _ = try await server.waitFor(other, ["succeeded"])
        #expect(try await server.request(.GET, "/v1/jobs/\(queued)").json["state"] == "queued", "the slot went on to other types")
        await server.kill9()
        try Data(Fixtures.config(scratch: server.scratch).canonicalText.utf8).write(to: URL(fileURLWithPath: server.configPath))
        try await server.start()
        let ran = try await server.waitFor(queued, ["succeeded", "failed", "canceled"])
        #expect(ran["state"] == "succeeded" && ran["attempts"] == 1, "\(ran)")
    }

    @Test func theAPIStaysResponsiveWhileACPUBoundJobHoldsTheOnlySlot() async throws {
        let server = try server()
        try await server.start(["--slots", "1"])
        defer { Task { await server.stop() } }
        let busy = try id(try await server.submit("busy", .object(["seconds": 60])))
        _ = try await server.waitFor(busy, ["running"])

        let slowest = try await withThrowingTaskGroup(of: Duration.self) { group in
            for index in 0..<250 {
                group.addTask {
                    let start = ContinuousClock.now
                    let reply = index % 5 == 4
                        ? try await server.submit("noop")
                        : try await server.request(.GET, "/v1/jobs/\(busy)")
                    #expect(reply.status == (index % 5 == 4 ? 201 : 200))
                    return ContinuousClock.now - start
                }
                if index >= 16 { _ = try await group.next() }
            }
            var slowest = Duration.zero
            for try await elapsed in group { slowest = max(slowest, elapsed) }
            return slowest
        }
        // A blocked API would answer only when the 60 s job ends; 5 s leaves room for a stall
        // of the shared 2-core CI machine without hiding that.
        #expect(slowest < .seconds(5), "a request took \(slowest) while a job ran")
        let state = try await server.job(busy)["state"]?.stringValue
        #expect(state == "running", "the CPU-bound job kept its slot throughout")
        _ = try await server.request(.POST, "/v1/jobs/\(busy)/cancel")
    }

    /// What a job says (its progress message, its error) reaches an operator's terminal through
    /// `spool status` with its control characters written out: a job cannot set the terminal's
    /// title or clear it (found by attacking the build: ESC and BEL went out raw).
    @Test func theCLIShowsAJobsControlCharactersWrittenOut() async throws {
        let script = #"printf '%s\n' '{"type":"progress","fraction":0.5,"message":"\u001b]0;pwned\u0007 halfway"}' > "$SPOOL_MESSAGES""#
        let server = try ServerHarness(config: .object(["job_types": .object([
            "talk": .object(["command": .array(["/bin/sh", "-c", .string(script)]), "timeout_s": 30]),
        ])]))
        try await server.start()
        defer { Task { await server.stop() } }
        let id = try #require(try await server.submit("talk").json["id"]?.stringValue)
        _ = try await server.waitFor(id, ["succeeded"])
        let status = try await runCLI(["status", id, "--server", server.url])
        #expect(status.status == 0)
        #expect(status.stdout.contains(#"progress:  50% \u{1B}]0;pwned\u{7} halfway"#), "\(status.stdout)")
        #expect(!status.stdout.unicodeScalars.contains { $0 == "\u{1B}" || $0 == "\u{7}" })
    }

    /// A field's line breaks are indented under it: a job's progress message cannot print a line
    /// that reads as another field (found by attacking the build: "halfway\nstate:     succeeded").
    @Test func aJobsMessageCannotForgeALineOfSpoolStatus() async throws {
        let script = #"printf '%s\n' '{"type":"progress","fraction":0.5,"message":"halfway\nstate:     succeeded"}' > "$SPOOL_MESSAGES"; sleep 30"#
        let server = try ServerHarness(config: .object(["job_types": .object([
            "talk": .object(["command": .array(["/bin/sh", "-c", .string(script)]), "timeout_s": 60]),
        ])]))
        try await server.start()
        defer { Task { await server.stop() } }
        let id = try #require(try await server.submit("talk").json["id"]?.stringValue)
        try await poll(.seconds(30), "the progress message") { try await server.job(id)["progress"] != nil }
        let status = try await runCLI(["status", id, "--server", server.url])
        #expect(status.status == 0)
        #expect(status.stdout.split(separator: "\n").filter { $0.hasPrefix("state:") } == ["state:     running"], "\(status.stdout)")
    }

    /// `spool submit` sends an Idempotency-Key of its own when none is given, so that a submit
    /// whose answer did not come in time can be sent again and stored once (found by attacking the
    /// build: the CLI said the server could not be reached, and the job it had sent ran).
    @Test func theCLISubmitSendsAnIdempotencyKeyOfItsOwn() async throws {
        // A stand-in server on loopback: it keeps the request and answers 201 at once.
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) } }
        listen(listener, 4)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) } }
        let port = UInt16(bigEndian: address.sin_port)
        let request = Task.detached { () -> String in   // unstructured: awaited below; blocking accept and reads
            let connection = accept(listener, nil, nil)
            defer { close(connection) }
            var received: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while !String(decoding: received, as: UTF8.self).contains("\"type\"") {
                let count = recv(connection, &buffer, buffer.count, 0)
                guard count > 0 else { break }
                received += buffer[..<count]
            }
            let body = #"{"id":"job_01m9900000000000000000000a","type":"t","state":"queued"}"#
            let answer = "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
            _ = answer.withCString { send(connection, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
            return String(decoding: received, as: UTF8.self)
        }
        let submitted = try await runCLI(["submit", "t", "--server", "http://127.0.0.1:\(port)"])
        let sent = await request.value
        #expect(submitted.status == 0 && submitted.stdout.contains("job_01m9900000000000000000000a"), "\(submitted)")
        let key = sent.split(separator: "\r\n").first { $0.lowercased().hasPrefix("idempotency-key:") }
        #expect(key?.contains("spool-cli-") == true, "\(sent)")
    }

    /// `spool --version` names the stores' schemas with the version (found by attacking an upgrade:
    /// builds that store jobs differently printed the same line).
    @Test func theVersionNamesTheStoreSchemas() async throws {
        let version = try await runCLI(["--version"])
        let line = version.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(version.status == 0 && line.wholeMatch(of: /\d+\.\d+\.\d+ \(store schema: SQLite \d+, PostgreSQL \d+\)/) != nil, "\(version)")
    }

    /// The CLI's output going nowhere: a reader that went away (`| head`) ends it quietly with
    /// success, a full disk with one line and status 1 — never a crash (found by attacking the
    /// build: a fatal error, a backtrace and SIGILL). And it reads `--input` as the server reads
    /// JSON: an integer beyond 64 bits or invalid UTF-8 is refused, not changed; NaN or infinity
    /// in a flag, or a bad `--array-range`, is a command line it cannot parse (64).
    @Test func theCLIEndsWellWhenItsOutputGoesNowhereAndReadsItsInputStrictly() async throws {
        let server = try ServerHarness(config: .object(["job_types": .object([
            "chatty": .object(["command": .array(["/bin/sh", "-c", "seq 1 200000"]), "timeout_s": 60]),
        ])]))
        try await server.start()
        defer { Task { await server.stop() } }
        let id = try #require(try await server.submit("chatty").json["id"]?.stringValue)
        _ = try await server.waitFor(id, ["succeeded"])
        let spool = ServerHarness.binary
        let piped = try await runProcess("/bin/bash", ["-c", "'\(spool)' logs \(id) --server \(server.url) | head -c 10 >/dev/null; echo \"rc=${PIPESTATUS[0]}\""])
        #expect(piped.stdout.contains("rc=0") && !piped.stderr.contains("Fatal error"), "\(piped)")
        let full = try await runProcess("/bin/bash", ["-c", "'\(spool)' logs \(id) --server \(server.url) > /dev/full; echo \"rc=$?\""])
        #expect(full.stdout.contains("rc=1") && full.stderr.contains("spool: cannot write the output: No space left on device"), "\(full)")
        let listed = try await runProcess("/bin/bash", ["-c", "'\(spool)' list --server \(server.url) > /dev/full; echo \"rc=$?\""])
        #expect(listed.stdout.contains("rc=1"), "\(listed)")

        let big = try await runCLI(["submit", "chatty", "--input", #"{"seed": 18446744073709551617}"#, "--server", server.url])
        #expect(big.status == 1 && big.stderr.contains("--input is not valid JSON"), "\(big.stderr)")
        let latin1 = NSTemporaryDirectory() + "spool-latin1-\(UUID().uuidString.prefix(8)).json"
        defer { unlink(latin1) }
        try Data([0x7B, 0x22, 0x6E, 0x22, 0x3A, 0x22, 0x63, 0x61, 0x66, 0xE9, 0x22, 0x7D]).write(to: URL(fileURLWithPath: latin1))   // {"n":"café"} in Latin-1
        let invalid = try await runCLI(["submit", "chatty", "--input", "@" + latin1, "--server", server.url])
        #expect(invalid.status == 1 && invalid.stderr.contains("--input is not valid JSON"), "\(invalid.stderr)")
        for flags in [["--delay", "nan"], ["--timeout", "inf"], ["--dedup", "1e400"], ["--array-range", "1-2-3"]] {
            let refused = try await runCLI(["submit", "chatty", "--server", server.url] + flags)
            #expect(refused.status == 64, "\(flags): \(refused.status) \(refused.stderr)")
        }
    }

    @Test func jobsRunStrictlyOneAtATimeInSubmitOrder() async throws {
        let server = try server()
        try await server.start()
        defer { Task { await server.stop() } }
        var ids: [String] = []
        for n in 0..<30 { ids.append(try id(try await server.submit("stamp", .object(["n": .int(Int64(n)), "sleep": .double(0.05)])))) }
        for id in ids { #expect(try await server.waitFor(id, ["succeeded", "failed", "canceled"])["state"] == "succeeded") }

        let stamps = try Fixtures.stamps(in: server.scratch)
        #expect(!stamps.contains { $0.kind == "OVERLAP" }, "a job found another one holding the slot")
        let starts = stamps.filter { $0.kind == "start" }, ends = stamps.filter { $0.kind == "end" }
        #expect(starts.map(\.n) == Array(0..<30), "jobs started in submit order")
        #expect(ends.map(\.n) == Array(0..<30))
        for n in 1..<30 {
            #expect(starts[n].nanoseconds >= ends[n - 1].nanoseconds, "job \(n) started before job \(n - 1) ended")
        }
    }

    /// With the server's guard killed first (by hand, or with the server's whole cgroup), the
    /// restart's own sweep is what kills the orphaned first attempt.
    @Test(arguments: [false, true]) func killNineWithJobsRunningAndQueuedLosesNothing(guardKilledFirst: Bool) async throws {
        let server = try server()
        try await server.start()
        defer { Task { await server.stop() } }
        // The first job holds the slot until the gate opens, so the kill surely interrupts it
        // however slowly the loaded machine gets to the kill.
        var ids = [try id(try await server.submit("gated-stamp", .object(["n": 0, "sleep": 0.5])))]
        for n in 1..<5 { ids.append(try id(try await server.submit("stamp", .object(["n": .int(Int64(n)), "sleep": 0.5])))) }
        try await waitForStamp("start", of: 0, on: server)
        #expect(server.guardPIDs.count == 1)
        if guardKilledFirst { await server.kill9WithoutGuard() } else { await server.kill9() }
        if guardKilledFirst {
            #expect(!processes(ofJob: ids[0]).isEmpty, "no guard: the orphan runs until the restart")
        }

        try await server.start()
        // Only now may the job end: an orphan of the first attempt the restart failed to kill
        // would still hold the slot's lock when the second attempt starts, and stamp OVERLAP.
        FileManager.default.createFile(atPath: Fixtures.gate(in: server.scratch), contents: nil)
        for id in ids {
            let job = try await server.waitFor(id, ["succeeded", "failed", "canceled"])
            #expect(job["state"] == "succeeded", "job \(id) ended \(job["state"]?.stringValue ?? "?")")
        }
        #expect(try await server.job(ids[0])["attempts"] == 2, "the interrupted job ran again")
        let stamps = try Fixtures.stamps(in: server.scratch)
        #expect(!stamps.contains { $0.kind == "OVERLAP" }, "the requeued job overlapped its orphaned first attempt or another job")
        #expect(Set(stamps.filter { $0.kind == "end" }.map(\.n)) == Set(0..<5))
    }

    /// Issue 12: the slot starts its next job (looked up and prepared while the previous one
    /// ran) before the claim commits. A kill -9 exactly then — the job's process started, the
    /// store still holding it queued and the previous job running — loses nothing and runs
    /// nothing twice at once: the restart kills the started process before anything runs.
    @Test func killNineBetweenStartingAPreparedJobAndCommittingItsClaim() async throws {
        let server = try server()
        try await server.start(environment: ["SPOOL_FAILPOINTS": "hold-handover-commit"])
        defer { Task { await server.stop() } }
        let first = try id(try await server.submit("stamp", .object(["n": 0, "sleep": 0.3])))
        let next = try id(try await server.submit("gated-stamp", .object(["n": 1, "sleep": 0])))
        try await waitForStamp("start", of: 1, on: server)
        #expect(try await server.job(next)["state"] == "queued", "its process runs, its claim is not committed")
        #expect(try await server.job(first)["state"] == "running", "nor is the first job's end")
        await server.kill9()

        try await server.start()
        FileManager.default.createFile(atPath: Fixtures.gate(in: server.scratch), contents: nil)
        for id in [first, next] {
            let job = try await server.waitFor(id, ["succeeded", "failed", "canceled"])
            #expect(job["state"] == "succeeded", "job \(id) ended \(job["state"]?.stringValue ?? "?")")
        }
        #expect(try await server.job(first)["attempts"] == 2, "its end was not recorded before the crash: it ran again")
        #expect(try await server.job(next)["attempts"] == 1, "the start that was never committed used no attempt")
        let stamps = try Fixtures.stamps(in: server.scratch)
        #expect(!stamps.contains { $0.kind == "OVERLAP" }, "a job overlapped the process started before the crash")
        #expect(stamps.filter { $0.kind == "start" && $0.n == 1 }.count == 2 && stamps.filter { $0.kind == "end" && $0.n == 1 }.count == 1,
                "the next job's first process was killed before its end; it ran once more, alone")
    }

    /// A job started on an idle slot commits its claim with its end when it ends within the
    /// scheduler's `claimDelay`. A kill -9 after such a job ran, before that commit — the store
    /// still holding it queued — loses nothing: it runs again after the restart, once, alone.
    @Test func killNineAfterAJobRanBeforeItsClaimCommittedWithItsEnd() async throws {
        let server = try server()
        try await server.start(environment: ["SPOOL_FAILPOINTS": "hold-claim-with-end"])
        defer { Task { await server.stop() } }
        let job = try id(try await server.submit("stamp", .object(["n": 0, "sleep": 0])))
        try await waitForStamp("end", of: 0, on: server)
        #expect(try await server.job(job)["state"] == "queued", "it ran; neither its claim nor its end is committed")
        await server.kill9()

        try await server.start()
        let done = try await server.waitFor(job, ["succeeded", "failed", "canceled"])
        #expect(done["state"] == "succeeded" && done["attempts"] == 1, "\(done)")
        let stamps = try Fixtures.stamps(in: server.scratch)
        #expect(!stamps.contains { $0.kind == "OVERLAP" })
        #expect(stamps.map(\.kind) == ["start", "end", "start", "end"], "it ran again after the restart, after its first run: \(stamps)")
    }

    /// Jobs that write nothing give their directory back to the slot (the next start reuses its
    /// inodes); their log and outputs still answer, empty.
    @Test func aJobThatLeftNothingHasNoDirectoryAndStillAnEmptyLogAndNoOutputs() async throws {
        let server = try server()
        try await server.start(["--slots", "1"])
        defer { Task { await server.stop() } }
        var ids: [String] = []
        for _ in 0..<3 {
            let job = try id(try await server.submit("noop"))
            #expect(try await server.waitFor(job, ["succeeded", "failed", "canceled"])["state"] == "succeeded")
            ids.append(job)
        }
        try await withDeadline(.seconds(30), "a quiet job's directory to go to the slot") { [ids] in
            while ids.allSatisfy({ FileManager.default.fileExists(atPath: server.dataDirectory + "/jobs/" + $0) }) {
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        for job in ids {
            let log = try await server.request(.GET, "/v1/jobs/\(job)/logs")
            #expect(log.status == 200 && log.body.isEmpty)
            let outputs = try await server.request(.GET, "/v1/jobs/\(job)/outputs")
            #expect(outputs.status == 200 && outputs.json["outputs"] == .array([]))
        }
        let spares = try FileManager.default.contentsOfDirectory(atPath: server.dataDirectory + "/jobs/.spare")
        #expect((1...4).contains(spares.count), "\(spares)")
    }

    /// Quiet jobs back to back on a server busy since its start give back their directories,
    /// not only those after the slot first went idle (that made the first spare, which only then
    /// let directories be recycled). A few may stay when several come back at once, more than
    /// the slot has room for: at most four.
    @Test func quietJobsBackToBackGiveBackTheirDirectories() async throws {
        let server = try server()
        try await server.start(["--slots", "1"])
        defer { Task { await server.stop() } }
        let ids = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<40 { group.addTask { try self.id(try await server.submit("noop")) } }
            return try await group.reduce(into: [String]()) { $0.append($1) }
        }
        for job in ids {
            #expect(try await server.waitFor(job, ["succeeded", "failed", "canceled"])["state"] == "succeeded")
        }
        // A job's directory goes back before its outputs event is written: once all 40 are in
        // the event log, every directory that could go back has.
        let outputs = try await server.frames("/v1/events", lastEventID: 0) { frames in frames.count { $0.event == "outputs" } == 40 }
        #expect(outputs.count { $0.event == "outputs" } == 40)
        let jobs = server.dataDirectory + "/jobs/"
        let left = ids.filter { FileManager.default.fileExists(atPath: jobs + $0) }
        #expect(left.count <= 4, "\(left.count) of 40 kept a directory that holds nothing")
        let spares = try FileManager.default.contentsOfDirectory(atPath: jobs + ".spare")
        #expect((1...4).contains(spares.count), "a slot keeps four: \(spares)")
    }

    /// Retention on a real server: an ended job stays for `retention_days`, then a pass deletes
    /// its row, its log and its directory, and its Idempotency-Key makes a new job.
    @Test func anEndedJobIsDeletedWithItsFilesOnceItIsOlderThanTheRetention() async throws {
        let retention = 0.00005 * 86_400   // 4.32 s; a pass every second
        let server = try server(extra: ["retention_days": .double(0.00005)])
        try await server.start(["--slots", "1"])
        defer { Task { await server.stop() } }
        let job = try id(try await server.submit("fail", .object(["code": 0]), key: "once"))
        let done = try await server.waitFor(job, ["succeeded", "failed", "canceled"])
        #expect(done["state"] == "succeeded")
        let finished = try #require(done["finished_at"]?.stringValue.flatMap(Timestamp.init))
        let directory = server.dataDirectory + "/jobs/" + job
        #expect(FileManager.default.fileExists(atPath: directory + "/log.txt"), "a job that logged keeps its directory")
        #expect(String(decoding: try await server.request(.GET, "/v1/jobs/\(job)/logs").body, as: UTF8.self).contains("failing"))

        try await withDeadline(.seconds(60), "the job's deletion") {
            while try await server.request(.GET, "/v1/jobs/\(job)").status != 404 { try await Task.sleep(for: .milliseconds(100)) }
        }
        let gone = WallClock.now()
        #expect(gone.microseconds - finished.microseconds >= Int64(retention * 1e6), "deleted \(gone.microseconds - finished.microseconds) µs after its end")
        // The pass removes the directory once the row's delete has committed: a moment after the 404.
        try await withDeadline(.seconds(10), "the job's directory to go after its row") {
            while FileManager.default.fileExists(atPath: directory) { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(try await server.request(.GET, "/v1/jobs/\(job)/logs").status == 404)
        #expect(try await server.request(.GET, "/v1/jobs").json["jobs"] == .array([]))
        let again = try id(try await server.submit("fail", .object(["code": 0]), key: "once"))
        #expect(again != job)
        // So short a retention is likely a mistake: the start says so.
        let log = try String(contentsOfFile: server.scratch + "/server.log", encoding: .utf8)
        #expect(log.contains("retention_days is under an hour: ended jobs are deleted 4 s after they end"), "\(log)")
    }

    @Test func aJobThatOverrunsItsTimeoutIsKilledWithItsGrandchild() async throws {
        let server = try server()
        try await server.start()
        defer { Task { await server.stop() } }
        let hang = try id(try await server.submit("hang"))
        let job = try await server.waitFor(hang, ["succeeded", "failed", "canceled"], timeout: .seconds(30))
        #expect(job["state"] == "failed")
        #expect(job["reason"] == "timeout")
        let reply = try await server.request(.GET, "/v1/jobs/\(hang)/outputs/grandchild")
        let pid = try #require(Int32(String(decoding: reply.body, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(!isAlive(pid), "grandchild \(pid) outlived its job")
    }

    /// What a job leaves running in another process group of its session, with its environment
    /// wiped (a daemon that retitles itself), dies with the job's end,
    /// not only when the server does (found by attacking the build: the job's group and the
    /// marker sweep both missed it, and it ran on holding its GPU).
    @Test func aJobsLeftoverInAnotherGroupWithItsEnvironmentWipedDiesWithTheJob() async throws {
        let server = try ServerHarness(config: .object(["job_types": .object([
            // A group of its own in the job's session, then an empty environment (the marker gone).
            // The job ends only once the daemon is in its own group with its environment wiped.
            "daemon": .object(["command": .array(["/bin/sh", "-c", """
                R="$SPOOL_OUTPUT_DIR/ready"
                /usr/bin/python3 -c 'import os, sys; os.setpgid(0, 0); os.execve("/bin/sh", ["sh", "-c", ": > " + sys.argv[1] + "; exec sleep 300"], {})' "$R" &
                echo $! > "$SPOOL_OUTPUT_DIR/daemon"
                while [ ! -e "$R" ]; do sleep 0.05; done; exit 0
                """])]),
        ])]))
        try await server.start()
        defer { Task { await server.stop() } }
        let job = try id(try await server.submit("daemon"))
        _ = try await server.waitFor(job, ["succeeded"])
        let reply = try await server.request(.GET, "/v1/jobs/\(job)/outputs/daemon")
        let pid = try #require(Int32(String(decoding: reply.body, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)))
        defer { kill(pid, SIGKILL) }
        try await poll(.seconds(10), "the job's daemon \(pid) to die with the job") { !isAlive(pid) }
    }

    @Test func nonZeroExitsAndSignalsFailWithTheirReasonAndTheQueueMovesOn() async throws {
        let server = try server()
        try await server.start()
        defer { Task { await server.stop() } }
        let failing = try id(try await server.submit("fail", .object(["code": 7])))
        let crashing = try id(try await server.submit("crash"))
        let next = try id(try await server.submit("noop"))
        let failed = try await server.waitFor(failing, ["succeeded", "failed"])
        #expect(failed["reason"] == "exit_code")
        #expect(failed["exit_code"] == 7)
        let crashed = try await server.waitFor(crashing, ["succeeded", "failed"])
        #expect(crashed["reason"] == "signal")
        #expect(crashed["signal"] == .int(Int64(SIGSEGV)))
        #expect(try await server.waitFor(next, ["succeeded", "failed"])["state"] == "succeeded")
        let log = try await server.request(.GET, "/v1/jobs/\(failing)/logs")
        #expect(String(decoding: log.body, as: UTF8.self).contains("failing"))
    }

    @Test func cancelStopsQueuedJobsAtOnceAndRunningJobsWithEscalation() async throws {
        let server = try server()
        try await server.start()
        defer { Task { await server.stop() } }
        let running = try id(try await server.submit("sleep", .object(["seconds": 60])))
        _ = try await server.waitFor(running, ["running"])
        let queued = try id(try await server.submit("sleep", .object(["seconds": 60])))

        let canceledQueued = try await server.request(.POST, "/v1/jobs/\(queued)/cancel")
        #expect(canceledQueued.status == 200)
        #expect(canceledQueued.json["state"] == "canceled")

        let canceling = try await server.request(.POST, "/v1/jobs/\(running)/cancel")
        #expect(canceling.status == 202)
        let canceled = try await server.waitFor(running, ["succeeded", "failed", "canceled"], timeout: .seconds(30))
        #expect(canceled["state"] == "canceled")
        #expect(canceled["reason"] == "canceled")

        let again = try await server.request(.POST, "/v1/jobs/\(running)/cancel")
        #expect(again.status == 409)
        #expect(again.header("Content-Type") == "application/problem+json")
    }

    @Test func badRequestsGetTheDocumentedStatusAsProblemJSON() async throws {
        let server = try server()
        try await server.start()
        defer { Task { await server.stop() } }
        let json = [("Content-Type", "application/json")]
        let cases: [(String, ServerHarness.Reply, Int)] = [
            ("malformed JSON", try await server.request(.POST, "/v1/jobs", body: Data("{\"type\":".utf8), headers: json), 400),
            ("oversized body", try await server.request(.POST, "/v1/jobs", body: Data(repeating: 32, count: 2 << 20), headers: json), 413),
            ("wrong content type", try await server.request(.POST, "/v1/jobs", body: Data("{}".utf8), headers: [("Content-Type", "text/plain")]), 415),
            ("no content type", try await server.request(.POST, "/v1/jobs", body: Data(#"{"type":"noop"}"#.utf8)), 415),
            ("unknown type", try await server.submit("no-such-type"), 422),
            ("input failing the schema", try await server.submit("sleep", .object(["seconds": "soon"])), 422),
            ("unknown id", try await server.request(.GET, "/v1/jobs/job_00000000000000000000000000"), 404),
        ]
        let noop = try id(try await server.submit("noop"))
        _ = try await server.waitFor(noop, ["succeeded"])
        let traversal = try await server.request(.GET, "/v1/jobs/\(noop)/outputs/%2e%2e/%2e%2e/spool.sqlite")
        for (name, reply, status) in cases + [("../ in an output name", traversal, 400)] {
            #expect(reply.status == status, "\(name)")
            #expect(reply.header("Content-Type") == "application/problem+json", "\(name)")
            #expect(reply.json["status"] == .int(Int64(status)), "\(name)")
            let detail = reply.json["detail"]?.stringValue ?? ""
            #expect(detail.count > 10, "\(name) has a human sentence")
        }
        #expect(traversal.body.count < 2000, "no database bytes leaked")
        for type in ["application/json; charset=utf-8", "Application/JSON"] {
            let reply = try await server.request(.POST, "/v1/jobs", body: Data(#"{"type":"noop"}"#.utf8), headers: [("Content-Type", type)])
            #expect(reply.status == 201, "JSON under another spelling: \(type)")
        }
    }

    @Test func idempotentResubmitReturnsTheOriginalJob() async throws {
        let server = try server()
        try await server.start()
        defer { Task { await server.stop() } }
        let first = try await server.submit("sleep", .object(["seconds": 1]), key: "order-42")
        let repeated = try await server.submit("sleep", .object(["seconds": 1]), key: "order-42")
        let different = try await server.submit("sleep", .object(["seconds": 2]), key: "order-42")
        #expect(first.status == 201)
        #expect(repeated.status == 200)
        #expect(try id(repeated) == id(first))
        #expect(different.status == 409)
        // The schedule is part of the request (found by attacking the build: another run_at,
        // delay_s or start_within_s under the key answered 200, and the job kept the old one).
        let later = Timestamp(microseconds: WallClock.now().microseconds + 10 * 86_400_000_000).description
        let evenLater = Timestamp(microseconds: WallClock.now().microseconds + 12 * 86_400_000_000).description
        for (number, (name, a, b)): (Int, (String, [String: JSONValue], [String: JSONValue])) in [
            ("run_at", ["run_at": .string(later)], ["run_at": .string(evenLater)]),
            ("delay_s", ["delay_s": 900], [:]),
            ("start_within_s", ["delay_s": 900, "start_within_s": 5], ["delay_s": 900]),
            ("dedup", ["dedup": "queued", "delay_s": 900], ["delay_s": 900]),
        ].enumerated() {
            let sleep: JSONValue = .object(["seconds": .int(Int64(10 + number))])   // no other job to join (dedup)
            let once = try await server.submit("sleep", sleep, extra: a, key: "schedule-" + name)
            #expect(once.status == 201, "\(name): \(once.json)")
            let other = try await server.submit("sleep", sleep, extra: b, key: "schedule-" + name)
            #expect(other.status == 409, "\(name): another schedule under the key: \(other.json)")
            // The same request again, later: its delay counts from then, and it is still a repeat.
            let again = try await server.submit("sleep", sleep, extra: a, key: "schedule-" + name)
            #expect(again.status == 200 && again.json["id"] == once.json["id"], "\(name): \(again.json)")
            _ = try await server.request(.POST, "/v1/jobs/\(once.json["id"]?.stringValue ?? "")/cancel")
        }
    }

    @Test func gracefulShutdownRefusesSubmitsAndRequeuesTheRunningJob() async throws {
        let server = try server()
        try await server.start(["--shutdown-grace", "1"])
        defer { Task { await server.stop() } }
        let long = try id(try await server.submit("sleep", .object(["seconds": 120])))
        _ = try await server.waitFor(long, ["running"])
        server.terminate()
        try await withDeadline(.seconds(10), "the server to report draining") {
            while try await server.request(.GET, "/healthz").status != 503 { try await Task.sleep(for: .milliseconds(20)) }
        }
        let refused = try await server.submit("noop")
        #expect(refused.status == 503)
        #expect(refused.header("Content-Type") == "application/problem+json")
        let status = try await withDeadline(.seconds(30), "the server to exit") { await server.waitForExit() }
        #expect(status == 0)

        try await server.start()
        let job = try await server.waitFor(long, ["running"])
        #expect(job["attempts"] == 1, "the attempt stopped by the shutdown was given back")
        // Its run is listed all the same, not counted, and the CLI says so.
        let attempts = try await server.request(.GET, "/v1/jobs/\(long)/attempts").json["attempts"]?.arrayValue ?? []
        #expect(attempts.map { [$0["attempt"], $0["state"], $0["counted"]] }
                    == [[.int(1), .string("queued"), .bool(false)], [.int(1), .string("running"), nil]], "\(attempts)")
        #expect(attempts.first?["error"] == .string("the server shut down while it ran; it runs again"))
        let listed = try await runCLI(["status", long, "--attempts", "--server", server.url])
        #expect(listed.status == 0 && listed.stdout.hasPrefix("#1  queued (handed back, not counted)  slot 0"), "\(listed.stdout)\(listed.stderr)")
        _ = try await server.request(.POST, "/v1/jobs/\(long)/cancel")
    }

    /// `spool submit --wait` rides out a restart of the server (a deploy): it says it is waiting,
    /// and ends with the job (found by attacking the build: it exited 3 at the first refused
    /// connection, and the job then succeeded without it).
    @Test func submitWaitRidesOutARestart() async throws {
        let server = try server()
        try await server.start(["--shutdown-grace", "1"])
        defer { Task { await server.stop() } }
        let url = server.url, port = try #require(URL(string: url)?.port)
        // Longer than the shutdown grace: the restart stops it and it runs again after.
        let waiting = Task { try await runCLI(["submit", "sleep", "--input", #"{"seconds":6}"#, "--wait", "--server", url], killAfter: .seconds(150)) }
        try await poll(.seconds(30), "the job to start") {
            try await server.request(.GET, "/v1/jobs?status=running").json["jobs"]?.arrayValue?.count == 1
        }
        server.terminate()   // graceful: the running job goes back to the queue, its attempt unused
        _ = try await withDeadline(.seconds(30), "the server to exit") { await server.waitForExit() }
        try await Task.sleep(for: .seconds(2))   // the server is away a moment, as in a deploy
        try await server.start(["--shutdown-grace", "1", "--port", String(port)])
        let result = try await waiting.value
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("waiting for it"), "\(result.stderr)")
    }

    /// A long poll (`?wait=`) in progress when the shutdown begins answers then, with the job as
    /// it is: the server does not wait out the poll's 60 s before it exits.
    @Test func aLongPollInProgressDoesNotHoldTheShutdown() async throws {
        let server = try server()
        try await server.start(["--shutdown-grace", "1"])
        defer { Task { await server.stop() } }
        let long = try id(try await server.submit("sleep", .object(["seconds": 120])))
        _ = try await server.waitFor(long, ["running"])
        let queued = try id(try await server.submit("noop"))   // behind it, and queued still after the shutdown
        async let poll = server.request(.GET, "/v1/jobs/\(queued)?wait=60")
        try await Task.sleep(for: .milliseconds(300))   // the poll waits on the job by now; were it later, it would answer at once
        let began = ContinuousClock.now
        server.terminate()
        let answer = try await poll
        #expect(answer.status == 200)
        let status = try await withDeadline(.seconds(40), "the server to exit") { await server.waitForExit() }
        #expect(status == 0)
        #expect(ContinuousClock.now - began < .seconds(20), "the shutdown took \(ContinuousClock.now - began)")
    }

    /// `spool outputs --download` writes each file as it arrives, not after holding all of it in
    /// memory (found by attacking the build: a 1-GiB output was refused, a big one took its size
    /// in RAM), and a file appears under its name only once it is whole.
    @Test func theCLIDownloadsABigOutputWithoutHoldingItInMemory() async throws {
        let megabytes = 64
        let server = try ServerHarness(config: .object(["job_types": .object([
            "big": .object(["command": .array(["/bin/sh", "-c", .string("head -c \(megabytes)M /dev/urandom > \"$SPOOL_OUTPUT_DIR/big.bin\"; echo done > \"$SPOOL_OUTPUT_DIR/small.txt\"")])]),
        ])]))
        try await server.start()
        defer { Task { await server.stop() } }
        let id = try id(try await server.submit("big"))
        _ = try await server.waitFor(id, ["succeeded"])
        let download = server.scratch + "/download"
        // The CLI's peak resident memory, as its parent sees it (ru_maxrss, in KiB).
        let measure = "import resource, subprocess, sys\nstatus = subprocess.run(sys.argv[1:]).returncode\n"
            + "print('maxrss', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\nsys.exit(status)"
        let run = try await runProcess("/usr/bin/python3", ["-c", measure, ServerHarness.binary, "outputs", id, "--download", download, "--server", server.url])
        #expect(run.status == 0, "\(run.stderr)")
        let peak = try #require(run.stderr.split(separator: "\n").last { $0.hasPrefix("maxrss ") }.flatMap { Int(String($0.dropFirst(7))) })
        // Held whole, it was 2.3 times the file and more (363 MiB for 160 MiB); held once, the file
        // and the CLI's own 25-35 MiB.
        #expect(peak < 80 * 1024, "the CLI peaked at \(peak / 1024) MiB downloading \(megabytes) MiB")
        let written = try FileManager.default.attributesOfItem(atPath: download + "/big.bin")[.size] as? Int
        #expect(written == megabytes << 20)
        #expect(try String(contentsOfFile: download + "/small.txt", encoding: .utf8) == "done\n")
        let original = try Data(contentsOf: URL(fileURLWithPath: server.dataDirectory + "/jobs/\(id)/outputs/big.bin"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: download + "/big.bin")) == original, "byte for byte")
        #expect(try FileManager.default.contentsOfDirectory(atPath: download).sorted() == ["big.bin", "small.txt"], "nothing half-written left")
    }

    /// A download stopped with Ctrl-C leaves no partial file behind, hidden or not (found by
    /// attacking the build: 5.7 MB of `.NAME.spool-part` stayed).
    @Test func aDownloadStoppedWithCtrlCLeavesNothingBehind() async throws {
        // A server that lists one output, then sends 100 of its 1,000 bytes and stalls. It closes
        // each connection and says so: a client that reused the closed one failed the download
        // before it began (a CI run's flake).
        let script = """
            import json, socket, sys, threading, time
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", 0)); s.listen(5)
            print(s.getsockname()[1], flush=True)
            def serve(c):
                path = c.recv(65536).decode().split(" ")[1]
                if path.endswith("/outputs"):
                    body = json.dumps({"outputs": [{"name": "f.bin", "size": 1000, "content_type": "application/octet-stream",
                                                    "url": "/v1/jobs/job_x/outputs/f.bin"}]}).encode()
                    c.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nConnection: close\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body) + body)
                else:
                    c.sendall(b"HTTP/1.1 200 OK\\r\\nConnection: close\\r\\nContent-Length: 1000\\r\\n\\r\\n" + b"x" * 100)
                    time.sleep(60)
                c.close()
            while True:
                c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
            """
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        server.arguments = ["-c", script]
        let portPipe = Pipe()
        server.standardOutput = portPipe
        server.standardError = FileHandle.nullDevice
        try server.run()
        // SIGKILL: a test run may hand its children SIGTERM ignored.
        defer { kill(server.processIdentifier, SIGKILL); server.waitUntilExit() }
        let port = try #require(Int(String(decoding: portPipe.fileHandleForReading.availableData, as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)))
        let download = NSTemporaryDirectory() + "spool-ctrlc-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: download) }
        // SIGINT as a terminal leaves it (a test run may hand its children signals ignored, which
        // the CLI then leaves ignored, as for a script's background job).
        let cli = Process()
        cli.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        cli.arguments = ["-c", "import os, signal, sys\nfor s in (signal.SIGINT, signal.SIGTERM): signal.signal(s, signal.SIG_DFL)\nos.execv(sys.argv[1], sys.argv[1:])",
                         ServerHarness.binary, "outputs", "job_01m980z5gw2ahqtnjd5s6tdmcm", "--download", download, "--server", "http://127.0.0.1:\(port)"]
        cli.standardError = FileHandle.nullDevice
        try cli.run()
        try await poll(.seconds(20), "the partial file to appear") {
            (try? FileManager.default.contentsOfDirectory(atPath: download))?.isEmpty == false
        }
        kill(cli.processIdentifier, SIGINT)
        try await poll(.seconds(20), "the CLI to stop") { !cli.isRunning }
        // Ended by the signal, as a shell's loop expects.
        #expect(cli.terminationReason == .uncaughtSignal && cli.terminationStatus == SIGINT, "\(cli.terminationReason) \(cli.terminationStatus)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: download) == [], "left behind")
    }

    @Test func theCLISubmitsARenderWaitsAndDownloadsThePNG() async throws {
        let server = try server()
        try await server.start()
        defer { Task { await server.stop() } }
        let submit = try await runCLI(["submit", "render", "--input", "{\"width\":48,\"height\":32,\"samples\":2}", "--wait", "--server", server.url])
        #expect(submit.status == 0, "\(submit.stderr)")
        #expect(submit.stdout.contains("/outputs/render.png"))
        let list = try await runCLI(["list", "--server", server.url, "--limit", "1"])
        #expect(list.stdout.hasPrefix("ID "), "a header line")
        let jobID = String(try #require(list.stdout.split(separator: "\n").first { $0.hasPrefix("job_") }).prefix(30))
        let download = server.scratch + "/download"
        let outputs = try await runCLI(["outputs", jobID, "--download", download, "--server", server.url])
        #expect(outputs.status == 0, "\(outputs.stderr)")
        let png = try Data(contentsOf: URL(fileURLWithPath: download + "/render.png"))
        #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47]))

        // A negative number is a value (found by attacking the build: `--priority -5` was
        // "Missing value for '--priority'"); a negative delay is the server's one-line refusal.
        let low = try await runCLI(["submit", "noop", "--priority", "-5", "--server", server.url])
        #expect(low.status == 0, "\(low.stderr)")
        let lowID = String(low.stdout.prefix(30))
        #expect(try await server.request(.GET, "/v1/jobs/\(lowID)").json["priority"] == -5)
        let past = try await runCLI(["submit", "noop", "--delay", "-3", "--server", server.url])
        #expect(past.status == 1 && past.stderr.contains("delay_s must be from 0"), "\(past.stderr)")

        // A job that starts at once, before the CLI's first look, is shown running (found by
        // attacking the build: the CLI long-polled from "queued" and saw only the job's end).
        let scratch = server.scratch
        let opener = Task {
            try await Task.sleep(for: .seconds(2))
            FileManager.default.createFile(atPath: Fixtures.gate(in: scratch), contents: nil)
        }
        let gated = try await runCLI(["submit", "gated-stamp", "--input", "{\"n\":0,\"sleep\":0}", "--wait", "--server", server.url])
        _ = try await opener.value
        #expect(gated.status == 0 && gated.stderr.contains("  running"), "\(gated.stderr)")

        // `seen`: a wait from a state the job has already left answers at once.
        let running = try await server.submit("sleep", .object(["seconds": 2]))
        let runningID = try #require(running.json["id"]?.stringValue)
        _ = try await server.waitFor(runningID, ["running"])
        let began = ContinuousClock.now
        let seen = try await server.request(.GET, "/v1/jobs/\(runningID)?wait=10&seen=queued")
        #expect(seen.json["state"] == "running" && ContinuousClock.now - began < .seconds(1), "\(seen.json)")
        #expect(try await server.request(.GET, "/v1/jobs/\(runningID)?wait=1&seen=later").status == 400)

        // A token the CLI cannot send is the caller's error (1), not an unreachable server (3).
        let badToken = try await runCLI(["list", "--server", server.url, "--token", "abc\ndef"])
        #expect(badToken.status == 1 && badToken.stderr.hasPrefix("spool: a header of this request cannot be sent"), "\(badToken.stderr)")
        // An empty --token is a mistake (an unset variable in a script), not a request without one.
        let emptyToken = try await runCLI(["list", "--server", server.url, "--token", ""])
        #expect(emptyToken.status == 1 && emptyToken.stderr == "spool: --token is empty (leave it out to send $SPOOL_TOKEN, or none)\n", "\(emptyToken.stderr)")

        let unreachable = try await runCLI(["status", jobID, "--server", "http://127.0.0.1:9"])
        #expect(unreachable.status == 3)
        #expect(unreachable.stderr.hasPrefix("spool: nothing listens at http://127.0.0.1:9 (connection refused)"))
        let missing = try await runCLI(["status", "job_00000000000000000000000000", "--server", server.url])
        #expect(missing.status == 1)
        #expect(missing.stderr == "spool: no job job_00000000000000000000000000\n")

        // `spool delete`: the job and its directory go; a second try is the server's 404 in one line.
        let deleted = try await runCLI(["delete", jobID, "--server", server.url])
        #expect(deleted.status == 0 && deleted.stdout == "\(jobID): deleted\n", "\(deleted.stderr)")
        #expect(!FileManager.default.fileExists(atPath: server.dataDirectory + "/jobs/" + jobID))
        let again = try await runCLI(["delete", jobID, "--server", server.url])
        #expect(again.status == 1 && again.stderr == "spool: no job \(jobID)\n")
    }

    /// Found by attacking the build: an id that is not one went into the URL's path
    /// (`spool status ../../metrics` asked for another resource, `spool status ''` for the list,
    /// answered "a reply this client does not understand"), and an error named the flag of
    /// sqlite_synchronous `--sqliteynchronous`.
    @Test func theCLISaysWhatIsWrongWithAnIdOrAFlag() async throws {
        for (arguments, says) in [(["status", "../../metrics"], "\"../../metrics\" is not a job id (job_…) or a job array's (arr_…)"),
                                  (["status", ""], "\"\" is not a job id (job_…) or a job array's (arr_…)"),
                                  (["logs", "arr_abc"], "\"arr_abc\" is not a job id (job_…)"),
                                  (["cancel", "job_ab/../x"], "\"job_ab/../x\" is not a job id")] {
            let result = try await runCLI(arguments + ["--server", "http://127.0.0.1:9"])
            #expect(result.status == 1 && result.stderr.hasPrefix("spool: " + says), "\(arguments): \(result.stderr)")
        }
        let scratch = NSTemporaryDirectory() + "spool-flag-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let result = try await runCLI(["serve", "--sqlite-synchronous", "off", "--data-dir", scratch, "--port", "0"], killAfter: .seconds(30))
        #expect(result.status != 0 && result.stderr.contains("--sqlite-synchronous"), "\(result.stderr)")
    }

    /// A job with more output files than the API lists says so: `truncated` in the list, and the
    /// CLI exits 1 saying the rest were not listed (found by attacking the build: 12,000 outputs
    /// listed as 10,000 with nothing said, and the CLI's download of those "succeeded").
    @Test func aJobWithMoreOutputsThanAreListedSaysSo() async throws {
        let server = try ServerHarness(config: .object(["job_types": .object([
            "many": .object(["command": .array(["/bin/sh", "-c", "cd \"$SPOOL_OUTPUT_DIR\" && seq 1 {input.n} | xargs touch"]),
                             "input_schema": .object(["type": "object", "required": .array(["n"]),
                                                      "properties": .object(["n": .object(["type": "integer", "minimum": 1, "maximum": 20_000])])])]),
        ])]))
        defer { Task { await server.stop() } }
        try await server.start()
        let many = try id(try await server.submit("many", .object(["n": 10_005])))
        let few = try id(try await server.submit("many", .object(["n": 3])))
        for job in [many, few] { #expect(try await server.waitFor(job, ["succeeded", "failed"])["state"] == "succeeded") }

        let listed = try await server.request(.GET, "/v1/jobs/\(many)/outputs").json
        #expect(listed["outputs"]?.arrayValue?.count == 10_000 && listed["truncated"] == .bool(true))
        #expect(try await server.request(.GET, "/v1/jobs/\(few)/outputs").json["truncated"] == nil)
        let cli = try await runCLI(["outputs", many, "--server", server.url])
        #expect(cli.status == 1 && cli.stderr.contains("lists only some of") && cli.stderr.contains("outputs (10000)"), "\(cli.stderr)")
        #expect(cli.stdout.split(separator: "\n").count == 10_000)
        #expect(try await runCLI(["outputs", few, "--server", server.url]).status == 0)
        // `submit --wait` prints the list and says it is some (found by attacking the build: nothing said).
        let waited = try await runCLI(["submit", "many", "--input", #"{"n": 10005}"#, "--wait", "--server", server.url])
        #expect(waited.status == 0 && waited.stderr.contains("lists only some of"), "\(waited.stderr)")
    }

    @Test func aBadConfigFileStopsStartupWithOneLine() async throws {
        let harness = try ServerHarness(config: .object(["job_types": .object(["x": .object(["command": .array([])])])]))
        let result = try await runCLI(["serve", "--config", harness.configPath, "--data-dir", harness.dataDirectory, "--port", "0"])
        #expect(result.status != 0)
        #expect(result.stderr.split(separator: "\n").count == 1)
        #expect(result.stderr.contains("command must be a non-empty list"))
    }
}

struct CLIResult { var status: Int32; var stdout: String; var stderr: String }

/// Runs the `spool` binary with arguments and collects its output. With `killAfter`, a run
/// that has not ended by then is killed (a server that should have refused to start).
func runCLI(_ arguments: [String], killAfter: Duration? = nil) async throws -> CLIResult {
    try await runProcess(ServerHarness.binary, arguments, killAfter: killAfter)
}

/// Runs a program and collects its output.
func runProcess(_ executable: String, _ arguments: [String], killAfter: Duration? = nil) async throws -> CLIResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let scratch = NSTemporaryDirectory() + "spool-cli-\(UUID().uuidString)"
    FileManager.default.createFile(atPath: scratch + ".out", contents: nil)
    FileManager.default.createFile(atPath: scratch + ".err", contents: nil)
    process.standardOutput = FileHandle(forWritingAtPath: scratch + ".out")
    process.standardError = FileHandle(forWritingAtPath: scratch + ".err")
    defer { for end in [".out", ".err"] { unlink(scratch + end) } }
    let watchdog = killAfter.map { limit in
        Task { [process] in  // unstructured: a test-only watchdog, cancelled below
            try await Task.sleep(for: limit)
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
    }
    defer { watchdog?.cancel() }
    let status = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Int32, any Error>) in
        process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
        do { try process.run() } catch { continuation.resume(throwing: error) }
    }
    return CLIResult(status: status, stdout: (try? String(contentsOfFile: scratch + ".out", encoding: .utf8)) ?? "",
                     stderr: (try? String(contentsOfFile: scratch + ".err", encoding: .utf8)) ?? "")
}
