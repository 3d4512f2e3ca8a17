import Foundation

extension ScenarioRunner {
    /// Scenario 5: RSS of the idle server; then, with the slot held by a `hold` job, submit p99 at an
    /// (almost) empty queue, a fill to `queued` jobs, RSS at that depth, and submit p99 there.
    func measureMemory(on subject: BenchSubject) async throws -> ScenarioResult {
        try await withServer(.memory, subject) { client, server, _ in
            try await Task.sleep(for: .seconds(1))
            let idle = server.residentBytes
            try await occupySlot(client, seconds: 7200)
            let body = JobClient.submitBody(type: "noop")
            let warmup = 200
            _ = try await submitLoad(client, total: warmup, body: body)
            let empty = try await submitLoad(client, total: counts.probeSubmits, body: body)
            let fillCount = max(0, counts.queued - warmup - counts.probeSubmits)
            progress("    \(subject.rawValue): filling the queue with \(fillCount.grouped) more jobs")
            let fill = try await submitLoad(client, total: fillCount, body: body)
            let depth = try await client.queuedCount()
            try await Task.sleep(for: .seconds(1))
            let rssAtDepth = server.residentBytes
            let deep = try await submitLoad(client, total: counts.probeSubmits, body: body)
            let rssAfter = server.residentBytes

            var result = ScenarioResult()
            result[.rssIdle] = idle.map { Double($0) / 1e6 }
            if let rssAtDepth, let rssAfter { result[.rssQueued] = Double(max(rssAtDepth, rssAfter)) / 1e6 }
            let emptyP99 = empty.summary.p99
            let deepP99 = deep.summary.p99
            result[.submitP99Empty] = emptyP99
            result[.submitP99Deep] = deepP99
            result[.submitP99Growth] = deepP99 / emptyP99
            result[.fillRate] = fill.requestsPerSecond
            result.notes.append("\(subject.title): GET /v1/queue reported \(depth.grouped) queued after the fill; "
                + "submit p50 \(empty.summary.p50.fixed(3)) ms empty vs \(deep.summary.p50.fixed(3)) ms deep; "
                + "RSS \(((Double(rssAtDepth ?? 0)) / 1e6).fixed(1)) MB at \(depth.grouped) queued, "
                + "\(((Double(rssAfter ?? 0)) / 1e6).fixed(1)) MB after \(counts.probeSubmits.grouped) more")
            if depth < counts.queued {
                result.notes.append("\(subject.title): WARNING fewer jobs queued than intended (\(depth.grouped) < \(counts.queued.grouped))")
            }
            return result
        }
    }
}
