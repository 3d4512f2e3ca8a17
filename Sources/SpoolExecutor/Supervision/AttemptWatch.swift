import SpoolCore

/// Watches one attempt in either mode until it ends: on a stop request (cancel, shutdown) or
/// when its timeout passes on the injected clock, it asks the attempt to stop (`ask`: SIGTERM
/// to a process group, a cancel command to a warm worker), and if it has not ended one kill
/// grace later, forces it (`force`: SIGKILL, or killing the worker). Returns how it ended and
/// why it was stopped, if it was; `JobOutcome.init(_:stoppedFor:)` turns that into the outcome.
enum AttemptWatch {
    struct Stopping: Sendable {
        /// What the attempt gets told in its log, after the reason: "sending SIGTERM …".
        var how: String
        var ask: @Sendable (StopReason) async -> Void
        var force: @Sendable () async -> Void
    }

    static func run(timeout: Duration, killGrace: Duration, clock: SpoolClock, stops: AsyncStream<StopReason>,
                    note: @escaping @Sendable (String) -> Void, stopping: Stopping,
                    until ended: @escaping @Sendable () async -> AttemptEnd) async -> (AttemptEnd, StopReason?) {
        enum Event: Sendable { case ended(AttemptEnd), stop(StopReason), forced, quiet }
        return await withTaskGroup(of: Event.self) { group in
            group.addTask { .ended(await ended()) }
            group.addTask {
                for await reason in stops { return .stop(reason) }
                return .quiet
            }
            group.addTask {
                do { try await clock.sleep(for: timeout) } catch { return .quiet }
                return .stop(.timeout)
            }
            var reason: StopReason?
            while let event = await group.next() {
                switch event {
                case .ended(let end):
                    group.cancelAll()
                    return (end, reason)
                case .stop(let requested):
                    guard reason == nil else { continue }
                    reason = requested
                    note("\(describe(requested)): \(stopping.how)")
                    await stopping.ask(requested)
                    group.addTask {
                        do { try await clock.sleep(for: killGrace) } catch { return .quiet }
                        await stopping.force()
                        return .forced
                    }
                case .forced, .quiet:
                    continue
                }
            }
            return (.spawnFailed("the attempt was not watched to its end"), reason)   // unreachable: `ended` always returns
        }
    }

    static func describe(_ reason: StopReason) -> String {
        switch reason {
        case .timeout: "the job ran past its timeout"
        case .cancel: "the job was canceled"
        case .shutdown: "the server is shutting down"
        case .quarantine: "its slot was quarantined (its GPU reads unhealthy)"
        }
    }
}
