// SlotQuarantineTests: the quarantine rules as a pure value — the consecutive-failure rule,
// GPU readings, release and the self-test schedule, with time passed in.

import SpoolCore
import Testing

@Suite struct SlotQuarantineTests {
    let a = SlotID(0), b = SlotID(1), cpu = SlotID(2)
    let t0 = Timestamp(microseconds: 1_700_000_000_000_000)

    func quarantine(limit: Int = 3) -> SlotQuarantine {
        SlotQuarantine(slots: [SlotSpec(id: a, gpu: "0"), SlotSpec(id: b, gpu: "1"), SlotSpec(id: cpu)], failureLimit: limit)
    }

    /// A quarantine where jobs of type "t" last succeeded on `slot`: failures elsewhere count.
    func quarantine(limit: Int = 3, working slot: SlotID) -> SlotQuarantine {
        var q = quarantine(limit: limit)
        _ = q.judge(.succeeded, of: "t", timeout: 60, on: slot, at: t0)
        return q
    }

    @Test func failuresInARowQuarantineTheSlotAndTheLastOneGoesBackToTheQueue() {
        var q = quarantine(working: b)
        #expect(q.judge(.exited(code: 1), of: "t", timeout: 60, on: a, at: t0) == .init(outcome: .exited(code: 1), quarantined: false))
        #expect(q.judge(.signaled(signal: 9), of: "t", timeout: 60, on: a, at: t0).outcome == .signaled(signal: 9))
        let third = q.judge(.timedOut, of: "t", timeout: 60, on: a, at: t0)
        #expect(third.quarantined)
        guard case .returned(let message, _) = third.outcome else { Issue.record("not returned: \(third.outcome)"); return }
        #expect(message.contains("slot 0 was quarantined") && message.contains("3 attempts in a row"))
        #expect(q.isQuarantined(a) && !q.isQuarantined(b))
        #expect(q.entries[a]?.since == t0)
        #expect(q.entries[a]?.reasons.first?.contains("failed on this slot, not on others") == true)
        #expect(q.entries[a]?.reasons.first?.contains("ran past its timeout of 60 s") == true, "\(q.entries[a]?.reasons ?? [])")
    }

    @Test func aSuccessResetsTheCountAndNeutralOutcomesCountNeitherWay() {
        var q = quarantine(working: b)
        _ = q.judge(.exited(code: 1), of: "t", timeout: 60, on: a, at: t0)
        _ = q.judge(.exited(code: 1), of: "t", timeout: 60, on: a, at: t0)
        _ = q.judge(.succeeded, of: "t", timeout: 60, on: a, at: t0)
        #expect(q.streaks[a] == 0)
        _ = q.judge(.exited(code: 1), of: "t", timeout: 60, on: a, at: t0)
        for neutral: JobOutcome in [.canceled, .stoppedForShutdown, .returned(message: "x"), .spawnFailed(message: "no such file")] {
            #expect(q.judge(neutral, of: "t", timeout: 60, on: a, at: t0).outcome == neutral)
        }
        _ = q.judge(.reportedFailure(message: "CUDA error"), of: "t", timeout: 60, on: a, at: t0)
        #expect(q.streaks[a] == 2 && !q.isQuarantined(a))
        #expect(q.judge(.workerLost(message: "gone"), of: "t", timeout: 60, on: a, at: t0).quarantined)
    }

    /// A type's success on a GPU from before a bad deploy does not make its failures since count
    /// as the devices' fault: what decides is the type's latest attempt on another GPU, the newest
    /// of them (found by attacking the build: with the GPU of the old success busy with a long job,
    /// a bad deploy closed the two other, healthy, GPUs).
    @Test func anOldSuccessElsewhereDoesNotMakeABadDeployCloseASecondGPU() {
        let c = SlotID(3)
        var q = SlotQuarantine(slots: [SlotSpec(id: a, gpu: "0"), SlotSpec(id: b, gpu: "1"), SlotSpec(id: c, gpu: "2")], failureLimit: 2)
        for slot in [a, b, c] { _ = q.judge(.succeeded, of: "t", timeout: 60, on: slot, at: t0) }
        // The deploy breaks "t"; GPU 0 runs a long job of another type meanwhile.
        _ = q.judge(.exited(code: 1), of: "t", timeout: 60, on: b, at: t0)
        #expect(q.judge(.exited(code: 1), of: "t", timeout: 60, on: b, at: t0).quarantined, "the first slot the deploy reaches: closed")
        for _ in 0..<4 { _ = q.judge(.exited(code: 1), of: "t", timeout: 60, on: c, at: t0) }
        #expect(!q.isQuarantined(c), "no second one: its failures follow the type's newest attempt elsewhere, a failure")
        // A GPU that breaks while the type works elsewhere, lately, is closed all the same.
        _ = q.judge(.succeeded, of: "t", timeout: 60, on: a, at: t0)
        _ = q.judge(.exited(code: 1), of: "t", timeout: 60, on: c, at: t0)
        #expect(q.judge(.exited(code: 1), of: "t", timeout: 60, on: c, at: t0).quarantined)
    }

    /// With several slots on one GPU, a type failing on the slot beside it is no sign the type is
    /// at fault: it is the same device (found by attacking the build: two slots of a broken GPU
    /// excused each other's failures, and the GPU was never closed).
    @Test func slotsOfOneGPUDoNotExcuseEachOther() {
        let (a2, b2) = (SlotID(10), SlotID(11))
        var q = SlotQuarantine(slots: [SlotSpec(id: a, gpu: "0"), SlotSpec(id: a2, gpu: "0"), SlotSpec(id: b, gpu: "1"), SlotSpec(id: b2, gpu: "1")],
                               failureLimit: 2)
        // GPU 0's slots are busy with long jobs of another type: "t" has run on GPU 1 alone.
        var closed: [SlotID] = []
        for slot in [b, b2, b, b2] where q.judge(.exited(code: 1), of: "t", timeout: 60, on: slot, at: t0).quarantined { closed.append(slot) }
        #expect(closed == [b, b2], "GPU 1's slots both closed, each at its second failure")
    }

    /// A type whose jobs fail on every slot (a bad deploy, jobs that all time out) closes no
    /// GPU: the type is at fault, not the devices (found by attacking the build: such jobs closed
    /// two healthy GPUs of three within a second, for good without a self-test). Those failures do
    /// not count (found in review: else a streak grown meanwhile closed a slot at its next
    /// failure); once the type works on another slot, failures count from there.
    @Test func failuresOfATypeThatFailsEverywhereCloseNoSlot() {
        var q = SlotQuarantine(slots: [SlotSpec(id: a, gpu: "0"), SlotSpec(id: b, gpu: "1"), SlotSpec(id: cpu, gpu: "2")], failureLimit: 3)
        _ = q.judge(.succeeded, of: "other", timeout: 60, on: b, at: t0)
        for round in 0..<4 {
            for slot in [a, b, cpu] {
                #expect(!q.judge(.timedOut, of: "t", timeout: 0.3, on: slot, at: t0).quarantined, "round \(round), slot \(slot)")
            }
        }
        // Only slot 0's first failure counted (nothing had run elsewhere then).
        #expect(q.entries.isEmpty && q.streaks[a] == 1 && (q.streaks[b] ?? 0) == 0 && (q.streaks[cpu] ?? 0) == 0, "\(q.streaks)")
        _ = q.judge(.succeeded, of: "t", timeout: 0.3, on: b, at: t0)
        #expect(!q.judge(.exited(code: 1), of: "t", timeout: 0.3, on: a, at: t0).quarantined, "two in a row")
        #expect(q.judge(.exited(code: 1), of: "t", timeout: 0.3, on: a, at: t0).quarantined, "three")
    }

    /// A GPU broken from the start is closed with no job having run elsewhere yet (found in
    /// review: requiring a success elsewhere first let it fail job after job while the other
    /// GPUs ran long ones).
    @Test func aSlotFailingWhileNoOtherHasRunTheTypeIsClosed() {
        var q = quarantine()
        _ = q.judge(.exited(code: 1), of: "t", timeout: 60, on: a, at: t0)
        _ = q.judge(.exited(code: 1), of: "t", timeout: 60, on: a, at: t0)
        #expect(q.judge(.exited(code: 1), of: "t", timeout: 60, on: a, at: t0).quarantined)
    }

    /// A bad deploy on an idle box, its jobs one after another: the first slot closes (nothing
    /// had run the type elsewhere: a GPU broken from the start looks the same), and its failures
    /// there then excuse the type's failures on the next slots, closed or not (found by attacking
    /// the build: only open slots counted, so each slot in turn found no other that had run the
    /// type and closed, all but the last GPU).
    @Test func aBadDeployOnAnIdleBoxClosesOneSlotAtMost() {
        let slots = (0..<4).map { SlotSpec(id: SlotID($0), gpu: "\($0)") }
        var q = SlotQuarantine(slots: slots, failureLimit: 3)
        var closed: [SlotID] = []
        for slot in slots.map(\.id) {
            for _ in 0..<3 where !q.isQuarantined(slot) {
                if q.judge(.exited(code: 1), of: "t", timeout: 60, on: slot, at: t0).quarantined { closed.append(slot) }
            }
        }
        #expect(closed == [SlotID(0)], "\(q.entries)")
        // A success of the type on slot 0 again (released, its device fine) makes failures elsewhere count once more.
        _ = q.release(SlotID(0))
        _ = q.judge(.succeeded, of: "t", timeout: 60, on: SlotID(0), at: t0)
        for _ in 0..<3 { _ = q.judge(.exited(code: 1), of: "t", timeout: 60, on: SlotID(1), at: t0) }
        #expect(q.isQuarantined(SlotID(1)))
    }

    /// A released slot starts afresh: its failures before the release no longer excuse the
    /// type's failures elsewhere (found in review: they did for good).
    @Test func aReleasedSlotsOldFailuresExcuseNothing() {
        var q = SlotQuarantine(slots: (0..<3).map { SlotSpec(id: SlotID($0), gpu: "\($0)") }, failureLimit: 3)
        for _ in 0..<3 { _ = q.judge(.exited(code: 1), of: "t", timeout: 60, on: SlotID(0), at: t0) }
        #expect(q.isQuarantined(SlotID(0)))
        _ = q.release(SlotID(0))
        for _ in 0..<3 { _ = q.judge(.exited(code: 1), of: "t", timeout: 60, on: SlotID(1), at: t0) }
        #expect(q.isQuarantined(SlotID(1)), "slot 1 fails alone now: a GPU broken from the start")
    }

    @Test func theRuleIsOffAtZeroAndNeverTouchesCPUSlots() {
        var off = quarantine(limit: 0)
        for _ in 0..<10 { #expect(!off.judge(.exited(code: 1), of: "t", timeout: 60, on: a, at: t0).quarantined) }
        var q = quarantine(limit: 1)
        #expect(q.judge(.exited(code: 1), of: "t", timeout: 60, on: cpu, at: t0) == .init(outcome: .exited(code: 1), quarantined: false))
        #expect(!q.isQuarantined(cpu))
    }

    @Test func theLastOpenGPUSlotIsNeverClosedByFailures() {
        var q = quarantine(limit: 1, working: b)
        #expect(q.judge(.exited(code: 1), of: "t", timeout: 60, on: a, at: t0).quarantined)
        #expect(q.judge(.exited(code: 1), of: "t", timeout: 60, on: b, at: t0) == .init(outcome: .exited(code: 1), quarantined: false))
        #expect(!q.isQuarantined(b))
    }

    @Test func aFailureOnAQuarantinedSlotIsReturnedAndASuccessStands() {
        var q = quarantine()
        #expect(q.read(["0": .unhealthy("GPU is lost")], at: t0) == [a])
        guard case .returned(let message, _) = q.judge(.signaled(signal: 11), of: "t", timeout: 60, on: a, at: t0).outcome else { Issue.record("not returned"); return }
        #expect(message == "slot 0 is quarantined: GPU 0: GPU is lost")
        #expect(q.judge(.succeeded, of: "t", timeout: 60, on: a, at: t0).outcome == .succeeded)
    }

    @Test func readingsCloseTheSlotsOfAnUnhealthyGPUOnceAndAddNewReasons() {
        var q = SlotQuarantine(slots: [SlotSpec(id: a, gpu: "0"), SlotSpec(id: b, gpu: "0"), SlotSpec(id: cpu, gpu: "1")], failureLimit: 3)
        #expect(q.read(["0": .healthy, "1": .healthy], at: t0).isEmpty)
        #expect(q.read(["0": .unhealthy("GPU is lost")], at: t0) == [a, b])
        #expect(q.read(["0": .unhealthy("GPU is lost")], at: t0).isEmpty, "already closed")
        _ = q.read(["0": .unhealthy("2 uncorrected ECC error(s)")], at: t0)
        #expect(q.entries[a]?.reasons == ["GPU 0: GPU is lost", "GPU 0: 2 uncorrected ECC error(s)"])
        #expect(!q.isQuarantined(cpu))
        #expect(q.readings["1"] == .healthy, "a device not reported on keeps its reading")
    }

    @Test func releaseOpensTheSlotUnlessItsGPUStillReadsUnhealthy() {
        var q = quarantine()
        #expect(q.release(a) == .notQuarantined)
        #expect(q.release(cpu) == .noSuchSlot)
        _ = q.read(["0": .unhealthy("GPU is lost")], at: t0)
        #expect(q.release(a) == .deviceUnhealthy("GPU 0: GPU is lost"))
        _ = q.read(["0": .healthy], at: t0)
        #expect(q.isQuarantined(a), "a healthy reading alone does not open the slot")
        #expect(q.release(a) == .released)
        #expect(!q.isQuarantined(a) && q.streaks[a] == 0)
    }

    @Test func selfTestsAreDueAtOnceThenEveryIntervalAndNeverWhileTheGPUReadsUnhealthy() {
        var q = quarantine(limit: 1, working: b)
        let start = Moment.zero, interval = Duration.seconds(30)
        #expect(q.selfTestsDue(at: start, every: interval).isEmpty)
        _ = q.judge(.exited(code: 1), of: "t", timeout: 60, on: a, at: t0)
        #expect(q.selfTestsDue(at: start, every: interval) == [a])
        q.selfTestStarted(on: a, at: start)
        #expect(q.selfTestsDue(at: start + .seconds(29), every: interval).isEmpty)
        #expect(q.selfTestsDue(at: start + .seconds(30), every: interval) == [a])
        _ = q.read(["0": .unhealthy("GPU requires reset")], at: t0)
        #expect(q.selfTestsDue(at: start + .seconds(60), every: interval).isEmpty)
        _ = q.read(["0": .healthy], at: t0)
        #expect(q.selfTestsDue(at: start + .seconds(60), every: interval) == [a])
        #expect(q.release(a) == .selfTestRunning, "not while its self-test runs")
        q.selfTestEnded(on: a)
        #expect(q.release(a) == .released)
        #expect(q.selfTestsDue(at: start + .seconds(90), every: interval).isEmpty)
    }

    @Test func whatIsKeptComesBackOnTheSameSlotAndGPUOnly() throws {
        var before = quarantine(limit: 1, working: b)
        _ = before.judge(.exited(code: 1), of: "t", timeout: 60, on: a, at: t0)
        _ = before.read(["1": .unhealthy("GPU is lost")], at: t0.adding(seconds: 5))
        let kept = before.saved
        #expect(kept.map(\.slot) == [a, b] && kept.map(\.gpu) == ["0", "1"])
        // Through its JSON, as the file holds it.
        #expect(try kept.map { try #require(SlotQuarantine.Saved(json: $0.json)) } == kept)
        #expect(SlotQuarantine.Saved(json: .object(["slot": .int(0), "gpu": .string("0"), "reasons": .array([])])) == nil)

        // Same slots on the same GPUs: both closed again, as they were.
        var after = quarantine(limit: 1)
        #expect(after.restore(kept, layout: before.devices) == [a, b])
        #expect(after.entries == before.entries)
        // Laid out anew (two slots per GPU): each quarantine closes every slot of its GPU, the
        // slot numbers having moved; a GPU the server no longer has closes nothing.
        let c = SlotID(3)
        var relaid = SlotQuarantine(slots: [SlotSpec(id: a, gpu: "1"), SlotSpec(id: b, gpu: "1"), SlotSpec(id: cpu, gpu: "0"),
                                            SlotSpec(id: c, gpu: "0")], failureLimit: 1)
        #expect(relaid.restore(kept, layout: before.devices).sorted() == [a, b, cpu, c])
        #expect(relaid.entries[cpu] == kept[0].entry && relaid.entries[a] == kept[1].entry)
        var gone = SlotQuarantine(slots: [SlotSpec(id: a, gpu: "2")], failureLimit: 1)
        #expect(gone.restore(kept, layout: before.devices).isEmpty && gone.entries.isEmpty)
        // Two slots per GPU, as before: only the slot that failed closes again.
        var two = SlotQuarantine(slots: [SlotSpec(id: a, gpu: "0"), SlotSpec(id: b, gpu: "0")], failureLimit: 1)
        _ = two.judge(.succeeded, of: "t", timeout: 60, on: a, at: t0)
        _ = two.judge(.exited(code: 1), of: "t", timeout: 60, on: b, at: t0)
        var twoAgain = SlotQuarantine(slots: [SlotSpec(id: a, gpu: "0"), SlotSpec(id: b, gpu: "0")], failureLimit: 1)
        #expect(twoAgain.restore(two.saved, layout: two.devices) == [b])
        // A slot closed by a reading before the restore keeps it, after the kept reasons.
        var read = quarantine(limit: 1)
        _ = read.read(["0": .unhealthy("2 uncorrected ECC errors")], at: t0.adding(seconds: 60))
        #expect(read.restore(kept, layout: before.devices) == [b])
        #expect(read.entries[a]?.reasons.count == 2 && read.entries[a]?.reasons.last == "GPU 0: 2 uncorrected ECC errors")
        #expect(read.entries[a]?.since == t0)
        // A kept quarantine is released like any other.
        #expect(after.release(a) == .released && after.saved.map(\.slot) == [b])
        // The layout the file names agrees, but an entry does not: a slot this server lacks, a slot
        // on another GPU than the file says. Each is about its GPU, as when laid out anew (found by
        // attacking the build: an entry for a missing slot was half applied, no release could clear it).
        var ghost = quarantine(limit: 1)
        let stray = SlotQuarantine.Saved(slot: SlotID(7), gpu: "5", entry: kept[0].entry)
        let moved = SlotQuarantine.Saved(slot: a, gpu: "1", entry: kept[1].entry)
        #expect(ghost.restore([stray, moved], layout: ghost.devices) == [b])
        #expect(ghost.entries.keys.sorted() == [b], "nothing for slot 7, and slot 0's GPU 0 is not the file's GPU 1")
    }
}
