/// Something that happened to a job, in the order it happened. Stores write state and
/// progress events in the same transaction as the change itself, so the event log is exactly
/// as durable as the jobs: SSE streams, webhooks and the dashboard all read it, and a client
/// that reconnects with `Last-Event-ID` misses nothing, across a server restart too.
public struct JobEvent: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        /// The job was accepted, started, finished, requeued or asked to cancel.
        case state
        /// The job reported progress.
        case progress
        /// Lines the job wrote to its log (batched).
        case log
        /// The job's output files, once it has finished.
        case outputs
    }

    /// Global, increasing: the SSE `id`.
    public var id: Int64
    public var job: JobID
    /// The job's owner (tenant), so a tenant's stream carries only its own jobs' events.
    public var owner: String?
    public var kind: Kind
    public var at: Timestamp
    public var data: JSONValue

    public init(id: Int64, job: JobID, owner: String? = nil, kind: Kind, at: Timestamp, data: JSONValue) {
        self.id = id
        self.job = job
        self.owner = owner
        self.kind = kind
        self.at = at
        self.data = data
    }

    /// The payload of a state event for `job` as it is now.
    public static func stateData(of job: Job) -> JSONValue {
        var fields: [String: JSONValue] = [
            "job": .string(job.id.rawValue), "type": .string(job.type), "state": .string(job.state.rawValue),
            "attempts": .int(Int64(job.attempts)),
        ]
        if let reason = job.reason { fields["reason"] = .string(reason.rawValue) }
        // A task of a job array says which, so that a stream can follow an array.
        if let array = job.array { fields["array"] = .object(["id": .string(array.id), "index": .int(array.index)]) }
        if let slot = job.slot, job.state == .running { fields["slot"] = .int(Int64(slot.rawValue)) }
        if let error = job.error, job.state.isTerminal { fields["error"] = .string(error) }
        // A job that waits to start (a retry's back-off, run_at, delay_s): until when.
        if job.state == .queued, let notBefore = job.notBefore { fields["not_before"] = .string(notBefore.description) }
        if job.cancelRequested && !job.state.isTerminal { fields["cancel_requested"] = .bool(true) }
        // Who caused the change, where a client did: the submitter, or who canceled it.
        if let canceler = job.canceledBy, job.state == .canceled || job.cancelRequested {
            if !canceler.isEmpty { fields["actor"] = .string(canceler) }   // "" is no token: nobody to name
        } else if let owner = job.owner, job.state == .queued, job.attempts == 0 {
            fields["actor"] = .string(owner)
        }
        return .object(fields)
    }

    public static func progressData(of job: JobID, _ progress: JobProgress) -> JSONValue {
        .object(["job": .string(job.rawValue), "fraction": .double(progress.fraction),
                 "message": progress.message.map(JSONValue.string) ?? .null])
    }

    /// The `data:` text of the SSE frame: the payload with the event's time.
    public var wireData: JSONValue {
        guard case .object(var fields) = data else { return data }
        fields["at"] = .string(at.description)
        return .object(fields)
    }
}
