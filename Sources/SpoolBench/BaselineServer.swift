import Foundation
import Subprocess
import SystemPackage

/// The FastAPI baseline (`Benchmarks/baseline/app.py`): where it is, which interpreter runs it,
/// and how to start it. Found by `probe`, which also resolves the interpreter's real path
/// (`sys.executable`): a pyenv shim is a shell script that forks, so signalling the shim's PID
/// would not stop the server, and Spool's `busy` job should not pay for the shim either.
struct BaselineServer: Sendable {
    let python: String
    let appPath: String
    /// e.g. "FastAPI 0.165.0, uvicorn 0.54.0 (h11 parser, asyncio loop), Python 3.11.7".
    let description: String

    func launch(in directory: String, stampBinary: String?) -> ServerLaunch {
        ServerLaunch(
            label: "baseline", executable: python,
            arguments: ["-u", appPath, "--host", "127.0.0.1", "--port", "0", "--workers", "1"]
                + (stampBinary.map { ["--stamp-binary", $0] } ?? []),
            workingDirectory: directory, logPath: directory + "/server.log")
    }

    /// What the probe learned: the interpreter (if any) and the baseline, or why it is skipped.
    struct Probe: Sendable {
        var pythonExecutable: String?
        var pythonVersion: String?
        var server: BaselineServer?
        var skipReason: String?
    }

    static let installHint = "install it with `python3 -m pip install fastapi uvicorn` (see Benchmarks/README.md)"

    static func probe(_ options: BenchOptions) async -> Probe {
        let script = """
            import sys, importlib.util as u
            print(sys.executable); print(sys.version.split()[0]); sys.stdout.flush()
            import fastapi, uvicorn
            print(fastapi.__version__); print(uvicorn.__version__)
            print("httptools" if u.find_spec("httptools") else "h11")
            print("uvloop" if u.find_spec("uvloop") else "asyncio")
            """
        let executable: Executable = options.python.contains("/") ? .path(FilePath(options.python)) : .name(options.python)
        var probe = Probe()
        do {
            let result = try await Subprocess.run(
                executable, arguments: ["-c", script], output: .string(limit: 64 * 1024), error: .string(limit: 64 * 1024))
            let lines = result.standardOutput.split(separator: "\n").map(String.init)
            if lines.count >= 2 { probe.pythonExecutable = lines[0]; probe.pythonVersion = lines[1] }
            guard result.terminationStatus.isSuccess, lines.count >= 6 else {
                let why = result.standardError.split(separator: "\n").last.map(String.init) ?? "\(result.terminationStatus)"
                probe.skipReason = "FastAPI/uvicorn are not importable by `\(options.python)` (\(why)); \(installHint)"
                return probe
            }
            guard let app = locateApp(options) else {
                probe.skipReason = "Benchmarks/baseline/app.py not found (set SPOOL_BENCH_BASELINE_APP or run from the checkout)"
                return probe
            }
            probe.server = BaselineServer(
                python: lines[0], appPath: app,
                description: "FastAPI \(lines[2]), uvicorn \(lines[3]) (\(lines[4]) parser, \(lines[5]) loop), Python \(lines[1])")
        } catch {
            probe.skipReason = "could not run `\(options.python)`: \(error); \(installHint)"
        }
        return probe
    }

    /// Looks for app.py: the option, `SPOOL_BENCH_BASELINE_APP`, the current directory, the
    /// directories above the spool binary (`.build/release/spool` sits in the checkout), and
    /// finally the checkout this file was compiled from.
    static func locateApp(_ options: BenchOptions) -> String? {
        let relative = "Benchmarks/baseline/app.py"
        var candidates: [String] = []
        if let explicit = options.baselineApp { candidates.append(explicit) }
        if let fromEnvironment = ProcessInfo.processInfo.environment["SPOOL_BENCH_BASELINE_APP"] {
            candidates.append(fromEnvironment)
        }
        candidates.append(FileManager.default.currentDirectoryPath + "/" + relative)
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
