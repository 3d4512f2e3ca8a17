import Foundation
import SpoolCore
import Subprocess
import SystemPackage
import Synchronization

/// Finds the machine's NVIDIA GPUs with `nvidia-smi -L` (one line per device:
/// `GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-…)`). No `nvidia-smi`, or one that fails,
/// means no GPUs.
public enum GPUProbe {
    public struct Device: Sendable, Hashable {
        public var index: String
        public var name: String
        public var uuid: String?
        /// The MIG devices `nvidia-smi -L` lists under it (their `MIG-…` UUIDs).
        public var migs: [String]

        public init(index: String, name: String, uuid: String?, migs: [String] = []) {
            (self.index, self.name, self.uuid, self.migs) = (index, name, uuid, migs)
        }
    }

    /// What `nvidia-smi -L` said: the devices, or why it listed none.
    public enum Listing: Sendable {
        case devices([Device])
        /// No `nvidia-smi` on the PATH: a machine without NVIDIA's driver.
        case noTool
        /// It is there but failed or hung (a driver not loaded yet, a wedged one): in words.
        case failed(String)

        public var devices: [Device] { if case .devices(let devices) = self { devices } else { [] } }
    }

    /// `nvidia-smi -L`, and why it listed nothing when it did not. A hung `nvidia-smi` (a wedged
    /// driver) is killed after `timeout`: the server starts with no GPUs rather than never.
    public static func listing(timeout: Duration = .seconds(20)) async -> Listing {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        guard path.split(separator: ":").contains(where: { FileManager.default.isExecutableFile(atPath: "\($0)/nvidia-smi") }) else {
            return .noTool
        }
        guard let (status, text) = await runBounded(["nvidia-smi", "-L"], timeout: timeout) else {
            return .failed("nvidia-smi -L could not be started or did not answer within \(timeout)")
        }
        guard status.isSuccess else {
            let said = text.split(whereSeparator: \.isNewline).first.map { ": " + $0.prefix(200) } ?? ""
            return .failed("nvidia-smi -L ended with \(status)\(said)")
        }
        return .devices(parse(text))
    }

    /// GPU memory per process (MiB) from `nvidia-smi --query-compute-apps`: empty when no process
    /// uses a GPU; nil without an answer (no GPU, a failure, or none within `timeout`).
    public static func processMemory(timeout: Duration = .seconds(10)) async -> [Int32: Double]? {
        guard let (status, text) = await runBounded(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                                                   timeout: timeout), status.isSuccess else { return nil }
        var memory: [Int32: Double] = [:]
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            if fields.count == 2, let pid = Int32(fields[0]), let used = Double(fields[1]) { memory[pid, default: 0] += used }
        }
        return memory
    }

    /// What the health query asks for, by name (`nvidia-smi --help-query-gpu`): uncorrected ECC
    /// errors since the driver loaded, and memory repairs that wait for a reset (retired pages
    /// before Ampere, remapped rows since) or failed. Drivers too old for `remapped_rows.*` get
    /// the first three.
    static let healthFields = ["index", "ecc.errors.uncorrected.volatile.total", "retired_pages.pending",
                               "remapped_rows.pending", "remapped_rows.failure"]

    /// Each of `devices`' health from `nvidia-smi --query-gpu`; nil when nvidia-smi could not be
    /// run, did not answer within `timeout` (a hung nvidia-smi is killed), or answered with neither
    /// a table nor a failure it names (a failed query, or noise, is no reading: found by attacking
    /// the build, it read as every GPU healthy). A device it says nothing about while it reports a
    /// failure ("GPU is lost", an NVML that cannot start) reads unhealthy with that failure.
    /// `command`: nvidia-smi (a test's stand-in).
    public static func health(of devices: [String], timeout: Duration = .seconds(20), command: String = "nvidia-smi") async -> [String: GPUHealth]? {
        // A driver that refused the newer fields once is asked the older ones from then on (found by
        // attacking the build: nvidia-smi ran twice at every reading).
        let all = olderDrivers.withLock { $0.contains(command) } ? [Array(healthFields.prefix(3))] : [healthFields, Array(healthFields.prefix(3))]
        for fields in all {
            let arguments = ["--query-gpu=" + fields.joined(separator: ","), "--format=csv,noheader,nounits"]
            guard let (_, text) = await runBounded([command] + arguments, timeout: timeout) else { return nil }
            if text.contains("is not a valid field to query") {
                _ = olderDrivers.withLock { $0.insert(command) }
                continue
            }
            let health = parseHealth(text, fields: fields, devices: devices)
            return health.isEmpty ? nil : health
        }
        return nil
    }

    /// The commands (nvidia-smi) whose driver knows no `remapped_rows.*` fields: seen once, as a
    /// driver does not change while the server runs.
    private static let olderDrivers = Mutex<Set<String>>([])

    /// Runs a GPU self-test command pinned to `gpu` (`SlotSpec.gpuEnvironment`, `SPOOL_SLOT`; none of
    /// the server's `SPOOL_*` settings): whether it exited 0 within `timeout`, and what it said or why not.
    public static func selfTest(_ argv: [String], gpu: String, slot: SlotID, timeout: Duration) async -> (passed: Bool, detail: String) {
        let environment = ChildEnvironment.make(inheriting: ProcessInfo.processInfo.environment,
                                                adding: SlotSpec(id: slot, gpu: gpu).gpuEnvironment.merging(["SPOOL_SLOT": slot.description]) { $1 })
        guard let (status, output) = await runBounded(argv, environment: environment, timeout: timeout) else {
            return (false, "it could not be started, or ran past its limit of \(timeout)")
        }
        return (status.isSuccess, "\(status): \(output.suffix(500))")
    }

    /// Runs a command (a name looked up on the PATH, or a path) to its end, or kills its process
    /// group after `timeout` (nil then, or when it could not be started): its exit status and
    /// its stdout followed by its stderr. `environment` nil: the server's own.
    ///
    /// What it leaves running dies with it (found by attacking the build: a GPU self-test's
    /// `sleep &` outlived it and the server, one more every interval its GPU sat quarantined):
    /// it leads a session of its own, carries a marker of its own in its environment, and when it
    /// ends its group, what is left in its session and whatever carries the marker are killed.
    /// The server's guard is told of its session meanwhile, so a crash of the server kills it too.
    public static func runBounded(_ argv: [String], environment: [String: String]? = nil,
                                  timeout: Duration) async -> (TerminationStatus, String)? {
        guard let command = argv.first else { return nil }
        let markerValue = UUID().uuidString
        var environment = environment ?? ProcessInfo.processInfo.environment
        environment[markerName] = markerValue
        var custom: [Environment.Key: String] = [:]
        for (key, value) in environment { if let name = Environment.Key(rawValue: key) { custom[name] = value } }
        let leader = Leader()
        let answer = await withTaskGroup(of: (TerminationStatus, String)?.self) { group in
            group.addTask { [custom] in
                var options = PlatformOptions()
                options.createSession = true
                options.teardownSequence = [.send(signal: .terminate, toProcessGroup: true, allowedDurationToNextStep: .seconds(2))]
                let configuration = Configuration(executable: command.contains("/") ? .path(FilePath(command)) : .name(command),
                                                  arguments: Arguments(Array(argv.dropFirst())), environment: .custom(custom),
                                                  platformOptions: options)
                // Read through pipes, each to a limit: a child it leaves running with them open
                // holds the read (and the command) to its time limit, then dies with it below.
                guard let result = try? await Subprocess.run(configuration, input: .none, output: .string(limit: 1 << 16),
                                                             error: .string(limit: 1 << 16), body: { execution in
                    let pid = execution.processIdentifier.value
                    leader.pid.store(pid, ordering: .releasing)
                    ChildSessions.report(.began(pid))
                })
                else { return nil }
                return (result.terminationStatus, (result.standardOutput ?? "") + (result.standardError ?? ""))
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        let pid = leader.pid.load(ordering: .acquiring)
        if pid > 0 {
            kill(-pid, SIGKILL)
            // Its session, unless its pid is someone else's by now (reaped, the number was free);
            // and what carries its marker, among the pids handed out since it began.
            let sessionKept = kill(pid, 0) != 0 && errno == ESRCH
            _ = await OrphanReaper.killMarked(markerName + "=" + markerValue, bornAfter: pid, session: sessionKept ? pid : nil)
            ChildSessions.report(.ended(pid))
        }
        return answer
    }

    /// The environment variable whose value marks one bounded command's processes.
    static let markerName = "SPOOL_PROBE_RUN"

    private final class Leader: Sendable { let pid = Atomic<Int32>(0) }

    /// The health of `devices` from the health query's CSV (`fields` in order). Unsupported
    /// readings (`[N/A]`, `[Not Supported]`) say nothing; `[GPU is lost]`, `[Unknown Error]` and
    /// `[GPU requires reset]` in a field, or a line like `Unable to determine the device handle
    /// for GPU 0000:3B:00.0: GPU is lost` for a device missing from the table, make it unhealthy.
    /// A device neither listed nor covered by a failure line is left out (no reading).
    static func parseHealth(_ text: String, fields: [String], devices: [String]) -> [String: GPUHealth] {
        var health: [String: GPUHealth] = [:]
        var failures: [String] = []
        for line in text.split(whereSeparator: \.isNewline) {
            let values = line.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard values.count == fields.count, let index = values.first, !index.isEmpty, index.allSatisfy(\.isNumber) else {
                let text = line.trimmingCharacters(in: .whitespaces)
                if Self.failureMarks.contains(where: { text.localizedCaseInsensitiveContains($0) }) { failures.append(text) }
                continue
            }
            var problems: [String] = []
            for (field, value) in zip(fields, values).dropFirst() {
                if value.hasPrefix("["), !["[N/A]", "[Not Supported]"].contains(value) {
                    problems.append("\(field) reads \(value)")
                    continue
                }
                switch field {
                case "ecc.errors.uncorrected.volatile.total":
                    if let count = Int(value), count > 0 { problems.append("\(count) uncorrected ECC error(s) since the driver loaded") }
                case "retired_pages.pending" where value == "Yes": problems.append("retired pages pending (needs a GPU reset)")
                case "remapped_rows.pending" where value == "Yes": problems.append("row remapping pending (needs a GPU reset)")
                case "remapped_rows.failure" where value == "Yes": problems.append("row remapping failed")
                default: break
                }
            }
            health[index] = problems.isEmpty ? .healthy : .unhealthy(problems.joined(separator: "; "))
        }
        if !failures.isEmpty {
            for device in devices where health[device] == nil { health[device] = .unhealthy(failures.joined(separator: "; ")) }
        }
        return health
    }

    static let failureMarks = ["GPU is lost", "Unknown Error", "requires reset", "Unable to determine the device handle",
                               "couldn't communicate with the NVIDIA driver", "No devices were found", "Failed to initialize NVML"]

    static func parse(_ text: String) -> [Device] {
        var devices: [Device] = []
        for line in text.split(separator: "\n") {
            // A MIG device, listed under its GPU: `  MIG 3g.20gb  Device  0: (UUID: MIG-…)`.
            if line.hasPrefix(" "), let start = line.firstRange(of: "(UUID: MIG-"), !devices.isEmpty {
                devices[devices.count - 1].migs.append(String(line[line.index(start.lowerBound, offsetBy: 7)...].prefix { $0 != ")" }))
                continue
            }
            guard line.hasPrefix("GPU "), let colon = line.firstIndex(of: ":") else { continue }
            let index = line[line.index(line.startIndex, offsetBy: 4)..<colon]
            guard !index.isEmpty, index.allSatisfy(\.isNumber) else { continue }
            var name = line[line.index(after: colon)...].drop { $0 == " " }
            var uuid: String?
            if let start = name.firstRange(of: " (UUID") {
                uuid = name[start.upperBound...].drop { $0 == ":" || $0 == " " }.prefix { $0 != ")" }.description
                name = name[..<start.lowerBound]
            }
            devices.append(Device(index: String(index), name: String(name), uuid: uuid))
        }
        return devices
    }
}
