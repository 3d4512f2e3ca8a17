import SpoolCore
import Testing
@testable import SpoolApp

/// What a job type names and is not there is said at start (found by attacking the build: a
/// command's executable mistyped, or a missing working_dir, started silently, and every job of
/// the type was taken and then failed to start).
@Suite struct JobTypeFilesTests {
    @Test func aMissingExecutableOrWorkingDirectoryIsNamed() throws {
        let types = [
            JobType(name: "typo", command: try CommandTemplate(["/usr/bin/pyhton3-not-here", "x"])),
            JobType(name: "lost", command: try CommandTemplate(["/bin/true"]), workingDirectory: "/srv/does-not-exist-\(UInt32.random(in: 0...UInt32.max))"),
            JobType(name: "fine", command: try CommandTemplate(["/bin/true"]), workingDirectory: "/tmp"),
            JobType(name: "looked-up", command: try CommandTemplate(["sh", "-c", "true"])),
            JobType(name: "from-input", command: try CommandTemplate(["{input.tool}"])),
        ]
        let problems = SpoolServer.missingFiles(of: types)
        #expect(problems.count == 2, "\(problems)")
        #expect(problems.first?.hasPrefix("job type typo: its command's executable /usr/bin/pyhton3-not-here is not there") == true, "\(problems)")
        #expect(problems.last?.hasPrefix("job type lost: its working_dir /srv/does-not-exist-") == true, "\(problems)")
    }

    /// A bare command name is looked up on the PATH its jobs get (the type's, else the server's):
    /// one found nowhere is named at start too (found in review of the check above, which
    /// looked at absolute paths only).
    @Test func aCommandNameNotOnItsPathIsNamed() throws {
        let types = [
            JobType(name: "bare-typo", command: try CommandTemplate(["pyhton3-not-here", "x"])),
            JobType(name: "own-path", command: try CommandTemplate(["sh", "-c", "true"]), environment: ["PATH": "/srv/no-such-bin"]),
            JobType(name: "own-path-fine", command: try CommandTemplate(["sh", "-c", "true"]), environment: ["PATH": "/srv/no-such-bin:/bin:/usr/bin"]),
            // Relative folders are never searched (nor by the launcher): only /usr/bin counts.
            JobType(name: "relative", command: try CommandTemplate(["sh", "-c", "true"]), environment: ["PATH": "bin::/usr/bin:/bin"]),
        ]
        let problems = SpoolServer.missingFiles(of: types)
        #expect(problems.count == 2, "\(problems)")
        #expect(problems.first?.hasPrefix("job type bare-typo: its command's executable pyhton3-not-here is not on its PATH (") == true, "\(problems)")
        #expect(problems.last?.hasPrefix("job type own-path: its command's executable sh is not on its PATH (/srv/no-such-bin)") == true, "\(problems)")
    }
}
