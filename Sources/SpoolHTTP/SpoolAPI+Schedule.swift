import Foundation
import HTTPTypes
import Hummingbird
import SpoolCore

/// Time in the queue over HTTP: a queued job's start estimate with its `not_before`, the
/// `start_within_s` check at submit, and a job's attempts (`GET /v1/jobs/{id}/attempts`).
extension SpoolAPI {
    /// When a queued job should start: the queue's estimate, or its `notBefore` if that is later.
    func startEstimate(of job: Job, position: Int, now: Timestamp) -> QueueEstimate? {
        guard var estimate = scheduler.estimate(position: position, type: job.type, input: job.input) else { return nil }
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
    func checkDeadline(of job: Job) async throws {
        guard let startBy = job.startBy else { return }
        let now = WallClock.now()
        let ahead = try await store.queuedAhead(ofNew: job, dueBy: startBy)
        guard let estimate = startEstimate(of: job, position: ahead + 1, now: now) else { return }
        let start = now.adding(seconds: estimate.startsIn)
        guard start > startBy else { return }
        let within = Double(startBy.microseconds - (job.notBefore ?? job.createdAt).microseconds) / 1_000_000
        throw APIError(status: .conflict, code: "deadline-unreachable",
                       detail: "the job would not start within its start_within_s of \(InputSchema.format(within)) s: \(ahead) job(s) wait ahead of it "
                           + "and the queue's estimate is a start in \(InputSchema.format((estimate.startsIn * 10).rounded() / 10)) s; "
                           + "nothing was stored",
                       extra: ["estimate": .object(["start_in_s": .double((estimate.startsIn * 10).rounded() / 10),
                                                    "start_at": .string(start.description), "method": .string(estimate.method)]),
                               "start_by": .string(startBy.description), "queued_ahead": .int(Int64(ahead))])
    }

    /// Every attempt of a job, oldest first: those that ended (how, and when a retry was due)
    /// and the one running now.
    @Sendable func attempts(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let job = try await find(try jobID(context), for: context.principal)
        var list = job.attemptLog.map(\.json)
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
