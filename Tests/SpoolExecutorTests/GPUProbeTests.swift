import Foundation
import SpoolCore
import SpoolTesting
import Testing
@testable import SpoolExecutor

/// What `nvidia-smi` prints, parsed: the device list and the health query, healthy and broken.
@Suite struct GPUProbeTests {
    /// What every nvidia-smi call goes through (discovery, VRAM, health): a command that hangs —
    /// a wedged driver — is killed at its limit, and the caller goes on without an answer.
    /// (No timed assertion: the command would outlive any test run, so a call that waited for it
    /// instead of its limit fails by not returning, and the process must be gone once it has.)
    @Test func aHungCommandIsKilledAtItsLimitAndGivesNoAnswer() async throws {
        let pidFile = NSTemporaryDirectory() + "spool-probe-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: pidFile) }
        let answer = try await within(.seconds(120), "a command hung for a day to be killed at its 200-ms limit") {
            await GPUProbe.runBounded(["/bin/sh", "-c", "echo $$ > \(pidFile); exec sleep 86400"], timeout: .milliseconds(200))
        }
        #expect(answer == nil)
        let pid = try #require(Int32(try String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(kill(pid, 0) == -1 && errno == ESRCH, "the hung command (pid \(pid)) is still there")
        let quick = await GPUProbe.runBounded(["/bin/sh", "-c", "echo 'GPU 0: Fake (UUID: GPU-1)'"], timeout: .seconds(10))
        #expect(quick.map { GPUProbe.parse($0.1) } == [GPUProbe.Device(index: "0", name: "Fake", uuid: "GPU-1")])
    }

    /// What a self-test (or any bounded command) leaves behind dies with it, in its group or
    /// moved to one of its own in its session, and it exits at once rather than waiting on them
    /// (found by attacking the build: `sleep 3131 &` in a self-test outlived it and the server,
    /// one more every interval a GPU sat quarantined).
    @Test func whatABoundedCommandLeavesBehindDiesWithIt() async throws {
        let pidFile = NSTemporaryDirectory() + "spool-probe-left-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: pidFile) }
        // The second moved to a session of its own. (One that kept the command's output open would
        // hold it to its limit, and die with it then.)
        let script = "sleep 3131 >/dev/null 2>&1 & echo $! > \(pidFile); setsid sh -c 'exec sleep 3132' >/dev/null 2>&1 & echo $! >> \(pidFile); echo said; exit 1"
        let answer = try await within(.seconds(60), "the self-test to end") {
            await GPUProbe.runBounded(["/bin/sh", "-c", script], timeout: .seconds(20))
        }
        #expect(answer.map { !$0.0.isSuccess } == true, "it ended (exit 1) rather than ran to its limit")
        #expect(answer?.1.contains("said") == true, "\(String(describing: answer))")
        let pids = try String(contentsOfFile: pidFile, encoding: .utf8).split(separator: "\n").compactMap { Int32($0) }
        #expect(pids.count == 2)
        for pid in pids {
            // Killed, if not yet reaped by whoever adopted it: gone or a zombie.
            let state = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8))?.split(separator: ")").last?.split(separator: " ").first
            #expect(state == nil || state == "Z", "pid \(pid), left by the command, still runs (\(state.map(String.init) ?? ""))")
            if state != nil && state != "Z" { kill(pid, SIGKILL) }
        }
    }

    let fields = GPUProbe.healthFields

    @Test func devicesComeFromTheListing() {
        let text = """
            GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-5c1b3a8e-1111-2222-3333-444455556666)
            GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-5c1b3a8e-1111-2222-3333-444455556667)
            Unable to determine the device handle for gpu 0000:3B:00.0: Unknown Error
            """
        #expect(GPUProbe.parse(text).map(\.index) == ["0", "1"])
        #expect(GPUProbe.parse(text).first?.name == "NVIDIA H100 80GB HBM3")
        #expect(GPUProbe.parse(text).first?.uuid == "GPU-5c1b3a8e-1111-2222-3333-444455556666")
        // MIG devices, listed under their GPU.
        let mig = """
            GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-4b6b0000-0000-0000-0000-000000000000)
              MIG 3g.20gb     Device  0: (UUID: MIG-9f1c0000-0000-0000-0000-000000000000)
              MIG 3g.20gb     Device  1: (UUID: MIG-c6c50000-0000-0000-0000-000000000000)
            GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-4b6b0000-0000-0000-0000-000000000001)
            """
        #expect(GPUProbe.parse(mig).map(\.migs) == [["MIG-9f1c0000-0000-0000-0000-000000000000", "MIG-c6c50000-0000-0000-0000-000000000000"], []])
    }

    @Test func healthyDevicesReadHealthyAndUnsupportedFieldsSayNothing() {
        let text = "0, 0, No, No, No\n1, [N/A], [N/A], [Not Supported], [N/A]\n"
        #expect(GPUProbe.parseHealth(text, fields: fields, devices: ["0", "1"]) == ["0": .healthy, "1": .healthy])
    }

    @Test func eccErrorsAndPendingRepairsReadUnhealthy() {
        let text = "0, 2, No, No, No\n1, 0, No, Yes, No\n2, 0, Yes, No, No\n3, 0, No, No, Yes\n"
        let health = GPUProbe.parseHealth(text, fields: fields, devices: ["0", "1", "2", "3"])
        #expect(health["0"] == .unhealthy("2 uncorrected ECC error(s) since the driver loaded"))
        #expect(health["1"] == .unhealthy("row remapping pending (needs a GPU reset)"))
        #expect(health["2"] == .unhealthy("retired pages pending (needs a GPU reset)"))
        #expect(health["3"] == .unhealthy("row remapping failed"))
    }

    @Test func errorValuesInAFieldReadUnhealthy() {
        let text = "0, [GPU requires reset], [GPU requires reset], [GPU requires reset], [GPU requires reset]\n1, [Unknown Error], No, No, No\n"
        let health = GPUProbe.parseHealth(text, fields: fields, devices: ["0", "1"])
        #expect(health["0"] == .unhealthy(["ecc.errors.uncorrected.volatile.total", "retired_pages.pending", "remapped_rows.pending",
                                           "remapped_rows.failure"].map { "\($0) reads [GPU requires reset]" }.joined(separator: "; ")))
        #expect(health["1"] == .unhealthy("ecc.errors.uncorrected.volatile.total reads [Unknown Error]"))
    }

    @Test func aLostGPUMissingFromTheTableReadsUnhealthyWithTheFailureLine() {
        let lost = "Unable to determine the device handle for GPU0000:3B:00.0: GPU is lost.  Reboot the system to recover this GPU"
        let health = GPUProbe.parseHealth("\(lost)\n1, 0, No, No, No\n", fields: fields, devices: ["0", "1"])
        #expect(health == ["0": .unhealthy(lost), "1": .healthy])
    }

    @Test func noDriverMakesEveryDeviceUnhealthyAndNoiseMakesNoReading() {
        let driver = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running."
        #expect(GPUProbe.parseHealth(driver, fields: fields, devices: ["0", "1"]) == ["0": .unhealthy(driver), "1": .unhealthy(driver)])
        #expect(GPUProbe.parseHealth("something else entirely\n", fields: fields, devices: ["0"]).isEmpty)
        #expect(GPUProbe.parseHealth("0, 0, No\n", fields: Array(fields.prefix(3)), devices: ["0"]) == ["0": .healthy],
                "the shorter query of older drivers")
    }

    /// An NVML that cannot start — the usual state after a driver upgrade without a reboot, when no
    /// CUDA job can run — reads every device unhealthy, as no driver does; a query that fails, or
    /// prints no table, saying nothing known, is no reading (found by attacking the build: both read
    /// as healthy, with nothing said).
    @Test func anNVMLThatCannotStartReadsUnhealthyAndAFailedQueryIsNoReading() async throws {
        let directory = NSTemporaryDirectory() + "spool-probe-smi-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        func smi(_ script: String) throws -> String {
            let path = directory + "/nvidia-smi-\(UUID().uuidString.prefix(8))"
            try ("#!/bin/sh\n" + script + "\n").write(toFile: path, atomically: true, encoding: .utf8)
            chmod(path, 0o755)
            return path
        }
        let mismatch = "Failed to initialize NVML: Driver/library version mismatch"
        let nvml = try await GPUProbe.health(of: ["0", "1"], command: try smi("echo '\(mismatch)'; exit 18"))
        #expect(nvml == ["0": .unhealthy(mismatch), "1": .unhealthy(mismatch)])
        #expect(try await GPUProbe.health(of: ["0"], command: try smi("echo 'something went wrong'; exit 3")) == nil)
        #expect(try await GPUProbe.health(of: ["0"], command: try smi("echo 'not a table'")) == nil)
        #expect(try await GPUProbe.health(of: ["0"], command: try smi("echo '0, 0, No, No, No'")) == ["0": .healthy])
    }

    /// A driver that refuses the newer health fields is asked the older ones from then on: one
    /// nvidia-smi run a reading, not two (found by attacking the build).
    @Test func aDriverThatRefusesTheNewerFieldsIsAskedTheOlderOnesFromThenOn() async throws {
        let directory = NSTemporaryDirectory() + "spool-probe-old-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let smi = directory + "/nvidia-smi"
        let script = """
            #!/bin/sh
            echo run >> \(directory)/runs
            case "$1" in *remapped_rows*) echo 'Field "remapped_rows.pending" is not a valid field to query.'; exit 2;; esac
            echo '0, 0, No'
            """
        try script.write(toFile: smi, atomically: true, encoding: .utf8)
        chmod(smi, 0o755)
        func runs() -> Int { ((try? String(contentsOfFile: directory + "/runs", encoding: .utf8)) ?? "").split(separator: "\n").count }
        #expect(await GPUProbe.health(of: ["0"], command: smi) == ["0": .healthy])
        #expect(runs() == 2)
        #expect(await GPUProbe.health(of: ["0"], command: smi) == ["0": .healthy])
        #expect(runs() == 3, "one run for the second reading")
    }
}
