import Foundation
import SpoolCore
import SpoolExecutor

/// `job_… running [#######.............] 35% row 84 of 240`, redrawn in place on a terminal.
final class StatusLine {
    let isTerminal = isatty(STDERR_FILENO) == 1
    var last = ""

    func show(_ job: JobWire) {
        var text = "\(job.id)  \(job.state)"
        if let position = job.position { text += "  position \(position)" }
        if job.state == "queued", job.waitingReason != nil {
            text += "  waiting: no slot can set up its worker type (spool status \(job.id))"
        } else if job.state == "queued", let eta = job.eta {
            text += eta.startInSeconds < 1 ? "  starts in under 1 s" : "  starts in ~\(formatSeconds(eta.startInSeconds))"
        }
        if job.state == "running", let progress = job.progress {
            let filled = Int(progress.fraction * 20)
            text += "  [" + String(repeating: "#", count: filled) + String(repeating: ".", count: 20 - filled) + "] "
                + "\(Int(progress.fraction * 100))%" + (progress.message.map { "  \($0)" } ?? "")
        }
        // One line, cut to the terminal's width: a longer one wraps, and each redraw would leave
        // its first rows behind (found by attacking the build).
        text = text.terminalSafe.replacingOccurrences(of: "\n", with: " ")
        if isTerminal { text = Self.fitted(text) }
        guard text != last else { return }
        last = text
        StandardStreams.error((isTerminal ? "\r\u{1B}[K" + text : text + "\n"))
    }

    /// `text` cut to the width of the terminal on stderr (when it says one), so that redrawing
    /// it in place never leaves wrapped rows behind.
    static func fitted(_ text: String) -> String {
        var size = winsize()
        guard ioctl(STDERR_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0, text.count >= Int(size.ws_col) else { return text }
        return String(text.prefix(max(Int(size.ws_col) - 2, 10))) + "…"
    }

    func finish(_ job: JobWire) {
        var text = "\(job.id)  \(job.state)" + (job.reason.map { " (\($0))" } ?? "")
        if let error = job.error { text += ": \(error)" }
        StandardStreams.error(((isTerminal ? "\r\u{1B}[K" : "") + text.terminalSafe + "\n"))
    }
}

extension String {
    /// The text with its control characters (but for line breaks) written as `\u{1B}`: a job's
    /// progress message or error, shown in an operator's terminal, cannot move its cursor, clear
    /// it or set its title (found by attacking the build: ESC and BEL from a job went out raw).
    /// `spool logs` prints the job's output as it is, like any log viewer.
    var terminalSafe: String {
        guard unicodeScalars.contains(where: { $0 != "\n" && ($0.properties.generalCategory == .control) }) else { return self }
        return unicodeScalars.map { scalar in
            scalar != "\n" && scalar.properties.generalCategory == .control
                ? "\\u{" + String(scalar.value, radix: 16, uppercase: true) + "}" : String(scalar)
        }.joined()
    }
}

/// `42 s`, `3 min`, `1.5 h`.
func formatSeconds(_ seconds: Double) -> String {
    if seconds < 90 { return "\(Int(seconds.rounded())) s" }
    if seconds < 5400 { return "\(Int((seconds / 60).rounded())) min" }
    return String(format: "%.1f h", seconds / 3600)
}

/// Follows a job to its end with a one-line status display on stderr.
func follow(_ first: JobWire, client: SpoolClient) async throws -> JobWire {
    let status = StatusLine()
    var job = first
    while !job.isTerminal {
        status.show(job)
        if job.state == "queued" {
            // Long-poll from the state last seen (`seen`): a job that started since the last
            // answer (at once, on an idle slot) is answered at once, not held to its end.
            job = try client.decode(JobWire.self, try await client.getRidingOutRestarts("/v1/jobs/\(job.id)?wait=10&seen=queued").2)
        } else {
            // Running: poll, for progress.
            try await Task.sleep(for: .milliseconds(250))
            job = try client.decode(JobWire.self, try await client.getRidingOutRestarts("/v1/jobs/\(job.id)").2)
        }
    }
    status.finish(job)
    return job
}

/// Follows an array to its end with its one-line bar on stderr.
func followArray(_ first: ArrayWire, client: SpoolClient) async throws -> ArrayWire {
    let isTerminal = isatty(STDERR_FILENO) == 1
    var array = first
    var last = ""
    while true {
        let line = isTerminal ? StatusLine.fitted(ArrayWire.line(array)) : ArrayWire.line(array)
        if line != last {
            StandardStreams.error((isTerminal ? "\r\u{1B}[K" + line : line + "\n"))
            last = line
        }
        if array.isTerminal { break }
        try await Task.sleep(for: .milliseconds(500))
        array = try client.decode(ArrayWire.self, try await client.getRidingOutRestarts("/v1/arrays/\(array.id)").2)
    }
    if isTerminal { StandardStreams.error("\n") }
    return array
}
