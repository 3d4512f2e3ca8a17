/// This build's version, printed by `spool --version` and sent as the CLI's User-Agent.
public enum SpoolVersion {
    public static let current = "0.6.0"
}
