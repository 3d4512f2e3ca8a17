import Foundation
import Logging
import SpoolCore
import SpoolExecutor
import SpoolScheduler

/// The slots a node runs: which GPUs (or CPU slots), and the monitor that reads their health.
extension SpoolServer {
    /// The slots: CPU slots, or per GPU — those `gpus` names, checked against `nvidia-smi -L`
    /// when it answers (a device it does not list is a one-line error: found by attacking the
    /// build, `--gpus 0,5` on a two-GPU machine started a slot whose jobs saw no GPU, and whose
    /// health was never read), or those it lists (`auto`; a machine whose nvidia-smi fails or
    /// hangs serves CPU slots, and says so).
    static func pickSlots(_ configuration: ServerConfiguration, logger: Logger) async throws -> [SlotSpec] {
        let cpuSlots = (0..<configuration.slots).map { SlotSpec(id: SlotID($0)) }
        switch configuration.gpus {
        case .none:
            return cpuSlots
        case .devices(let devices):
            switch await GPUProbe.listing() {
            case .devices(let found):
                let known = Set(found.map(\.index) + found.compactMap(\.uuid))
                // MIG devices (`MIG-…`) and the like are not listed by index or GPU UUID: taken as named.
                for device in devices where (device.allSatisfy(\.isNumber) || device.hasPrefix("GPU-")) && !known.contains(device) {
                    throw ConfigurationError("gpus: nvidia-smi -L lists no GPU \(device) on this machine (it lists "
                        + (found.isEmpty ? "none" : found.map(\.index).joined(separator: ", ")) + ")")
                }
                // A GPU named by its UUID is its index from here on: its health is read, and its
                // jobs numbered (CUDA_DEVICE_ORDER=PCI_BUS_ID), by index, as nvidia-smi lists it.
                let indexOf = Dictionary(found.compactMap { gpu in gpu.uuid.map { ($0, gpu.index) } }, uniquingKeysWith: { first, _ in first })
                let resolved = devices.map { indexOf[$0] ?? $0 }
                if let twice = resolved.first(where: { device in resolved.filter { $0 == device }.count > 1 }) {
                    throw ConfigurationError("gpus: names GPU \(twice) twice (by its index and by its UUID)")
                }
                return gpuSlots(resolved, perGPU: configuration.slotsPerGPU)
            case .noTool:
                logger.warning("gpus names devices, but there is no nvidia-smi on the PATH to check them or read their health",
                               metadata: ["gpus": "\(devices)"])
            case .failed(let why):
                logger.warning("gpus names devices that could not be checked", metadata: ["gpus": "\(devices)", "reason": "\(why)"])
            }
            return gpuSlots(devices, perGPU: configuration.slotsPerGPU)
        case .auto:
            let listing = await GPUProbe.listing()
            let devices = listing.devices
            guard !devices.isEmpty else {
                let cpu = "\(configuration.slots) CPU slot(s)"
                switch listing {
                case .noTool: logger.info("no nvidia-smi on the PATH: no GPUs", metadata: ["serving": "\(cpu)"])
                case .failed(let why):
                    logger.warning("gpus: auto found no GPU, as nvidia-smi failed; if this machine has GPUs, mend its driver and restart",
                                   metadata: ["reason": "\(why)", "serving": "\(cpu)"])
                case .devices: logger.warning("gpus: auto found no GPU: nvidia-smi -L lists none", metadata: ["serving": "\(cpu)"])
                }
                return cpuSlots
            }
            logger.info("found GPUs", metadata: ["gpus": "\(devices.map { "\($0.index): \($0.name)" })", "slots_per_gpu": "\(configuration.slotsPerGPU)"])
            return gpuSlots(devices.map(\.index), perGPU: configuration.slotsPerGPU)
        }
    }

    /// With GPU slots and `gpu_health_interval_s` above 0: the GPU health poll and self-tests.
    static func gpuMonitor(_ configuration: ServerConfiguration, slots: [SlotSpec], scheduler: Scheduler, clock: SpoolClock,
                           logger: Logger) -> GPUHealthMonitor? {
        let devices = Array(Set(slots.compactMap(\.gpu))).sorted()
        guard !devices.isEmpty, configuration.gpuHealthIntervalSeconds > 0 else { return nil }
        var settings = GPUHealthMonitor.Configuration(devices: devices, interval: .milliseconds(Int64(configuration.gpuHealthIntervalSeconds * 1000)),
                                                      selfTest: configuration.gpuSelfTest)
        settings.selfTestTimeout = .milliseconds(Int64(configuration.gpuSelfTestTimeoutSeconds * 1000))
        return GPUHealthMonitor(scheduler: scheduler, configuration: settings, clock: clock, logger: logger)
    }

    /// `slots_per_gpu` slots for each device, every one pinned to its device.
    static func gpuSlots(_ devices: [String], perGPU: Int) -> [SlotSpec] {
        devices.flatMap { device in Array(repeating: device, count: perGPU) }.enumerated().map {
            SlotSpec(id: SlotID($0.offset), gpu: $0.element)
        }
    }
}
