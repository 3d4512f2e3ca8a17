import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdHTTP2
import HummingbirdTLS
import Logging
import NIOSSL
import Metrics
import Prometheus
import NIOCore
import ServiceLifecycle
import SpoolCore
import SpoolExecutor
import SpoolHTTP
import SpoolPostgres
import SpoolSQLite
import SpoolScheduler
import SpoolStore
import SpoolWebhooks
import Synchronization

/// The composition root: configuration in, one running server out.
///
/// Startup order: lock the data directory (one server per directory), open and migrate the
/// store, kill whatever a crashed predecessor left running and requeue its jobs, pick the
/// slots, then serve. The HTTP server and the scheduler run in one `ServiceGroup`; SIGTERM or
/// SIGINT shuts the scheduler down first (the API keeps answering, with 503 for submits,
/// while running jobs get their grace period), then the HTTP server.
///
/// With a PostgreSQL store the node also runs a `ClusterCoordinator`, and its role decides
/// the rest: `all` (API and slots), `api` (no slots) or `agent` (slots, no HTTP server).
public enum SpoolServer {
    /// `guardArguments`: the log settings for the guard process (`spool guard`), started from the
    /// running binary.
    public static func run(_ configuration: ServerConfiguration, executable: String, logger: Logger, guardArguments: [String],
                           onListening: @escaping @Sendable (String) -> Void) async throws {
        if configuration.role != .all, configuration.store == .sqlite {
            throw ConfigurationError("role \"\(configuration.role.rawValue)\" needs a shared store (store: postgres://…); with SQLite one node does everything")
        }
        // Every thread a blocking pool will want, while the machine has threads to give.
        await BlockingIO.startPools()
        let dataDirectory = try prepareDataDirectory(configuration.dataDirectory)
        if let open = Self.openToOthers(dataDirectory) { logger.warning("\(open)") }
        let lock = try await DataDirectoryLock(directory: dataDirectory) { logger.warning("\($0)") }
        defer { lock.release() }

        let node = configuration.nodeName(dataDirectory: dataDirectory)
        let store: any JobStore & WebhookOutbox
        let shared: PostgresJobStore?
        switch configuration.store {
        case .sqlite:
            try refuseALostDatabase(dataDirectory + "/spool.sqlite")
            store = try SQLiteJobStore(path: dataDirectory + "/spool.sqlite", synchronous: configuration.synchronous,
                                      diskReserveMiB: configuration.diskReserveMiB)
            shared = nil
        case .postgres(let location):
            let lease = Duration.milliseconds(Int64(configuration.leaseSeconds * 1000))
            // A cut-off node stops its jobs as their leases run out (checked every tenth of one): a
            // warm worker is asked to give its job up, SIGTERM a kill grace later, SIGKILL a kill
            // grace after that (a process, SIGTERM at once). Rescued only once they are surely gone.
            let rescueGrace = .milliseconds(Int64(configuration.killGraceSeconds * 2000)) + lease / 10 + .seconds(1)
            let postgres = try PostgresJobStore(location: location, node: node, leaseDuration: lease, rescueGrace: rescueGrace,
                                                followsEvents: configuration.role != .agent, logger: logger)
            store = postgres
            shared = postgres
        }
        defer { shared?.close() }
        try await store.prepare()
        // Before recovery, which takes every job running under this node's name for its own.
        try await shared?.holdNodeName()
        if shared == nil { markDatabaseMade(dataDirectory) }
        // Before recovery and the fail-fast that follows it: the jobs they end are counted.
        let registry = MetricsExport.bootstrap()
        let recovered = try await recover(store, node: shared == nil ? nil : node, dataDirectory: dataDirectory, logger: logger)
        // Before any job starts: from here a crash of this server kills its jobs at once.
        let guardian = GuardProcess(dataDirectory: dataDirectory, lockDescriptor: lock.descriptor, logArguments: guardArguments, logger: logger)
        guardian.start()
        guardian.followSessions()
        // Jobs must be gone before other nodes may rescue them: the node stops them itself a lease
        // after its last renewal began (SIGKILL two kill graces later); its guard, a twentieth of
        // a lease after that, in case this process is frozen; the rescue waits a tenth of a lease
        // and a second more. Armed now for the jobs claimed before the first renewal.
        let stopJobsWithin = shared.map { $0.leaseDuration + .milliseconds(Int64(configuration.killGraceSeconds * 2000)) + $0.leaseDuration / 20 }
        if let stopJobsWithin, configuration.role != .api { guardian.killAfter(stopJobsWithin) }

        var types = [BuiltinTypes.render(executable: executable)]
        for type in configuration.jobTypes { types.removeAll { $0.name == type.name }; types.append(type) }
        let catalog = JobCatalog(types)
        // Not on an API node: its jobs run elsewhere, where their programs are (found in review).
        if configuration.role != .api {
            for problem in Self.missingFiles(of: configuration.jobTypes) { logger.warning("\(problem)") }
        }
        shared?.serve(types: types.map(\.name))

        let slots = configuration.role == .api ? [] : try await pickSlots(configuration, logger: logger)
        let fileLimit = FileLimit.raise(to: FileLimit.needed(maxConnections: configuration.maxConnections, slots: slots.count))
        if let warning = FileLimit.warning(limit: fileLimit, maxConnections: configuration.maxConnections, slots: slots.count) {
            logger.warning("\(warning)")
        }
        var schedulerConfiguration = SchedulerConfiguration(slots: slots, dataDirectory: dataDirectory)
        schedulerConfiguration.sharedFileLimitBytes = configuration.sharedFileLimitBytes
        schedulerConfiguration.shutdownGrace = .seconds(configuration.shutdownGraceSeconds)
        schedulerConfiguration.quarantineAfterFailures = configuration.quarantineAfterFailures
        let clock = SpoolClock.system
        let executor = executors(for: catalog, slots: slots, dataDirectory: dataDirectory, configuration: configuration,
                                 clock: clock, logger: logger)
        let scheduler = Scheduler(store: store, executor: executor, catalog: catalog, configuration: schedulerConfiguration,
                                  clock: clock, logger: logger)

        // Before the slots claim anything: the rest of a fail-fast array whose task the crash failed.
        await scheduler.failFast(after: recovered)
        await scheduler.failFastArraysLeftOpen()
        await scheduler.finishArrayOperations()
        // The newest 500, however large their inputs (a page cut at its byte budget would learn from fewer).
        await scheduler.learn(from: try await store.jobs(JobQuery(state: .succeeded, limit: 500, maxBytes: .max)).jobs)
        let tokenStore = store as? any TokenStore
        let tokens = TokenBook(store: tokenStore, auth: configuration.auth, logger: logger,
                               onRevoke: { [store] in store.eventNotifier.wakeAll() }, onChange: { [scheduler] in scheduler.jobEnqueued() })
        try await tokens.refresh()
        if configuration.role != .agent || configuration.metricsPort != nil {
            try checkExposure(configuration, tokensExist: !tokens.isEmpty, dataDirectory: dataDirectory)
        }
        var limits = SpoolAPI.Limits()
        limits.maxBodyBytes = configuration.maxBodyBytes
        limits.retentionSeconds = configuration.retentionDays > 0 ? configuration.retentionDays * 86_400 : nil
        // The store's own random key: the dashboard's session cookies, and every tenant's webhook secret.
        let storeKey = try await tokenStore?.sessionKey()
        let api = SpoolAPI(store: store, scheduler: scheduler, catalog: catalog, dataDirectory: dataDirectory,
                           limits: limits, storeName: shared == nil ? "sqlite" : "postgres", node: shared?.node, metrics: { [store, scheduler] in
            if let queued = try? await store.queuedCount() { Gauge(label: "spool_queue_depth").record(queued) }
            scheduler.countBusyTime()
            return MetricsExport.text(registry)
        }, access: configuration.accessPolicy, tokens: tokens, sessionKey: storeKey,
           webhookTargets: WebhookGuard(allowPrivate: configuration.webhookAllowPrivate), webhookSecret: configuration.webhookSecret)
        let host = configuration.host
        let scheme = configuration.tlsCertificate == nil ? "http" : "https"
        let (listening, listened) = AsyncStream<Void>.makeStream()
        let bound = Mutex(false)
        let application = Application(
            router: api.router(),
            server: try httpServer(configuration),
            configuration: .init(address: .hostname(host, port: configuration.port), serverName: "spool"),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? configuration.port
                bound.withLock { $0 = true }
                listened.yield()
                listened.finish()
                onListening("\(scheme)://\(host.contains(":") ? "[\(host)]" : host):\(port)")
            },
            logger: logger
        )
        var startup: Logger.Metadata = [
            "data_dir": "\(dataDirectory)", "slots": "\(slots.map { $0.gpu.map { "gpu \($0)" } ?? "cpu" })",
            "types": "\(catalog.types.keys.sorted())",
        ]
        if let shared {
            startup["store"] = "\(shared.location)"
            startup["node"] = "\(node)"
            startup["role"] = "\(configuration.role.rawValue)"
            startup["lease_s"] = "\(configuration.leaseSeconds)"
        } else {
            startup["sqlite_synchronous"] = "\(configuration.synchronous.rawValue)"
        }
        startup["retention_days"] = configuration.retentionDays > 0 ? "\(configuration.retentionDays)" : "forever"
        logger.info("spool starting", metadata: startup)
        for (name, meant) in ServerConfiguration.unknownVariables(in: ProcessInfo.processInfo.environment) {
            logger.warning("\(name) is no setting of Spool's and is ignored\(meant.map { " (did you mean \($0)?)" } ?? "")")
        }
        if configuration.retentionDays > 0, configuration.retentionDays < 1.0 / 24 {
            // Likely a mistake (hours for days?): a client that comes back for a result later finds a 404.
            logger.warning("retention_days is under an hour: ended jobs are deleted \(Int((configuration.retentionDays * 86_400).rounded())) s after they end, with their results",
                           metadata: ["retention_days": "\(configuration.retentionDays)"])
        }
        if let certificate = configuration.tlsCertificate, let warning = Self.certificateWarning(certificate, now: time(nil)) {
            logger.warning("\(warning)", metadata: ["tls_cert": "\(certificate)"])
        }
        if !Failpoints.enabled.isEmpty {
            logger.warning("crash-test failpoints are on (SPOOL_FAILPOINTS); this server will hang on purpose",
                           metadata: ["failpoints": "\(Failpoints.enabled.sorted())"])
        }
        var webhookConfiguration = WebhookDeliverer.Configuration()
        webhookConfiguration.secret = configuration.webhookSecret
        webhookConfiguration.storeKey = storeKey ?? []
        webhookConfiguration.retry.baseSeconds = configuration.webhookRetryBaseSeconds
        webhookConfiguration.target = WebhookGuard(allowPrivate: configuration.webhookAllowPrivate)
        let deliverer = WebhookDeliverer(store: store, outbox: store, configuration: webhookConfiguration, logger: logger, clock: clock)
        // Services shut down in reverse order: the scheduler first, while the API still answers
        // and the webhook deliverer still reports the jobs that finish meanwhile.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if configuration.role != .agent {
            services += [.init(service: tokens), .init(service: application), .init(service: deliverer)]
        } else if let metricsPort = configuration.metricsPort {
            // Its metrics, when asked for: the nodes that run the jobs count most of them (found by
            // attacking the build: with agents doing the work, job counts and busy slots were
            // nowhere). Its slots claim nothing before the port is bound, as a server's.
            let metricsServer = Application(
                router: api.metricsRouter(),
                server: try httpServer(configuration),
                configuration: .init(address: .hostname(host, port: metricsPort), serverName: "spool"),
                onServerRunning: { [logger] channel in
                    let port = channel.localAddress?.port ?? metricsPort
                    bound.withLock { $0 = true }
                    listened.yield()
                    listened.finish()
                    logger.info("serving /metrics and /healthz", metadata: ["url": "\(scheme)://\(host.contains(":") ? "[\(host)]" : host):\(port)"])
                    onListening("")
                },
                logger: logger
            )
            services += [.init(service: tokens), .init(service: metricsServer)]
        } else {
            listened.finish()
            onListening("")
        }
        if configuration.metricsPort != nil, configuration.role != .agent {
            logger.warning("metrics_port is for agents (spool agent); this node serves /metrics on its own port")
        }
        if let shared {
            var coordination = ClusterCoordinator.Configuration()
            coordination.runsJobs = configuration.role != .api
            coordination.role = configuration.role.rawValue
            coordination.slots = slots.count
            if let stopJobsWithin { coordination.onRenewal = { [guardian] since in guardian.killAfter(stopJobsWithin - since) } }
            services.append(.init(service: ClusterCoordinator(store: shared, scheduler: scheduler, configuration: coordination,
                                                              clock: clock, logger: logger)))
        }
        if let monitor = gpuMonitor(configuration, slots: slots, scheduler: scheduler, clock: clock, logger: logger) {
            services.append(.init(service: monitor))
        }
        if configuration.retentionDays > 0 {
            let retention = RetentionSweeper.Configuration(retention: .milliseconds(Int64(configuration.retentionDays * 86_400_000)))
            services.append(.init(service: RetentionSweeper(store: store, dataDirectory: dataDirectory, configuration: retention,
                                                            clock: clock, logger: logger)))
        }
        services.append(.init(service: AfterListening(listening, scheduler), successTerminationBehavior: .gracefullyShutdownGroup))
        let group = ServiceGroup(configuration: .init(
            services: services,
            // SIGHUP too: what a closed terminal sends (found by attacking the build: it killed the
            // server outright, its jobs' processes left running). Nothing is reloaded on it. Unless
            // it was ignored when the server started (`nohup`): then it stays so (found in review:
            // the handler would have overridden nohup, and a closed SSH session stopped the server).
            gracefulShutdownSignals: [.sigterm, .sigint] + (Self.hangUpIgnored ? [] : [.sighup]),
            logger: logger
        ))
        do {
            try await group.run()
            guardian.finish()
        } catch let error as IOError where (configuration.role != .agent || configuration.metricsPort != nil) && !bound.withLock({ $0 }) {
            // The listener could not be bound (the port taken, an address not on this machine):
            // the slots claimed nothing, the queue is as it was.
            let port = configuration.role == .agent ? configuration.metricsPort ?? 0 : configuration.port
            throw ConfigurationError("cannot listen on \(host):\(port): \(String(cString: strerror(error.errnoCode)))"
                + (error.errnoCode == EADDRINUSE ? " (is another server on that port?)" : ""))
        }
        logger.info("spool stopped")
    }

    /// The scheduler, once the HTTP server listens (at once on an agent): a server that cannot
    /// bind its port stops before its slots claim a job (found by attacking the build: with the
    /// port taken, a start claimed queued jobs as it went down, failing one as spawn_failed and
    /// leaving another running for the next start to count as interrupted).
    struct AfterListening: Service {
        let listening: AsyncStream<Void>
        let scheduler: Scheduler

        init(_ listening: AsyncStream<Void>, _ scheduler: Scheduler) {
            self.listening = listening
            self.scheduler = scheduler
        }

        func run() async throws {
            for await _ in listening.cancelOnGracefulShutdown() {}
            guard !Task.isCancelled, !Task.isShuttingDownGracefully else { return }
            try await scheduler.run()
        }
    }

    /// A server bound to a reachable address with no token would hand every job to anyone who
    /// can reach the port: it refuses to start, and says how to make a token.
    static func checkExposure(_ configuration: ServerConfiguration, tokensExist: Bool, dataDirectory: String) throws {
        guard !configuration.bindsLoopback, configuration.auth != .off, !tokensExist else { return }
        throw ConfigurationError("refusing to listen on \(configuration.host) without authentication: create a token first "
            + "(spool token create --name admin --admin --data-dir \(dataDirectory)), or set auth: off to serve without one")
    }

    /// HTTP/1.1; with `tls_cert` and `tls_key`, HTTPS with HTTP/2 by ALPN. Every connection is
    /// guarded (`ConnectionGuard`): a header deadline and a connection limit.
    /// Whether SIGHUP was set to be ignored when the process started (`nohup spool serve`).
    static var hangUpIgnored: Bool {
        var current = sigaction()
        // SIG_IGN is the handler `(void (*)(int)) 1`.
        return sigaction(SIGHUP, nil, &current) == 0 && unsafeBitCast(current.__sigaction_handler.sa_handler, to: Int.self) == 1
    }

    /// The job executors: a fresh process per job, or the slot's warm worker, both through one
    /// launcher of real child processes.
    static func executors(for catalog: JobCatalog, slots: [SlotSpec], dataDirectory: String, configuration: ServerConfiguration,
                          clock: SpoolClock, logger: Logger) -> JobExecutors {
        let launcher = SubprocessLauncher(logger: logger)
        let killGrace = Duration.seconds(configuration.killGraceSeconds)
        var processes = ProcessJobExecutor.Configuration(dataDirectory: dataDirectory)
        processes.killGrace = killGrace
        processes.logLimitBytes = configuration.logLimitBytes
        let workers = Worker.Settings(dataDirectory: dataDirectory, killGrace: killGrace, logLimitBytes: configuration.logLimitBytes,
                                      launcher: launcher, clock: clock, logger: logger)
        return JobExecutors(catalog: catalog,
                            processes: ProcessJobExecutor(catalog: catalog, configuration: processes, launcher: launcher, clock: clock),
                            workers: WorkerPool(catalog: catalog, slots: slots, settings: workers))
    }

    /// A job database that is missing or empty (0 bytes: SQLite would take it for a new one)
    /// where one was made before (`markDatabaseMade` left its note) has lost its jobs: starting
    /// would serve an empty queue as if nothing had been accepted (found by attacking the build:
    /// a truncated `spool.sqlite` started silently with every queued job forgotten). Refused,
    /// with what to do. (Job directories are no evidence: a data directory a PostgreSQL node
    /// used has them, and no database file.)
    static func refuseALostDatabase(_ database: String) throws {
        var status = stat()
        let exists = stat(database, &status) == 0
        guard !exists || status.st_size == 0, access(database + madeSuffix, F_OK) == 0 else { return }
        throw ConfigurationError("the job database \(database) is \(exists ? "empty (0 bytes)" : "missing"), but this data directory "
            + "had one (\(database + madeSuffix) says so): starting would forget its jobs. Restore the database from a backup, "
            + "or move \(database + madeSuffix) and the jobs folder aside to start with an empty queue")
    }

    static let madeSuffix = ".made"

    /// What a job type names that is not there: an executable given by its absolute path that is
    /// missing or cannot be run, or by a name found on none of its PATH's folders; a `working_dir`
    /// that is no directory. Said at start, each once
    /// (found by attacking the build: a typo such as /usr/bin/pyhton3 started silently, and every
    /// job of the type was taken, then failed spawn_failed). Not refused: it may be deployed later.
    static func missingFiles(of types: [JobType]) -> [String] {
        types.flatMap { type -> [String] in
            var problems: [String] = []
            if let executable = type.command.fixedExecutable, executable.hasPrefix("/"), case let code = access(executable, X_OK) == 0 ? 0 : errno, code != 0 {
                problems.append("job type \(type.name): its command's executable \(executable) \(code == ENOENT ? "is not there" : "cannot be run: " + String(cString: strerror(code))); "
                    + "its jobs will fail to start (spawn_failed) until it is")
            }
            // A name: looked up as the launcher will, in the absolute folders of the PATH its jobs get.
            if let name = type.command.fixedExecutable, !name.isEmpty, !name.contains("/"),
               let path = type.environment["PATH"] ?? getenv("PATH").map({ String(cString: $0) }),
               !path.split(separator: ":").contains(where: { $0.hasPrefix("/") && ExecutableLookup.isExecutableFile("\($0)/\(name)") }) {
                problems.append("job type \(type.name): its command's executable \(name) is not on its PATH (\(path)); "
                    + "its jobs will fail to start (spawn_failed) until it is")
            }
            var status = stat()
            if let directory = type.workingDirectory, stat(directory, &status) != 0 || status.st_mode & S_IFMT != S_IFDIR {
                problems.append("job type \(type.name): its working_dir \(directory) is not a directory; its jobs will fail to start (spawn_failed) until it is")
            }
            return problems
        }
    }

    /// Leaves a note beside a job database once it exists, for `refuseALostDatabase`.
    static func markDatabaseMade(_ dataDirectory: String) {
        let marker = dataDirectory + "/spool.sqlite" + madeSuffix
        guard access(marker, F_OK) != 0 else { return }
        FileManager.default.createFile(atPath: marker, contents: Data("""
            Spool made spool.sqlite in this directory: a start that finds it missing or empty refuses
            to serve an empty queue in its place. Remove this file only with the database.

            """.utf8))
    }

    /// Makes the data directory (and the folders above it) if it is not there, and its `jobs`
    /// folder; a new one is its owner's only: it holds every tenant's inputs and outputs (one that
    /// exists keeps its mode: the operator chose it). Each error names the path at fault.
    static func prepareDataDirectory(_ path: String) throws -> String {
        func failure(_ at: String, _ code: Int32) -> ConfigurationError {
            ConfigurationError("cannot create the data directory \(path): " + (code == ENOTDIR || code == EEXIST
                ? "\(at) is not a directory" : "\(at): \(String(cString: strerror(code)))"))
        }
        /// `mkdir`, taking a directory already there; nil or why not.
        func make(_ directory: String, mode: mode_t) -> Int32? {
            if mkdir(directory, mode) == 0 { return nil }
            let code = errno
            var status = stat()
            if code == EEXIST, stat(directory, &status) == 0, status.st_mode & S_IFMT == S_IFDIR { return nil }
            return code
        }
        var status = stat()
        if stat(path, &status) == 0 {
            guard status.st_mode & S_IFMT == S_IFDIR else { throw ConfigurationError("the data directory \(path) is not a directory") }
        } else {
            for folder in foldersAbove(path) { if let code = make(folder, mode: 0o777) { throw failure(folder, code) } }
            if let code = make(path, mode: 0o700) { throw failure(path, code) }
        }
        let jobs = (path.hasSuffix("/") ? path : path + "/") + "jobs"
        if let code = make(jobs, mode: 0o777) { throw failure(jobs, code) }
        return URL(fileURLWithPath: path).standardizedFileURL.path
    }

    /// A warning when every user of the machine can enter the data directory and its `jobs` folder
    /// (the job directories in it are made readable to all, as files usually are): one an earlier
    /// Spool made, 0755 under umask 022 (found by attacking an upgrade), or an operator's choice.
    static func openToOthers(_ dataDirectory: String) -> String? {
        var top = stat(), jobs = stat()
        guard stat(dataDirectory, &top) == 0, stat(dataDirectory + "/jobs", &jobs) == 0,
              top.st_mode & S_IXOTH != 0, jobs.st_mode & S_IXOTH != 0 else { return nil }
        // Nor when a folder above it keeps others out (a home directory's 0700, found in review).
        for folder in foldersAbove(dataDirectory) where folder.hasPrefix("/") {
            var status = stat()
            if stat(folder, &status) == 0, status.st_mode & S_IXOTH == 0 { return nil }
        }
        return "the data directory \(dataDirectory) (mode \(String(top.st_mode & 0o777, radix: 8))) and its jobs folder can be entered by anyone: "
            + "every user on this machine can read every tenant's inputs, logs and outputs; chmod 700 \(dataDirectory) unless that is meant "
            + "(a data directory Spool makes is its owner's only; one an earlier Spool made may not be)"
    }

    /// The folders above `path`, outermost first, as `mkdir -p` makes them; none for a path of
    /// one component (found by attacking the build: Foundation's `deletingLastPathComponent` of
    /// a one-character relative path crashed the server with SIGILL).
    static func foldersAbove(_ path: String) -> [String] {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true).dropLast()
        var folders: [String] = []
        var prefix = path.hasPrefix("/") ? "/" : ""
        for part in parts {
            prefix += part
            folders.append(prefix)
            prefix += "/"
        }
        return folders
    }

    /// Jobs a crashed server left `running`: kill their leftover processes, then requeue them
    /// (or fail them as `interrupted` when their attempts are used up). Returns them as it left them.
    /// With a shared store (`node` set), only this node's jobs: the others run elsewhere.
    static func recover(_ store: any JobStore, node: String?, dataDirectory: String, logger: Logger) async throws -> [Job] {
        let workers = try await OrphanReaper.killLeftoverWorkers(of: dataDirectory)
        if !workers.isEmpty {
            logger.warning("killed warm workers left by a previous crash", metadata: ["pids": "\(workers)"])
        }
        // Every job process of this data directory is a leftover now (the directory is locked):
        // with a shared store, that includes jobs already rescued by other nodes, whose
        // processes must not go on using this node's GPUs.
        let leftovers = try await OrphanReaper.killLeftoverJobs(of: dataDirectory)
        if !leftovers.isEmpty {
            logger.warning("killed job processes left by a previous crash", metadata: ["pids": "\(leftovers)"])
        }
        // Every running job, however large their inputs (a page cut at its byte budget could hold only other nodes').
        let running = try await store.jobs(JobQuery(state: .running, limit: 100_000, maxBytes: .max)).jobs.filter { node == nil || $0.node == node }
        guard !running.isEmpty else { return [] }
        let now = WallClock.now()
        let recovered = try await store.recoverInterrupted(now: now).map { job in
            var job = job
            job.recoverFromInterruption(at: now)   // as the store left it (the store returns it as found)
            return job
        }
        SchedulerMetrics.ended(recovered)
        let requeued = recovered.count { $0.state == .queued }
        let failed = recovered.count { $0.state == .failed }
        logger.warning("recovered jobs interrupted by a previous crash", metadata: [
            "requeued": "\(requeued)", "failed_interrupted": "\(failed)", "canceled": "\(recovered.count - requeued - failed)",
            "leftover_processes_killed": "\(leftovers.count)",
        ])
        return recovered
    }
}
