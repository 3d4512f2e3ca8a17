import SpoolCore
import SpoolStore

extension Scheduler {
    /// How this node reads itself, in sentences: what `/healthz` answers on it, and what its
    /// heartbeats tell the other nodes of a shared store. `degraded` while the store keeps
    /// failing, the data directory is full, a slot cannot set up a worker type or a GPU slot is
    /// quarantined; `draining` once shutdown has begun.
    public func health() async -> NodeHealth {
        var problems: [String] = []
        if let trouble = storeProblem() { problems.append(trouble) }
        if let full = dataDirectoryProblem() { problems.append(full) }
        for (slot, workers) in await workerStatus().sorted(by: { $0.key < $1.key }) {
            for health in workers.health where health.unhealthy {
                problems.append("slot \(slot) cannot set up worker type \(health.type) (\(health.failures) failures in a row): \(health.lastError)")
            }
        }
        for (slot, entry) in await quarantinedSlots() {
            let gpu = slot.gpu.map { " (GPU \($0))" } ?? ""
            problems.append("slot \(slot.id)\(gpu) has been quarantined since \(entry.since): \(entry.reasons.joined(separator: "; "))")
        }
        guard gate.isOpen else { return NodeHealth(.draining, problems: problems) }
        return NodeHealth(problems.isEmpty ? .ok : .degraded, problems: problems)
    }
}
