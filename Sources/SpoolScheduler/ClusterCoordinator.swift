import Logging
import Metrics
import ServiceLifecycle
import SpoolCore
import SpoolStore

/// What a node does for the shared queue besides running its slots:
///
/// - **wake-ups**: a job queued on any node (`NOTIFY`) wakes this node's idle slots at once;
///   a slow poll covers a lost notification;
/// - **cancels**: a cancel asked on any API node stops the job here if it runs here;
/// - **leases**: renews the leases of the jobs this node holds; a claim whose answer was lost (the
///   store holds the job for this node, the node does not know it) is kept from the rescue until
///   its answer can no longer come, then given back with its attempt not counted (it never ran);
///   an attempt the store no longer gives this node
///   (rescued after an outage) is stopped, that attempt only, and once no renewal has gone through for a
///   lease, every job here is stopped — other nodes rescue them, so no job runs twice for long
///   (a watch of its own decides that, not the renewal in flight, which a half-open connection
///   holds until the store's operation timeout);
/// - **rescue**: requeues (or fails as `node_lost`) the jobs of nodes whose leases expired;
/// - **fail-fast sweep**: cancels the rest of a fail-fast array that a node left open (it
///   recorded a task's failure, then stopped before it canceled the others), while the cluster
///   runs on — a node's start sweeps only once.
public actor ClusterCoordinator: Service {
    public struct Configuration: Sendable {
        /// How often this node looks at the queue without a notification.
        public var pollInterval: Duration = .seconds(2)
        /// How often expired leases are looked for.
        public var rescueInterval: Duration = .seconds(1)
        /// How often fail-fast arrays left open are looked for (a read of the queued and running
        /// tasks of fail-fast arrays).
        public var failFastSweepInterval: Duration = .seconds(60)
        /// Whether this node runs jobs (an API-only node still rescues).
        public var runsJobs = true
        /// This node's role and slots, as its heartbeats report them (`GET /v1/nodes`).
        public var role = "all"
        public var slots = 0
        /// Called after each renewal that went through, with the time since it began (the
        /// leases it renewed run from then): the server's guard learns when its jobs must be gone.
        public var onRenewal: (@Sendable (Duration) -> Void)?

        public init() {}
    }

    private let store: any SharedJobStore
    private let scheduler: Scheduler
    private let configuration: Configuration
    private let clock: SpoolClock
    private let logger: Logger
    private var lastRenewal: Moment
    /// Why the last renewal failed, until one goes through.
    private var renewalError: String?
    /// When the renewal under way began.
    private var renewalSince: Moment?
    /// The attempts stopped since the last renewal that went through (an outage's fence).
    private var fenced: [JobID: Int] = [:]
    /// Whether this node's last call to the store (a heartbeat, a renewal, a rescue) failed, and
    /// when one went through again after a failure: the rescue waits a lease from then (`rescue`).
    private var storeFailing = false
    private var storeBack: Moment?

    /// `clock` must be the scheduler's: lease timing compares the moments both read.
    public init(store: any SharedJobStore, scheduler: Scheduler, configuration: Configuration = Configuration(),
                clock: SpoolClock = .system, logger: Logger) {
        self.store = store
        self.scheduler = scheduler
        self.configuration = configuration
        self.clock = clock
        self.logger = logger
        lastRenewal = clock.now()
        // A node that starts rescues nothing for a lease either: it may start the moment an
        // outage ends (found in review: one that crash-looped through it did, and rescued the
        // jobs the live nodes had not renewed yet).
        storeBack = clock.now()
    }

    public func run() async throws {
        let signals = store.signals()
        await withDiscardingTaskGroup { group in
            group.addTask { await self.follow(signals) }
            group.addTask { await self.every(self.configuration.rescueInterval) { await self.rescue() } }
            group.addTask { await self.every(self.store.leaseDuration / 3) { await self.heartbeat() } }
            group.addTask { [scheduler] in
                // The node's start swept once already.
                guard (try? await self.clock.sleep(for: self.configuration.failFastSweepInterval)) != nil else { return }
                await self.every(self.configuration.failFastSweepInterval) { await scheduler.failFastArraysLeftOpen() }
            }
            if configuration.runsJobs {
                let renewal = store.leaseDuration / 3
                group.addTask { await self.every(renewal) { await self.renewLeases() } }
                group.addTask { await self.every(self.store.leaseDuration / 10) { await self.fenceIfSilent() } }
                group.addTask { [scheduler] in await self.every(self.configuration.pollInterval) { scheduler.jobEnqueued() } }
            }
            try? await gracefulShutdown()
            group.cancelAll()
        }
        // A last heartbeat: the cluster's list says this node stopped, not that it was lost
        // (found by attacking the build: a rolling restart read as an outage for a day).
        // Within 2 s: a store that does not answer does not hold the shutdown (the store keeps a
        // heartbeat of this run still in flight from overwriting it).
        if Task.isShuttingDownGracefully {
            let (store, role, slots) = (self.store, configuration.role, configuration.slots)
            _ = try? await answerWithin(.seconds(2), orThrow: CancellationError()) {
                try await store.heartbeat(role: role, slots: slots, health: NodeHealth(.stopped))
            }
        }
    }

    private nonisolated func every(_ interval: Duration, _ body: @Sendable () async -> Void) async {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            await body()
            do { try await clock.sleep(for: interval) } catch { return }
        }
    }

    private func follow(_ signals: AsyncStream<ClusterSignal>) async {
        for await signal in signals.cancelOnGracefulShutdown() {
            switch signal {
            case .queued:
                if configuration.runsJobs { scheduler.jobEnqueued() }
            case .cancel(let job):
                if await scheduler.runs(job) {
                    logger.info("stopping a job canceled on another node", metadata: ["job": "\(job)"])
                    await scheduler.stop(job, because: .cancel)
                }
            }
        }
    }

    private func renewLeases() async {
        let started = clock.now()
        renewalSince = started
        defer { renewalSince = nil }
        // Read before the jobs it knows: a claim that went out before this, less the time its
        // answer may take, was answered by then or never will be.
        let wall = clock.wall()
        do {
            let held = try await store.renewLeases(of: await scheduler.heldAttempts())
            storeAnswered()
            lastRenewal = started
            configuration.onRenewal?(clock.now() - started)
            fenced = [:]
            renewalError = nil
            scheduler.leaseRenewals(failing: nil)
            let mine = await scheduler.runningAttempts(startedBefore: started)
            let holdings = Dictionary(held.map { ($0.job, $0) }, uniquingKeysWith: { first, _ in first })
            for (job, attempt) in mine {
                guard let holding = holdings[job], holding.attempt == attempt else {
                    Counter(label: "spool_attempts_fenced_total").increment()
                    logger.warning("a job running here was rescued by another node; stopping this attempt",
                                   metadata: ["job": "\(job)", "attempt": "\(attempt)"])
                    // That attempt only: a newer one claimed here since this renewal began goes on.
                    await scheduler.fence(job, attempt: attempt)
                    continue
                }
                if holding.cancelRequested { await scheduler.stop(job, because: .cancel) }
            }
        } catch {
            Counter(label: "spool_lease_renewal_failures_total").increment()
            storeFailing = true
            renewalError = "\(error)"
            logger.error("could not renew this node's leases",
                         metadata: ["error": "\(error)", "since_last_renewal": "\(clock.now() - lastRenewal)"])
            await fenceIfSilent()
            return
        }
        await settleUnansweredClaims(before: wall)
    }

    /// Keeps this node's unanswered claims from the rescue, and gives back those whose answer can
    /// no longer come (`SharedJobStore.settleUnansweredClaims`).
    private func settleUnansweredClaims(before wall: Timestamp) async {
        do {
            let since = wall.adding(seconds: -store.claimAnswerLimit.inSeconds)
            let released = try await store.settleUnansweredClaims(known: await scheduler.knownJobs(), answerableSince: since, now: wall)
            guard !released.isEmpty else { return }
            Counter(label: "spool_unanswered_claims_released_total").increment(by: released.count)
            // As the store left them: requeued, or canceled when a cancel was asked meanwhile.
            SchedulerMetrics.ended(released.map { job in
                var job = job
                job.releaseUnansweredClaim(at: wall)
                return job
            })
            logger.warning("gave back jobs this node claimed without hearing the answer (they never ran here; their attempt is not counted)",
                           metadata: ["jobs": "\(released.map(\.id))"])
            scheduler.jobEnqueued()
        } catch {
            logger.warning("could not settle this node's unanswered claims", metadata: ["error": "\(error)"])
        }
    }

    /// Once no renewal has gone through for a lease (counted from the start of the last one that
    /// did), other nodes may rescue this node's jobs: each is stopped once its lease has run out —
    /// those held then at once, one claimed during the outage (claims may still go through while
    /// renewals hang) a lease after its claim.
    private func fenceIfSilent() async {
        let now = clock.now()
        let silent = now - lastRenewal
        // A renewal failed, or the one under way has hung for half a lease, or none has gone through
        // for a lease (its jobs are being stopped): the node's health says so. (Not half a lease
        // since the last one through alone: between working renewals that reaches a third of a
        // lease and twice their round trip.)
        let hanging = renewalSince.map { now - $0 >= store.leaseDuration / 2 } ?? false
        if hanging || silent >= store.leaseDuration || (renewalError != nil && silent >= store.leaseDuration / 2) {
            // No host or credential: `/healthz` is open to anyone (the error is in the log).
            scheduler.leaseRenewals(failing: "no lease renewal has gone through for \(Int(silent.inSeconds.rounded())) s (the lease is "
                                    + "\(Int(store.leaseDuration.inSeconds.rounded())) s): "
                                    + (renewalError == nil ? "the renewal under way has not answered" : "they fail (the server's log has the error)"))
        }
        guard silent >= store.leaseDuration else { return }
        // Counted from when each claim went out: its lease began at the claim's commit.
        let expired = await scheduler.runningAttempts(startedBefore: now - store.leaseDuration, byClaim: true)
            .filter { job, attempt in fenced[job] != attempt }
        guard !expired.isEmpty else { return }
        if fenced.isEmpty {
            logger.critical("no lease renewal went through for longer than a lease; stopping the jobs here (other nodes rescue them)",
                            metadata: ["since_last_renewal": "\(silent)"])
        }
        for (job, attempt) in expired {
            fenced[job] = attempt
            await scheduler.fenceForLostLease(job, attempt: attempt)
        }
    }

    /// Arms this node's queue timer for the queue's next delayed start or deadline, whichever
    /// node took the job: a node arms one for its own submits, and its slots for what they find
    /// waiting, so a job whose node died, submitted while every slot was busy, would otherwise sit
    /// `queued` past its deadline until a slot came free (found by attacking the build: 9–12 s).
    private func lookAtTimers() async {
        do {
            if let next = try await store.nextTimer(after: clock.wall()) { scheduler.queueTimerDue(at: next) }
        } catch {
            logger.warning("could not read the queue's timers", metadata: ["error": "\(error)"])
        }
    }

    private func heartbeat() async {
        do {
            try await store.heartbeat(role: configuration.role, slots: configuration.slots, health: await scheduler.health())
            storeAnswered()
        } catch {
            storeFailing = true
            logger.warning("could not record this node's heartbeat", metadata: ["error": "\(error)"])
        }
    }

    private func storeAnswered() {
        if storeFailing { storeBack = clock.now() }
        storeFailing = false
    }

    /// While this node cannot reach the store, and for a lease after it can again, it rescues
    /// nothing: an outage that this node saw, the others may have seen too — every lease ran
    /// out meanwhile, and the live nodes need a lease to renew theirs and to record the ends
    /// that came during it (found by attacking the build: a job that succeeded a second into a
    /// 12-s outage was rescued the moment the database came back, before its node recorded the
    /// success, and read as failed, node_lost, or ran again). A node that died meanwhile is
    /// rescued a lease later.
    private var rescueHeld: Bool {
        storeFailing || storeBack.map { clock.now() - $0 < store.leaseDuration } ?? false
    }

    private func rescue() async {
        await lookAtTimers()
        guard !rescueHeld else { return }
        do {
            let now = clock.wall()
            let rescued = try await store.rescueExpired(now: now)
            storeAnswered()
            guard !rescued.isEmpty else { return }
            // As the store left them: requeued, or failed as node_lost (canceled, when a cancel was under way).
            let ended = rescued.map { job in
                var job = job
                job.rescueFromLostNode(at: now)
                return job
            }
            let failed = ended.filter { $0.state == .failed }
            let requeued = ended.count { $0.state == .queued }
            Counter(label: "spool_jobs_rescued_total", dimensions: [("outcome", "requeued")]).increment(by: requeued)
            Counter(label: "spool_jobs_rescued_total", dimensions: [("outcome", "failed_node_lost")]).increment(by: failed.count)
            SchedulerMetrics.ended(ended)
            logger.warning("rescued jobs of a node whose leases expired", metadata: [
                "jobs": "\(rescued.map(\.id))", "nodes": "\(Set(rescued.compactMap(\.node)).sorted())",
                "requeued": "\(requeued)", "failed_node_lost": "\(failed.count)", "canceled": "\(ended.count - requeued - failed.count)",
            ])
            await scheduler.failFast(after: failed)
            if configuration.runsJobs { scheduler.jobEnqueued() }
        } catch {
            storeFailing = true
            logger.error("could not look for expired leases", metadata: ["error": "\(error)"])
        }
    }
}
