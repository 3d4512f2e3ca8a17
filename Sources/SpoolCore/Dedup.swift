/// Result reuse (`dedup` at submit): a request identical to a job of the same owner — the same
/// type and canonical input, or the same `dedup_key` — joins that job while it is queued or
/// running, or (with `succeededWithin`) gets it once it has succeeded, instead of running twice.
/// Only jobs submitted with `dedup` (or of a type that has it) take part; failed and canceled
/// jobs are never reused.
///
/// Wire form: `"dedup": "queued"` (join a queued or running job) or
/// `"dedup": {"succeeded_within_s": 3600}` (that, or a job that succeeded at most an hour ago);
/// `"dedup_key": "frame-0042"` names the identity instead of the input.
public struct Dedup: Sendable, Hashable {
    /// Also reuse a job that succeeded at most this many seconds ago (nil: only queued or running ones).
    public var succeededWithin: Double?

    public init(succeededWithin: Double? = nil) { self.succeededWithin = succeededWithin }

    public static let longestWindow = 30 * 86_400.0

    /// What a store compares (hashed by the caller): the client's key, or the type and canonical input.
    public static func identity(type: String, input: JSONValue, key: String?) -> String {
        if let key { return "key\u{0}" + type + "\u{0}" + key }
        return "input\u{0}" + type + "\u{0}" + input.canonicalText
    }

    public var json: JSONValue {
        succeededWithin.map { .object(["succeeded_within_s": .double($0)]) } ?? .string("queued")
    }

    public init(json value: JSONValue, what: String = "dedup") throws(RetryPolicy.Invalid) {
        let usage = "\"\(what)\" must be \"queued\" (join an identical queued or running job) or {\"succeeded_within_s\": S} (or reuse one that succeeded at most S seconds ago)"
        switch value {
        case .string("queued"):
            self.init()
        case .object(let object):
            guard object.keys.allSatisfy({ $0 == "succeeded_within_s" }), let seconds = object["succeeded_within_s"]?.doubleValue,
                  seconds.isFinite, seconds >= 0, seconds <= Self.longestWindow else {
                throw RetryPolicy.Invalid(description: usage + ", S from 0 to \(Int(Self.longestWindow))")
            }
            self.init(succeededWithin: seconds)
        default:
            throw RetryPolicy.Invalid(description: usage)
        }
    }
}
