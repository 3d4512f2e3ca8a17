import Foundation
import Subprocess

/// Finds the machine's NVIDIA GPUs with `nvidia-smi -L` (one line per device:
/// `GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-…)`). No `nvidia-smi`, or one that fails,
/// means no GPUs.
public enum GPUProbe {
    public struct Device: Sendable, Hashable {
        public var index: String
        public var name: String
    }

    public static func devices() async -> [Device] {
        guard let result = try? await Subprocess.run(.name("nvidia-smi"), arguments: ["-L"], output: .string(limit: 1 << 16), error: .discarded),
              result.terminationStatus.isSuccess
        else { return [] }
        return parse(result.standardOutput)
    }

    /// GPU memory per process (MiB) from `nvidia-smi --query-compute-apps`; empty without a GPU.
    public static func processMemory() async -> [Int32: Double] {
        guard let result = try? await Subprocess.run(
            .name("nvidia-smi"), arguments: ["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            output: .string(limit: 1 << 16), error: .discarded),
              result.terminationStatus.isSuccess
        else { return [:] }
        var memory: [Int32: Double] = [:]
        for line in result.standardOutput.split(separator: "\n") {
            let fields = line.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            if fields.count == 2, let pid = Int32(fields[0]), let used = Double(fields[1]) { memory[pid, default: 0] += used }
        }
        return memory
    }

    static func parse(_ text: String) -> [Device] {
        text.split(separator: "\n").compactMap { line in
            guard line.hasPrefix("GPU "), let colon = line.firstIndex(of: ":") else { return nil }
            let index = line[line.index(line.startIndex, offsetBy: 4)..<colon]
            guard !index.isEmpty, index.allSatisfy(\.isNumber) else { return nil }
            var name = line[line.index(after: colon)...].drop { $0 == " " }
            if let uuid = name.firstRange(of: " (UUID") { name = name[..<uuid.lowerBound] }
            return Device(index: String(index), name: String(name))
        }
    }
}
