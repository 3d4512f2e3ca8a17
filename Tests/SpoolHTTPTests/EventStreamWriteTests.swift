import HTTPTypes
import Hummingbird
import NIOCore
import SpoolCore
import SpoolStore
import Testing
@testable import SpoolHTTP

/// What one event stream writes at a time, and how often, with many streams open.
@Suite struct EventStreamWriteTests {
    final class Recorder: ResponseBodyWriter {
        var writes: [ByteBuffer] = []
        func write(_ buffer: ByteBuffer) async throws { writes.append(buffer) }
        func finish(_ trailingHeaders: HTTPFields?) async throws {}
    }

    func frame(_ id: Int64, text: Int) -> EventFrame {
        EventFrame(JobEvent(id: id, job: JobID.random(), kind: .log, at: Timestamp(microseconds: id),
                            data: .object(["text": .string(String(repeating: "x", count: text))])))
    }

    @Test func aWriteCarriesAtMostWriteBytesAndEveryFrameWhole() async throws {
        let frames = (1...40).map { frame($0, text: 2_000) } + [frame(41, text: SpoolAPI.writeBytes * 2)] + [frame(42, text: 10)]
        let recorder = Recorder()
        var writer: any ResponseBodyWriter = recorder
        try await SpoolAPI.write(frames, to: &writer)
        #expect(recorder.writes.count > 2)
        let large = frames[40].bytes.count
        for write in recorder.writes {
            #expect(write.readableBytes <= SpoolAPI.writeBytes || write.readableBytes == large, "only the one larger frame goes alone")
        }
        #expect(recorder.writes.flatMap { Array($0.readableBytesView) } == frames.flatMap(\.bytes), "every frame, whole and in order")
    }

    @Test func nothingIsWrittenForNoFrames() async throws {
        let recorder = Recorder()
        var writer: any ResponseBodyWriter = recorder
        try await SpoolAPI.write([], to: &writer)
        #expect(recorder.writes.isEmpty)
    }

    /// One stream is not held back; 500 write every 50 ms; any number at least every 250 ms.
    @Test func theWriteIntervalGrowsWithTheNumberOfOpenStreams() {
        #expect(SpoolAPI.writeInterval(streams: 0) == .microseconds(100))
        #expect(SpoolAPI.writeInterval(streams: 1) == .microseconds(100))
        #expect(SpoolAPI.writeInterval(streams: 500) == .milliseconds(50))
        #expect(SpoolAPI.writeInterval(streams: 100_000) == .milliseconds(250))
    }
}
