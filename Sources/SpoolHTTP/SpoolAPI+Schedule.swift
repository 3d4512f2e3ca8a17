import Foundation
import HTTPTypes
import Hummingbird
import SpoolCore
import SpoolStore

/// Time in the queue over HTTP: a queued job's start estimate with its `not_before`, the
/// `start_within_s` check at submit, and a job's attempts (`GET /v1/jobs/{id}/attempts`).
extension SpoolAPI {
    /// When a queued job should start: the queue's estimate, or later where something else holds
    /// it back for longer — its tenant at its `max_running`, its worker type that no slot can set
    /// up now, its `notBefore` (found by attacking the build: with the tenant's one allowed job
    /// running and a slot idle, the estimate said 0 s, and a `start_within_s` job was taken and
    /// then canceled for its deadline).
    func startEstimate(of job: Job, position: Int, now: Timestamp) -> QueueEstimate? {
        // No slot takes anything while all are quarantined: no time to say (found in review: 0 s).
        guard !scheduler.allSlotsQuarantined || store is any SharedJobStore else { return nil }
        var estimate = scheduler.estimate(position: position, type: job.type, input: job.input)
        // A worker type no slot can set up now waits for the next try, even with nothing learned yet.
        if let wait = scheduler.setupRetryIn(for: job.type), wait > estimate?.startsIn ?? 0 {
            estimate = QueueEstimate(startsIn: wait, method: "no slot can set up its worker type \"\(job.type)\" before its next try in "
                                         + "\(InputSchema.format(Self.rounded(wait))) s; " + (estimate?.method ?? "nothing has run yet to say more"),
                                     runSeconds: estimate?.runSeconds)
        }
        guard var estimate else { return nil }
        if let owner = job.owner, let cap = tokens.principal(named: owner)?.limits.maxRunning,
           let wait = scheduler.capFreesIn(owner: owner, cap: cap), wait > estimate.startsIn {
            estimate.startsIn = wait
            estimate.method = "its tenant runs its max_running of \(cap) job(s), the first to end in about \(InputSchema.format(Self.rounded(wait))) s; "
                + estimate.method
        }
        return later(estimate, than: job, now: now)
    }

    /// `estimate`, or the job's `notBefore` when that is later.
    private func later(_ estimate: QueueEstimate, than job: Job, now: Timestamp) -> QueueEstimate {
        var estimate = estimate
        if let notBefore = job.notBefore {
            let wait = notBefore.secondsSince1970 - now.secondsSince1970
            if wait > estimate.startsIn {
                estimate.startsIn = wait
                estimate.method = "not before \(notBefore) (run_at, delay_s or a retry's back-off); " + estimate.method
            }
        }
        return estimate
    }

    /// `start_within_s`: refuses (409, nothing stored) a job the queue's estimate already says
    /// cannot start by its deadline. With nothing learned yet there is no estimate, and the job
    /// is taken: its deadline still cancels it if it comes to pass.
    /// `tasks`: for an array (its first task given), how many tasks it has: its last must start
    /// in time too, behind the others (found by attacking the build: only the first was judged,
    /// and the array was taken with most of its tasks then canceled for their deadline).
    func checkDeadline(of job: Job, tasks: Int = 1) async throws {
        guard let startBy = job.startBy else { return }
        if scheduler.allSlotsQuarantined, !(store is any SharedJobStore) {
            throw APIError(status: .conflict, code: "deadline-unreachable",
                           detail: "every slot is quarantined: the job could not start within its start_within_s; nothing was stored",
                           extra: ["start_by": .string(startBy.description)])
        }
        let now = WallClock.now()
        let ahead = try await store.queuedAhead(ofNew: job, dueBy: startBy) + max(0, tasks - 1)
        guard let estimate = startEstimate(of: job, position: ahead + 1, now: now) else { return }
        let start = now.adding(seconds: estimate.startsIn)
        guard start > startBy else { return }
        let within = Double(startBy.microseconds - (job.notBefore ?? job.createdAt).microseconds) / 1_000_000
        throw APIError(status: .conflict, code: "deadline-unreachable",
                       detail: "\(tasks > 1 ? "the array's last task (of \(tasks))" : "the job") would not start within its start_within_s of "
                           + "\(InputSchema.format(within)) s: \(ahead) job(s) wait ahead of it"
                           + "\(tasks > 1 ? ", the array's other tasks included," : "") "
                           + "and the queue's estimate is a start in \(InputSchema.format(Self.rounded(estimate.startsIn))) s; "
                           + "nothing was stored",
                       extra: ["estimate": .object(["start_in_s": .double(Self.rounded(estimate.startsIn)),
                                                    "start_at": .string(start.description), "method": .string(estimate.method)]),
                               "start_by": .string(startBy.description), "queued_ahead": .int(Int64(ahead))])
    }

    /// Seconds as a refusal or a method says them: to the millisecond (to a tenth, a deadline of
    /// 1 ms refused read "a start in 0 s", found by attacking the build).
    static func rounded(_ seconds: Double) -> Double { (seconds * 1000).rounded() / 1000 }

    /// Every attempt of a job, oldest first: those that ended (how, and when a retry was due)
    /// and the one running now.
    @Sendable func attempts(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let job = try await find(try jobID(context), for: context.principal)
        var list = job.endedAttempts.map(\.json)
        if job.state == .running, case .object(var current) = JobWire(job: job).json {
            current = current.filter { ["slot", "node", "started_at", "progress"].contains($0.key) }
            current["attempt"] = .int(Int64(job.attempts))
            current["state"] = .string(JobState.running.rawValue)
            list.append(.object(current))
        }
        var fields: [String: JSONValue] = ["job": .string(job.id.rawValue), "state": .string(job.state.rawValue),
                                           "attempts": .array(list), "max_attempts": .int(Int64(job.maxAttempts))]
        fields["retry"] = job.retry?.json ?? .null
        fields["not_before"] = job.state == .queued ? job.notBefore.map { .string($0.description) } ?? .null : .null
        return json(.object(fields))
    }
}
