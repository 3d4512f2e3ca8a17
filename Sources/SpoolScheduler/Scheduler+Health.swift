import SpoolCore
import SpoolStore

extension Scheduler {
    /// A submit the store took: submits are not in trouble (a lock, and nothing else, while they were not).
    public nonisolated func submitStored() {
        submitTrouble.withLock { if $0 != nil { $0 = nil } }
    }

    /// A submit the store could not take: it cannot write (a full disk, an unreachable database).
    public nonisolated func submitFailed(_ error: any Error) {
        let now = clock.now()
        submitTrouble.withLock { trouble in
            if trouble == nil { trouble = StoreTrouble(since: now, failures: 0, error: "") }
            trouble!.failures += 1
            trouble!.error = "\(error)"
            trouble!.last = now
        }
    }

    /// How long after the last failed submit the trouble is still reported with no submit since:
    /// a load balancer that stops sending submits to a node that reads degraded must see it
    /// come back, to try it again.
    static let submitTroubleLasts: Duration = .seconds(10)

    /// Why submits fail, after three in a row and until one goes through (or none has failed for
    /// `submitTroubleLasts`): found by attacking the build, `/healthz` read ok on a full disk
    /// while every submit answered 503.
    public nonisolated func submitProblem() -> String? {
        let now = clock.now()
        guard let trouble = submitTrouble.withLock({ $0 }), trouble.failures >= 3,
              let last = trouble.last, now - last < Self.submitTroubleLasts else { return nil }
        // No host, path or credential: `/healthz` is open to anyone (the error is in the log).
        return "the job store refused the last \(trouble.failures) submits (for \(Int((now - trouble.since).inSeconds.rounded())) s; "
            + "the server's log has the error)"
    }

    /// Why a queued job of `type` cannot start here now, whatever its place: every slot has its
    /// worker type excluded after failed setups (found by attacking the build: such a job read
    /// `queued`, position 1, with nothing to say why it never started).
    /// With a shared store it speaks for this node only: another node's slots may take the job.
    public nonisolated func waitingReason(for type: String) -> String? {
        let sentence: String
        if catalog[type] == nil {   // its type left the configuration (`JobExecutors.run`)
            sentence = "this server has no job type \"\(type)\" (was it removed from its configuration?): it waits for a start that has it"
        } else if allSlotsQuarantined {   // found by attacking the build: a queued job said nothing
            sentence = "every slot is quarantined (see /healthz): no job starts until one comes back"
        } else if let trouble = executor.setupTrouble(for: type) {
            sentence = trouble.sentence
        } else {
            return nil
        }
        return store is any SharedJobStore ? "on this node, " + sentence + " (another node's slots may take it)" : sentence
    }

    /// In how many seconds a slot here next tries to set up `type`'s worker, when every slot has
    /// it excluded after failed setups (`waitingReason`): no job of the type starts before then.
    /// nil with a shared store, whose other nodes may start it sooner.
    public nonisolated func setupRetryIn(for type: String) -> Double? {
        guard !(store is any SharedJobStore) else { return nil }
        return executor.setupTrouble(for: type).map(\.retryIn.inSeconds)
    }

    /// The coordinator's word on lease renewals: why they fail (nil once one goes through).
    public nonisolated func leaseRenewals(failing problem: String?) { renewalTrouble.withLock { $0 = problem } }

    /// Why this node cannot keep its jobs' leases (found by attacking the build: with every
    /// renewal in the cluster blocked by a held lock, every node's `/healthz` read ok while their
    /// running jobs were stopped and rescued).
    public nonisolated func renewalProblem() -> String? { renewalTrouble.withLock { $0 } }

    /// How this node reads itself, in sentences: what `/healthz` answers on it, and what its
    /// heartbeats tell the other nodes of a shared store. `degraded` while the store keeps
    /// failing, the data directory is full, a slot cannot set up a worker type or a GPU slot is
    /// quarantined; `draining` once shutdown has begun.
    public func health() async -> NodeHealth {
        var problems: [String] = []
        if let trouble = storeProblem() { problems.append(trouble) }
        if let full = dataDirectoryProblem() { problems.append(full) }
        if let submits = submitProblem() { problems.append(submits) }
        if let renewals = renewalProblem() { problems.append(renewals) }
        if let shared = store as? any SharedJobStore, let name = shared.nameProblem { problems.append(name) }
        for (slot, workers) in await workerStatus().sorted(by: { $0.key < $1.key }) {
            for health in workers.health where health.unhealthy {
                problems.append("slot \(slot) cannot set up worker type \(health.type) (\(health.failures) failures in a row): \(health.lastError)")
            }
        }
        if allSlotsQuarantined { problems.append("every slot is quarantined: no job starts on this node until one comes back") }
        for (slot, entry) in await quarantinedSlots() {
            let gpu = slot.gpu.map { " (GPU \($0))" } ?? ""
            problems.append("slot \(slot.id)\(gpu) has been quarantined since \(entry.since): \(entry.reasons.joined(separator: "; "))")
        }
        guard gate.isOpen else { return NodeHealth(.draining, problems: problems) }
        return NodeHealth(problems.isEmpty ? .ok : .degraded, problems: problems)
    }
}
