import Foundation

extension ScenarioRunner {
    /// Scenario 5: RSS of the idle server; then, with the slot held by a `hold` job, submit p99 at an
    /// (almost) empty queue, a fill to `queued` jobs, RSS at that depth, submit p99 there, and the
    /// status of a job halfway down. A few `noop` jobs run first, so the queue has learned how long
    /// one takes and every answer carries an ETA, as a server that has run jobs does.
    func measureMemory(on subject: BenchSubject) async throws -> ScenarioResult {
        try await withServer(.memory, subject) { client, server, _ in
            try await Task.sleep(for: .seconds(1))
            let idle = server.residentBytes
            for _ in 0..<3 { _ = try await client.wait(for: try await client.submit(type: "noop").id, toReach: ["succeeded"]) }
            try await occupySlot(client, seconds: 7200)
            let body = JobClient.submitBody(type: "noop")
            let warmup = 200
            _ = try await submitLoad(client, total: warmup, body: body)
            let empty = try await submitLoad(client, total: counts.probeSubmits, body: body)
            let fillCount = max(0, counts.queued - warmup - counts.probeSubmits)
            progress("    \(subject.rawValue): filling the queue with \(fillCount.grouped) more jobs")
            let firstHalf = try await submitLoad(client, total: fillCount / 2, body: body)
            let halfway = try await client.submit(type: "noop")
            let secondHalf = try await submitLoad(client, total: fillCount - fillCount / 2, body: body)
            let depth = try await client.queuedCount()
            try await Task.sleep(for: .seconds(1))
            let rssAtDepth = server.residentBytes
            let deep = try await submitLoad(client, total: counts.probeSubmits, body: body)
            let rssAfter = server.residentBytes
            let halfwayPath = "/v1/jobs/\(halfway.id)"
            let status = try await LoadGenerator.run(total: counts.probeSubmits, clients: 1) { _ in try await client.getUnparsed(halfwayPath) }
            let halfwayNow = try await client.job(halfway.id)

            var result = ScenarioResult()
            result[.rssIdle] = idle.map { Double($0) / 1e6 }
            if let rssAtDepth, let rssAfter { result[.rssQueued] = Double(max(rssAtDepth, rssAfter)) / 1e6 }
            let emptyP99 = empty.summary.p99
            let deepP99 = deep.summary.p99
            result[.submitP99Empty] = emptyP99
            result[.submitP99Deep] = deepP99
            result[.submitP99Growth] = deepP99 / emptyP99
            result[.fillRate] = Double(fillCount) / (firstHalf.wallSeconds + secondHalf.wallSeconds)
            result[.statusDeepP50] = status.summary.p50
            result[.statusDeepP99] = status.summary.p99
            result.notes.append("\(subject.title): GET /v1/queue reported \(depth.grouped) queued after the fill; "
                + "submit p50 \(empty.summary.p50.fixed(3)) ms empty vs \(deep.summary.p50.fixed(3)) ms deep; "
                + "RSS \(((Double(rssAtDepth ?? 0)) / 1e6).fixed(1)) MB at \(depth.grouped) queued, "
                + "\(((Double(rssAfter ?? 0)) / 1e6).fixed(1)) MB after \(counts.probeSubmits.grouped) more")
            result.notes.append("\(subject.title): the halfway job's GET: position \(halfwayNow.position.map { $0.grouped } ?? "none"), "
                + "ETA \(halfwayNow.eta.map { "\($0.startInSeconds.fixed(1)) s" } ?? "none")")
            if depth < counts.queued {
                result.notes.append("\(subject.title): WARNING fewer jobs queued than intended (\(depth.grouped) < \(counts.queued.grouped))")
            }
            return result
        }
    }
}
