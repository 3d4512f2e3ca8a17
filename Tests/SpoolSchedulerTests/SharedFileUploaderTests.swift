import Foundation
import SpoolCore
import SpoolExecutor
@testable import SpoolScheduler
import SpoolStore
import SpoolTestSupport
import Testing

/// What of a job's files goes to the shared store, for other nodes to serve.
@Suite struct SharedFileUploaderTests {
    /// An empty output goes too (a `_SUCCESS` marker); one past the budget stays, and the stored
    /// log says so at its end, where a reader on any node looks (found by attacking the build:
    /// empty outputs vanished from other nodes' lists, and one past the budget was listed by the
    /// outputs event, then answered 404 with nothing said anywhere).
    @Test func emptyOutputsGoAndThoseLeftBehindAreNamedInTheLog() throws {
        let scratch = try ScratchDirectory("spool-upload")
        let paths = JobPaths(dataDirectory: scratch.path, job: JobID.random())
        try FileManager.default.createDirectory(atPath: paths.outputs, withIntermediateDirectories: true)
        try Data("rendering\n".utf8).write(to: URL(fileURLWithPath: paths.log))
        try Data().write(to: URL(fileURLWithPath: paths.outputs + "/_SUCCESS"))
        try Data("small".utf8).write(to: URL(fileURLWithPath: paths.outputs + "/a.txt"))
        try Data(count: 100_000).write(to: URL(fileURLWithPath: paths.outputs + "/big.bin"))

        let (files, skipped) = SharedFileUploader.collect(paths, limit: 64 << 10)
        let stored = Dictionary(uniqueKeysWithValues: files.map { ($0.name, $0.content) })
        #expect(stored["outputs/_SUCCESS"] == [])
        #expect(stored["outputs/a.txt"] == Array("small".utf8))
        #expect(stored["outputs/big.bin"] == nil && skipped == ["outputs/big.bin"])
        let log = String(decoding: stored["log"] ?? [], as: UTF8.self)
        #expect(log.hasPrefix("rendering\n") && log.contains("stay on the node that ran the job: big.bin"), "\(log)")
        // And for another node's list of the outputs, which is then not all of them.
        #expect(stored[StoredFile.outputsLeftName] == Array("big.bin\n".utf8))
    }

    /// Short of descriptors to list the outputs, none are copied, and that is said where other
    /// nodes look: at the end of the stored log, and as a list that is not all of them (found in
    /// review: other nodes listed none, without `truncated`).
    @Test func outputsThatCouldNotBeListedAreSaidToStayBehind() throws {
        let scratch = try ScratchDirectory("spool-upload")
        let paths = JobPaths(dataDirectory: scratch.path, job: JobID.random())
        try FileManager.default.createDirectory(atPath: paths.outputs, withIntermediateDirectories: true)
        try Data("rendering\n".utf8).write(to: URL(fileURLWithPath: paths.log))
        try Data("small".utf8).write(to: URL(fileURLWithPath: paths.outputs + "/a.txt"))

        let (files, skipped) = SharedFileUploader.collect(paths, limit: 64 << 10) { _ throws(ResourcesShort) in
            try ResourcesShort.check(EMFILE)   // throws: the server out of descriptors
            return []
        }
        let stored = Dictionary(uniqueKeysWithValues: files.map { ($0.name, $0.content) })
        #expect(stored["outputs/a.txt"] == nil && skipped.isEmpty)
        #expect(String(decoding: stored["log"] ?? [], as: UTF8.self)
                    == "rendering\n[spool] the job's outputs could not be listed (the server was short of file descriptors): they stay on the node that ran the job\n")
        #expect(stored[StoredFile.outputsLeftName] == Array("\n".utf8), "the list other nodes read is not all of them")

        let (listed, _) = SharedFileUploader.collect(paths, limit: 64 << 10)
        #expect(listed.map(\.name).sorted() == ["log", "outputs/a.txt"], "with descriptors to spare, the same job's files go")
    }

    /// A job within the budget keeps every file (found in review: room set aside for the note
    /// cost the last output its place); a log past the budget is not replaced by the note.
    @Test func aJobWithinTheBudgetKeepsEveryFileAndABigLogIsNotReplaced() throws {
        let scratch = try ScratchDirectory("spool-upload")
        let paths = JobPaths(dataDirectory: scratch.path, job: JobID.random())
        try FileManager.default.createDirectory(atPath: paths.outputs, withIntermediateDirectories: true)
        try Data(count: 500).write(to: URL(fileURLWithPath: paths.log))
        try Data(count: 500).write(to: URL(fileURLWithPath: paths.outputs + "/fits.bin"))
        let (files, skipped) = SharedFileUploader.collect(paths, limit: 1000)
        #expect(files.map(\.name).sorted() == ["log", "outputs/fits.bin"] && skipped.isEmpty)

        try Data(count: 5000).write(to: URL(fileURLWithPath: paths.log))
        try Data(count: 5000).write(to: URL(fileURLWithPath: paths.outputs + "/big.bin"))
        let (more, left) = SharedFileUploader.collect(paths, limit: 1000)
        #expect(Set(left) == ["log", "outputs/big.bin"] && !more.contains { $0.name == "log" }, "\(more.map(\.name)) \(left)")
    }
}
