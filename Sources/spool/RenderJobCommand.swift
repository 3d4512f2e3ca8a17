import ArgumentParser
import Foundation
import SpoolCore
import SpoolRender

/// The built-in `render` job, run as a child of the server (`spool render-job`): follows the
/// job contract like any user job — input from $SPOOL_INPUT_FILE, progress to
/// $SPOOL_MESSAGES, the PNG into $SPOOL_OUTPUT_DIR.
struct RenderJobCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "render-job",
        abstract: "Run the built-in render job (started by the server; follows the job contract).",
        shouldDisplay: false
    )

    func run() throws {
        let environment = ProcessInfo.processInfo.environment
        guard let inputPath = environment["SPOOL_INPUT_FILE"], let outputDirectory = environment["SPOOL_OUTPUT_DIR"] else {
            fail("render-job runs under `spool serve` (SPOOL_INPUT_FILE and SPOOL_OUTPUT_DIR are not set)")
        }
        let input = try JSONDecoder().decode(JSONValue.self, from: Data(contentsOf: URL(fileURLWithPath: inputPath)))
        let parameters = RenderParameters(input: input)
        let messages = environment["SPOOL_MESSAGES"].flatMap { FileHandle(forWritingAtPath: $0) }
        print(parameters.described)
        let start = Date()
        let image = Renderer.render(parameters) { done, total in
            let line = "{\"type\":\"progress\",\"fraction\":\(Double(done) / Double(max(total, 1))),\"message\":\"row \(done) of \(total)\"}\n"
            messages?.write(Data(line.utf8))
        }
        let png = PNGEncoder.encode(image)
        let path = outputDirectory + "/render.png"
        try Data(png).write(to: URL(fileURLWithPath: path))
        print(String(format: "wrote %@ (%d bytes) in %.2f s", path, png.count, Date().timeIntervalSince(start)))
    }
}
