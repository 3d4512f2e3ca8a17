/// How a job type runs: a fresh process per job, or jobs handed to a warm worker per slot.
public enum ExecutionMode: Sendable, Equatable {
    case process
    case worker(WorkerPolicy)
}

/// When a warm worker is replaced, and how it is watched. `nil` limits are off.
public struct WorkerPolicy: Sendable, Equatable {
    public var maxJobsPerWorker: Int?
    /// The worker's whole process tree.
    public var maxRSSMegabytes: Int?
    /// GPU memory of the worker's processes (read from `nvidia-smi`; skipped without a GPU).
    public var maxVRAMMegabytes: Int?
    /// GPU memory growth over the worker's post-setup baseline.
    public var vramGrowthMegabytes: Int?
    /// Stop a worker that has had no job for this long (frees its GPU memory).
    public var idleTimeoutSeconds: Double?
    /// The worker must send a heartbeat at least this often; three missed → it is killed.
    public var heartbeatSeconds: Double = 5
    /// How long setup may take before `ready`.
    public var setupTimeoutSeconds: Double = 300
    /// Consecutive failed setups after which the slot is marked unhealthy for the type.
    public var maxSetupFailures: Int = 3

    public init() {}

    /// Why a worker must be replaced before its next job, or nil to keep it.
    /// The job that crossed a limit has already finished: limits act between jobs.
    public func recycleReason(after outcome: JobOutcome, jobsRun: Int, usage: WorkerUsage) -> String? {
        switch outcome {
        // Handed back (its files could not be made, say): it says nothing about the worker.
        case .succeeded, .returned: break
        case .canceled: return "its job was canceled"
        case .timedOut: return "its job timed out"
        default: return "its job failed"
        }
        if let limit = maxJobsPerWorker, jobsRun >= limit { return "it ran \(jobsRun) jobs (max_jobs_per_worker \(limit))" }
        return limitReason(usage: usage)
    }

    /// Why a worker whose memory reads `usage` is past a limit of this policy; nil when it is not.
    public func limitReason(usage: WorkerUsage) -> String? {
        if let limit = maxRSSMegabytes, let rss = usage.rssMegabytes, rss > Double(limit) {
            return "its memory reached \(Int(rss)) MB (max_rss_mb \(limit))"
        }
        if let limit = maxVRAMMegabytes, let vram = usage.vramMegabytes, vram > Double(limit) {
            return "its GPU memory reached \(Int(vram)) MB (max_vram_mb \(limit))"
        }
        if let limit = vramGrowthMegabytes, let vram = usage.vramMegabytes, let baseline = usage.vramBaselineMegabytes,
           vram - baseline > Double(limit) {
            return "its GPU memory grew \(Int(vram - baseline)) MB over its baseline (vram_growth_mb \(limit))"
        }
        return nil
    }
}

/// The latest memory readings of a worker.
public struct WorkerUsage: Sendable, Equatable {
    public var rssMegabytes: Double?
    public var vramMegabytes: Double?
    public var vramBaselineMegabytes: Double?
    public init(rssMegabytes: Double? = nil, vramMegabytes: Double? = nil, vramBaselineMegabytes: Double? = nil) {
        self.rssMegabytes = rssMegabytes
        self.vramMegabytes = vramMegabytes
        self.vramBaselineMegabytes = vramBaselineMegabytes
    }
}
