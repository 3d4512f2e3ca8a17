import Foundation
import SpoolCore

struct QueueResource {
    struct Slot {
        let id: SlotID
        let gpu: String?
        /// Runs a job (perhaps another tenant's, which `job` then does not show).
        let busy: Bool
        let job: JobWire?
        var worker: JSONValue = .null
        var unhealthy: [JSONValue] = []
        /// Why and since when the slot takes no jobs (GPU quarantine).
        var quarantine: SlotQuarantine.Entry?
        var json: JSONValue {
            .object(["id": .int(Int64(id.rawValue)), "gpu": gpu.map(JSONValue.string) ?? .null,
                     "state": .string(busy ? "busy" : quarantine != nil ? "quarantined" : "idle"), "job": job?.json ?? .null,
                     "worker": worker, "unhealthy": .array(unhealthy),
                     "quarantine": quarantine.map { .object(["reasons": .array($0.reasons.map(JSONValue.string)),
                                                             "since": .string($0.since.description)]) } ?? .null])
        }
    }
    let queued: Int
    /// The caller's own queued jobs, for a tenant.
    let mine: Int?
    let accepting: Bool
    let slots: [Slot]
    var json: JSONValue {
        var fields: [String: JSONValue] = ["queued": .int(Int64(queued)), "accepting": .bool(accepting), "slots": .array(slots.map(\.json))]
        if let mine { fields["queued_mine"] = .int(Int64(mine)) }
        return .object(fields)
    }
}

/// The submit body: `{"type", "input"?, "priority"?, "timeout_s"?, "webhook"?, "webhook_events"?,
/// "retry"?, "run_at"?, "delay_s"?, "start_within_s"?}`; nothing else.
struct SubmitBody {
    static let fields: Set<String> = ["type", "input", "priority", "timeout_s", "webhook", "webhook_events", "retry", "run_at", "delay_s",
                                      "start_within_s", "dedup", "dedup_key", "array"]
    static let webhookEvents: Set<String> = ["started", "progress", "completed"]

    let submission: Submission

    init(_ value: JSONValue, idempotencyKey: String?) throws(APIError) {
        guard case .object(let object) = value else {
            throw APIError.unprocessable("the request body must be a JSON object like {\"type\": \"render\", \"input\": {…}}")
        }
        // Every field's problem is named in one answer (found in review: a client fixed one per round
        // trip), an unknown field's too.
        var problems: [String] = []
        let unknown = object.keys.filter { !Self.fields.contains($0) }.sorted()
        if !unknown.isEmpty {
            problems.append("unknown field(s) \(unknown.map { "\"\($0)\"" }.joined(separator: ", ")); "
                            + "a job takes type, input, priority, timeout_s, webhook, webhook_events, retry, run_at, delay_s, start_within_s, dedup, dedup_key and array")
        }
        @discardableResult func checked<T>(_ body: () throws(APIError) -> T) -> T? {
            do { return try body() } catch {
                problems.append(error.detail)
                return nil
            }
        }
        let type = checked { () throws(APIError) -> String in
            guard let type = object["type"]?.stringValue else {
                throw APIError.unprocessable("\"type\" is required and must be a string naming a job type")
            }
            return type
        }
        let priority = checked { () throws(APIError) -> Int in
            guard let value = object["priority"], value != .null else { return 0 }
            guard let number = value.intValue, let int = Int(exactly: number) else {
                throw APIError.unprocessable("\"priority\" must be an integer")
            }
            return int
        }
        let timeout = checked { () throws(APIError) -> Double? in try Self.seconds(object["timeout_s"], "timeout_s") } ?? nil
        let input = object["input"].flatMap { $0 == .null ? nil : $0 } ?? .object([:])
        var submission = Submission(type: type ?? "", input: input, priority: priority ?? 0, timeoutSeconds: timeout, idempotencyKey: idempotencyKey)
        checked { () throws(APIError) in
            guard let value = object["webhook"], value != .null else { return }
            guard let url = value.stringValue else { throw APIError.unprocessable("\"webhook\" must be an http:// or https:// URL") }
            do { _ = try WebhookTarget.parse(url) } catch { throw APIError.unprocessable("\"webhook\": \(error)") }
            guard Self.isWebhookURL(url) else { throw APIError.unprocessable("\"webhook\" must be an http:// or https:// URL with a host") }
            submission.webhookURL = url
            submission.webhookEvents = ["completed"]
        }
        checked { () throws(APIError) in
            guard let value = object["webhook_events"], value != .null else { return }
            guard case .array(let list) = value, !list.isEmpty,
                  list.allSatisfy({ $0.stringValue.map(Self.webhookEvents.contains) == true }) else {
                throw APIError.unprocessable("\"webhook_events\" must be a non-empty list of started, progress, completed")
            }
            // (A "webhook" refused above is named there already.)
            guard submission.webhookURL != nil || object["webhook"].map({ $0 != .null }) == true else {
                throw APIError.unprocessable("\"webhook_events\" needs a \"webhook\" URL")
            }
            submission.webhookEvents = Array(Set(list.compactMap(\.stringValue))).sorted()
        }
        checked { () throws(APIError) in
            guard let value = object["retry"], value != .null else { return }
            do { submission.retry = try RetryPolicy(json: value) } catch { throw APIError.unprocessable("\(error)") }
        }
        checked { () throws(APIError) in
            guard let value = object["run_at"], value != .null else { return }
            guard let text = value.stringValue, let time = Timestamp(rfc3339: text) else {
                throw APIError.unprocessable("\"run_at\" must be an RFC 3339 time, like \"2026-12-24T18:00:00Z\" or \"2026-12-24T19:00:00+01:00\"")
            }
            submission.runAt = time
        }
        submission.delaySeconds = checked { () throws(APIError) in try Self.seconds(object["delay_s"], "delay_s") } ?? nil
        submission.startWithinSeconds = checked { () throws(APIError) in try Self.seconds(object["start_within_s"], "start_within_s") } ?? nil
        checked { () throws(APIError) in
            guard let value = object["dedup"], value != .null else { return }
            do { submission.dedup = try Dedup(json: value) } catch { throw APIError.unprocessable("\(error)") }
        }
        checked { () throws(APIError) in
            guard let value = object["array"], value != .null else { return }
            do { submission.array = try ArraySpec(json: value) } catch { throw APIError.unprocessable("\(error)") }
        }
        checked { () throws(APIError) in
            guard let value = object["dedup_key"], value != .null else { return }
            guard let key = value.stringValue else { throw APIError.unprocessable("\"dedup_key\" must be a string of 1 to 255 characters") }
            submission.dedupKey = key
        }
        switch problems.count {
        case 0: break
        case 1: throw APIError.unprocessable(problems[0])
        default: throw APIError.unprocessable("\(problems.count) problems with the request: " + problems.joined(separator: "; "), errors: problems)
        }
        self.submission = submission
    }

    private static func seconds(_ value: JSONValue?, _ name: String) throws(APIError) -> Double? {
        guard let value, value != .null else { return nil }
        guard let number = value.doubleValue else { throw APIError.unprocessable("\"\(name)\" must be a number of seconds") }
        return number
    }

    /// `http://` or `https://`, a URL that parses (RFC 3986: no spaces, balanced brackets), a
    /// host, and a port in range if there is one: a webhook that could never be delivered is
    /// refused at submit instead of failing every attempt later. The scheme in any case
    /// (`HTTPS://`): RFC 3986 makes it case-insensitive, and the guard and the HTTP client read
    /// it so (found by attacking the build: an upper-case scheme was refused as not http).
    static func isWebhookURL(_ text: String) -> Bool {
        let scheme = text.prefix(8).lowercased()
        guard scheme.hasPrefix("http://") || scheme.hasPrefix("https://"), let components = URLComponents(string: text),
              let host = components.host, !host.isEmpty else { return false }
        return components.port.map { (1...65_535).contains($0) } ?? true
    }
}
