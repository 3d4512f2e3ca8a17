import Metrics
import Prometheus
import Synchronization

/// swift-metrics → Prometheus: bootstrapped once per process by the composition root.
enum MetricsExport {
    private static let registryBox = Mutex<PrometheusCollectorRegistry?>(nil)

    /// The process's registry, bootstrapping the metrics system on first use.
    static func bootstrap() -> PrometheusCollectorRegistry {
        registryBox.withLock { existing in
            if let existing { return existing }
            let registry = PrometheusCollectorRegistry()
            var factory = PrometheusMetricsFactory(registry: registry)
            factory.defaultDurationHistogramBuckets = [.milliseconds(1), .milliseconds(5), .milliseconds(25), .milliseconds(100),
                                                       .milliseconds(500), .seconds(1), .seconds(5), .seconds(30), .seconds(120), .seconds(600)]
            factory.defaultValueHistogramBuckets = [0.001, 0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 1800]
            MetricsSystem.bootstrap(factory)
            existing = registry
            return registry
        }
    }

    static func text(_ registry: PrometheusCollectorRegistry) -> String {
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return withHelp(String(decoding: buffer, as: UTF8.self))
    }

    /// What each metric family means, emitted as its `# HELP` line (swift-metrics has no place
    /// for it). A family missing here is a test failure (`MetricsTests`), not a silent gap.
    static let help: [String: String] = [
        "spool_jobs_finished_total": "Jobs that reached a final state, by type and state.",
        "spool_queue_depth": "Jobs waiting in the queue (all nodes of a shared store).",
        "spool_job_wait_seconds": "Time from when a job was due (its submit, or its delayed start or retry's back-off) to its start, by type.",
        "spool_job_run_seconds": "Time from start to finish, by type.",
        "spool_slots": "Slots this node runs jobs on.",
        "spool_slots_busy": "Slots running a job now.",
        "spool_slot_busy_seconds_total": "Seconds each slot has spent running jobs (its rate is the slot's busy fraction).",
        "spool_slots_quarantined": "GPU slots in quarantine now (they take no jobs).",
        "spool_slot_quarantines_total": "GPU slots quarantined, by slot and cause (failures, gpu_health).",
        "spool_worker_restarts_total": "Warm workers replaced, by reason and job type.",
        "spool_jobs_deleted_total": "Ended jobs deleted past retention_days, with their files.",
        "spool_jobs_rescued_total": "Jobs of a lost node taken back by this one (shared store), by outcome.",
        "spool_lease_renewal_failures_total": "Times this node could not renew its running jobs' leases (shared store).",
        "spool_attempts_fenced_total": "Attempts stopped on this node because their job was rescued elsewhere (shared store).",
        "spool_http_requests_total": "HTTP requests answered, by method, route pattern and status.",
        "spool_http_request_duration_seconds": "Time to answer an HTTP request (to the end of its body), by method and route pattern.",
        "spool_http_requests_in_flight": "HTTP requests being answered now.",
    ]

    /// `text` with a `# HELP` line before each family's `# TYPE` line that has none.
    static func withHelp(_ text: String) -> String {
        var lines: [Substring] = []
        var previous: Substring = ""
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("# TYPE "), !previous.hasPrefix("# HELP "),
               let name = line.dropFirst(7).split(separator: " ").first, let help = help[String(name)] {
                lines.append("# HELP \(name) \(help)")
            }
            lines.append(line)
            previous = line
        }
        return lines.joined(separator: "\n")
    }
}
