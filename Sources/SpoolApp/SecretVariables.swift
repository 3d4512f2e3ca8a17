import Glibc

/// The server's `SPOOL_*` variables that hold secrets, blanked in its own memory once read: a job
/// runs as the server's user, and `/proc/<server>/environ` — the environment as the server was
/// started, read from its memory — showed them to any job that looked (found by attacking the
/// build: `SPOOL_WEBHOOK_SECRET`, and the password in `SPOOL_STORE`, from the server and from
/// its guard, which inherits what is left).
public enum SecretVariables {
    public static let names = ["SPOOL_WEBHOOK_SECRET", "SPOOL_STORE"]

    /// Overwrites each secret's value in place with `*` (its length stays): what was read from it
    /// stays read. Call once the settings are loaded.
    public static func scrub() {
        var entry = environ
        while let variable = entry.pointee {
            for name in names {
                let prefix = name + "="
                guard strncmp(variable, prefix, prefix.utf8.count) == 0 else { continue }
                let value = variable + prefix.utf8.count
                memset(value, Int32(UInt8(ascii: "*")), strlen(value))
            }
            entry += 1
        }
    }
}
