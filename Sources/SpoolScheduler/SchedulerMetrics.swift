import Metrics
import SpoolCore

/// What the scheduler reports through swift-metrics (exported as Prometheus text at /metrics
/// by the app). Label names follow Prometheus conventions.
public enum SchedulerMetrics {
    static func claimed(_ job: Job, waited seconds: Double) {
        Recorder(label: "spool_job_wait_seconds", dimensions: [("type", job.type)], aggregate: true).record(seconds)
    }

    /// An attempt ended: its job finished (or went back to the queue), `ran` its own run time,
    /// `busy` what of its slot's time is not counted yet.
    static func finished(_ job: Job, state: JobState, ran seconds: Double?, busy: Double?, slot: SlotID) {
        if state.isTerminal { countFinished(type: job.type, state: state) }
        if let seconds { Recorder(label: "spool_job_run_seconds", dimensions: [("type", job.type)], aggregate: true).record(seconds) }
        if let busy, busy > 0 { Self.busy(slot, seconds: busy) }
    }

    /// Jobs as a change other than an attempt's end on a slot left them (a cancel, a deadline, a
    /// fail-fast array, a crash's recovery, a lost node's rescue): those in a final state count
    /// in `spool_jobs_finished_total`, on the node that made the change — once for a cluster
    /// (found by attacking the build: only attempts that ended on a slot were counted).
    public static func ended(_ jobs: some Sequence<Job>) {
        for job in jobs where job.state.isTerminal { countFinished(type: job.type, state: job.state) }
    }

    private static func countFinished(type: String, state: JobState) {
        Counter(label: "spool_jobs_finished_total", dimensions: [("type", type), ("state", state.rawValue)]).increment()
    }

    static func busy(_ slot: SlotID, seconds: Double) {
        FloatingPointCounter(label: "spool_slot_busy_seconds_total", dimensions: [("slot", slot.description)]).increment(by: seconds)
    }

    /// A failed attempt that goes round again under the job's retry policy.
    static func retried(_ job: Job, reason: FailureReason?) {
        Counter(label: "spool_job_retries_total", dimensions: [("type", job.type), ("reason", reason?.rawValue ?? "unknown")]).increment()
    }

    /// Queued jobs canceled because their start deadline passed.
    static func expired(_ count: Int) {
        guard count > 0 else { return }
        Counter(label: "spool_jobs_deadline_expired_total").increment(by: count)
    }

    static func busySlots(_ busy: Int, of total: Int) {
        Gauge(label: "spool_slots_busy").record(busy)
        Gauge(label: "spool_slots").record(total)
    }
}

extension SchedulerMetrics {
    /// Slots in quarantine now.
    static func quarantined(_ count: Int) {
        Gauge(label: "spool_slots_quarantined").record(count)
    }

    /// A slot was quarantined; `cause` is `failures` or `gpu_health`.
    static func quarantine(of slot: SlotID, cause: String) {
        Counter(label: "spool_slot_quarantines_total", dimensions: [("slot", slot.description), ("cause", cause)]).increment()
    }
}
