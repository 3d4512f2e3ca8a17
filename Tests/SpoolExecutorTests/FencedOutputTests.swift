import Foundation
import Glibc
import Logging
import SpoolCore
import SpoolTesting
import Testing
@testable import SpoolExecutor

/// A real child launched with `fencedOutput` (as warm workers are): its stdout and stderr share
/// one pipe of the launcher's, a fence comes through behind what it wrote, and once it is gone
/// no descriptor of the server's is left on that pipe.
@Suite struct FencedOutputTests {
    /// What `/proc/<pid>/fd/<n>` links to (`pipe:[inode]` for a pipe).
    func link(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 256)
        let count = readlink(path, &buffer, buffer.count - 1)
        return count > 0 ? String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self) : nil
    }

    @Test func theFenceComesBehindTheOutputAndThePipeIsClosedOnceTheChildIsGone() async throws {
        let directory = NSTemporaryDirectory() + "spool-fence-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let tag = UUID().uuidString
        let launch = ChildLaunch(argv: ["/bin/sh", "-c", "echo out; echo err >&2; exec sleep 30"], environment: ["FENCE_TEST": tag],
                                 workingDirectory: directory, marker: "FENCE_TEST=\(tag)", killGrace: .seconds(1), fencedOutput: true)
        let (chunks, received) = AsyncStream<[UInt8]>.makeStream()
        let events = ChildEvents(output: { bytes in received.yield(bytes) }, message: { _ in })
        let child = try await SubprocessLauncher(logger: Logger(label: "test")).launch(launch, events: events)
        var output: [UInt8] = []
        while output.count < 8 { output += try await chunks.next("the child's output") }
        #expect(Set(output.split(separator: UInt8(ascii: "\n")).map { Array($0) }) == [Array("out".utf8), Array("err".utf8)],
                "stdout and stderr in the one pipe")
        let pipe = try #require(link("/proc/\(child.pid)/fd/1"))
        #expect(pipe.hasPrefix("pipe:") && link("/proc/\(child.pid)/fd/2") == pipe)

        let marker = try #require(child.fenceOutput(), "a fenced child's output takes fences")
        while !(output.count >= marker.count && Array(output.suffix(marker.count)) == marker) {
            output += try await chunks.next("the fence to come through")
        }
        #expect(output.count == 8 + marker.count, "behind what it wrote, and nothing else")
        let next = try #require(child.fenceOutput())
        for fence in [marker, next] {
            #expect(fence.count == 30 && fence.prefix(13) == Array("\u{0}spool-fence-".utf8)[...] && fence.last == 0, "\(fence)")
            #expect(fence.dropFirst(13).dropLast().allSatisfy { Array("0123456789abcdef".utf8).contains($0) })
        }
        #expect(next != marker, "each fence is new")

        child.signal(SIGKILL)
        _ = await child.exit()
        let held = (try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")).filter { link("/proc/self/fd/\($0)") == pipe }
        #expect(held.isEmpty, "descriptors still on the child's output pipe: \(held)")
    }
}
