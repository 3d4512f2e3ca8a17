/// The outcome of one closed-loop batch: every request's latency and the batch's wall time.
struct LoadResult: Sendable {
    var latenciesMilliseconds: [Double]
    var wallSeconds: Double

    var requestsPerSecond: Double { Double(latenciesMilliseconds.count) / wallSeconds }
    var summary: LatencySummary { LatencySummary(milliseconds: latenciesMilliseconds) }
}

/// Closed-loop load: `clients` tasks each send their next request as soon as the previous one
/// has been answered, so concurrency (and the number of keep-alive connections) stays fixed.
/// Requests are split round-robin by index up front, so no lock or actor sits on the hot path.
enum LoadGenerator {
    static func run(
        total: Int,
        clients: Int,
        operation: @escaping @Sendable (Int) async throws -> Void
    ) async throws -> LoadResult {
        let clock = ContinuousClock()
        let start = clock.now
        let latencies = try await withThrowingTaskGroup(of: [Double].self) { group in
            for client in 0..<max(1, min(clients, total)) {
                group.addTask {
                    var samples: [Double] = []
                    samples.reserveCapacity(total / clients + 1)
                    for index in stride(from: client, to: total, by: clients) {
                        let sent = clock.now
                        try await operation(index)
                        samples.append(sent.duration(to: clock.now).milliseconds)
                    }
                    return samples
                }
            }
            var all: [Double] = []
            all.reserveCapacity(total)
            for try await samples in group { all += samples }
            return all
        }
        let wall = start.duration(to: clock.now).milliseconds / 1_000
        return LoadResult(latenciesMilliseconds: latencies, wallSeconds: wall)
    }
}
