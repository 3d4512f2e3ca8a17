import Foundation
import Subprocess
import SystemPackage

/// The files under `Benchmarks/` that the dispatch-gap and warm-worker scenarios run: the stamp
/// job (`Benchmarks/jobs/stamp.c`, compiled here with the machine's C compiler into the run's
/// scratch directory) and the bench worker (`Benchmarks/workers/noop_worker.py`). A scenario whose
/// asset is missing fails with the reason, and its targets read MISS (not measured).
struct BenchAssets: Sendable {
    /// The compiled stamp job, or nil with `stampProblem` saying why.
    var stampBinary: String?
    var stampProblem: String?
    /// `Benchmarks/workers/noop_worker.py`, or nil with `workerProblem` saying why.
    var workerScript: String?
    var workerProblem: String?
    /// e.g. "cc (gcc 13.2.0) -O2".
    var compiler: String?
    /// What an fdatasync of a 4 KiB append costs in the scratch directory (see `SyncProbe`).
    var sync: SyncProbe.Cost?

    func requireStamp() throws -> String {
        guard let stampBinary else { throw BenchError("the stamp job is not available: \(stampProblem ?? "unknown reason")") }
        return stampBinary
    }

    func requireWorker() throws -> String {
        guard let workerScript else { throw BenchError("the bench worker is not available: \(workerProblem ?? "unknown reason")") }
        return workerScript
    }

    static func prepare(_ options: BenchOptions, into directory: String) async -> BenchAssets {
        var assets = BenchAssets()
        if let script = locate("Benchmarks/workers/noop_worker.py", options) {
            assets.workerScript = script
        } else {
            assets.workerProblem = "Benchmarks/workers/noop_worker.py not found (run from the checkout)"
        }
        guard let source = locate("Benchmarks/jobs/stamp.c", options) else {
            assets.stampProblem = "Benchmarks/jobs/stamp.c not found (run from the checkout)"
            return assets
        }
        let output = directory + "/stamp"
        var tried: [String] = []
        for compiler in ["cc", "clang", "gcc"] {
            do {
                let result = try await Subprocess.run(
                    .name(compiler), arguments: ["-O2", "-o", output, source],
                    output: .string(limit: 64 * 1024), error: .string(limit: 64 * 1024))
                if result.terminationStatus.isSuccess, FileManager.default.isExecutableFile(atPath: output) {
                    let version = try? await Subprocess.run(
                        .name(compiler), arguments: ["--version"], output: .string(limit: 64 * 1024), error: .discarded)
                    let first = version?.standardOutput.split(separator: "\n").first.map(String.init) ?? compiler
                    assets.compiler = "`\(compiler) -O2` (\(first))"
                    assets.stampBinary = output
                    return assets
                }
                tried.append("\(compiler): \(result.standardError.split(separator: "\n").first.map(String.init) ?? "failed")")
            } catch {
                tried.append("\(compiler): not runnable")
            }
        }
        assets.stampProblem = "could not compile \(source) (\(tried.joined(separator: "; ")))"
        return assets
    }

    /// Looks for `relative` (e.g. `Benchmarks/jobs/stamp.c`): the current directory, the
    /// directories above the spool binary (`.build/release/spool` sits in the checkout), and the
    /// checkout this file was compiled from.
    static func locate(_ relative: String, _ options: BenchOptions) -> String? {
        var candidates = [FileManager.default.currentDirectoryPath + "/" + relative]
        var directory = URL(fileURLWithPath: options.spoolBinary).resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<6 {
            candidates.append(directory.appendingPathComponent(relative).path)
            directory.deleteLastPathComponent()
        }
        let checkout = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        candidates.append(checkout.appendingPathComponent(relative).path)
        return candidates.first { FileManager.default.fileExists(atPath: $0) }
            .map { URL(fileURLWithPath: $0).standardizedFileURL.path }
    }
}
