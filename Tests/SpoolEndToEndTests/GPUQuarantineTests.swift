import Foundation
import SpoolCore
import Synchronization
import Testing

/// GPU quarantine through the real binary on a machine without a GPU: a fake `nvidia-smi`, first
/// on the server's PATH, answers from files the test rewrites — the device list (slot discovery),
/// each process's GPU memory (VRAM readings) and the health query (healthy, then "GPU is lost",
/// then healthy). The self-test is a shell command that passes once the test says so.
@Suite(.serialized) struct GPUQuarantineTests {
    /// The fake: `-L` lists two GPUs; `--query-gpu` prints `health` (the test's file) as-is;
    /// `--query-compute-apps` prints `vram`.
    static let fakeNvidiaSMI = """
        #!/bin/sh
        here=$(dirname "$0")/..
        case "$1" in
          -L) printf 'GPU 0: Fake GPU A (UUID: GPU-fake-0)\\nGPU 1: Fake GPU B (UUID: GPU-fake-1)\\n' ;;
          --query-gpu=*) cat "$here/health"; grep -q 'GPU is lost' "$here/health" && exit 15; exit 0 ;;
          --query-compute-apps=*) cat "$here/vram" 2>/dev/null; exit 0 ;;
          *) echo "fake nvidia-smi: unexpected arguments: $*" >&2; exit 2 ;;
        esac
        """
    static let healthy = "0, 0, No, No, No\n1, 0, No, No, No\n"

    /// A scratch folder with the fake as `bin/nvidia-smi` (put `bin` first on the PATH); its
    /// `health` file reads healthy until the test rewrites it.
    static func fakeMachine() throws -> String {
        let root = NSTemporaryDirectory() + "spool-gpu-\(UUID().uuidString.prefix(8))"
        try install(fakeNvidiaSMI, at: root + "/bin")
        try healthy.write(toFile: root + "/health", atomically: true, encoding: .utf8)
        return root
    }

    /// Writes `script` as an executable `nvidia-smi` in `folder`.
    static func install(_ script: String, at folder: String) throws {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try script.write(toFile: folder + "/nvidia-smi", atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: folder + "/nvidia-smi")
    }
    static let lost = "Unable to determine the device handle for GPU0000:3B:00.0: GPU is lost.  Reboot the system to recover this GPU\n1, 0, No, No, No\n"

    /// An administrator's release of `slot`, asked again while the slot's self-test runs (409
    /// `self-test-running`: its tests run every 0.2 s here).
    static func release(_ slot: Int, on server: ServerHarness) async throws -> ServerHarness.Reply {
        let last = Mutex<ServerHarness.Reply?>(nil)
        try await poll(.seconds(30), "slot \(slot)'s release, between its self-tests") {
            let reply = try await server.request(.POST, "/v1/slots/\(slot)/release")
            last.withLock { $0 = reply }
            return !(reply.status == 409 && reply.json["type"] == "urn:spool:problem:self-test-running")
        }
        return try #require(last.withLock { $0 })
    }

    /// Two `flaky` jobs at once, one on each GPU: the one on GPU 0 fails, the other succeeds.
    static func failOnceOnGPUZeroAndSucceedOnOne(_ server: ServerHarness) async throws {
        let pair = [try await server.submit("flaky"), try await server.submit("flaky")].compactMap { $0.json["id"]?.stringValue }
        var ends: [JSONValue: JSONValue] = [:]
        for job in pair {
            let done = try await server.waitFor(job, ["failed", "succeeded"])
            ends[done["slot"] ?? .null] = done["state"]
        }
        #expect(ends == [.int(0): "failed", .int(1): "succeeded"], "\(ends)")
    }

    @Test func aLostGPUIsQuarantinedItsJobRunsOnTheOtherGPUAndTheSlotComesBack() async throws {
        let root = try Self.fakeMachine()
        func write(_ text: String, _ name: String) throws { try text.write(toFile: root + "/" + name, atomically: true, encoding: .utf8) }
        @Sendable func read(_ name: String) -> String { (try? String(contentsOfFile: root + "/" + name, encoding: .utf8)) ?? "" }

        let server = try ServerHarness(config: .object([
            "kill_grace_s": 1, "gpu_health_interval_s": 0.2, "quarantine_after_failures": 2,
            "gpu_self_test": .array(["/bin/sh", "-c", .string(
                "echo \"$CUDA_VISIBLE_DEVICES $CUDA_DEVICE_ORDER\" >> \(root)/selftests; test -e \(root)/selftest-passes")]),
            "job_types": .object([
                // Writes its id and GPU, then waits for `go`.
                "pin": .object(["command": .array(["/bin/sh", "-c", .string(
                    "echo \"$SPOOL_JOB_ID $CUDA_VISIBLE_DEVICES $CUDA_DEVICE_ORDER\" >> \(root)/runs; while [ ! -e \(root)/go ]; do sleep 0.05; done")]),
                                "timeout_s": 60]),
                // A job that fails on GPU 0, as every job does on a broken GPU (after a moment, so
                // that two submitted together run one on each GPU).
                "flaky": .object(["command": .array(["/bin/sh", "-c", "sleep 0.5; test \"$CUDA_VISIBLE_DEVICES\" != 0"]), "timeout_s": 30]),
                "work": .object(["command": .array([.string("/usr/bin/python3"), .string(WorkerModeTests.fixture)]), "mode": "worker",
                                 "timeout_s": 60]),
            ]),
        ]))
        defer { try? FileManager.default.removeItem(atPath: root) }
        try await server.start(["--gpus", "auto"], environment: ["PATH": root + "/bin:" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")])
        do {
            // Discovery: one slot per GPU the fake lists.
            var queue = try await server.request(.GET, "/v1/queue").json
            #expect(queue["slots"]?.arrayValue?.map { $0["gpu"]?.stringValue } == ["0", "1"])
            #expect(try await server.request(.GET, "/healthz").json["status"] == "ok")

            // Pinning: each job sees its slot's GPU.
            let a = try #require(try await server.submit("pin").json["id"]?.stringValue)
            let b = try #require(try await server.submit("pin").json["id"]?.stringValue)
            try await poll(.seconds(30), "both jobs to start") { read("runs").split(separator: "\n").count == 2 }
            queue = try await server.request(.GET, "/v1/queue").json
            for slot in queue["slots"]?.arrayValue ?? [] {
                let job = try #require(slot["job"]?["id"]?.stringValue)
                #expect(read("runs").contains("\(job) \(slot["gpu"]?.stringValue ?? "?") PCI_BUS_ID\n"),
                        "\(job) pinned to its slot's GPU, counted as nvidia-smi counts them")
            }
            let onZero = try #require(queue["slots"]?.arrayValue?.first?["job"]?["id"]?.stringValue)
            let onOne = onZero == a ? b : a

            // GPU 0 is lost: its slot is quarantined, /healthz says so (200), its job goes back to the queue.
            try write(Self.lost, "health")
            try await poll(.seconds(30), "/healthz to report slot 0 quarantined") {
                try await server.request(.GET, "/healthz").json["quarantined_slots"]?.arrayValue?.count == 1
            }
            var health = try await server.request(.GET, "/healthz")
            #expect(health.status == 200 && health.json["status"] == "degraded")
            let entry = try #require(health.json["quarantined_slots"]?.arrayValue?.first)
            #expect(entry["slot"] == 0 && entry["gpu"] == "0")
            #expect(entry["reasons"]?.arrayValue?.first?.stringValue?.contains("GPU 0: Unable to determine the device handle") == true)
            _ = try await server.waitFor(onZero, ["queued"], timeout: .seconds(30))
            queue = try await server.request(.GET, "/v1/queue").json
            #expect(queue["slots"]?.arrayValue?.first?["state"] == "quarantined")
            #expect(queue["slots"]?.arrayValue?.first?["quarantine"]?["reasons"]?.arrayValue?.isEmpty == false)

            // The other GPU frees up: the requeued job runs there, without using up an attempt.
            try write("", "go")
            let moved = try await server.waitFor(onZero, ["succeeded"], timeout: .seconds(30))
            #expect(moved["attempts"] == 1)
            #expect(read("runs").contains("\(onZero) 1 PCI_BUS_ID\n"), "the requeued job ran on GPU 1")
            _ = try await server.waitFor(onOne, ["succeeded"])

            // Still lost: an administrator cannot release it yet (409, problem+json).
            let refused = try await server.request(.POST, "/v1/slots/0/release")
            #expect(refused.status == 409 && refused.json["type"] == "urn:spool:problem:gpu-unhealthy")
            #expect(try await server.request(.POST, "/v1/slots/7/release").status == 404)

            // Healthy again: the self-test runs pinned to GPU 0, and brings the slot back once it passes.
            try write(Self.healthy, "health")
            try await poll(.seconds(30), "the self-test to run on GPU 0") { read("selftests").contains("0 PCI_BUS_ID\n") }
            #expect(!read("selftests").contains("1 PCI_BUS_ID\n"), "only the quarantined slot is tested")
            #expect(try await server.request(.GET, "/healthz").json["status"] == "degraded", "a failing self-test keeps the slot closed")
            try write("", "selftest-passes")
            try await poll(.seconds(30), "the self-test to release slot 0") {
                try await server.request(.GET, "/healthz").json["status"] == "ok"
            }
            #expect(try await server.request(.GET, "/v1/queue").json["slots"]?.arrayValue?.first?["state"] == "idle")

            // Every job fails on GPU 0 and works on GPU 1: two failures in a row quarantine GPU 0,
            // and the second one's job runs on GPU 1.
            try FileManager.default.removeItem(atPath: root + "/selftest-passes")
            try await Self.failOnceOnGPUZeroAndSucceedOnOne(server)
            let second = try #require(try await server.submit("flaky").json["id"]?.stringValue)
            let rescued = try await server.waitFor(second, ["failed", "succeeded"])
            #expect(rescued["state"] == "succeeded" && rescued["attempts"] == 1)
            health = try await server.request(.GET, "/healthz")
            #expect(health.json["quarantined_slots"]?.arrayValue?.first?["reasons"]?.arrayValue?.first?.stringValue?
                .hasPrefix("2 attempts in a row failed on this slot, not on others") == true)

            // An administrator brings it back.
            let released = try await Self.release(0, on: server)
            #expect(released.status == 200 && released.json["released"] == true)
            #expect(try await server.request(.POST, "/v1/slots/0/release").json["released"] == false)
            #expect(try await server.request(.GET, "/healthz").json["status"] == "ok")
            let metrics = String(decoding: try await server.request(.GET, "/metrics").body, as: UTF8.self)
            #expect(metrics.contains("spool_slots_quarantined 0") && metrics.contains("# HELP spool_slots_quarantined "))
            #expect(metrics.contains("spool_slot_quarantines_total{") && metrics.contains("# TYPE spool_slot_quarantines_total counter"))

            // VRAM: a warm worker's GPU memory, as the fake reports it for the worker's pid.
            _ = try await server.waitFor(try #require(try await server.submit("work").json["id"]?.stringValue), ["succeeded"])
            let worker = try #require(try await server.request(.GET, "/v1/queue").json["slots"]?.arrayValue?
                .compactMap { $0["worker"] }.first { $0 != .null })
            let pid = try #require(worker["pid"]?.intValue)
            try write("\(pid), 321\n", "vram")
            try await poll(.seconds(30), "the worker's VRAM reading") {
                _ = try await server.submit("work")
                let workers = try await server.request(.GET, "/v1/queue").json["slots"]?.arrayValue?.compactMap { $0["worker"] } ?? []
                return workers.contains { $0["vram_mb"]?.doubleValue == 321 }
            }
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    /// A quarantine is the node's record of a faulty GPU: a restart (a crash, a deploy) keeps the
    /// slot closed, with its reasons and since when, until a self-test passes or an administrator
    /// releases it; a release outlasts a restart too.
    @Test func aQuarantineOutlastsARestartAndSoDoesItsRelease() async throws {
        let root = try Self.fakeMachine()
        let server = try ServerHarness(config: .object([
            "kill_grace_s": 1, "gpu_health_interval_s": 0.2, "quarantine_after_failures": 2,
            // Never passes: only an administrator brings the slot back.
            "gpu_self_test": .array(["/bin/sh", "-c", .string("echo \"$CUDA_VISIBLE_DEVICES\" >> \(root)/selftests; exit 1")]),
            "job_types": .object([
                "flaky": .object(["command": .array(["/bin/sh", "-c", "sleep 0.5; test \"$CUDA_VISIBLE_DEVICES\" != 0"]), "timeout_s": 30]),
            ]),
        ]))
        defer { try? FileManager.default.removeItem(atPath: root) }
        let environment = ["PATH": root + "/bin:" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")]
        try await server.start(["--gpus", "auto"], environment: environment)
        do {
            // Two failures in a row on GPU 0, while the type works on GPU 1, quarantine it.
            try await Self.failOnceOnGPUZeroAndSucceedOnOne(server)
            let second = try #require(try await server.submit("flaky").json["id"]?.stringValue)
            #expect(try await server.waitFor(second, ["failed", "succeeded"])["state"] == "succeeded")
            let before = try #require(try await server.request(.GET, "/healthz").json["quarantined_slots"]?.arrayValue?.first)
            #expect(before["slot"] == 0 && before["reasons"]?.arrayValue?.first?.stringValue?.hasPrefix("2 attempts in a row failed") == true)
            // Its self-test fails every interval: warned of once a quarantine, not at each (found by
            // attacking the build: 2,880 warnings a day per slot at the default interval).
            try await poll(.seconds(30), "four failed self-tests") {
                ((try? String(contentsOfFile: root + "/selftests", encoding: .utf8)) ?? "").split(separator: "\n").count >= 4
            }
            #expect(server.log.components(separatedBy: "the GPU self-test failed; the slot stays quarantined").count == 2, "\(server.log)")

            // A crash and a start: still quarantined, as it was; jobs go to GPU 1 only.
            await server.kill9()
            try await server.start(["--gpus", "auto"], environment: environment)
            let health = try await server.request(.GET, "/healthz")
            #expect(health.json["status"] == "degraded")
            let after = try #require(health.json["quarantined_slots"]?.arrayValue?.first)
            #expect(after == before, "the same slot, reasons and time after the restart")
            #expect(try await server.request(.GET, "/v1/queue").json["slots"]?.arrayValue?.first?["state"] == "quarantined")
            for _ in 0..<3 {
                let job = try #require(try await server.submit("flaky").json["id"]?.stringValue)
                let done = try await server.waitFor(job, ["failed", "succeeded"])
                #expect(done["state"] == "succeeded" && done["slot"] == 1, "a job ran on the quarantined GPU 0: \(done)")
            }

            // Released, then a graceful restart: open, and it stays open.
            #expect(try await Self.release(0, on: server).json["released"] == true)
            server.terminate()
            #expect(await server.waitForExit() == 0)
            try await server.start(["--gpus", "auto"], environment: environment)
            #expect(try await server.request(.GET, "/healthz").json["status"] == "ok")
            #expect(try await server.request(.GET, "/v1/queue").json["slots"]?.arrayValue?.first?["state"] == "idle")
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    /// `--gpus` by UUID: the GPU nvidia-smi lists with it, by its index from then on (its health is
    /// read, and its jobs numbered, as nvidia-smi lists it); a UUID it does not list, or one GPU
    /// named twice, stops the start with one line (found by attacking the build: UUIDs were refused).
    @Test func gpusNamedByUUIDAreTheirIndices() async throws {
        let root = try Self.fakeMachine()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let environment = ["PATH": root + "/bin:" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")]
        let server = try ServerHarness(config: .object(["job_types": .object([
            "gpu": .object(["command": .array(["/bin/sh", "-c", "echo \"$CUDA_VISIBLE_DEVICES\""]), "timeout_s": 30]),
        ])]))
        try await server.start(["--gpus", "GPU-fake-1"], environment: environment)
        do {
            #expect(try await server.request(.GET, "/v1/queue").json["slots"]?.arrayValue?.map { $0["gpu"] } == ["1"])
            let job = try #require(try await server.submit("gpu").json["id"]?.stringValue)
            _ = try await server.waitFor(job, ["succeeded"])
            #expect(String(decoding: try await server.request(.GET, "/v1/jobs/\(job)/logs").body, as: UTF8.self) == "1\n")
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
        for (gpus, says) in [("GPU-fake-7", "gpus: nvidia-smi -L lists no GPU GPU-fake-7 on this machine (it lists 0, 1)"),
                             ("1,GPU-fake-1", "gpus: names GPU 1 twice (by its index and by its UUID)")] {
            await #expect(throws: (any Error).self, "\(gpus)") { try await server.start(["--gpus", gpus], environment: environment) }
            #expect(server.log.contains(says), "\(gpus): \(server.log.suffix(300))")
        }
    }

    /// A self-test that takes its time does not hold up the health readings: a GPU lost while a
    /// quarantined slot's self-test runs is quarantined at the next reading (found by attacking
    /// the build: the self-tests ran inside the health loop, one after another, and no GPU's
    /// health was read until they ended, up to gpu_self_test_timeout_s per slot).
    @Test func aSlowSelfTestDoesNotHoldUpTheHealthReadings() async throws {
        let root = try Self.fakeMachine()
        func write(_ text: String) throws { try text.write(toFile: root + "/health", atomically: true, encoding: .utf8) }
        let server = try ServerHarness(config: .object([
            "gpu_health_interval_s": 0.2, "gpu_self_test_timeout_s": 60,
            "gpu_self_test": .array(["/bin/sh", "-c", .string("touch \(root)/testing; sleep 60")]),
        ]))
        defer { try? FileManager.default.removeItem(atPath: root) }
        try await server.start(["--gpus", "auto"], environment: ["PATH": root + "/bin:" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")])
        do {
            @Sendable func quarantined() async throws -> [Int64] {
                try await server.request(.GET, "/healthz").json["quarantined_slots"]?.arrayValue?.compactMap { $0["slot"]?.intValue } ?? []
            }
            // GPU 1 reads 3 uncorrected ECC errors: quarantined; it reads healthy again, so its
            // self-test begins (and runs on).
            try write("0, 0, No, No, No\n1, 3, No, No, No\n")
            try await poll(.seconds(30), "slot 1 quarantined") { try await quarantined() == [1] }
            try write(Self.healthy)
            try await poll(.seconds(30), "slot 1's self-test running") { FileManager.default.fileExists(atPath: root + "/testing") }
            // Now GPU 0 fails: read at the next round, not once the self-test is over.
            try write("0, 5, No, No, No\n1, 0, No, No, No\n")
            try await poll(.seconds(10), "slot 0 quarantined while slot 1's self-test runs") { try await quarantined().sorted() == [0, 1] }
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    /// `gpus` naming a device that nvidia-smi does not list is a one-line error at start (found
    /// by attacking the build: `--gpus 0,5` on a two-GPU machine started a slot pinned to no GPU,
    /// whose jobs ran without one and whose health was never read); `auto` on a machine whose
    /// nvidia-smi fails serves CPU slots and says so, where it used to say nothing.
    @Test func aGPUNvidiaSMIDoesNotListIsRefusedAndAFailingProbeIsSaid() async throws {
        let root = try Self.fakeMachine()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try Self.install("#!/bin/sh\necho \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\"\nexit 9\n",
                         at: root + "/broken")
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"

        let refused = try await runProcess("/usr/bin/env", ["PATH=\(root)/bin:\(path)", ServerHarness.binary, "serve", "--port", "0",
                                                            "--data-dir", root + "/data", "--gpus", "0,5"], killAfter: .seconds(30))
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("gpus: nvidia-smi -L lists no GPU 5 on this machine (it lists 0, 1)"), "\(refused.stderr)")
        #expect(refused.stderr.split(separator: "\n").count == 1, "one line: \(refused.stderr)")

        let server = try ServerHarness(config: .object([:]))
        try await server.start(["--gpus", "auto"], environment: ["PATH": "\(root)/broken:\(path)"])
        do {
            #expect(try await server.request(.GET, "/v1/queue").json["slots"]?.arrayValue?.map { $0["gpu"] } == [.null])
            let log = try String(contentsOfFile: server.scratch + "/server.log", encoding: .utf8)
            #expect(log.contains("gpus: auto found no GPU, as nvidia-smi failed") && log.contains("couldn't communicate with the NVIDIA driver"),
                    "\(log)")
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    /// A slot on a MIG device reads its GPU's health, found under `nvidia-smi -L`: an unhealthy GPU
    /// closes it (found by attacking the build: it was never read, and nothing said so); a device
    /// the listing does not know is warned of at start.
    @Test func aMIGSlotReadsItsGPUsHealth() async throws {
        let root = try Self.fakeMachine()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try Self.install(Self.fakeNvidiaSMI.replacingOccurrences(
            of: #"GPU 1: Fake GPU B (UUID: GPU-fake-1)\n"#,
            with: #"GPU 1: Fake GPU B (UUID: GPU-fake-1)\n  MIG 3g.20gb     Device  0: (UUID: MIG-fake-1-a)\n"#), at: root + "/bin")
        let server = try ServerHarness(config: .object(["gpu_health_interval_s": 0.2]))
        defer { Task { await server.stop() } }
        try await server.start(["--gpus", "MIG-fake-1-a,MIG-nowhere"],
                               environment: ["PATH": root + "/bin:" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")])
        try "0, 0, No, No, No\n1, 7, No, No, No\n".write(toFile: root + "/health", atomically: true, encoding: .utf8)
        try await poll(.seconds(30), "the MIG slot closed for its GPU's ECC errors") {
            let slots = try await server.request(.GET, "/healthz").json["quarantined_slots"]?.arrayValue ?? []
            return slots.contains { $0["gpu"] == "MIG-fake-1-a" && ($0["reasons"]?.arrayValue?.first?.stringValue ?? "").contains("7 uncorrected ECC") }
        }
        #expect(server.log.contains("nvidia-smi -L lists no GPU for these devices") && server.log.contains("MIG-nowhere"), "\(server.log)")
    }

    /// A clean stop cuts off a health query under way without warning that the GPUs' health
    /// could not be read (found by attacking the build: a warning at every clean stop).
    @Test func aCleanStopDoesNotWarnOfAHealthQueryItCutOff() async throws {
        let root = try Self.fakeMachine()
        defer { try? FileManager.default.removeItem(atPath: root) }
        // The health query hangs (a stuck driver); the device listing answers.
        try Self.install(Self.fakeNvidiaSMI.replacingOccurrences(of: #"--query-gpu=*) cat"#, with: #"--query-gpu=*) touch "$here/asked"; sleep 60; cat"#),
                         at: root + "/bin")
        let server = try ServerHarness(config: .object(["gpu_health_interval_s": 0.2]))
        try await server.start(["--gpus", "auto"], environment: ["PATH": root + "/bin:" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")])
        try await poll(.seconds(30), "the health query under way") { FileManager.default.fileExists(atPath: root + "/asked") }
        server.terminate()
        #expect(await server.waitForExit() == 0)
        #expect(!server.log.contains("could not read the GPUs' health"), "\(server.log)")
    }

    /// GPUs named on a machine whose health cannot be read (no nvidia-smi, one that hangs):
    /// warned of once, not at every reading (found by attacking the build: every interval, 2,880
    /// lines a day at the default, each naming a timeout that never happened).
    @Test func aHealthQueryThatKeepsFailingIsWarnedOfOnce() async throws {
        let root = try Self.fakeMachine()
        defer { try? FileManager.default.removeItem(atPath: root) }
        // A PATH with no nvidia-smi on it (the server itself needs none: its guard is its own binary).
        try FileManager.default.createDirectory(atPath: root + "/empty", withIntermediateDirectories: true)
        let server = try ServerHarness(config: .object(["gpu_health_interval_s": 0.2]))
        defer { Task { await server.stop() } }
        // At debug level each later failed reading leaves a line of its own, to count readings by.
        try await server.start(["--gpus", "0,1", "--log-level", "debug"], environment: ["PATH": root + "/empty"])
        let warning = "could not read the GPUs' health:"
        try await poll(.seconds(30), "the first failed reading to be warned of") { server.log.contains(warning) }
        try await poll(.seconds(30), "eight more failed readings") {
            server.log.components(separatedBy: "could not read the GPUs' health (again)").count - 1 >= 8
        }
        #expect(server.log.components(separatedBy: warning).count - 1 == 1, "\(server.log)")
    }

    /// A node whose every GPU reads unhealthy runs nothing: a queued job says why it waits
    /// (found by attacking the build: it said nothing); `/healthz` stays 200 `degraded` with
    /// every slot listed, as its API still takes jobs.
    @Test func everySlotQuarantinedMakesQueuedJobsSayWhy() async throws {
        let root = try Self.fakeMachine()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let server = try ServerHarness(config: .object(["gpu_health_interval_s": 0.2, "job_types": .object([
            "noop": .object(["command": .array(["/bin/true"])]),
        ])]))
        defer { Task { await server.stop() } }
        try await server.start(["--gpus", "auto"], environment: ["PATH": root + "/bin:" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")])
        try "0, [GPU requires reset], No, No, No\n1, [GPU requires reset], No, No, No\n".write(toFile: root + "/health", atomically: true, encoding: .utf8)
        try await poll(.seconds(30), "both slots to be quarantined") {
            try await server.request(.GET, "/healthz").json["quarantined_slots"]?.arrayValue?.count == 2
        }
        let health = try await server.request(.GET, "/healthz")
        #expect(health.status == 200 && health.json["status"] == "degraded", "\(health.json)")
        let job = try #require(try await server.submit("noop").json["id"]?.stringValue)
        let waiting = try await server.request(.GET, "/v1/jobs/\(job)").json
        #expect(waiting["waiting_reason"]?.stringValue?.hasPrefix("every slot is quarantined") == true, "\(waiting)")
        #expect(waiting["eta"] == .null, "no start to estimate: \(waiting)")
        let hurried = try await server.submit("noop", extra: ["start_within_s": 60])
        #expect(hurried.status == 409 && hurried.json["type"] == "urn:spool:problem:deadline-unreachable", "\(hurried.json)")
    }
}
