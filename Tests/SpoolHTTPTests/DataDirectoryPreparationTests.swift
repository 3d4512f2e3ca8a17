import Foundation
import Testing
@testable import SpoolApp

/// Making the data directory at start: any path, and an error that says what is wrong with one
/// that cannot be made.
@Suite struct DataDirectoryPreparationTests {
    /// Found by attacking the build: `--data-dir d` (one character, relative) crashed the server
    /// (and `spool token create`) with SIGILL, in Foundation's parent-of-a-path. The folders
    /// above a data directory, as `mkdir -p` makes them (relative ones are not changed here: the
    /// test process's current directory is everyone's).
    @Test func theFoldersAboveAnyPath() {
        #expect(SpoolServer.foldersAbove("d").isEmpty)
        #expect(SpoolServer.foldersAbove("x/").isEmpty)
        #expect(SpoolServer.foldersAbove("é").isEmpty)
        #expect(SpoolServer.foldersAbove("~").isEmpty)
        #expect(SpoolServer.foldersAbove("a/b/c") == ["a", "a/b"])
        #expect(SpoolServer.foldersAbove("./e") == ["."])
        #expect(SpoolServer.foldersAbove("/srv//spool/data/") == ["/srv", "/srv/spool"])
        #expect(SpoolServer.foldersAbove("/d") == [])
        #expect(SpoolServer.foldersAbove("/") == [])
    }

    func scratch() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("spool-datadir-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test func aNewDataDirectoryIsMadeWithItsParentsAndIsItsOwnersOnly() throws {
        let scratch = try scratch()
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let made = try SpoolServer.prepareDataDirectory(scratch + "/a/b/d/")
        #expect(made == scratch + "/a/b/d")
        var status = stat()
        #expect(stat(scratch + "/a/b/d/jobs", &status) == 0 && status.st_mode & S_IFMT == S_IFDIR)
        #expect(stat(scratch + "/a/b/d", &status) == 0 && status.st_mode & 0o777 == 0o700, "a new data directory is its owner's only")
        #expect(try SpoolServer.prepareDataDirectory(scratch + "/a/b/d") == made, "one that exists is taken as it is")
    }

    /// A data directory every user can enter, with a `jobs` folder they can too (an earlier Spool
    /// made both 0755 under umask 022), is warned of at start: every tenant's inputs, logs and
    /// outputs are readable there (found by attacking an upgrade). One Spool makes is not.
    @Test func aDataDirectoryOpenToEveryUserIsWarnedOf() throws {
        let scratch = try scratch()
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let made = try SpoolServer.prepareDataDirectory(scratch + "/fresh")
        #expect(SpoolServer.openToOthers(made) == nil)
        let old = scratch + "/old"
        #expect(mkdir(old, 0o755) == 0 && mkdir(old + "/jobs", 0o755) == 0 && chmod(old, 0o755) == 0 && chmod(old + "/jobs", 0o755) == 0)
        let warning = try #require(SpoolServer.openToOthers(old))
        #expect(warning.contains("every user on this machine can read every tenant's inputs, logs and outputs") && warning.contains("chmod 700 \(old)"),
                "\(warning)")
        let home = scratch + "/home"
        #expect(mkdir(home, 0o700) == 0 && chmod(home, 0o700) == 0 && mkdir(home + "/data", 0o755) == 0 && mkdir(home + "/data/jobs", 0o755) == 0)
        #expect(chmod(home + "/data", 0o755) == 0 && chmod(home + "/data/jobs", 0o755) == 0)
        #expect(SpoolServer.openToOthers(home + "/data") == nil, "a folder above keeps others out")
        #expect(chmod(old, 0o750) == 0)
        #expect(SpoolServer.openToOthers(old) == nil, "others cannot enter it: its jobs folder's mode does not matter")
    }

    /// A file where the directory (or its `jobs` folder, or a folder above) should be is named as
    /// such (found by attacking the build: "The operation could not be completed.
    /// (NSCocoaErrorDomain error 512.)").
    @Test func aFileInTheWayIsNamed() throws {
        let scratch = try scratch()
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let file = scratch + "/afile"
        FileManager.default.createFile(atPath: file, contents: Data())
        #expect(throws: ConfigurationError("the data directory \(file) is not a directory")) { try SpoolServer.prepareDataDirectory(file) }
        #expect(throws: ConfigurationError("cannot create the data directory \(file)/data: \(file) is not a directory")) {
            try SpoolServer.prepareDataDirectory(file + "/data")
        }
        try FileManager.default.createDirectory(atPath: scratch + "/withjobs", withIntermediateDirectories: false)
        FileManager.default.createFile(atPath: scratch + "/withjobs/jobs", contents: Data())
        #expect(throws: ConfigurationError("cannot create the data directory \(scratch)/withjobs: \(scratch)/withjobs/jobs is not a directory")) {
            try SpoolServer.prepareDataDirectory(scratch + "/withjobs")
        }
    }
}
