/// What the GPU probe says of one device.
public enum GPUHealth: Sendable, Equatable {
    case healthy
    /// Broken until reset or repair, with the probe's reason ("GPU is lost", "2 uncorrected ECC errors").
    case unhealthy(String)
}

/// Which GPU slots are out of service, and why: the scheduler's quarantine decisions as a pure
/// value (no I/O; time is passed in).
///
/// A GPU slot is quarantined when
/// - the GPU probe reads its device as unhealthy (every slot of that device), or
/// - `failureLimit` attempts in a row failed on it (a success resets the count; cancels,
///   shutdowns and returned attempts count neither way). A failure of a type that fails on the
///   other GPUs too — its newest attempt on a slot of another GPU (open or closed) failed — is
///   not counted: then the type is at fault, not the device (found by attacking the build: a type
///   whose jobs all timed out closed two healthy GPUs of three within a second). A
///   type not yet run elsewhere counts, so a GPU broken from the start is closed all the same —
///   and so is the first slot a bad deploy's jobs reach one by one on an idle box, but no other.
///   Nor does this rule ever close the last open GPU slot.
///
/// A quarantined slot takes no job. It comes back after a passing self-test (run while its
/// device reads healthy) or by `release` (an administrator); a slot whose device still reads
/// unhealthy cannot be released, as the next reading would close it again. CPU slots are
/// never quarantined.
public struct SlotQuarantine: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        /// Why, in sentences, oldest first.
        public var reasons: [String]
        public var since: Timestamp

        public init(reasons: [String], since: Timestamp) { (self.reasons, self.since) = (reasons, since) }
    }

    /// The attempt's outcome after the quarantine rules, and whether it closed its slot.
    public struct Verdict: Sendable, Equatable {
        public var outcome: JobOutcome
        public var quarantined: Bool
        public init(outcome: JobOutcome, quarantined: Bool) { (self.outcome, self.quarantined) = (outcome, quarantined) }
    }

    public enum Release: Sendable, Equatable {
        case released
        case notQuarantined
        /// Its device still reads unhealthy (the reason).
        case deviceUnhealthy(String)
        /// Its self-test runs now: it would run beside the slot's next job (found by attacking the build).
        case selfTestRunning
        case noSuchSlot
    }

    /// Consecutive failed attempts that quarantine a slot; 0 turns the rule off.
    public let failureLimit: Int
    /// Each GPU slot's device.
    public let devices: [SlotID: String]
    public private(set) var entries: [SlotID: Entry] = [:]
    /// Failed attempts in a row, per slot.
    public private(set) var streaks: [SlotID: Int] = [:]
    /// The latest reading of each device the probe has reported on.
    public private(set) var readings: [String: GPUHealth] = [:]
    private var selfTested: [SlotID: Moment] = [:]
    /// Slots whose self-test runs now (`selfTestStarted` to `selfTestEnded`).
    private var testing: Set<SlotID> = []
    /// Per job type, whether its latest counted attempt on each GPU slot succeeded, and when (in
    /// the order attempts were judged).
    private var latest: [String: [SlotID: Judged]] = [:]
    private var judgedSoFar = 0

    private struct Judged: Sendable, Equatable {
        var succeeded: Bool
        var order: Int
    }

    public init(slots: [SlotSpec], failureLimit: Int) {
        self.failureLimit = failureLimit
        devices = Dictionary(uniqueKeysWithValues: slots.compactMap { slot in slot.gpu.map { (slot.id, $0) } })
    }

    public func isQuarantined(_ slot: SlotID) -> Bool { entries[slot] != nil }

    public var quarantinedSlots: Set<SlotID> { Set(entries.keys) }

    /// Whether an attempt that ended this way counts against its slot: `true` a failure, `false`
    /// a success, nil neither (stopped by the server or the user, never started, or a command
    /// that could not be spawned, which is the type's fault).
    public static func countsAsFailure(_ outcome: JobOutcome) -> Bool? {
        switch outcome {
        case .succeeded: false
        case .exited, .signaled, .timedOut, .reportedFailure, .workerLost: true
        case .canceled, .stoppedForShutdown, .returned, .spawnFailed: nil
        }
    }

    /// Takes the end of an attempt of a job of `type` (whose timeout was `timeout` seconds) on
    /// `slot` into account. An attempt that failed on a quarantined slot — or whose failure
    /// quarantines it — goes back to the queue without using up an attempt (`returned`), to run
    /// on another slot.
    public mutating func judge(_ outcome: JobOutcome, of type: String, timeout: Double?, on slot: SlotID, at now: Timestamp) -> Verdict {
        guard devices[slot] != nil, let failed = Self.countsAsFailure(outcome) else { return Verdict(outcome: outcome, quarantined: false) }
        if let entry = entries[slot] {
            guard failed else { return Verdict(outcome: outcome, quarantined: false) }
            return Verdict(outcome: .returned(message: "slot \(slot) is quarantined: \(entry.reasons.joined(separator: "; "))", ran: true),
                           quarantined: false)
        }
        // Closed slots too: a slot a bad deploy closed first is where the type failed (found by
        // attacking the build: counting open slots only, each next slot found no other that had
        // run the type, and a bad deploy closed all but the last GPU, one after another).
        // On other GPUs: a slot beside it on its own GPU fails with it (found by attacking the build).
        let device = devices[slot]
        let elsewhere = (latest[type] ?? [:]).filter { other, _ in other != slot && devices[other] != device }
        judgedSoFar += 1
        latest[type, default: [:]][slot] = Judged(succeeded: !failed, order: judgedSoFar)
        guard failed else {
            streaks[slot] = 0
            return Verdict(outcome: outcome, quarantined: false)
        }
        // Its newest attempt on another GPU failed too: the type's fault, not this device's. (The
        // newest: a success there from before a bad deploy proves nothing of the type since —
        // found by attacking the build, a bad deploy closed a second healthy GPU.)
        if let newest = elsewhere.values.max(by: { $0.order < $1.order }), !newest.succeeded { return Verdict(outcome: outcome, quarantined: false) }
        let streak = (streaks[slot] ?? 0) + 1
        streaks[slot] = streak
        let othersOpen = devices.keys.contains { $0 != slot && entries[$0] == nil }
        guard failureLimit > 0, streak >= failureLimit, othersOpen else { return Verdict(outcome: outcome, quarantined: false) }
        let reason = "\(streak) attempts in a row failed on this slot, not on others "
            + "(the last: \(outcome.errorMessage(timeout: timeout) ?? "failed"))"
        quarantine(slot, because: reason, at: now)
        return Verdict(outcome: .returned(message: "slot \(slot) was quarantined: \(reason)", ran: true), quarantined: true)
    }

    /// Takes the probe's readings (devices it did not report on keep their last reading) and
    /// returns the slots this closed.
    public mutating func read(_ health: [String: GPUHealth], at now: Timestamp) -> [SlotID] {
        readings.merge(health) { _, new in new }
        var closed: [SlotID] = []
        for (slot, device) in devices.sorted(by: { $0.key < $1.key }) {
            guard case .unhealthy(let why)? = health[device] else { continue }
            let reason = "GPU \(device): \(why)"
            if entries[slot] == nil {
                quarantine(slot, because: reason, at: now)
                closed.append(slot)
            } else if entries[slot]?.reasons.contains(reason) == false {
                entries[slot]?.reasons.append(reason)
            }
        }
        return closed
    }

    /// The reason `slot`'s device reads unhealthy now, if it does.
    public func deviceProblem(of slot: SlotID) -> String? {
        guard let device = devices[slot], case .unhealthy(let why)? = readings[device] else { return nil }
        return "GPU \(device): \(why)"
    }

    /// What `release(slot)` would answer now, without opening the slot.
    /// `passedSelfTest`: its GPU's self-test passed, and a self-test running on the GPU (that
    /// one, ending) does not hold the release back.
    public func releasable(_ slot: SlotID, passedSelfTest: Bool = false) -> Release {
        guard devices[slot] != nil else { return .noSuchSlot }
        guard entries[slot] != nil else { return .notQuarantined }
        if let problem = deviceProblem(of: slot) { return .deviceUnhealthy(problem) }
        if !passedSelfTest, testing.contains(where: { devices[$0] == devices[slot] }) { return .selfTestRunning }
        return .released
    }

    /// Opens `slot` again (an administrator's call, or a passing self-test).
    public mutating func release(_ slot: SlotID, passedSelfTest: Bool = false) -> Release {
        let answer = releasable(slot, passedSelfTest: passedSelfTest)
        guard answer == .released else { return answer }
        entries[slot] = nil
        streaks[slot] = 0
        selfTested[slot] = nil
        // It starts afresh: what its types did before no longer excuses (or counts against)
        // failures elsewhere (found in review: a bad deploy's failures there excused for good).
        for type in latest.keys { latest[type]?[slot] = nil }
        return .released
    }

    /// Quarantined slots whose self-test is due at `now`: at once after the quarantine, then
    /// every `interval`; never while the device reads unhealthy.
    public func selfTestsDue(at now: Moment, every interval: Duration) -> [SlotID] {
        entries.keys.filter { slot in
            deviceProblem(of: slot) == nil && selfTested[slot].map { now - $0 >= interval } ?? true
        }.sorted()
    }

    public mutating func selfTestStarted(on slot: SlotID, at now: Moment) {
        guard entries[slot] != nil else { return }
        selfTested[slot] = now
        testing.insert(slot)
    }

    public mutating func selfTestEnded(on slot: SlotID) { testing.remove(slot) }

    /// Slots whose self-test runs now.
    public var selfTesting: Set<SlotID> { testing }

    /// A quarantine as the node keeps it across restarts: the slot, its device then, and why
    /// and since when.
    public struct Saved: Sendable, Equatable {
        public var slot: SlotID
        public var gpu: String
        public var entry: Entry

        public init(slot: SlotID, gpu: String, entry: Entry) { (self.slot, self.gpu, self.entry) = (slot, gpu, entry) }

        public var json: JSONValue {
            .object(["slot": .int(Int64(slot.rawValue)), "gpu": .string(gpu), "reasons": .array(entry.reasons.map(JSONValue.string)),
                     "since": .string(entry.since.description)])
        }

        /// What `json` wrote; nil for anything else.
        public init?(json: JSONValue) {
            guard let slot = json["slot"]?.intValue, let gpu = json["gpu"]?.stringValue,
                  let reasons = json["reasons"]?.arrayValue?.compactMap(\.stringValue), !reasons.isEmpty,
                  let since = json["since"]?.stringValue.flatMap(Timestamp.init(rfc3339:)) else { return nil }
            self.init(slot: SlotID(Int(slot)), gpu: gpu, entry: Entry(reasons: reasons, since: since))
        }
    }

    /// The quarantine to keep (`restore` takes it back), lowest slot first.
    public var saved: [Saved] {
        entries.sorted { $0.key < $1.key }.compactMap { slot, entry in devices[slot].map { Saved(slot: slot, gpu: $0, entry: entry) } }
    }

    /// Closes again what an earlier run had quarantined (`saved`), whose GPU slots were laid out
    /// as `layout` (each slot's GPU). With the same layout, each closes its own slot. Laid out
    /// anew (`slots_per_gpu`, `--gpus`; or not known), a quarantine is about its GPU: it closes
    /// every slot now pinned there. One for a GPU this server no longer has closes nothing.
    /// Returns the slots it closed. A slot closed already (a reading came first) keeps its
    /// entry, with the saved reasons before its own.
    public mutating func restore(_ saved: [Saved], layout: [SlotID: String]?) -> [SlotID] {
        var closed: [SlotID] = []
        for item in saved {
            // Each entry as the file says only where the layout agrees with it: not a slot this
            // server lacks, nor one now on another GPU (found by attacking the build: an entry for
            // a slot with no GPU here was half applied, "every slot is quarantined" while the only
            // one ran jobs, and no release could clear it).
            let slots = layout == devices && devices[item.slot] == item.gpu ? [item.slot] : devices.filter { $0.value == item.gpu }.keys.sorted()
            for slot in slots {
                if var entry = entries[slot] {
                    entry.reasons = item.entry.reasons + entry.reasons.filter { !item.entry.reasons.contains($0) }
                    entry.since = min(entry.since, item.entry.since)
                    entries[slot] = entry
                } else {
                    entries[slot] = item.entry
                    closed.append(slot)
                }
            }
        }
        return closed
    }

    private mutating func quarantine(_ slot: SlotID, because reason: String, at now: Timestamp) {
        entries[slot] = Entry(reasons: [reason], since: now)
        selfTested[slot] = nil
    }
}
