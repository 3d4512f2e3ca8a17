import Glibc
import SpoolExecutor

/// The server's limit on open files (`ulimit -n`). Each connection, event stream, download and
/// running job's pipes, log and FIFOs takes descriptors, and the soft limit most services start
/// with (1,024) is less than `max_connections` alone: past it the server could accept no
/// connection, and clients waited unanswered (found by attacking the build). The server raises
/// it to what it may need (`needed`), within the hard limit.
enum FileLimit {
    /// Raises the soft limit to `needed`, within the hard one; the limit in force after. Not to the
    /// hard limit itself: the server's children inherit it, and a job's program using `select` past
    /// 1,024 descriptors corrupts its memory where it would have been refused (found in review:
    /// under systemd, jobs got 524,288).
    static func raise(to needed: UInt64) -> UInt64 {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
        let wanted = min(rlim_t(needed), limit.rlim_max)
        if limit.rlim_cur < wanted {
            var raised = limit
            raised.rlim_cur = wanted
            if setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &raised) == 0 { return UInt64(raised.rlim_cur) }
        }
        return UInt64(limit.rlim_cur)
    }

    /// What the server may need at most: two for each connection (a download holds the file it
    /// sends: found in review), and for the rest (the store, each slot's job or worker with its
    /// pipes, log and FIFOs, webhooks) a margin.
    static func needed(maxConnections: Int, slots: Int) -> UInt64 { 2 * UInt64(maxConnections) + 64 + 16 * UInt64(slots) }

    /// A warning when `limit` is below what the server may need, or nil.
    static func warning(limit: UInt64, maxConnections: Int, slots: Int) -> String? {
        let needed = needed(maxConnections: maxConnections, slots: slots)
        guard limit > 0, limit < needed else { return nil }
        return "the open-file limit (ulimit -n) is \(limit), below the \(needed) or so that max_connections (\(maxConnections)) and \(slots) slot(s) "
            + "may need: past it, connections are refused and jobs wait in the queue; raise the hard limit (LimitNOFILE= in a systemd unit) "
            + "or lower max_connections"
    }
}
