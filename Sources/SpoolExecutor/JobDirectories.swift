import Glibc
import SpoolCore

/// Retention's side of the job directories (`DATA_DIR/jobs/<id>/`): which are old, and
/// removing one. Blocking file-system work: call through `BlockingIO`.
public enum JobDirectories {
    /// The jobs whose directory under `dataDirectory` last changed before `cutoff` (a directory
    /// changes as files are made in it, so an ended job's is no newer than its end). Spares and
    /// anything else not named as a job are left out.
    public static func changed(before cutoff: Timestamp, in dataDirectory: String) -> [JobID] {
        let root = dataDirectory + "/jobs"
        return (JobFiles.entries(of: root) ?? []).compactMap { name in
            guard let id = JobID(name) else { return nil }
            var status = stat()
            guard lstat(root + "/" + name, &status) == 0, status.st_mode & S_IFMT == S_IFDIR else { return nil }
            let changed = Int64(status.st_mtim.tv_sec) * 1_000_000 + Int64(status.st_mtim.tv_nsec) / 1_000
            return changed < cutoff.microseconds ? id : nil
        }
    }

    /// Whether a job's files fit under `dataDirectory` now: a 4 KiB file can be written in its
    /// `jobs` folder (a full disk or quota answers ENOSPC or EDQUOT), and is removed again.
    public static func haveRoom(in dataDirectory: String) -> Bool {
        let path = dataDirectory + "/jobs/.spool-room-probe"
        let descriptor = JobFiles.openInJob(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC)   // never through a link a job left
        guard descriptor >= 0 else { return false }
        defer {
            close(descriptor)
            unlink(path)
        }
        let block = [UInt8](repeating: 0, count: 4096)
        return block.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) } == block.count
    }

    /// Removes job `id`'s directory and everything in it; false when this node holds none, or
    /// it could not all go.
    @discardableResult
    public static func remove(_ id: JobID, in dataDirectory: String) -> Bool {
        let path = JobPaths(dataDirectory: dataDirectory, job: id).directory
        var status = stat()
        guard lstat(path, &status) == 0, status.st_mode & S_IFMT == S_IFDIR else { return false }
        return JobFiles.removeTree(path)
    }
}
