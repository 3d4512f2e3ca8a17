import Logging
import Metrics
import ServiceLifecycle
import SpoolCore
import SpoolExecutor
import SpoolStore

/// Retention: jobs that ended longer than `retention_days` ago are deleted — their rows,
/// events, webhook deliveries and files — so a server that runs for months keeps a bounded
/// store and disk. A pass runs at start and then every `Configuration.interval`.
///
/// With a shared store any node's pass deletes rows (`JobStore.deleteEnded`), and each node
/// removes the directories it holds: those of the jobs its own pass deleted, and any old one
/// whose job is no longer stored (deleted by another node, or before a crash let this one
/// finish).
public struct RetentionSweeper: Service {
    public struct Configuration: Sendable {
        /// How long an ended job is kept.
        public var retention: Duration
        /// Jobs deleted per transaction: a pass is many short writes, not one long one.
        public var batch = 500
        /// Old directories looked up in the store per pass, at most.
        public var directoryLookups = 10_000

        public init(retention: Duration) { self.retention = retention }

        /// A quarter of the retention, from one second to one hour.
        public var interval: Duration { min(max(retention / 4, .seconds(1)), .seconds(3600)) }
    }

    /// What one pass removed.
    public struct Pass: Sendable, Equatable {
        public var jobs = 0
        public var directories = 0

        public init(jobs: Int = 0, directories: Int = 0) {
            self.jobs = jobs
            self.directories = directories
        }
    }

    let store: any JobStore
    let dataDirectory: String
    let configuration: Configuration
    let clock: SpoolClock
    let logger: Logger
    /// Made with the sweeper, so `/metrics` shows it from the start.
    let deletedJobs = Counter(label: "spool_jobs_deleted_total")

    public init(store: any JobStore, dataDirectory: String, configuration: Configuration, clock: SpoolClock, logger: Logger) {
        self.store = store
        self.dataDirectory = dataDirectory
        self.configuration = configuration
        self.clock = clock
        self.logger = logger
    }

    public func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            await sweep()
            do { try await cancelWhenGracefulShutdown { try await clock.sleep(for: configuration.interval) } } catch { return }
        }
    }

    /// One pass: the stored jobs that ended before now less the retention, then this node's
    /// directories of jobs no longer stored. A store that refuses is tried again next pass.
    @discardableResult
    public func sweep() async -> Pass {
        let cutoff = clock.wall().adding(seconds: -configuration.retention.inSeconds)
        var pass = Pass()
        do {
            while !Task.isCancelled && !Task.isShuttingDownGracefully {
                let deleted = try await store.deleteEnded(before: cutoff, limit: configuration.batch)
                pass.jobs += deleted.count
                pass.directories += try await BlockingIO.run { [dataDirectory] in
                    deleted.filter { JobDirectories.remove($0, in: dataDirectory) }.count
                }
                if deleted.count < configuration.batch { break }
            }
            // Directories as old as the cutoff whose job is gone. A job still stored (it ran
            // longer than the retention, its array is not all old, or a spare made long ago was
            // renamed into place for it) keeps its directory: the store decides, the age only
            // narrows the look. Past `directoryLookups`, a random share each pass.
            let old = try await BlockingIO.run { [dataDirectory] in JobDirectories.changed(before: cutoff, in: dataDirectory).shuffled() }
            pass.directories += try await JobDirectories.removeUnstored(old.prefix(configuration.directoryLookups), store: store, in: dataDirectory)
        } catch is CancellationError {
        } catch {
            logger.warning("retention: could not delete the jobs that ended before the cutoff; trying again next pass",
                           metadata: ["cutoff": "\(cutoff)", "error": "\(error)"])
        }
        if pass.jobs > 0 || pass.directories > 0 {
            deletedJobs.increment(by: pass.jobs)
            logger.info("retention: deleted the jobs that ended before the cutoff",
                        metadata: ["cutoff": "\(cutoff)", "jobs": "\(pass.jobs)", "directories": "\(pass.directories)"])
        }
        return pass
    }
}

extension JobDirectories {
    /// Removes the directories of `ids` whose job is no longer stored, one lookup each, until the
    /// task is cancelled or the server shuts down; how many it removed. A store that fails stops it.
    static func removeUnstored(_ ids: some Sequence<JobID>, store: any JobStore, in dataDirectory: String) async throws -> Int {
        var removed = 0
        for id in ids where !Task.isCancelled && !Task.isShuttingDownGracefully {
            guard try await store.job(id) == nil else { continue }
            if try await BlockingIO.run({ JobDirectories.remove(id, in: dataDirectory) }) { removed += 1 }
        }
        return removed
    }
}
