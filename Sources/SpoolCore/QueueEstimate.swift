/// When a queued job is likely to start, from what the queue has learned about run times.
///
/// Method: each slot is free at "now" or when its running job is expected to end: from its
/// reported progress when it reports any (a job 52 s in at 86 % has 52 × 0.14 / 0.86 ≈ 8.5 s
/// left), else the median recent run time of its type minus how long it has run, at least 0. The jobs ahead
/// are handed out one by one to the slot that frees first, each expected to take the typical
/// run time; the job starts when a slot frees after that. Plain arithmetic over the recent
/// medians: no I/O, so tested directly.
public struct QueueEstimate: Sendable, Equatable {
    /// Seconds from now.
    public var startsIn: Double
    /// How it was worked out, in a sentence.
    public var method: String
    /// How long the job itself should run, when its type's run time is learned from the input.
    public var runSeconds: Double?

    public init(startsIn: Double, method: String, runSeconds: Double? = nil) {
        self.startsIn = startsIn
        self.method = method
        self.runSeconds = runSeconds
    }

    /// Recent run times (seconds) by type, newest last; keeps the last `window`.
    public struct RunTimes: Sendable {
        public private(set) var byType: [String: [Double]] = [:]
        public let window: Int
        public init(window: Int = 20) { self.window = window }

        public mutating func record(_ seconds: Double, type: String) {
            guard seconds.isFinite, seconds >= 0 else { return }
            var list = byType[type, default: []]
            list.append(seconds)
            if list.count > window { list.removeFirst(list.count - window) }
            byType[type] = list
        }

        public func median(of type: String) -> Double? { Self.median(byType[type] ?? []) }

        /// Over every type: the fallback for jobs ahead whose type is unknown.
        public var overallMedian: Double? { Self.median(byType.values.flatMap { $0 }) }

        public func samples(of type: String) -> Int { byType[type]?.count ?? 0 }

        static func median(_ values: [Double]) -> Double? {
            guard !values.isEmpty else { return nil }
            let sorted = values.sorted()
            return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        }
    }

    /// A running job: its type, how long it has run, and the progress it reported (0…1).
    public struct Running: Sendable {
        public var type: String
        public var elapsed: Double
        public var progress: Double?
        /// Its expected run time, learned from its input (`RunTimeModel`), when known.
        public var expected: Double?
        public init(type: String, elapsed: Double, progress: Double? = nil, expected: Double? = nil) {
            self.type = type
            self.elapsed = elapsed
            self.progress = progress
            self.expected = expected
        }

        /// Seconds until it ends: extrapolated from its progress once it has made some (at
        /// least 2 %, below which the rate says little), else what its expected run (from its
        /// input) or the typical run of its type has left.
        public func remaining(typical: Double) -> Double {
            if let progress, progress >= 0.02, elapsed > 0 { return elapsed * (1 - min(1, progress)) / progress }
            return max(0, (expected ?? typical) - elapsed)
        }
    }

    /// nil until some job has finished, so there is something to learn from.
    /// `run`: the job's own run time learned from its input, if the model has one.
    public static func estimate(position: Int, type: String, slots: Int, running: [Running], runTimes: RunTimes,
                                run: RunTimeModel.Prediction? = nil) -> QueueEstimate? {
        guard slots > 0, position >= 1 else { return nil }
        guard let typical = runTimes.median(of: type) ?? run?.seconds ?? runTimes.overallMedian else { return nil }
        var freeAt = running.map { $0.remaining(typical: runTimes.median(of: $0.type) ?? typical) }
        freeAt += Array(repeating: 0, count: max(0, slots - freeAt.count))
        let start = startAfter(ahead: position - 1, slotsFreeAt: freeAt, each: typical)
        let basis = runTimes.samples(of: type) > 0
            ? "median of the last \(runTimes.samples(of: type)) \(type) runs"
            : "median of recent runs of all types"
        let rounded = (typical * 100).rounded() / 100
        var method = "\(position - 1) job(s) ahead at \(rounded) s each (\(basis)) over \(slots) slot(s), after the running jobs' expected remaining time (from their progress where they report it, else from their input)"
        if let run { method += "; its own run: about \((run.seconds * 10).rounded() / 10) s, \(run.method)" }
        return QueueEstimate(startsIn: start, method: method, runSeconds: run.map { ($0.seconds * 10).rounded() / 10 })
    }

    /// When a job starts that has `ahead` jobs of `each` seconds before it, handed out one by one
    /// to whichever slot frees first, the slots freeing `slotsFreeAt` seconds from now.
    ///
    /// Worked out, not played out: a job's status and its submit ask this for its place in the
    /// queue, so handing the jobs out one at a time cost time in proportion to the queue (at
    /// 60,000 queued, 0.2 ms of every submit). Slot `i` frees at `f(i) + j × each` for j = 0, 1, 2…;
    /// the jobs take those times in order, so the job starts at the `ahead + 1`-th smallest of
    /// them. Writing `f(i) = q(i) × each + r(i)` with `0 ≤ r(i) < each` puts the times in rounds
    /// of length `each`: round `L` holds `L × each + r(i)` for every slot with `q(i) ≤ L`, in the
    /// order of `r`. Counting the times before each round finds the round, and `r` the place in it.
    public static func startAfter(ahead: Int, slotsFreeAt freeAt: [Double], each: Double) -> Double {
        guard let first = freeAt.min() else { return 0 }
        // Jobs that take no time (or less than a nanosecond) leave every slot where it is.
        guard ahead > 0, each >= 1e-9, each.isFinite else { return first }
        // A slot whose round would not fit an Int64 frees too late to take any of the jobs.
        let slots = freeAt.compactMap { time -> (round: Int64, offset: Double)? in
            let round = (max(0, time) / each).rounded(.down)
            guard round < 1e15 else { return nil }
            return (Int64(round), min(max(0, time - round * each), each.nextDown))
        }.sorted { $0.round < $1.round }
        let wanted = Int64(ahead) + 1   // the place, counted from 1, of the time the job starts at
        var roundsSum: Int64 = 0
        for (index, slot) in slots.enumerated() {
            // With the first `open` slots taking jobs, rounds before L hold open × L − roundsSum
            // times; the wanted time is in the first round L whose end reaches `wanted`, unless
            // the next slot opens by then.
            let open = Int64(index + 1)
            roundsSum += slot.round
            let round = max(slot.round, (wanted + roundsSum + open - 1) / open - 1)
            if index + 1 < slots.count, round >= slots[index + 1].round { continue }
            let before = open * round - roundsSum
            let offsets = slots[...index].map(\.offset).sorted()
            return Double(round) * each + offsets[Int(wanted - before) - 1]
        }
        return first
    }
}
