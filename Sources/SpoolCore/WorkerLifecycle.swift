/// A warm worker's life as a pure state machine: what phase it is in, which deadline comes
/// next, and what to do when something happens. The worker actor (SpoolExecutor's `Worker`)
/// feeds it events — the process spawned, a message arrived, the process exited, a call from
/// the pool, a clock tick — and carries out the actions it returns. Nothing here does I/O or
/// reads a clock, so every transition is tested directly (`WorkerLifecycleTests`).
///
/// ```
/// spawning ─spawned→ settingUp ─ready→ ready ⇄ running      (assign / job ended)
///     │                  │              │        │
///     └──────────────────┴── stop/kill/timeouts ─┴──→ stopping ─exited→ exited
/// ```
/// Any phase goes to `exited` when the process exits. The guarantee: `stopping` always has an
/// escalation deadline (shutdown command → SIGTERM → SIGKILL, repeated), so a worker asked to
/// stop is always signalled until its process is gone; "stopping forever" cannot happen.
public struct WorkerLifecycle: Sendable, Equatable {
    public enum Phase: String, Sendable, Equatable {
        /// The process is being started.
        case spawning
        /// Started; loading whatever it loads, until it says `ready`.
        case settingUp = "setting_up"
        /// Idle, taking jobs.
        case ready
        /// Running one job.
        case running
        /// Asked to go; being escalated from the shutdown command to SIGTERM to SIGKILL.
        case stopping
        /// The process is gone.
        case exited
    }

    public enum Signal: Sendable, Equatable { case terminate, kill }

    /// The deadlines the worker lives by.
    public struct Timing: Sendable, Equatable {
        /// From spawn to `ready`.
        public var setupTimeout: Duration
        /// The worker sends a heartbeat at least this often; silent for three → killed.
        public var heartbeat: Duration
        /// Idle this long → asked to stop (frees its memory). nil: never.
        public var idleTimeout: Duration?
        /// Between the steps of a stop: shutdown command → SIGTERM → SIGKILL.
        public var killGrace: Duration

        public init(setupTimeout: Duration, heartbeat: Duration, idleTimeout: Duration?, killGrace: Duration) {
            self.setupTimeout = setupTimeout
            self.heartbeat = heartbeat
            self.idleTimeout = idleTimeout
            self.killGrace = killGrace
        }

        public init(policy: WorkerPolicy, killGrace: Duration) {
            self.init(setupTimeout: .seconds(policy.setupTimeoutSeconds), heartbeat: .seconds(policy.heartbeatSeconds),
                      idleTimeout: policy.idleTimeoutSeconds.map { .seconds($0) }, killGrace: killGrace)
        }
    }

    public enum Event: Sendable, Equatable {
        case spawned
        case spawnFailed(String)
        /// The worker said `ready`.
        case ready
        /// Any line from the worker (a heartbeat, progress, a result).
        case heard
        /// The pool hands it a job.
        case assign(JobID)
        /// The worker reported the job done (succeeded or failed).
        case jobEnded(JobID)
        /// The job's client canceled it, or it ran past its timeout: ask the worker to drop it.
        case cancel(JobID)
        /// Asked to go, politely (idle, recycled, the server stops): the shutdown command first.
        case stop(String)
        /// Asked to go now (hung, a job that would not stop): SIGTERM first.
        case kill(String)
        case exited(String)
        /// Time passed; deadlines are checked.
        case tick
    }

    public enum Action: Sendable, Equatable {
        /// Write the job's command to the worker.
        case dispatch(JobID)
        case send(WorkerCommand)
        case signal(Signal)
        /// Setup is done: the worker takes jobs.
        case started
        case startFailed(String)
        /// The job's end as the worker reported it stands (hand its result over).
        case jobCompleted(JobID)
        /// The worker went away under the job.
        case jobLost(JobID, String)
        /// The worker could not take the job (not ready).
        case jobRefused(JobID, String)
        /// A line for the worker's log.
        case note(String)
    }

    public private(set) var phase: Phase = .spawning
    /// The job it runs (while `running`, and while `stopping` from `running`).
    public private(set) var job: JobID?
    public private(set) var jobsRun = 0
    /// Why it is stopping or stopped.
    public private(set) var stopReason: String?
    public let timing: Timing
    private var lastHeard: Moment
    private var idleSince: Moment
    private var setupDeadline: Moment
    /// While stopping: the next signal and when it is due.
    private var escalation: (signal: Signal, at: Moment)?
    /// A stop asked before the process existed, applied once it does.
    private var pendingKill: String?

    public init(timing: Timing, now: Moment) {
        self.timing = timing
        lastHeard = now
        idleSince = now
        setupDeadline = now + timing.setupTimeout
    }

    public static func == (lhs: WorkerLifecycle, rhs: WorkerLifecycle) -> Bool {
        lhs.phase == rhs.phase && lhs.job == rhs.job && lhs.jobsRun == rhs.jobsRun && lhs.stopReason == rhs.stopReason
            && lhs.nextDeadline == rhs.nextDeadline && lhs.escalation?.signal == rhs.escalation?.signal
    }

    /// Takes jobs now.
    public var isReady: Bool { phase == .ready }
    /// Started and not yet asked to go.
    public var isAlive: Bool { phase == .ready || phase == .running }

    /// When `tick` next has something to do; nil when nothing is timed.
    public var nextDeadline: Moment? {
        switch phase {
        case .spawning, .exited: return nil
        case .settingUp: return setupDeadline
        case .ready:
            let silent = lastHeard + timing.heartbeat * 3
            return timing.idleTimeout.map { min(silent, idleSince + $0) } ?? silent
        case .running: return lastHeard + timing.heartbeat * 3
        case .stopping: return escalation?.at
        }
    }

    public mutating func handle(_ event: Event, at now: Moment) -> [Action] {
        switch (phase, event) {
        case (.exited, .assign(let id)):
            // Died after the caller saw it ready (while the job's files were made): the job goes
            // back rather than wait for an answer from a process that is gone.
            return [.jobRefused(id, "the worker is \(phase.rawValue), not ready")]
        case (.exited, _):
            return []

        case (_, .exited(let status)):
            let was = phase
            phase = .exited
            escalation = nil
            defer { job = nil }
            switch was {
            case .spawning, .settingUp: return [.startFailed("the worker exited during setup: \(status)")]
            case .running: return [.jobLost(job!, status)]
            case .stopping: return job.map { [.jobLost($0, stopReason.map { "\($0), and \(status)" } ?? status)] } ?? []
            case .ready, .exited: return []
            }

        case (.spawning, .spawned):
            phase = .settingUp
            lastHeard = now
            setupDeadline = now + timing.setupTimeout
            if let reason = pendingKill { return [.startFailed(reason)] + beginKill(reason, at: now) }
            return []
        case (.spawning, .spawnFailed(let message)):
            phase = .exited
            return [.startFailed("the worker could not be started: \(message)")]
        case (.spawning, .stop(let reason)), (.spawning, .kill(let reason)):
            pendingKill = pendingKill ?? reason
            return []

        case (_, .assign(let id)) where phase != .ready:
            return [.jobRefused(id, "the worker is \(phase.rawValue), not ready")]
        case (.ready, .assign(let id)):
            phase = .running
            job = id
            return [.dispatch(id)]

        case (.spawning, .ready) where pendingKill != nil:
            // Asked to go before it even started: it goes now.
            return handle(.spawned, at: now)
        case (.settingUp, .ready), (.spawning, .ready):
            // `ready` can be read from the FIFO before the spawn is reported: it counts as both.
            phase = .ready
            lastHeard = now
            idleSince = now
            return [.started]

        case (_, .heard):
            lastHeard = now
            return []

        case (.running, .jobEnded(let id)) where id == job:
            phase = .ready
            job = nil
            jobsRun += 1
            idleSince = now
            return [.jobCompleted(id)]
        case (.stopping, .jobEnded(let id)) where id == job:
            // It finished just as it was being stopped: its result stands.
            job = nil
            jobsRun += 1
            return [.jobCompleted(id)]

        case (.running, .cancel(let id)) where id == job:
            return [.send(.cancel(id))]

        case (.settingUp, .stop(let reason)), (.settingUp, .kill(let reason)):
            return [.startFailed(reason)] + beginKill(reason, at: now)
        case (.ready, .stop(let reason)), (.running, .stop(let reason)):
            phase = .stopping
            stopReason = reason
            escalation = (.terminate, now + timing.killGrace)
            return [.note("\(reason): asking the worker to shut down"), .send(.shutdown)]
        case (.ready, .kill(let reason)), (.running, .kill(let reason)):
            return beginKill(reason, at: now)
        case (.stopping, .kill(let reason)) where escalation?.signal == .terminate:
            // Was asked politely; now it must go.
            return beginKill(reason, at: now)

        case (_, .tick):
            return tick(at: now)

        default:
            return []
        }
    }

    private mutating func tick(at now: Moment) -> [Action] {
        switch phase {
        case .settingUp where now >= setupDeadline:
            let reason = "setup took longer than \(timing.setupTimeout.readable)"
            return [.startFailed(reason)] + beginKill(reason, at: now)
        case .ready, .running:
            if now >= lastHeard + timing.heartbeat * 3 {
                return beginKill("the worker missed 3 heartbeats (\(timing.heartbeat.readable) apart)", at: now)
            }
            if phase == .ready, let idle = timing.idleTimeout, now >= idleSince + idle {
                return handle(.stop("idle for \(idle.readable)"), at: now)
            }
            return []
        case .stopping:
            guard let due = escalation, now >= due.at else { return [] }
            switch due.signal {
            case .terminate:
                escalation = (.kill, now + timing.killGrace)
                return [.note("the worker did not exit within \(timing.killGrace.readable): sending SIGTERM"), .signal(.terminate)]
            case .kill:
                // Repeated every grace period until the process is gone.
                escalation = (.kill, now + timing.killGrace)
                return [.note("the worker is still running: sending SIGKILL"), .signal(.kill)]
            }
        default:
            return []
        }
    }

    private mutating func beginKill(_ reason: String, at now: Moment) -> [Action] {
        phase = .stopping
        stopReason = stopReason ?? reason
        escalation = (.kill, now + timing.killGrace)
        return [.note("\(reason): sending SIGTERM, SIGKILL in \(timing.killGrace.readable)"), .signal(.terminate)]
    }
}

extension Duration {
    /// Fractional seconds, for arithmetic and display.
    public var inSeconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }

    /// "10 s", "0.25 s": for messages people read.
    public var readable: String {
        let seconds = inSeconds
        return seconds == seconds.rounded() ? "\(Int(seconds)) s" : "\((seconds * 1000).rounded() / 1000) s"
    }
}
