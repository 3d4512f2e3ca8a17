/// Latency summary over one batch of samples, in milliseconds. Percentiles use the nearest-rank
/// method on the sorted samples (p99 of 2,000 samples is the 1,980th smallest), so every reported
/// value is one that was actually observed.
struct LatencySummary: Sendable {
    let count: Int
    let p50: Double
    let p99: Double
    let max: Double
    let mean: Double

    init(milliseconds samples: [Double]) {
        let sorted = samples.sorted()
        count = sorted.count
        p50 = Self.percentile(0.50, ofSorted: sorted)
        p99 = Self.percentile(0.99, ofSorted: sorted)
        max = sorted.last ?? .nan
        mean = sorted.isEmpty ? .nan : sorted.reduce(0, +) / Double(sorted.count)
    }

    /// Nearest rank: the smallest sample with at least `q` of all samples at or below it.
    static func percentile(_ q: Double, ofSorted sorted: [Double]) -> Double {
        guard !sorted.isEmpty else { return .nan }
        let rank = Int((q * Double(sorted.count)).rounded(.up))
        return sorted[Swift.max(0, Swift.min(sorted.count - 1, rank - 1))]
    }

    /// The median as usually defined (mean of the two middle values for an even count); used for
    /// the dispatch gap, where there are only 19 samples.
    static func median(_ samples: [Double]) -> Double {
        let sorted = samples.sorted()
        guard !sorted.isEmpty else { return .nan }
        let mid = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
    }
}

extension Duration {
    /// This duration in milliseconds, keeping sub-microsecond precision.
    var milliseconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) * 1_000 + Double(attoseconds) / 1e15
    }
}
