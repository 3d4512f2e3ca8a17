import Foundation

/// Where the numbers were taken: the report states it next to the command.
struct MachineInfo: Sendable {
    var processors: Int
    var kernel: String
    var cpuModel: String
    var memory: String
    var date: String

    static func collect() -> MachineInfo {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let model = cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .flatMap { $0.split(separator: ":", maxSplits: 1).last }
            .map { $0.trimmingCharacters(in: .whitespaces) } ?? "unknown"
        let meminfo = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
        let totalKiB = meminfo.split(separator: "\n").first { $0.hasPrefix("MemTotal:") }
            .flatMap { $0.split(separator: " ").dropFirst().first }.flatMap { Double($0) }
        let formatter = ISO8601DateFormatter()
        formatter.timeZone = TimeZone(identifier: "UTC")
        return MachineInfo(
            processors: ProcessInfo.processInfo.activeProcessorCount,
            kernel: ((try? String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8)) ?? "unknown")
                .trimmingCharacters(in: .whitespacesAndNewlines),
            cpuModel: model,
            memory: totalKiB.map { ($0 / 1_048_576).fixed(1) + " GiB" } ?? "unknown",
            date: formatter.string(from: Date()))
    }

    /// The command line that produced the report, quoted so it can be pasted into a shell.
    static var command: String {
        CommandLine.arguments.map { argument in
            let safe = argument.allSatisfy { $0.isLetter || $0.isNumber || "-_./=:,@+".contains($0) }
            return safe && !argument.isEmpty ? argument : "'" + argument.replacingOccurrences(of: "'", with: #"'\''"#) + "'"
        }.joined(separator: " ")
    }
}
