import SpoolCore

/// A store capability: one queue shared by many nodes (API nodes, GPU nodes), as PostgreSQL
/// provides. On top of `JobStore`'s contract:
///
/// - every claim records the claiming `node` and gives the job a **lease** that the node
///   renews while the job runs (`renewLeases`);
/// - a job whose lease expired (its node died or lost the database) is **rescued** by any
///   surviving node (`rescueExpired`): requeued, or failed as `node_lost` once its attempts
///   are used up;
/// - `recoverInterrupted` recovers only this node's own jobs (a restart of the same node), never
///   another live node's;
/// - the attempt number is the fencing token: a write for an attempt that is no longer the
///   job's current running attempt changes nothing (`finish`, `reportProgress`);
/// - other nodes' changes arrive as `ClusterSignal`s (a job was queued, a cancel was asked).
public protocol SharedJobStore: JobStore {
    /// This node's name, recorded on the jobs it claims.
    var node: String { get }

    /// How long a claim stays valid without renewal.
    var leaseDuration: Duration { get }

    /// Extends the leases of the attempts this node runs (`attempts`: job → attempt). Returns
    /// those the store still gives this node, with whether a cancel was asked — so the caller
    /// can stop attempts it runs that the store no longer gives it (rescued elsewhere). Jobs the
    /// store holds for this node but the node does not run are `settleUnansweredClaims`'.
    func renewLeases(of attempts: [JobID: Int]) async throws -> [LeaseHolding]

    /// How long after a claim went out its answer may still reach the node: the wait for the
    /// node's turn at the store and the store's time limit on the claim itself. A claim older
    /// than this that the node does not know was never answered.
    var claimAnswerLimit: Duration { get }

    /// The claims the store holds for this node that the node does not know (`known`: the jobs
    /// it runs, and those it ran and left unrecorded for the cluster's rescue): their answer
    /// never arrived (a timeout, a dropped connection), so the job never ran here. Those that
    /// went out at or after `answerableSince` (the node's wall clock, as its claims stamp them)
    /// may still be answered: their leases are extended, so that no other node rescues them
    /// meanwhile. The older ones are given back (`Job.releaseUnansweredClaim`): requeued with
    /// their attempt not counted — not rescued once their lease runs out, as a dead node's, which
    /// would count it (found by attacking the build: a job with one attempt failed as
    /// `node_lost` without ever running). Returns the jobs given back, as they were found (running).
    func settleUnansweredClaims(known: Set<JobID>, answerableSince: Timestamp, now: Timestamp) async throws -> [Job]

    /// Rescues running jobs whose lease expired; returns them as they were found (running), as
    /// `recoverInterrupted` does: `Job.rescueFromLostNode` says what each became.
    func rescueExpired(now: Timestamp) async throws -> [Job]

    /// Why this node claims no jobs although the store answers (another node holds its name), or nil.
    var nameProblem: String? { get }

    /// Records that this node is alive, with its role, slot count and health (every lease/3).
    func heartbeat(role: String, slots: Int, health: NodeHealth) async throws

    /// Every node seen in the last day, with how long ago and the jobs it runs.
    func nodes() async throws -> [NodeStatus]

    /// Signals from every node (this one included), until the store is closed. A signal may be
    /// lost (a dropped connection); callers also poll, slowly.
    func signals() -> AsyncStream<ClusterSignal>

    /// Stores the files (outputs and log) of a job's attempt that is about to end, so that any
    /// node can serve them. Fenced like `finish`: returns false, storing nothing, when `attempt`
    /// is not the job's current running attempt. Replaces files of the same name.
    @discardableResult
    func storeFiles(_ files: [StoredFile], of job: JobID, attempt: Int) async throws -> Bool

    /// The stored files of a job: names, sizes, and whether their content was kept.
    func storedFiles(of job: JobID) async throws -> [StoredFileInfo]

    /// One stored file's content, or nil.
    func storedFile(_ name: String, of job: JobID) async throws -> [UInt8]?
}

public struct LeaseHolding: Sendable, Equatable {
    public var job: JobID
    public var attempt: Int
    public var cancelRequested: Bool

    public init(job: JobID, attempt: Int, cancelRequested: Bool) {
        self.job = job
        self.attempt = attempt
        self.cancelRequested = cancelRequested
    }
}

public enum ClusterSignal: Sendable, Equatable {
    /// Jobs were queued (or requeued): idle slots should look at the queue.
    case queued
    /// A cancel was asked for a running job: the node running it stops it.
    case cancel(JobID)
}

/// A file of a finished job, to be kept in the shared store. The log is named `log`; outputs
/// keep their names under `outputs/`.
public struct StoredFile: Sendable, Equatable {
    public var name: String
    public var content: [UInt8]

    public init(name: String, content: [UInt8]) {
        self.name = name
        self.content = content
    }

    public static let logName = "log"
    /// The notice the job's log last cut begins with (`LogBase`), stored with it.
    public static let logCutName = "log-cut"
    public static func outputName(_ name: String) -> String { "outputs/" + name }
    /// The names of the outputs left on the node that ran the job (past the budget), one a line:
    /// another node's list of the outputs says it is not all of them.
    public static let outputsLeftName = "outputs-left"
}

public struct StoredFileInfo: Sendable, Equatable {
    public var name: String
    public var size: Int

    public init(name: String, size: Int) {
        self.name = name
        self.size = size
    }
}

/// How a node reads itself: what `/healthz` answers on it, sent with each heartbeat so that
/// `GET /v1/nodes` shows a node that answers no HTTP (an agent) as it is.
public struct NodeHealth: Sendable, Equatable {
    public enum Status: String, Sendable {
        /// Every slot can take jobs.
        case ok
        /// It serves and runs what it can, but something needs a look (`problems`).
        case degraded
        /// Shutting down.
        case draining
        /// Stopped cleanly: its last heartbeat, sent as it stopped.
        case stopped
    }

    public var status: Status
    /// What is wrong, in sentences (empty when `ok`).
    public var problems: [String]

    public init(_ status: Status, problems: [String] = []) {
        self.status = status
        self.problems = problems
    }

    public static let ok = NodeHealth(.ok)
}

/// One node of a shared store, as its heartbeats show it.
public struct NodeStatus: Sendable, Equatable {
    public var name: String
    /// `all`, `api` or `agent`.
    public var role: String
    public var slots: Int
    /// Jobs the store has running on it.
    public var running: Int
    public var startedAt: Timestamp
    /// Seconds since its last heartbeat, on the database's clock.
    public var silentSeconds: Double
    /// As its last heartbeat said.
    public var health: NodeHealth

    public init(name: String, role: String, slots: Int, running: Int, startedAt: Timestamp, silentSeconds: Double,
                health: NodeHealth = .ok) {
        self.name = name
        self.role = role
        self.slots = slots
        self.running = running
        self.startedAt = startedAt
        self.silentSeconds = silentSeconds
        self.health = health
    }
}
