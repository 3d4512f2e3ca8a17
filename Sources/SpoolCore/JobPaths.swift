/// Where a job's files live under the data directory. Paths only; no file is touched here.
///
/// ```
/// DATA_DIR/jobs/<id>/input.json     the input, also the child's stdin
/// DATA_DIR/jobs/<id>/log.txt        stdout and stderr, capped
/// DATA_DIR/jobs/<id>/log.cut        the notice the last cut of log.txt begins with (none: never cut)
/// DATA_DIR/jobs/<id>/outputs/       files the job wrote: its results
/// DATA_DIR/jobs/<id>/messages       a FIFO the job writes progress to (while it runs)
/// ```
public struct JobPaths: Sendable, Hashable {
    public let directory: String

    public init(dataDirectory: String, job: JobID) {
        directory = dataDirectory + "/jobs/" + job.rawValue
    }

    public var input: String { directory + "/input.json" }
    public var log: String { directory + "/log.txt" }
    public var logCut: String { directory + "/log.cut" }
    public var outputs: String { directory + "/outputs" }
    public var messages: String { directory + "/messages" }

    /// The longest output name (its folders included) a URL may give, in bytes.
    public static let maxOutputNameBytes = 1024

    /// The file for a client-supplied output name, or nil when the name could leave the
    /// outputs folder (`..`, an absolute path, empty segments, NUL). Symlinks are checked
    /// again by whoever opens the file.
    public func output(named name: String) -> String? {
        guard !name.isEmpty, name.utf8.count <= Self.maxOutputNameBytes, !name.hasPrefix("/"), !name.utf8.contains(0) else { return nil }
        let segments = name.split(separator: "/", omittingEmptySubsequences: false)
        guard segments.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." }) else { return nil }
        return outputs + "/" + name
    }
}

/// The per-slot facts a launch needs.
public struct SlotSpec: Sendable, Hashable {
    public var id: SlotID
    /// The GPU this slot is pinned to (`CUDA_VISIBLE_DEVICES`), nil on a CPU-only slot.
    public var gpu: String?
    public init(id: SlotID, gpu: String? = nil) {
        self.id = id
        self.gpu = gpu
    }

    /// What pins a child to this slot's GPU: `CUDA_VISIBLE_DEVICES`, and `CUDA_DEVICE_ORDER=PCI_BUS_ID`
    /// so that CUDA counts the GPUs as `nvidia-smi` does (by PCI bus; CUDA's own default puts the
    /// fastest first, and on a machine with two kinds of GPU index 0 would then be another card
    /// than the one whose health and memory the server reads). Nothing on a CPU-only slot.
    public var gpuEnvironment: [String: String] {
        guard let gpu else { return [:] }
        return ["CUDA_VISIBLE_DEVICES": gpu, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"]
    }
}

/// Exactly what a child process gets: argv, environment and working directory. Pure, so the
/// job contract (documented in the README) is tested without spawning anything.
public struct LaunchPlan: Sendable, Hashable {
    public var argv: [String]
    public var environment: [String: String]
    public var workingDirectory: String

    public static let protocolVersion = "2"

    public init(job: Job, type: JobType, slot: SlotSpec, paths: JobPaths) throws(CommandTemplate.Error) {
        argv = try type.command.render(input: job.input)
        var environment = type.environment
        environment["SPOOL_JOB_ID"] = job.id.rawValue
        environment["SPOOL_JOB_TYPE"] = job.type
        environment["SPOOL_ATTEMPT"] = String(job.attempts)
        environment["SPOOL_INPUT_FILE"] = paths.input
        environment["SPOOL_OUTPUT_DIR"] = paths.outputs
        environment["SPOOL_MESSAGES"] = paths.messages
        environment["SPOOL_PROTOCOL"] = Self.protocolVersion
        environment["SPOOL_MODE"] = "process"
        environment["SPOOL_SLOT"] = slot.id.description
        if let array = job.array {
            environment["SPOOL_ARRAY_ID"] = array.id
            environment["SPOOL_ARRAY_INDEX"] = String(array.index)
        }
        environment.merge(slot.gpuEnvironment) { _, pinned in pinned }
        self.environment = environment
        workingDirectory = type.workingDirectory ?? paths.directory
    }
}

/// A child's whole environment: the server's own, minus every `SPOOL_*` variable — those are
/// the server's settings (`SPOOL_WEBHOOK_SECRET`, `SPOOL_STORE` with its password, `SPOOL_TOKEN`)
/// and must not reach job code or its log — then the launch plan's variables (the job type's
/// `env` and the documented `SPOOL_*` job variables). `PWD` says the child's own working
/// directory, and nothing says how the server was started (`OLDPWD`, `_`): a program that is no
/// shell reads `PWD` as it is (found by attacking the build: Node's `process.env.PWD`).
public enum ChildEnvironment {
    public static func make(inheriting server: [String: String], adding plan: [String: String],
                            workingDirectory: String? = nil) -> [String: String] {
        var environment = server.filter { !$0.key.hasPrefix("SPOOL_") && $0.key != "OLDPWD" && $0.key != "_" }
        if let workingDirectory { environment["PWD"] = workingDirectory }
        environment.merge(plan) { _, planned in planned }
        return environment
    }
}

/// What a warm worker process gets: the type's command as written (no per-job placeholders),
/// and the worker side of the protocol in its environment.
public struct WorkerLaunchPlan: Sendable, Hashable {
    public var argv: [String]
    public var environment: [String: String]
    public var workingDirectory: String

    public init(type: JobType, policy: WorkerPolicy, slot: SlotSpec, workerID: String, directory: String) throws(CommandTemplate.Error) {
        argv = try type.command.render(input: .object([:]))
        var environment = type.environment
        environment["SPOOL_PROTOCOL"] = LaunchPlan.protocolVersion
        environment["SPOOL_MODE"] = "worker"
        environment["SPOOL_JOB_TYPE"] = type.name
        environment["SPOOL_WORKER_ID"] = workerID
        environment["SPOOL_MESSAGES"] = directory + "/messages"
        environment["SPOOL_COMMANDS"] = directory + "/commands"
        environment["SPOOL_HEARTBEAT_S"] = InputSchema.format(policy.heartbeatSeconds)
        environment["SPOOL_SLOT"] = slot.id.description
        environment.merge(slot.gpuEnvironment) { _, pinned in pinned }
        self.environment = environment
        workingDirectory = type.workingDirectory ?? directory
    }
}
