import SpoolCore
import SpoolExecutor

/// GPU quarantine: the decisions are `SlotQuarantine`'s; here the scheduler applies them — a
/// quarantined slot claims nothing (`fillIdleSlots`, `record`, `finishLocally` ask), the job
/// running on a slot whose GPU turns unhealthy is stopped and goes back to the queue, and a
/// released slot is offered work at once. `GPUHealthMonitor` feeds it readings and self-tests.
extension Scheduler {
    /// The quarantine rules applied to an attempt that just ended, once per attempt (from its
    /// task, before its end is handled): a failure on a quarantined slot, or one that
    /// quarantines it, goes back to the queue without using up an attempt.
    func judged(_ result: ExecutionResult, of job: Job, on slot: SlotID) async -> ExecutionResult {
        let verdict = quarantine.judge(result.outcome, on: slot, at: clock.wall())
        if verdict.quarantined {
            await closed([slot], cause: "failures")
            await keepQuarantine()
        }
        guard verdict.outcome != result.outcome else { return result }
        logger.warning("job goes back to the queue: its slot is quarantined",
                       metadata: ["job": "\(job.id)", "slot": "\(slot)", "outcome": "\(result.outcome)"])
        return ExecutionResult(verdict.outcome, result: result.result)
    }

    /// The GPU probe's latest readings: the slots of an unhealthy GPU close, and the jobs on them stop.
    public func read(gpuHealth: [String: GPUHealth]) async {
        let closing = quarantine.read(gpuHealth, at: clock.wall())
        for slot in closing {
            if let job = board.job(on: slot) { stop(job, because: .quarantine) }
        }
        await closed(closing, cause: "gpu_health")
        SchedulerMetrics.quarantined(quarantine.entries.count)
        await keepQuarantine()
    }

    /// The quarantined slots, lowest first, with why and since when.
    public func quarantinedSlots() -> [(SlotSpec, SlotQuarantine.Entry)] {
        quarantine.entries.sorted { $0.key < $1.key }.compactMap { slot, entry in slotSpecs[slot].map { ($0, entry) } }
    }

    /// Opens a quarantined slot again (an administrator's call, or a passing self-test).
    public func release(_ slot: SlotID, by whom: String) async -> SlotQuarantine.Release {
        // Whether it may go, without opening it: the slot stays closed until its executor has
        // heard (and starts workers there again), so that no job is offered to it before.
        let allowed = quarantine.releasable(slot)
        guard allowed == .released else { return allowed }
        await executor.slotReleased(slot)
        // Asked again: a reading that came meanwhile may keep it closed, another release may have opened it.
        let answer = quarantine.release(slot)
        guard answer == .released else {
            if quarantine.isQuarantined(slot) { await executor.slotQuarantined(slot) }
            return answer
        }
        logger.notice("slot released from quarantine", metadata: ["slot": "\(slot)", "by": "\(whom)"])
        SchedulerMetrics.quarantined(quarantine.entries.count)
        await keepQuarantine()
        jobEnqueued()
        return answer
    }

    /// The quarantined slots whose self-test is due now (none runs a job), marked as tested.
    public func selfTestsDue(every interval: Duration) -> [SlotSpec] {
        let now = clock.now()
        let due = quarantine.selfTestsDue(at: now, every: interval).filter { board.job(on: $0) == nil }
        for slot in due { quarantine.selfTestStarted(on: slot, at: now) }
        return due.compactMap { slotSpecs[$0] }
    }

    /// Closes again the slots that were quarantined when the server last stopped (`QuarantineFile`),
    /// before the first look at the queue.
    func restoreQuarantine() async {
        guard let quarantineFile else { return }
        let saved: [SlotQuarantine.Saved]
        do { saved = try await quarantineFile.load() } catch {
            logger.error("could not read the quarantine kept from before the restart; every GPU slot starts open",
                         metadata: ["error": "\(error)"])
            quarantineRestored = true
            await keepQuarantine()
            return
        }
        let restored = quarantine.restore(saved)
        quarantineKept = saved
        quarantineRestored = true
        for slot in restored {
            await executor.slotQuarantined(slot)
            logger.warning("slot still quarantined from before the restart: it takes no jobs until a self-test passes or an administrator releases it",
                           metadata: ["slot": "\(slot)", "gpu": "\(slotSpecs[slot]?.gpu ?? "")",
                                      "reasons": "\(quarantine.entries[slot]?.reasons ?? [])"])
        }
        if saved.count > restored.count {
            let dropped = saved.filter { !restored.contains($0.slot) && !quarantine.isQuarantined($0.slot) }
            if !dropped.isEmpty {
                logger.notice("dropped quarantines of slots that are no longer on the same GPU",
                              metadata: ["slots": "\(dropped.map { "\($0.slot) (GPU \($0.gpu))" })"])
            }
        }
        SchedulerMetrics.quarantined(quarantine.entries.count)
        await keepQuarantine()
    }

    /// Writes the quarantine to its file when it changed since the last write. A write that
    /// fails is logged; the quarantine in force is the one in memory, and the next change writes
    /// it whole again.
    func keepQuarantine() async {
        guard let quarantineFile, quarantineRestored else { return }
        let now = quarantine.saved
        guard now != quarantineKept else { return }
        quarantineKept = now
        quarantineVersion += 1
        do { try await quarantineFile.save(now, version: quarantineVersion) } catch {
            quarantineKept = nil   // unknown: written again at the next change, whatever it is
            logger.error("could not keep the quarantine for the next start: a restart would open its slots",
                         metadata: ["error": "\(error)"])
        }
    }

    /// The slots were quarantined: logged and counted, and their executor told (a warm worker
    /// loaded on a faulty GPU goes, and none is started there).
    private func closed(_ slots: [SlotID], cause: String) async {
        guard !slots.isEmpty else { return }
        for slot in slots { await executor.slotQuarantined(slot) }
        for slot in slots {
            logger.error("slot quarantined: it takes no jobs until a self-test passes or an administrator releases it",
                         metadata: ["slot": "\(slot)", "gpu": "\(slotSpecs[slot]?.gpu ?? "")",
                                    "reasons": "\(quarantine.entries[slot]?.reasons ?? [])"])
            SchedulerMetrics.quarantine(of: slot, cause: cause)
        }
        SchedulerMetrics.quarantined(quarantine.entries.count)
    }
}
