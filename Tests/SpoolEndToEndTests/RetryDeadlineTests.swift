import Foundation
import SpoolCore
import Synchronization
import Testing

/// Retries with back-off, delayed starts and start deadlines through the real `spool serve`
/// (SQLite file, real child processes, HTTP over loopback).
@Suite(.serialized) struct RetryDeadlineTests {
    func server() async throws -> ServerHarness { try await ServerHarness.started(slots: 1) }

    func id(_ reply: ServerHarness.Reply) throws -> String {
        try #require(reply.json["id"]?.stringValue, "no id in \(String(decoding: reply.body, as: UTF8.self))")
    }

    func time(_ value: JSONValue?) throws -> Timestamp {
        try #require(value?.stringValue.flatMap(Timestamp.init(rfc3339:)), "not a time: \(String(describing: value))")
    }

    @Test func aFailingJobIsRetriedWithBackoffAndEveryAttemptIsListed() async throws {
        let server = try await server()
        defer { Task { await server.stop() } }
        let retry: JSONValue = .object(["max_attempts": 4, "backoff_s": 0.2, "max_backoff_s": 0.5, "on": .array([75])])
        let submitted = try await server.submit("flaky", .object(["succeed_on": 3]), extra: ["retry": retry])
        #expect(submitted.status == 201)
        #expect(submitted.json["retry"]?["max_attempts"] == .int(4) && submitted.json["max_attempts"] == .int(4))
        let job = try id(submitted)
        let done = try await server.waitFor(job, ["succeeded", "failed", "canceled"])
        #expect(done["state"] == "succeeded" && done["attempts"] == .int(3))

        let reply = try await server.request(.GET, "/v1/jobs/\(job)/attempts")
        #expect(reply.status == 200)
        let attempts = try #require(reply.json["attempts"]?.arrayValue)
        #expect(attempts.map { $0["state"] } == ["queued", "queued", "succeeded"])
        #expect(attempts.map { $0["attempt"] } == [1, 2, 3])
        for failed in attempts.prefix(2) {
            #expect(failed["reason"] == "exit_code" && failed["exit_code"] == .int(75))
            let ended = try time(failed["ended_at"])
            let retryAt = try time(failed["retry_at"])
            #expect(retryAt >= ended && retryAt.secondsSince1970 - ended.secondsSince1970 <= 0.5 + 0.001, "within max_backoff_s")
        }
        for (earlier, later) in zip(attempts, attempts.dropFirst()) {
            let started = try time(later["started_at"]), due = try time(earlier["retry_at"])
            #expect(started >= due, "no attempt starts before its back-off is over")
        }

        // A code the policy does not name fails at once; attempts that run out end in the last failure.
        let other = try id(try await server.submit("fail", .object(["code": 3]), extra: ["retry": retry]))
        let failed = try await server.waitFor(other, ["succeeded", "failed", "canceled"])
        #expect(failed["state"] == "failed" && failed["attempts"] == .int(1))
        let exhausted = try id(try await server.submit("flaky", .object(["succeed_on": 9]),
                                                       extra: ["retry": .object(["max_attempts": 2, "backoff_s": 0])]))
        let last = try await server.waitFor(exhausted, ["succeeded", "failed", "canceled"])
        #expect(last["state"] == "failed" && last["attempts"] == .int(2) && last["exit_code"] == .int(75))

        let bad = try await server.submit("noop", extra: ["retry": .object(["max_attempts": 0])])
        #expect(bad.status == 422 && (bad.json["detail"]?.stringValue ?? "").contains("\"retry\".max_attempts"))
        #expect(try await server.request(.GET, "/v1/jobs/job_0000000000000000000000000/attempts").status == 404)
    }

    /// Found in review of the attempts listing: a job canceled while it waited for its retry kept
    /// its last attempt listed as `queued` with a `retry_at` that never came.
    @Test func aRetryCanceledDuringItsBackOffListsTheAttemptAsTheFailureItWas() async throws {
        let server = try await server()
        defer { Task { await server.stop() } }
        let retry: JSONValue = .object(["max_attempts": 3, "backoff_s": 600, "max_backoff_s": 600, "on": .array([75])])
        let job = try id(try await server.submit("flaky", .object(["succeed_on": 3]), extra: ["retry": retry]))
        let seen = Mutex<[JSONValue]>([])
        // (Its back-off is drawn from [0, 600 s]: a retry that came at once makes this attempt 2.)
        try await poll(.seconds(30), "its first run to fail and its retry to wait") {
            let reply = try await server.request(.GET, "/v1/jobs/\(job)/attempts")
            let attempts = reply.json["attempts"]?.arrayValue ?? []
            seen.withLock { $0 = attempts }
            return reply.json["state"] == "queued" && attempts.last?["retry_at"] != nil
        }
        let waiting = seen.withLock { $0 }
        #expect(waiting.last?["state"] == "queued" && waiting.last?["retry_at"] != nil, "\(waiting)")
        #expect(try await server.request(.POST, "/v1/jobs/\(job)/cancel").status == 200)

        let reply = try await server.request(.GET, "/v1/jobs/\(job)/attempts")
        #expect(reply.json["state"] == "canceled")
        let attempts = try #require(reply.json["attempts"]?.arrayValue)
        #expect(attempts.count == waiting.count, "\(attempts)")
        #expect(attempts.last?["state"] == "failed" && attempts.last?["reason"] == "exit_code" && attempts.last?["exit_code"] == .int(75))
        #expect(attempts.last?["retry_at"] == nil, "no retry is due for a canceled job: \(attempts)")
    }

    @Test func delayedJobsWaitAndDeadlinesRefuseOrCancel() async throws {
        let server = try await server()
        defer { Task { await server.stop() } }
        // Until it is canceled below: the deadline (0.3 s) must pass while it still runs. With
        // 1.5 s, and then 3 s, the job below once ended otherwise than canceled for its deadline on a
        // loaded machine: it ran, the blocker having ended first.
        let blocker = try id(try await server.submit("sleep", .object(["seconds": 600])))
        _ = try await server.waitFor(blocker, ["running"])
        let current = try await server.request(.GET, "/v1/jobs/\(blocker)/attempts")
        #expect(current.json["attempts"]?.arrayValue?.map { $0["state"] } == ["running"])

        // Nothing has run yet, so there is no estimate: the job is taken, and canceled when its deadline passes.
        let hurried = try await server.submit("noop", extra: ["start_within_s": 0.3])
        #expect(hurried.status == 201 && hurried.json["start_by"]?.stringValue != nil)
        let expired = try await server.waitFor(try id(hurried), ["succeeded", "failed", "canceled"])
        #expect(expired["state"] == "canceled" && expired["reason"] == "deadline" && expired["attempts"] == .int(0), "\(expired)")

        let delayedReply = try await server.submit("noop", extra: ["delay_s": 2])
        #expect(delayedReply.status == 201)
        let notBefore = try time(delayedReply.json["not_before"])
        let delayed = try id(delayedReply)
        #expect(try await server.request(.POST, "/v1/jobs/\(blocker)/cancel").status == 202)
        #expect(try await server.waitFor(blocker, ["succeeded", "failed", "canceled"])["state"] == "canceled")
        let ran = try await server.waitFor(delayed, ["succeeded", "failed", "canceled"])
        let ranAt = try time(ran["started_at"])
        #expect(ran["state"] == "succeeded" && ranAt >= notBefore)

        // A sleep that runs to its end (the canceled blocker taught the queue nothing): now the
        // queue knows how long a sleep takes, and a deadline it cannot meet is refused, nothing stored.
        let learned = try id(try await server.submit("sleep", .object(["seconds": 1])))
        #expect(try await server.waitFor(learned, ["succeeded", "failed", "canceled"])["state"] == "succeeded")
        let ahead = [try id(try await server.submit("sleep", .object(["seconds": 1.5]))),
                     try id(try await server.submit("sleep", .object(["seconds": 1.5]))),
                     try id(try await server.submit("sleep", .object(["seconds": 1.5])))]
        let refused = try await server.submit("sleep", .object(["seconds": 1]), extra: ["start_within_s": 1])
        #expect(refused.status == 409, "\(String(decoding: refused.body, as: UTF8.self))")
        #expect(refused.header("Content-Type") == "application/problem+json")
        #expect(refused.json["type"] == "urn:spool:problem:deadline-unreachable")
        #expect((refused.json["estimate"]?["start_in_s"]?.doubleValue ?? 0) > 1)
        let sleeps = try await server.request(.GET, "/v1/jobs?type=sleep")
        #expect(sleeps.json["jobs"]?.arrayValue?.count == 5, "only the accepted jobs are stored")
        // An array is judged by its last task, behind the others (found by attacking the build:
        // only its first was, and most of its tasks were then canceled for their deadline).
        let array = try await server.submit("sleep", .object(["seconds": 1]),
                                            extra: ["array": .object(["range": .array([1, 8])]), "start_within_s": 6])
        #expect(array.status == 409, "\(String(decoding: array.body, as: UTF8.self))")
        #expect(array.json["detail"]?.stringValue?.hasPrefix("the array's last task (of 8) would not start") == true, "\(array.json)")
        // Its other tasks, and the jobs still queued now, which were queued then.
        var stillQueued = 0
        for job in ahead where try await server.request(.GET, "/v1/jobs/\(job)").json["state"] == "queued" { stillQueued += 1 }
        #expect((array.json["queued_ahead"]?.intValue ?? 0) >= 7 + stillQueued, "\(array.json)")
        for job in ahead { _ = try await server.request(.POST, "/v1/jobs/\(job)/cancel") }
        for job in ahead { _ = try await server.waitFor(job, ["succeeded", "failed", "canceled"]) }

        // Jobs delayed past the deadline cannot hold the new one up before it: not counted ahead.
        var later: [String] = []
        for _ in 0..<3 { later.append(try id(try await server.submit("sleep", .object(["seconds": 1.5]), extra: ["delay_s": 3600]))) }
        let inTime = try await server.submit("sleep", .object(["seconds": 0.1]), extra: ["start_within_s": 1])
        #expect(inTime.status == 201, "\(String(decoding: inTime.body, as: UTF8.self))")
        for job in later { _ = try await server.request(.POST, "/v1/jobs/\(job)/cancel") }
    }

    @Test func anIdenticalRequestJoinsOrReusesAJobInsteadOfRunningTwice() async throws {
        let server = try await server()
        defer { Task { await server.stop() } }
        // Long enough to still be queued or running when the next submit comes: in a full run the
        // test process can stall for seconds between two requests, and a 0.5-s job had ended by
        // then (the repeat made a new job, and the reuse below found that one).
        let input: JSONValue = .object(["seconds": 3])
        let first = try await server.submit("sleep", input, extra: ["dedup": "queued"])
        #expect(first.status == 201 && first.header("Spool-Dedup") == nil)
        let job = try id(first)
        let joined = try await server.submit("sleep", input, extra: ["dedup": "queued"])
        let joinedID = try id(joined)
        #expect(joined.status == 200 && joined.header("Spool-Dedup") == "joined" && joinedID == job)
        #expect(joined.header("Location") == "/v1/jobs/\(job)")
        // A request that joins under an Idempotency-Key holds the key: sent again once the job
        // has ended (when it would no longer join), it still answers that job.
        let keyedJoin = try await server.submit("sleep", input, extra: ["dedup": "queued"], key: "join-1")
        let keyedJoinID = try id(keyedJoin)
        #expect(keyedJoin.status == 200 && keyedJoinID == job && keyedJoin.header("Spool-Dedup") == "joined")
        // Its repeat answers as it did: the job is another request's (found in review: no Spool-Dedup).
        let keyedRepeat = try await server.submit("sleep", input, extra: ["dedup": "queued"], key: "join-1")
        #expect(keyedRepeat.status == 200 && keyedRepeat.json["id"]?.stringValue == job && keyedRepeat.header("Spool-Dedup") == "joined")
        // A key names the identity: another input with the same key joins too.
        // (Long enough to still be queued or running under a loaded test run: it joins only those.)
        let keyed = try id(try await server.submit("sleep", .object(["seconds": 2]), extra: ["dedup_key": "frame-7"]))
        let sameKey = try await server.submit("sleep", .object(["seconds": 0.3]), extra: ["dedup_key": "frame-7"])
        let sameKeyID = try id(sameKey)
        let keyedNow = try await server.request(.GET, "/v1/jobs/\(keyed)").json
        #expect(sameKey.status == 200 && sameKeyID == keyed,
                "\(sameKey.status): \(String(decoding: sameKey.body, as: UTF8.self)); the keyed job: \(keyedNow)")

        #expect(try await server.waitFor(job, ["succeeded", "failed", "canceled"])["state"] == "succeeded")
        let reused = try await server.submit("sleep", input, extra: ["dedup": .object(["succeeded_within_s": 600])])
        let reusedID = try id(reused)
        #expect(reused.status == 200 && reused.header("Spool-Dedup") == "reused" && reusedID == job)
        #expect(reused.json["state"] == "succeeded")
        let keyedAgain = try await server.submit("sleep", input, extra: ["dedup": "queued"], key: "join-1")
        let keyedAgainID = try id(keyedAgain)
        #expect(keyedAgain.status == 200 && keyedAgainID == job && keyedAgain.header("Spool-Dedup") == "reused", "\(keyedAgain.status)")
        let keyedOther = try await server.submit("sleep", .object(["seconds": 0.1]), key: "join-1")
        #expect(keyedOther.status == 409, "\(keyedOther.status)")
        // Only joining queued or running jobs, or no dedup at all: the request runs again.
        #expect(try await server.submit("sleep", input, extra: ["dedup": "queued"]).status == 201)
        #expect(try await server.submit("sleep", input).status == 201)

        let bad = try await server.submit("sleep", input, extra: ["dedup": "always"])
        #expect(bad.status == 422 && (bad.json["detail"]?.stringValue ?? "").contains("\"dedup\" must be"))
    }
}
