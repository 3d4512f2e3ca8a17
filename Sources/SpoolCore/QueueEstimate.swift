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
        for _ in 0..<(position - 1) {
            let index = freeAt.indices.min { freeAt[$0] < freeAt[$1] }!
            freeAt[index] += typical
        }
        let start = freeAt.min() ?? 0
        let basis = runTimes.samples(of: type) > 0
            ? "median of the last \(runTimes.samples(of: type)) \(type) runs"
            : "median of recent runs of all types"
        let rounded = (typical * 100).rounded() / 100
        var method = "\(position - 1) job(s) ahead at \(rounded) s each (\(basis)) over \(slots) slot(s), after the running jobs' expected remaining time (from their progress where they report it, else from their input)"
        if let run { method += "; its own run: about \((run.seconds * 10).rounded() / 10) s, \(run.method)" }
        return QueueEstimate(startsIn: start, method: method, runSeconds: run.map { ($0.seconds * 10).rounded() / 10 })
    }
}
