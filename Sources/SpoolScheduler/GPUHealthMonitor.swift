import Logging
import ServiceLifecycle
import SpoolCore
import SpoolExecutor
import Synchronization

/// Polls the GPUs' health with `nvidia-smi` every `interval` and hands the readings to the
/// scheduler (an unhealthy GPU's slots are quarantined); then runs the self-test of each
/// quarantined slot that is due, pinned to the slot's GPU: exit status 0 releases the slot.
/// Runs only on a node with GPU slots. Every command runs off the event loops (swift-subprocess)
/// and is killed past its time limit.
public struct GPUHealthMonitor: Service, Sendable {
    public struct Configuration: Sendable {
        public var devices: [String]
        public var interval: Duration
        /// argv run with `CUDA_VISIBLE_DEVICES` set to the slot's GPU; nil: only an administrator
        /// releases a quarantined slot.
        public var selfTest: [String]?
        public var selfTestTimeout: Duration = .seconds(120)
        public var probeTimeout: Duration = .seconds(20)

        public init(devices: [String], interval: Duration, selfTest: [String]?) {
            self.devices = devices
            self.interval = interval
            self.selfTest = selfTest
        }
    }

    let scheduler: Scheduler
    let configuration: Configuration
    let clock: SpoolClock
    let logger: Logger
    private let readsFailing = ReadsFailing()
    private let aliases = DeviceAliases()
    private let selfTestsWarned = SelfTestsWarned()

    public init(scheduler: Scheduler, configuration: Configuration, clock: SpoolClock, logger: Logger) {
        self.scheduler = scheduler
        self.configuration = configuration
        self.clock = clock
        self.logger = logger
    }

    /// Reads the GPUs' health every interval; each self-test due runs beside the readings, in a
    /// task of its own (one at a time per GPU), so a slow one holds up neither the readings nor
    /// another slot's test (found by attacking the build: run inline, one after another, a
    /// self-test that took its time stopped every GPU's health being read until it ended).
    public func run() async throws {
        await resolveAliases()
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                let testing = GPUsTesting()
                while !Task.isCancelled {
                    await readHealth()
                    // One at a time per GPU, not per slot: the slots of one GPU (slots_per_gpu)
                    // testing it at once could fail each other (found in review).
                    for slot in await selfTestsDue() {
                        guard let gpu = slot.gpu, testing.gpus.withLock({ $0.insert(gpu).inserted }) else {
                            _ = await scheduler.selfTestEnded(on: slot.id, passed: false)   // not run: no longer testing
                            continue
                        }
                        group.addTask { [self] in
                            await selfTest(slot)
                            testing.gpus.withLock { _ = $0.remove(gpu) }
                        }
                    }
                    do { try await clock.sleep(for: configuration.interval) } catch { return }
                }
            }
        }
    }

    /// One round, each part awaited: read the GPUs' health, then run the self-tests that are due.
    public func check() async {
        await readHealth()
        for slot in await selfTestsDue() { await selfTest(slot) }
    }

    /// Slots named otherwise than by a GPU's index — a MIG device (`MIG-…`), a GPU by UUID when
    /// `nvidia-smi -L` could not say its index at start — read their GPU's health, found in the
    /// listing; one it does not list is warned of, its health not read (found by attacking the
    /// build: such slots were never quarantined for their GPU's health, and nothing said so).
    func resolveAliases() async {
        let named = configuration.devices.filter { !$0.allSatisfy(\.isNumber) }
        guard !named.isEmpty else { return }
        var indexOf: [String: String] = [:]
        if case .devices(let found) = await GPUProbe.listing() {
            for gpu in found {
                if let uuid = gpu.uuid { indexOf[uuid] = gpu.index }
                for mig in gpu.migs { indexOf[mig] = gpu.index }
            }
        }
        let unread = named.filter { indexOf[$0] == nil }
        if !unread.isEmpty {
            logger.warning("nvidia-smi -L lists no GPU for these devices: their health is not read, and their slots are quarantined for failures only",
                           metadata: ["devices": "\(unread)"])
        }
        aliases.map.withLock { map in map = indexOf.filter { named.contains($0.key) } }
    }

    /// The GPU index whose reading stands for each device named otherwise (`resolveAliases`).
    private final class DeviceAliases: Sendable {
        let map = Mutex<[String: String]>([:])
    }

    /// A failed reading is warned of once, until one succeeds again (found by attacking the build:
    /// with no nvidia-smi, a warning every interval, 2,880 a day, each naming a timeout that never was).
    private func readHealth() async {
        let aliased = aliases.map.withLock { $0 }
        let probed = Array(Set(configuration.devices.map { aliased[$0] ?? $0 })).sorted()
        if var health = await GPUProbe.health(of: probed, timeout: configuration.probeTimeout) {
            for (device, index) in aliased { health[device] = health[index] }
            if readsFailing.failing.exchange(false, ordering: .acquiringAndReleasing) { logger.notice("the GPUs' health can be read again") }
            await scheduler.read(gpuHealth: health)
        } else if Task.isCancelled {
            return   // the server stops: the reading was cut off, not failed (found by attacking the build: a warning at every clean stop)
        } else if !readsFailing.failing.exchange(true, ordering: .acquiringAndReleasing) {
            logger.warning("could not read the GPUs' health: nvidia-smi is missing, failed, or did not answer within its time limit; said once until a reading succeeds",
                           metadata: ["time_limit": "\(configuration.probeTimeout)"])
        } else {
            logger.debug("could not read the GPUs' health (again)")
        }
    }

    /// Whether the last health reading failed.
    private final class ReadsFailing: Sendable {
        let failing = Atomic<Bool>(false)
    }

    /// The quarantined GPU slots whose self-test is due (none without a self-test).
    private func selfTestsDue() async -> [SlotSpec] {
        guard configuration.selfTest != nil else { return [] }
        return await scheduler.selfTestsDue(every: configuration.interval).filter { $0.gpu != nil }
    }

    /// The GPUs whose self-test runs now.
    private final class GPUsTesting: Sendable {
        let gpus = Mutex<Set<String>>([])
    }

    /// Runs `slot`'s self-test; a pass releases the slot.
    private func selfTest(_ slot: SlotSpec) async {
        guard let argv = configuration.selfTest, let gpu = slot.gpu else { return }
        let (passed, detail) = await GPUProbe.selfTest(argv, gpu: gpu, slot: slot.id, timeout: configuration.selfTestTimeout)
        // A pass opens every quarantined slot of the GPU it tested.
        _ = await scheduler.selfTestEnded(on: slot.id, passed: passed)
        if passed { return }
        let metadata: Logger.Metadata = ["slot": "\(slot.id)", "gpu": "\(gpu)", "detail": "\(detail)"]
        // Released meanwhile (an administrator): it does not stay quarantined (found by attacking the build).
        guard let since = await scheduler.quarantinedSlots().first(where: { $0.0.id == slot.id })?.1.since else {
            logger.warning("the GPU self-test failed after its slot was released", metadata: metadata)
            return
        }
        // Once a quarantine, not at every interval while the GPU waits for repair (found by attacking
        // the build: 2,880 warnings a day per slot at the default interval).
        if selfTestsWarned.keys.withLock({ $0.insert("\(slot.id)@\(since)").inserted }) {
            logger.warning("the GPU self-test failed; the slot stays quarantined (said once a quarantine; later failures are logged at debug level)",
                           metadata: metadata)
        } else {
            logger.debug("the GPU self-test failed again; the slot stays quarantined", metadata: metadata)
        }
    }

    /// The quarantines (a slot, since when) whose failing self-test was warned of.
    private final class SelfTestsWarned: Sendable {
        let keys = Mutex<Set<String>>([])
    }
}
