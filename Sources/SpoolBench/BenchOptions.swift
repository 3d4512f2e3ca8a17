/// What `spool bench` was asked to do. The harness starts every server itself, on 127.0.0.1 with
/// port 0, and kills every process it started before returning.
public struct BenchOptions: Sendable {
    /// Path to the release `spool` binary that is started as the server under test.
    public var spoolBinary: String
    /// Scratch directory; each scenario gets its own subdirectory (config, data dir, server log).
    public var workDir: String
    /// The Python interpreter for the FastAPI baseline (a name looked up on PATH, or a path).
    public var python: String
    /// Smaller counts, for a smoke run of about a minute.
    public var quick: Bool
    /// Path to `Benchmarks/baseline/app.py`; nil looks next to the checkout (see `BaselineServer`).
    public var baselineApp: String?

    public init(spoolBinary: String, workDir: String, python: String = "python3", quick: Bool = false) {
        self.spoolBinary = spoolBinary
        self.workDir = workDir
        self.python = python
        self.quick = quick
        self.baselineApp = nil
    }
}

/// How much work each scenario does; the full counts are the ones the targets are stated for.
struct BenchCounts: Sendable {
    /// Scenario 1: timed durable submits, and untimed ones sent first to open connections.
    var submits: Int
    var submitWarmup: Int
    /// Scenario 2: timed status GETs while a CPU-bound job runs.
    var statusGets: Int
    var statusWarmup: Int
    /// Scenario 3: `stamp` jobs queued at once behind a held slot (and as many standalone runs).
    var gapJobs: Int
    /// Scenario 4: sequential submit → done round trips.
    var roundTrips: Int
    /// Scenarios 3 and 6: how long each job works (sleeps) between its two stamps. A slot looks up
    /// and prepares its next job while the current one runs; a job that ends within a
    /// millisecond leaves no time for that, which no GPU job does. (Issue 12's own harness ran
    /// 0.2 s jobs.)
    static let jobMilliseconds = 50
    /// Scenario 1c: submits while the jobs run.
    var runningSubmits = 2_000
    /// Scenario 5: queue depth for the memory point, and submits timed at each point.
    var queued: Int
    var probeSubmits: Int
    /// Scenario 6 and 6b: jobs queued at once for one warm worker.
    var warmJobs: Int
    /// Scenario 7: jobs per mode (warm worker, fresh processes).
    var throughputJobs: Int
    /// Scenario 8: jobs through a recycled worker with a 0 s setup, and with `slowSetupSeconds`.
    var recycleJobs: Int
    var recycleSlowJobs: Int
    var maxJobsPerWorker = 10
    var slowSetupSeconds = 0.5

    /// Closed-loop clients for submit load, and for status GETs.
    var submitClients = 8
    var statusClients = 4

    static let full = BenchCounts(
        submits: 20_000, submitWarmup: 500, statusGets: 5_000, statusWarmup: 200,
        gapJobs: 200, roundTrips: 50, queued: 100_000, probeSubmits: 2_000,
        warmJobs: 200, throughputJobs: 1_000, recycleJobs: 200, recycleSlowJobs: 100)
    static let quick = BenchCounts(
        submits: 2_000, submitWarmup: 200, statusGets: 1_000, statusWarmup: 100,
        gapJobs: 50, roundTrips: 10, queued: 10_000, probeSubmits: 2_000,
        warmJobs: 100, throughputJobs: 300, recycleJobs: 60, recycleSlowJobs: 40)
}
