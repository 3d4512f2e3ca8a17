import SpoolCore
import SpoolRender

extension RenderParameters {
    /// What a render job's input asks for (the built-in type's schema checked it at submit):
    /// a job array's task renders the frame its `item` names, unless `frame` says otherwise.
    init(input: JSONValue) {
        func number(_ key: String, _ fallback: Int64) -> Int64 { input[key]?.intValue ?? fallback }
        self.init(width: Int(number("width", 320)), height: Int(number("height", 240)), samples: Int(number("samples", 16)),
                  seed: UInt64(max(0, number("seed", 1))), frame: Int(clamping: number("frame", number("item", 0))))
    }

    /// The job log's first line.
    var described: String {
        "rendering \(width)x\(height), \(samples) samples per pixel, seed \(seed)" + (frame == 0 ? "" : ", frame \(frame)")
    }
}
