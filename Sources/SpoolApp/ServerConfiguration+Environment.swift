/// What a server's environment holds under `SPOOL_` that is no setting of its own: named at
/// start (`SpoolServer`), with the setting it likely meant.
extension ServerConfiguration {
    /// The `SPOOL_*` variables in `environment` that are no setting and nothing else Spool reads
    /// (its clients', a job's, its tests'), each with the setting variable it most likely meant:
    /// a typo such as `SPOOL_RETENTION_DAY` was ignored without a word (found by attacking the build).
    public static func unknownVariables(in environment: [String: String]) -> [(name: String, meant: String?)] {
        let settings: [String] = fileKeys.subtracting(["job_types"]).sorted().map { "SPOOL_" + $0.uppercased() }
        let known = Set(settings).union(otherVariables)
        let unknown: [String] = environment.keys.filter { $0.hasPrefix("SPOOL_") && !known.contains($0) }.sorted()
        return unknown.map { (name: String) -> (name: String, meant: String?) in
            var meant: String?
            var best = 4   // more edits than 3: no guess
            for setting in settings {
                let distance = editDistance(name, setting)
                if distance < best { (meant, best) = (setting, distance) }
            }
            return (name, meant)
        }
    }

    /// What else Spool reads or sets under `SPOOL_`: the clients' server and token, what a job or
    /// a worker is given, and the crash tests' and benchmarks' switches.
    static let otherVariables: Set<String> = [
        "SPOOL_URL", "SPOOL_TOKEN",
        "SPOOL_JOB_ID", "SPOOL_JOB_TYPE", "SPOOL_ATTEMPT", "SPOOL_SLOT", "SPOOL_OUTPUT_DIR", "SPOOL_INPUT_FILE", "SPOOL_MESSAGES",
        "SPOOL_ARRAY_ID", "SPOOL_ARRAY_INDEX", "SPOOL_MODE", "SPOOL_PROTOCOL", "SPOOL_COMMANDS", "SPOOL_HEARTBEAT_S", "SPOOL_WORKER_ID",
        "SPOOL_FAILPOINTS", "SPOOL_PG_URL", "SPOOL_PG_DURABLE",
        "SPOOL_BENCH_ONLY", "SPOOL_BENCH_STAMPS", "SPOOL_BENCH_SETUP_S", "SPOOL_BENCH_BASELINE_APP",
    ]

    /// Levenshtein distance, by characters.
    static func editDistance(_ a: String, _ b: String) -> Int {
        let (a, b) = (Array(a), Array(b))
        var row: [Int] = Array(0...b.count)
        for (i, x) in a.enumerated() {
            var diagonal = row[0]
            row[0] = i + 1
            for (j, y) in b.enumerated() {
                let above: Int = row[j + 1]
                let substitution: Int = diagonal + (x == y ? 0 : 1)
                row[j + 1] = Swift.min(above + 1, row[j] + 1, substitution)
                diagonal = above
            }
        }
        return row[b.count]
    }
}
