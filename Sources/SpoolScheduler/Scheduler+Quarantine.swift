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
        await quarantineRestored()
        let verdict = quarantine.judge(result.outcome, of: job.type, timeout: job.timeoutSeconds, on: slot, at: clock.wall())
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
        await quarantineRestored()
        let closing = quarantine.read(gpuHealth, at: clock.wall())
        for slot in closing {
            if let job = board.job(on: slot) { stop(job, because: .quarantine) }
        }
        await closed(closing, cause: "gpu_health")
        SchedulerMetrics.quarantined(quarantine.entries.count)
        await keepQuarantine()
    }

    /// The quarantined slots, lowest first, with why and since when.
    public func quarantinedSlots() async -> [(SlotSpec, SlotQuarantine.Entry)] {
        await quarantineRestored()
        return quarantine.entries.sorted { $0.key < $1.key }.compactMap { slot, entry in slotSpecs[slot].map { ($0, entry) } }
    }

    /// Opens a quarantined slot again (an administrator's call, or a passing self-test).
    /// `passedSelfTest`: the GPU's self-test passed (its own run does not hold the release back).
    public func release(_ slot: SlotID, by whom: String, passedSelfTest: Bool = false) async -> SlotQuarantine.Release {
        await quarantineRestored()
        // Whether it may go, without opening it: the slot stays closed until its executor has
        // heard (and starts workers there again), so that no job is offered to it before.
        let allowed = quarantine.releasable(slot, passedSelfTest: passedSelfTest)
        guard allowed == .released else { return allowed }
        await executor.slotReleased(slot)
        // Asked again: a reading that came meanwhile may keep it closed, another release may have opened it.
        let answer = quarantine.release(slot, passedSelfTest: passedSelfTest)
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

    /// The quarantined slots whose self-test is due now, marked as testing until `selfTestEnded`:
    /// one per GPU, and none whose GPU runs a job or a self-test, on this slot or another of that
    /// GPU (found by attacking the build: with `slots_per_gpu`, a self-test ran beside the job a
    /// sibling slot had taken).
    public func selfTestsDue(every interval: Duration) -> [SlotSpec] {
        let now = clock.now()
        // A slot claiming counts as busy: the job it is getting would start beside the test (found in review).
        var taken = Set((board.slots.filter { board.occupancy[$0] != .idle && board.occupancy[$0] != .closed } + quarantine.selfTesting)
            .compactMap { slotSpecs[$0]?.gpu })
        let due = quarantine.selfTestsDue(at: now, every: interval).filter { slot in
            guard board.job(on: slot) == nil, let gpu = slotSpecs[slot]?.gpu else { return false }
            return taken.insert(gpu).inserted
        }
        for slot in due { quarantine.selfTestStarted(on: slot, at: now) }
        return due.compactMap { slotSpecs[$0] }
    }

    /// A self-test `selfTestsDue` handed out has ended. A pass opens every quarantined slot of its
    /// GPU (what it tested); returns the slots it opened. The GPU counts as under test until
    /// they are open (a release waits on the executor and the quarantine file: found in review,
    /// a tick between them handed out a sibling's test).
    public func selfTestEnded(on slot: SlotID, passed: Bool) async -> [SlotID] {
        defer {
            quarantine.selfTestEnded(on: slot)
            jobEnqueued()   // its GPU's open slots take jobs again
        }
        guard passed, let gpu = slotSpecs[slot]?.gpu else { return [] }
        var opened: [SlotID] = []
        for other in board.slots where slotSpecs[other]?.gpu == gpu && quarantine.isQuarantined(other) {
            if await release(other, by: "self-test", passedSelfTest: true) == .released { opened.append(other) }
        }
        return opened
    }

    /// Whether `slot` takes no job: quarantined, or its GPU is being self-tested (an open slot of
    /// the GPU too: found in review, a sibling slot's job ran beside the test).
    func closedToJobs(_ slot: SlotID) -> Bool {
        quarantine.isQuarantined(slot) || (!quarantine.selfTesting.isEmpty && slotSpecs[slot]?.gpu.map(gpusUnderTest.contains) == true)
    }

    /// The slots that take no job (`closedToJobs`). (On the slots' every pass: nothing more than the
    /// quarantine's while no self-test runs.)
    var slotsClosedToJobs: Set<SlotID> {
        guard !quarantine.selfTesting.isEmpty else { return quarantine.quarantinedSlots }
        let testing = gpusUnderTest
        return quarantine.quarantinedSlots.union(board.slots.filter { slotSpecs[$0]?.gpu.map(testing.contains) == true })
    }

    /// The GPUs whose self-test runs now.
    private var gpusUnderTest: Set<String> { Set(quarantine.selfTesting.compactMap { slotSpecs[$0]?.gpu }) }

    /// The quarantine kept from before the restart is in force: restored (once, by the first
    /// caller) before anything looks at the quarantine or changes it — the slot-filling loop, a
    /// GPU reading, a release, `/healthz` — whichever comes first (the GPU monitor and the API
    /// start beside the scheduler).
    func quarantineRestored() async {
        if quarantineRestore == nil {
            quarantineRestore = Task { await self.restoreQuarantine() }   // unstructured: the one restore every caller awaits, whichever comes first
        }
        await quarantineRestore?.value
    }

    /// Closes again the slots that were quarantined when the server last stopped (`QuarantineFile`).
    private func restoreQuarantine() async {
        guard let quarantineFile else { return }
        let kept: QuarantineFile.Kept?
        do { kept = try await quarantineFile.load() } catch {
            if error.kind == .damaged { await quarantineFile.setAside() }
            logger.error("could not read the quarantine kept from before the restart; its slots start open",
                         metadata: ["error": "\(error)", "file": "\(error.kind == .damaged ? quarantineFile.path + ".bad (set aside)" : quarantineFile.path)"])
            // Written at the next change: one that could not be read is not overwritten before.
            quarantineKept = quarantine.saved
            quarantineLoaded = true
            return
        }
        let restored = quarantine.restore(kept?.saved ?? [], layout: kept?.layout)
        // What the file holds, as this server would write it (one made under another layout is
        // written anew).
        quarantineKept = if let kept { kept.layout == quarantine.devices ? kept.saved : nil } else { [] }
        quarantineLoaded = true
        for slot in restored {
            await executor.slotQuarantined(slot)
            logger.warning("slot still quarantined from before the restart: it takes no jobs until a self-test passes or an administrator releases it",
                           metadata: ["slot": "\(slot)", "gpu": "\(slotSpecs[slot]?.gpu ?? "")",
                                      "reasons": "\(quarantine.entries[slot]?.reasons ?? [])"])
        }
        let gone = (kept?.saved ?? []).filter { item in !quarantine.devices.values.contains(item.gpu) }
        if !gone.isEmpty {
            logger.notice("dropped the quarantines of GPUs this server no longer has",
                          metadata: ["gpus": "\(gone.map(\.gpu))"])
        }
        SchedulerMetrics.quarantined(quarantine.entries.count)
        await keepQuarantine()
    }

    /// Writes the quarantine to its file when it changed since the last write. A write that
    /// fails is logged; the quarantine in force is the one in memory, and the next call writes
    /// it whole again.
    func keepQuarantine() async {
        guard let quarantineFile, quarantineLoaded else { return }
        let now = quarantine.saved
        guard now != quarantineKept else { return }
        quarantineKept = now
        quarantineVersion += 1
        do { try await quarantineFile.save(.init(saved: now, layout: quarantine.devices), version: quarantineVersion) } catch {
            quarantineKept = nil   // unknown: written again at the next call
            logger.error("could not keep the quarantine for the next start: a restart would find it as it was before this change",
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
