import Foundation
import Glibc
import SpoolCore
import SpoolTestSupport
import Testing
@testable import SpoolExecutor

/// A job's directory goes whole, whatever the job left in it: names that are not UTF-8, trees
/// deeper than a path (or the server's descriptors) can reach, unreadable directories, links
/// (never followed); and an output listing stops at its limit.
@Suite struct JobDirectoriesTests {
    /// The room probe never waits on, nor writes through, what a job put where its file goes (a
    /// FIFO, a link to a file elsewhere): found by attacking the build, a FIFO there held the
    /// full-disk check for good, and the node never came back after room was made.
    @Test func theRoomProbeReplacesAFIFOOrALinkAJobLeftInItsPlace() throws {
        let scratch = try ScratchDirectory("spool-jobdirs", subdirectories: ["jobs"])
        let probe = scratch.path + "/jobs/.spool-room-probe", victim = scratch.path + "/victim"
        #expect(mkfifo(probe, 0o600) == 0)
        #expect(JobDirectories.haveRoom(in: scratch.path))
        try Data("keep".utf8).write(to: URL(fileURLWithPath: victim))
        #expect(symlink(victim, probe) == 0)
        #expect(JobDirectories.haveRoom(in: scratch.path))
        #expect(link(victim, probe) == 0)
        #expect(JobDirectories.haveRoom(in: scratch.path))
        #expect(try String(contentsOfFile: victim, encoding: .utf8) == "keep")
        #expect(access(probe, F_OK) != 0, "the probe's file is gone after it")
    }

    /// A job's log stays bounded however often the job is run again: each run may write
    /// `log_limit_bytes`, and a run handed back (a failed worker setup, a quarantine, a shutdown)
    /// counts no attempt, so the log keeps `max_attempts + 2` runs' worth; past that a run's start
    /// drops the oldest output, keeping the newest `max_attempts` runs' worth behind a notice (found
    /// in review: such a job's log grew without bound). Retries within the attempts lose nothing.
    @Test(arguments: [1, 3]) func aJobRunAgainAndAgainKeepsItsLogBounded(maxAttempts: Int) throws {
        let scratch = try ScratchDirectory("spool-jobdirs", subdirectories: ["jobs"])
        let paths = JobPaths(dataDirectory: scratch.path, job: JobID.random())
        try FileManager.default.createDirectory(atPath: paths.outputs, withIntermediateDirectories: true)
        let limit = 1024
        func run(_ n: Int) throws {
            if n > 1 { try JobFiles.beginLaterAttempt(paths, attempt: n, logLimit: limit, maxAttempts: maxAttempts) }
            let handle = try #require(FileHandle(forWritingAtPath: paths.log) ?? {
                FileManager.default.createFile(atPath: paths.log, contents: nil)
                return FileHandle(forWritingAtPath: paths.log)
            }())
            handle.seekToEndOfFile()
            handle.write(Data((String(repeating: "\(n % 10)", count: limit - 1) + "\n").utf8))
            try handle.close()
        }
        func log() throws -> String { try String(contentsOfFile: paths.log, encoding: .utf8) }
        // Runs within the attempts, and one more: nothing is dropped.
        for n in 1...(maxAttempts + 1) { try run(n) }
        #expect(try !log().contains("dropped"))
        #expect(try log().hasPrefix(String(repeating: "1", count: limit - 1)))
        // Many more runs: the log never holds more than max_attempts + 2 runs' worth (and the
        // attempt lines), and keeps the newest output.
        for n in (maxAttempts + 2)...(maxAttempts + 30) {
            try run(n)
            let size = try #require(try FileManager.default.attributesOfItem(atPath: paths.log)[.size] as? Int)
            #expect(size <= limit * (maxAttempts + 2) + 300, "run \(n): \(size) bytes")
        }
        let text = try log()
        #expect(text.hasPrefix("[spool] ") && text.contains("bytes of earlier runs' output were dropped here"), "\(text.prefix(200))")
        let last = maxAttempts + 30
        #expect(text.hasSuffix("--- attempt \(last) ---\n" + String(repeating: "\(last % 10)", count: limit - 1) + "\n"))
        // The last max_attempts runs' worth of bytes before this run's, from a line's start.
        #expect(text.contains(String(repeating: "\((last - 1) % 10)", count: limit - 1)) && text.contains("--- attempt \(last - maxAttempts + 1) ---"),
                "the newest runs before this one are kept")
        #expect(text.split(separator: "\n").dropFirst().allSatisfy { $0.hasPrefix("--- attempt") || $0.count == limit - 1 }, "whole lines kept")
    }

    /// Found by attacking the build: a file named `caf\xE9.txt`, or a tree 2,000 levels deep,
    /// stayed on disk after the job was deleted (204) and after every retention pass.
    @Test func aJobDirectoryGoesWholeWhateverTheJobLeftInIt() async throws {
        let scratch = try ScratchDirectory("spool-jobdirs", subdirectories: ["jobs"])
        let id = JobID.random()
        let paths = JobPaths(dataDirectory: scratch.path, job: id)
        try FileManager.default.createDirectory(atPath: paths.outputs, withIntermediateDirectories: true)
        // A name that is not UTF-8 (Latin-1 é), made through its raw bytes.
        let latin1: [CChar] = Array("\(paths.outputs)/caf".utf8CString.dropLast()) + [CChar(bitPattern: 0xE9), 0]
        let latin1File = open(latin1, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        #expect(latin1File >= 0)
        close(latin1File)
        // Deeper than PATH_MAX (4096), and than a process's descriptors (this machine's soft
        // limit is 20,000; commonly 1,024): 25,000 levels of 20-byte names, one at a time.
        let made = try await onOwnThread { [outputs = paths.outputs] () -> Int in
            var level = open(outputs, O_RDONLY | O_DIRECTORY | O_CLOEXEC), made = 0
            for _ in 0..<25_000 {
                if mkdirat(level, "a-directory-level-20", 0o755) == 0 { made += 1 }
                let next = openat(level, "a-directory-level-20", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                close(level)
                level = next
            }
            close(openat(level, "deep.txt", O_WRONLY | O_CREAT | O_CLOEXEC, 0o644))
            close(level)
            return made
        }
        #expect(made == 25_000)
        // A directory the job made unreadable.
        try FileManager.default.createDirectory(atPath: paths.directory + "/locked/inner", withIntermediateDirectories: true)
        chmod(paths.directory + "/locked", 0)
        // A link out of the directory: removed, its target kept.
        let outside = scratch.path + "/outside.txt"
        FileManager.default.createFile(atPath: outside, contents: Data("keep".utf8))
        try FileManager.default.createSymbolicLink(atPath: paths.outputs + "/link", withDestinationPath: scratch.path)

        #expect(try OutputFiles.list(under: paths.outputs).map(\.name) == [], "nothing with a name the API can serve")
        let removed = try await onOwnThread { [path = scratch.path] in JobDirectories.remove(id, in: path) }
        #expect(removed)
        #expect(!FileManager.default.fileExists(atPath: paths.directory))
        #expect(FileManager.default.fileExists(atPath: outside))
        #expect(!JobDirectories.remove(id, in: scratch.path), "nothing left to remove")
    }

    /// A file no URL can name (not UTF-8) is left out of the listing, and counted, so the API can
    /// say the list holds only some (found by attacking the build: `caf\xE9.png` vanished without
    /// a word, and `spool outputs` exited 0). Files the server cannot read are counted the same
    /// way (not tested here: these tests run as root, who reads everything).
    @Test func filesTheListingLeavesOutAreCounted() throws {
        let scratch = try ScratchDirectory("spool-outputs")
        FileManager.default.createFile(atPath: scratch.path + "/ok.txt", contents: nil)
        var raw = Array((scratch.path + "/caf").utf8) + [0xE9, UInt8(ascii: "."), UInt8(ascii: "p"), UInt8(ascii: "n"), UInt8(ascii: "g"), 0]
        let made = raw.withUnsafeMutableBufferPointer { open(UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self), O_CREAT | O_WRONLY, 0o644) }
        #expect(made >= 0)
        close(made)
        let listing = try OutputFiles.listing(under: scratch.path)
        #expect(listing.files.map(\.name) == ["ok.txt"] && listing.leftOut == 1, "\(listing)")
    }

    /// A file whose name (with its folders) is longer than an output name may be (1,024 bytes) is
    /// left out and counted, not listed with a URL that answers 400; and one too deep for the
    /// server to look at (past PATH_MAX) is counted too, not dropped without a word (found by
    /// attacking the build).
    @Test func outputsTooDeepToNameAreLeftOutAndCounted() throws {
        let scratch = try ScratchDirectory("spool-outputs")
        FileManager.default.createFile(atPath: scratch.path + "/ok.txt", contents: nil)
        let segment = String(repeating: "d", count: 200)
        var deep = scratch.path
        for _ in 0..<6 {   // 1,206 bytes of folders: past 1,024, well within PATH_MAX
            deep += "/" + segment
            #expect(mkdir(deep, 0o755) == 0)
        }
        FileManager.default.createFile(atPath: deep + "/frame.png", contents: nil)
        // Past PATH_MAX (4,096) from the root: made a folder at a time, each from the one above.
        var folder = open(deep, O_RDONLY | O_DIRECTORY)
        for _ in 0..<20 {
            #expect(mkdirat(folder, segment, 0o755) == 0)
            let next = openat(folder, segment, O_RDONLY | O_DIRECTORY)
            close(folder)
            folder = next
        }
        let file = openat(folder, "frame.png", O_CREAT | O_WRONLY, 0o644)
        #expect(file >= 0)
        close(file)
        close(folder)
        let listing = try OutputFiles.listing(under: scratch.path)
        #expect(listing.files.map(\.name) == ["ok.txt"] && listing.leftOut >= 2, "\(listing.files.map(\.name)), \(listing.leftOut)")
    }

    /// The listing's limit holds within one directory too (found by attacking the build: 30,000
    /// files in the outputs folder were all listed, and sent as one 2.6 MB event).
    @Test func anOutputListingStopsAtItsLimitWithinOneDirectory() throws {
        let scratch = try ScratchDirectory("spool-outputs")
        for index in 0..<50 { FileManager.default.createFile(atPath: scratch.path + "/f\(index)", contents: nil) }
        #expect(try OutputFiles.list(under: scratch.path, limit: 20).count == 20)
    }
}

/// Runs seconds of blocking work on a thread of its own, not on one of the few threads every
/// test in the process shares (holding one starved other suites' waits in full runs).
func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
    }
}
