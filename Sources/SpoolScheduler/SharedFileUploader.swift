import Foundation
import Logging
import SpoolCore
import SpoolExecutor
import SpoolStore

/// With a shared store, a job's log and outputs live on the node that ran it; this copies them
/// into the store as the attempt ends — before its outcome is recorded, so that whoever sees
/// the job finished can download its files from any node. The copy is fenced by the attempt:
/// an attempt that lost its lease (its job was rescued and runs elsewhere) stores nothing.
///
/// Budget: `limitBytes` per job, the log first, then outputs in name order; a file that does
/// not fit is skipped (and logged) and stays downloadable from the node that ran the job only.
struct SharedFileUploader: Sendable {
    let store: any SharedJobStore
    let dataDirectory: String
    let limitBytes: Int
    let logger: Logger

    func upload(_ job: Job, outcome: JobOutcome) async {
        guard outcome.resultingState.isTerminal else { return }
        let paths = JobPaths(dataDirectory: dataDirectory, job: job.id)
        let limit = limitBytes
        let (files, skipped) = await (try? BlockingIO.run { Self.collect(paths, limit: limit) }) ?? ([], [])
        if !skipped.isEmpty {
            logger.warning("job files past the shared-store budget stay on this node only",
                           metadata: ["job": "\(job.id)", "skipped": "\(skipped)", "limit_bytes": "\(limit)"])
        }
        guard !files.isEmpty else { return }
        do {
            if !(try await store.storeFiles(files, of: job.id, attempt: job.attempts)) {
                logger.warning("did not store the files of an attempt that no longer holds its job (rescued elsewhere)",
                               metadata: ["job": "\(job.id)", "attempt": "\(job.attempts)"])
            }
        } catch {
            logger.warning("could not store a job's files in the shared store; they stay on this node",
                           metadata: ["job": "\(job.id)", "error": "\(error)"])
        }
    }

    /// `listOutputs`: `OutputFiles.list`, or a test's stand-in for a server out of descriptors.
    static func collect(_ paths: JobPaths, limit: Int,
                        listOutputs: (String) throws(ResourcesShort) -> [(name: String, size: Int64)] = { root throws(ResourcesShort) in
                            try OutputFiles.list(under: root, limit: 10_000)
                        }) -> ([StoredFile], [String]) {
        var files: [StoredFile] = []
        var skipped: [String] = []
        var budget = limit
        // Only what lies in the job's own directory: not what a link the job left in place of it,
        // of its outputs folder or of its log points to.
        guard JobFiles.holdsItsOwnOutputs(paths) else { return ([], []) }
        // Each file is read from one descriptor (never a FIFO swapped in, never through a link at
        // its end); the log only as a file of its own, not a hard link to one elsewhere.
        // `listed`: the size an output was listed with (one past the budget is not read).
        func take(_ name: String, at path: String, listed: Int64 = 0, singleLink: Bool = false, keepEmpty: Bool = true) {
            // Missing and unreadable files are not stored, nor an empty log (the common case for
            // warm workers); an empty output is (a `_SUCCESS` marker: found by attacking the build,
            // empty outputs vanished from other nodes' lists).
            guard listed <= budget, let data = JobFiles.contents(of: path, limit: budget + 1, singleLink: singleLink) else {
                if listed > budget { skipped.append(name) }
                return
            }
            guard keepEmpty || !data.isEmpty else { return }
            guard data.count <= budget else {
                skipped.append(name)
                return
            }
            budget -= data.count
            files.append(StoredFile(name: name, content: data))
        }
        take(StoredFile.logName, at: paths.log, singleLink: true, keepEmpty: false)
        // The cut's notice, where another node checks the log's first line (`LogBase`): a line,
        // outside the budget (found in review: a log near the budget left it out).
        if files.contains(where: { $0.name == StoredFile.logName }),
           let cut = JobFiles.contents(of: paths.logCut, limit: LogBase.noticeLimit, singleLink: true), !cut.isEmpty {
            files.append(StoredFile(name: StoredFile.logCutName, content: cut))
        }
        // Short of descriptors to look, none are copied, and that is said as for outputs past the
        // budget (found in review: other nodes listed none, without `truncated`).
        let listed = try? listOutputs(paths.outputs)
        for output in listed ?? [] {
            guard let path = paths.output(named: output.name) else { continue }
            take(StoredFile.outputName(output.name), at: path, listed: output.size)
        }
        if listed == nil {
            // Said at the end of the stored log, when there is one (else other nodes serve the lines
            // the job sent as events, which a one-line log would hide: found in review).
            let note = Array("[spool] the job's outputs could not be listed (the server was short of file descriptors): they stay on the node that ran the job\n".utf8)
            if let index = files.firstIndex(where: { $0.name == StoredFile.logName }) {
                files[index] = StoredFile(name: StoredFile.logName, content: files[index].content + note)
            }
            files.append(StoredFile(name: StoredFile.outputsLeftName, content: Array("\n".utf8)))
        }
        // What stays behind is said where every node's reader looks: at the end of the stored log
        // (found by attacking the build: such outputs were listed by the outputs event, then 404).
        let outputsLeft = skipped.filter { $0.hasPrefix(StoredFile.outputName("")) }.map { String($0.dropFirst(StoredFile.outputName("").count)) }
        // (Past the budget by at most its 2 KiB; not when the log itself stayed behind: other
        // nodes then serve the lines it sent as events, which a one-line log would hide.)
        if !outputsLeft.isEmpty, !skipped.contains(StoredFile.logName) {
            let listed = outputsLeft.prefix(20).joined(separator: ", ") + (outputsLeft.count > 20 ? " and \(outputsLeft.count - 20) more" : "")
            let note = Array("[spool] outputs past shared_file_limit_bytes (\(limit)) were not copied to the shared store and stay on the node that ran the job: \(listed)\n".utf8.prefix(2048))
            if let index = files.firstIndex(where: { $0.name == StoredFile.logName }) {
                files[index] = StoredFile(name: StoredFile.logName, content: files[index].content + note)
            } else {
                files.insert(StoredFile(name: StoredFile.logName, content: note), at: 0)
            }
        }
        // And where another node's list of the outputs looks: that list is not all of them
        // (found by attacking the build: it left them out without `truncated`, and
        // `spool outputs --download` exited 0 with some of the files). At most 64 KiB of names.
        if !outputsLeft.isEmpty {
            var names: [UInt8] = []
            for name in outputsLeft where names.count + name.utf8.count < 64 << 10 { names += Array((name + "\n").utf8) }
            files.append(StoredFile(name: StoredFile.outputsLeftName, content: names.isEmpty ? Array("\n".utf8) : names))
        }
        return (files, skipped)
    }
}
