/// Finds a fence — a marker the server wrote into a worker's output pipe (`OutputPipe.fence`) —
/// in that output as it is read, chunk by chunk: what came before it (the job's), and what
/// came after. A chunk that ends with what may be the start of the marker keeps that part
/// back until the next chunk says whether it is. Plain bytes in, plain bytes out.
struct OutputFence {
    let marker: [UInt8]
    /// Bytes read that may be the start of the marker.
    private var held: [UInt8] = []

    init(marker: [UInt8]) {
        precondition(!marker.isEmpty, "a fence needs a marker")
        self.marker = marker
    }

    /// The next chunk read: the bytes before the marker that can be handed on, and, once the
    /// marker came through, the bytes after it (nil while it has not).
    mutating func scan(_ chunk: [UInt8]) -> (before: [UInt8], after: [UInt8]?) {
        let bytes = held + chunk
        held = []
        if let start = firstIndex(of: marker, in: bytes) {
            return (Array(bytes[..<start]), Array(bytes[(start + marker.count)...]))
        }
        // Keep back the longest end of the bytes that the marker starts with.
        var kept = min(marker.count - 1, bytes.count)
        while kept > 0, !bytes[(bytes.count - kept)...].elementsEqual(marker[..<kept]) { kept -= 1 }
        held = Array(bytes[(bytes.count - kept)...])
        return (Array(bytes[..<(bytes.count - kept)]), nil)
    }

    /// The bytes kept back, for when the marker will not come (the output ended): the job's
    /// after all.
    mutating func release() -> [UInt8] {
        defer { held = [] }
        return held
    }

    private func firstIndex(of needle: [UInt8], in bytes: [UInt8]) -> Int? {
        guard bytes.count >= needle.count else { return nil }
        for start in 0...(bytes.count - needle.count) where bytes[start] == needle[0] {
            if bytes[start..<(start + needle.count)].elementsEqual(needle) { return start }
        }
        return nil
    }
}
