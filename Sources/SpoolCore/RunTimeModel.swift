import Foundation

/// How long a job of a type will run, learned from its input: per type, a least-squares fit of
/// log(run time) on the log of each numeric input field (a render's time grows with width ×
/// height × samples: a power law, which is a straight line in logs), refitted as jobs finish.
///
/// It answers only when it has earned it: enough runs for the fields it uses, and a fit that
/// beats the type's median on the runs it has seen (leave-one-out). Otherwise nil, and the
/// caller falls back to the median — as for a type whose input has no numbers, or whose numbers
/// do not drive its time (a `seed`). Plain arithmetic over the recent runs: no I/O.
public struct RunTimeModel: Sendable {
    public struct Sample: Sendable, Equatable {
        public var features: [String: Double]
        public var seconds: Double
    }

    /// A prediction and how it was made, in words.
    public struct Prediction: Sendable, Equatable {
        public var seconds: Double
        public var method: String
    }

    public private(set) var samples: [String: [Sample]] = [:]
    public let window: Int
    /// Fits by type, dropped when the type's runs change.
    private var fits: [String: Fit?] = [:]

    public init(window: Int = 100) { self.window = window }

    /// The numeric top-level fields of an input, as logs (a field ≤ 0 is left out: no log).
    public static func features(of input: JSONValue) -> [String: Double] {
        guard case .object(let fields) = input else { return [:] }
        var features: [String: Double] = [:]
        for (name, value) in fields {
            guard let number = value.doubleValue, number > 0, number.isFinite else { continue }
            features[name] = log(number)
        }
        return features
    }

    public mutating func record(type: String, input: JSONValue, seconds: Double) {
        guard seconds.isFinite, seconds > 0 else { return }
        var list = samples[type, default: []]
        list.append(Sample(features: Self.features(of: input), seconds: seconds))
        if list.count > window { list.removeFirst(list.count - window) }
        samples[type] = list
        fits[type] = nil
    }

    /// This input's run time for `type`, or nil when the fit has not earned its keep.
    public mutating func predict(type: String, input: JSONValue) -> Prediction? {
        let fit: Fit?
        if let cached = fits[type] {
            fit = cached
        } else {
            fit = Fit(samples[type] ?? [])
            fits[type] = .some(fit)
        }
        guard let fit else { return nil }
        let features = Self.features(of: input)
        var logSeconds = fit.coefficients[0]
        for (index, name) in fit.names.enumerated() {
            guard let value = features[name] else { return nil }   // a field the fit needs is missing
            logSeconds += fit.coefficients[index + 1] * value
        }
        let seconds = exp(logSeconds)
        guard seconds.isFinite else { return nil }
        return Prediction(seconds: seconds, method: fit.description)
    }

    /// A least-squares fit of log(seconds) = b0 + Σ bi · log(field i).
    struct Fit: Sendable {
        var names: [String]
        var coefficients: [Double]
        var runs: Int
        /// Leave-one-out median absolute error (in log seconds) of the fit, and of the median.
        var error: Double
        var medianError: Double

        var description: String {
            "learned from the input: log-linear in \(names.joined(separator: ", ")) over the last \(runs) runs "
                + "(typical error \(Self.percent(error)) vs \(Self.percent(medianError)) for the median)"
        }

        static func percent(_ logError: Double) -> String { "\(Int(((exp(logError) - 1) * 100).rounded())) %" }

        /// nil with too few runs, no field that varies, or a fit no better than the median.
        init?(_ samples: [Sample]) {
            guard samples.count >= 8 else { return nil }
            // Fields present in every run and not constant.
            var names = Set(samples[0].features.keys)
            for sample in samples.dropFirst() { names.formIntersection(sample.features.keys) }
            let varying = names.sorted().filter { name in
                let values = samples.map { $0.features[name]! }
                return (values.max()! - values.min()!) > 1e-9
            }
            guard !varying.isEmpty, samples.count >= varying.count + 4 else { return nil }
            let rows = samples.map { sample in [1.0] + varying.map { sample.features[$0]! } }
            let targets = samples.map { log($0.seconds) }
            guard let coefficients = Self.solve(rows, targets) else { return nil }
            // Leave-one-out errors of both predictors, so a fit that only memorises loses.
            // (The most recent 40 runs are held out in turn: enough to judge, cheap to refit.)
            var fitErrors: [Double] = [], medianErrors: [Double] = []
            for held in samples.indices.suffix(40) {
                var trainRows = rows, trainTargets = targets
                trainRows.remove(at: held)
                trainTargets.remove(at: held)
                guard let held_b = Self.solve(trainRows, trainTargets) else { return nil }
                let predicted = zip(held_b, rows[held]).map(*).reduce(0, +)
                fitErrors.append(abs(predicted - targets[held]))
                medianErrors.append(abs(Self.median(trainTargets) - targets[held]))
            }
            let error = Self.median(fitErrors), medianError = Self.median(medianErrors)
            guard error < medianError * 0.8 else { return nil }
            self.names = varying
            self.coefficients = coefficients
            self.runs = samples.count
            self.error = error
            self.medianError = medianError
        }

        static func median(_ values: [Double]) -> Double {
            let sorted = values.sorted()
            return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        }

        /// Ordinary least squares by the normal equations (a few columns), with a whisper of
        /// ridge so nearly collinear fields do not blow up; Gaussian elimination with pivoting.
        static func solve(_ rows: [[Double]], _ targets: [Double]) -> [Double]? {
            let width = rows[0].count
            var matrix = [[Double]](repeating: [Double](repeating: 0, count: width + 1), count: width)
            for (row, target) in zip(rows, targets) {
                for i in 0..<width {
                    for j in 0..<width { matrix[i][j] += row[i] * row[j] }
                    matrix[i][width] += row[i] * target
                }
            }
            for i in 1..<max(1, width) { matrix[i][i] += 1e-9 * Double(rows.count) }
            for column in 0..<width {
                let pivot = (column..<width).max { abs(matrix[$0][column]) < abs(matrix[$1][column]) }!
                guard abs(matrix[pivot][column]) > 1e-12 else { return nil }
                matrix.swapAt(column, pivot)
                for row in 0..<width where row != column {
                    let factor = matrix[row][column] / matrix[column][column]
                    if factor == 0 { continue }
                    for k in column...width { matrix[row][k] -= factor * matrix[column][k] }
                }
            }
            return (0..<width).map { matrix[$0][width] / matrix[$0][$0] }
        }
    }
}
