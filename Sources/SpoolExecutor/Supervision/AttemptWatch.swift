import SpoolCore
import Synchronization

/// Watches one attempt in either mode until it ends: on a stop request (cancel, shutdown) or
/// when its timeout passes on the injected clock, it asks the attempt to stop (`ask`: SIGTERM
/// to a process group, a cancel command to a warm worker), and if it has not ended one kill
/// grace later, forces it (`force`: SIGKILL, or killing the worker). Returns how it ended and
/// why it was stopped, if it was; `JobOutcome.init(_:stoppedFor:)` turns that into the outcome.
///
/// The caller's task waits for the end itself; the stop requests and the timeout are watched by
/// one helper task beside it. An attempt that ends unasked (nearly all) returns as soon as its
/// end arrives — the helper is cancelled, not waited for, so a job's end is one hand-off from
/// the child's last word instead of one per watcher (a task group waited for three). An attempt
/// that was asked to stop waits for the helper, so `force` never runs after `run` returned.
enum AttemptWatch {
    struct Stopping: Sendable {
        /// What the attempt gets told in its log, after the reason: "sending SIGTERM …".
        var how: String
        var ask: @Sendable (StopReason) async -> Void
        var force: @Sendable () async -> Void
    }

    /// What the helper and the caller share: why the attempt was stopped (the first reason
    /// only), and whether it has ended (after which no reason is taken).
    private struct Verdict {
        var reason: StopReason?
        var ended = false
    }

    static func run(timeout: Duration, killGrace: Duration, clock: SpoolClock, stops: AsyncStream<StopReason>,
                    note: @escaping @Sendable (String) -> Void, stopping: Stopping,
                    until ended: @escaping @Sendable () async -> AttemptEnd) async -> (AttemptEnd, StopReason?) {
        let verdict = Mutex(Verdict())
        let helper = Task {   // unstructured: cancelled, not awaited, once the attempt ends unasked (see above)
            guard let requested = await firstStop(stops: stops, timeout: timeout, clock: clock) else { return }
            let taken = verdict.withLock { verdict in
                guard !verdict.ended, verdict.reason == nil else { return false }
                verdict.reason = requested
                return true
            }
            guard taken else { return }
            note("\(describe(requested)): \(stopping.how)")
            await stopping.ask(requested)
            do { try await clock.sleep(for: killGrace) } catch { return }
            await stopping.force()
        }
        let end = await ended()
        let reason = verdict.withLock { verdict in
            verdict.ended = true
            return verdict.reason
        }
        helper.cancel()
        // Asked to stop: the helper may be asking or forcing right now; let it finish (its kill
        // grace is cut short by the cancel) so nothing is done to this attempt after it returns.
        if reason != nil { await helper.value }
        return (end, reason)
    }

    /// The first stop request or the timeout, whichever comes first; nil once cancelled (the
    /// attempt ended).
    private static func firstStop(stops: AsyncStream<StopReason>, timeout: Duration, clock: SpoolClock) async -> StopReason? {
        await withTaskGroup(of: StopReason?.self) { group in
            group.addTask {
                for await reason in stops { return reason }
                return nil   // no more requests can come; the timeout still can
            }
            group.addTask {
                do { try await clock.sleep(for: timeout) } catch { return nil }
                return .timeout
            }
            while let next = await group.next() {
                guard let reason = next else { continue }
                group.cancelAll()
                return Task.isCancelled ? nil : reason
            }
            return nil
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
