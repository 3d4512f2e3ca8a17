/// A job array: one submit that makes N tasks — a render's frames, say. Tasks are ordinary jobs
/// (each queued, run, retried and canceled on its own) that share an array id; the array itself
/// is what its tasks add up to (`ArraySummary`). Task `i` gets its item in `input.item` (the
/// command can use `{input.item}`) and `SPOOL_ARRAY_INDEX` / `SPOOL_ARRAY_ID` in its environment.
///
/// Wire form: `"array": {"items": [...]}` (index = position from 0) or `"array": {"range": [1, 240]}`
/// (index = item = each number, both ends included), with `"fail_fast": true` to cancel the rest
/// once a task fails (by default a failed task does not stop the others).
public struct ArraySpec: Sendable, Hashable {
    public var items: [(index: Int64, item: JSONValue)] {
        switch source {
        case .items(let list): list.enumerated().map { (Int64($0.offset), $0.element) }
        case .range(let range): range.map { ($0, JSONValue.int($0)) }
        }
    }

    public enum Source: Sendable, Hashable {
        case items([JSONValue])
        case range(ClosedRange<Int64>)
    }

    public var source: Source
    public var failFast: Bool

    public var count: Int {
        switch source {
        case .items(let list): list.count
        case .range(let range): range.count
        }
    }

    /// The most tasks one array may have.
    public static let largest = 10_000

    public init(source: Source, failFast: Bool = false) {
        self.source = source
        self.failFast = failFast
    }

    public init(json value: JSONValue) throws(RetryPolicy.Invalid) {
        func fail(_ message: String) -> RetryPolicy.Invalid { RetryPolicy.Invalid(description: "\"array\"" + message) }
        guard case .object(let object) = value else {
            throw fail(" must be an object like {\"range\": [1, 240]} or {\"items\": [...]}")
        }
        if let unknown = object.keys.filter({ !["items", "range", "fail_fast"].contains($0) }).sorted().first {
            throw fail(": unknown field \"\(unknown)\"; it takes items or range, and fail_fast")
        }
        var failFast = false
        if let flag = object["fail_fast"], flag != .null {
            guard let value = flag.boolValue else { throw fail(".fail_fast must be true or false") }
            failFast = value
        }
        switch (object["items"], object["range"]) {
        case (.array(let list)?, nil):
            guard (1...Self.largest).contains(list.count) else { throw fail(".items must hold 1 to \(Self.largest) items") }
            self.init(source: .items(list), failFast: failFast)
        case (nil, .array(let bounds)?):
            // (The span as a report of overflow: a range from far below zero to far above is too long, not a crash.)
            guard bounds.count == 2, let low = bounds[0].intValue, let high = bounds[1].intValue, low <= high,
                  case let (span, overflow) = high.subtractingReportingOverflow(low), !overflow, span < Int64(Self.largest) else {
                throw fail(".range must be [first, last] with first ≤ last, at most \(Self.largest) numbers, both included")
            }
            self.init(source: .range(low...high), failFast: failFast)
        default:
            throw fail(" takes either items (a list) or range ([first, last])")
        }
    }

    /// A fresh array id: `arr_` and the random part of a job id.
    public static func newID() -> String { "arr_" + JobID.random().rawValue.dropFirst(4) }

    public static func isValidID(_ text: String) -> Bool {
        text.hasPrefix("arr_") && JobID("job_" + text.dropFirst(4)) != nil
    }

    /// The most input an array's tasks may store between them (each task stores the submit's
    /// input with its item set).
    public static let maxStoredInputBytes = 64 << 20

    /// Task `index`'s input: the array's input with `item` set (an object input; anything else
    /// becomes `{"item": …}`: the API refuses one).
    public static func taskInput(_ input: JSONValue, item: JSONValue) -> JSONValue {
        var fields = input.objectValue ?? [:]
        fields["item"] = item
        return .object(fields)
    }
}

/// A task's place in its array.
public struct ArrayMembership: Sendable, Hashable {
    public var id: String
    public var index: Int64
    /// Cancel the array's other tasks once this one fails.
    public var failFast: Bool

    public init(id: String, index: Int64, failFast: Bool) {
        self.id = id
        self.index = index
        self.failFast = failFast
    }
}

/// What an array's tasks add up to, as a store counts them.
public struct ArraySummary: Sendable, Hashable {
    public var id: String
    public var type: String
    public var owner: String?
    public var createdAt: Timestamp
    public var failFast: Bool
    public var counts: [JobState: Int]
    /// The sum over tasks of their progress: 1 for each finished one, the reported fraction of
    /// each running one.
    public var progressSum: Double
    /// The queued task that will start last (the one with the highest index), for the ETA.
    public var lastQueued: JobID?

    public init(id: String, type: String, owner: String?, createdAt: Timestamp, failFast: Bool, counts: [JobState: Int],
                progressSum: Double, lastQueued: JobID?) {
        self.id = id
        self.type = type
        self.owner = owner
        self.createdAt = createdAt
        self.failFast = failFast
        self.counts = counts
        self.progressSum = progressSum
        self.lastQueued = lastQueued
    }

    public var size: Int { counts.values.reduce(0, +) }

    /// The array's state: running while any task runs, queued while any waits, then succeeded
    /// when every task did, failed when any failed, else canceled.
    public var state: JobState {
        if counts[.running, default: 0] > 0 { return .running }
        if counts[.queued, default: 0] > 0 { return .queued }
        if counts[.failed, default: 0] > 0 { return .failed }
        if counts[.canceled, default: 0] > 0 { return .canceled }
        return .succeeded
    }

    /// 0…1 over all tasks.
    public var progress: Double { size == 0 ? 0 : min(1, progressSum / Double(size)) }

    /// Adds up tasks (what the memory store does; the database stores do it in SQL).
    public init?(tasks: [Job]) {
        guard let first = tasks.first, let array = first.array else { return nil }
        var counts: [JobState: Int] = [:]
        var sum = 0.0
        for task in tasks {
            counts[task.state, default: 0] += 1
            sum += task.state.isTerminal ? 1 : task.state == .running ? task.progress?.fraction ?? 0 : 0
        }
        let last = tasks.filter { $0.state == .queued }.max { ($0.array?.index ?? 0) < ($1.array?.index ?? 0) }
        self.init(id: array.id, type: first.type, owner: first.owner, createdAt: first.createdAt, failFast: array.failFast,
                  counts: counts, progressSum: sum, lastQueued: last?.id)
    }
}
