#if canImport(Glibc)
import Glibc
#endif

/// Named points where a crash test makes the server wait, so that it can be killed in an exact
/// state: `SPOOL_FAILPOINTS=name[,name…]` in the server's environment. Read once; never set in
/// production (the server logs a warning at start when any is on).
public enum Failpoints {
    /// A commit that records a job's end and claims the slot's next job — already started —
    /// never completes: the next job's process runs while the store still holds it as queued.
    public static let holdHandOverCommit = "hold-handover-commit"
    /// A job started from an idle slot keeps its claim uncommitted until it ends, however long it
    /// runs (the scheduler's `claimDelay` never runs out), and the commit of its claim with its end
    /// never completes: the job has run, and the store still holds it as queued.
    public static let holdClaimWithEnd = "hold-claim-with-end"

    /// A server's guard (`spool guard`), once the server is gone, waits until the file
    /// `DATA_DIR/release-guard` exists before it kills what the server left running.
    public static let holdGuard = "hold-guard"

    /// An array's delete (SQLite), once its first chunk of tasks is deleted, never goes on to the next.
    public static let holdArrayDeleteChunk = "hold-array-delete-chunk"

    public static let enabled: Set<String> = {
        guard let value = getenv("SPOOL_FAILPOINTS") else { return [] }
        return Set(String(cString: value).split(separator: ",").map { String($0) })
    }()

    public static func isOn(_ name: String) -> Bool { enabled.contains(name) }

    /// Waits for good when `name` is on (cancellation ends the wait with an error).
    public static func hold(_ name: String) async throws {
        guard isOn(name) else { return }
        while true { try await Task.sleep(for: .seconds(3600)) }
    }
}
