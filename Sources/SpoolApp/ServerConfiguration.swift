import Foundation
import SpoolCore
import SpoolPostgres
import SpoolHTTP
import SpoolSQLite

/// Everything `spool serve` needs, after the config file, `SPOOL_*` variables and flags have
/// been merged (flags win over the environment, which wins over the file).
///
/// One file past 400 lines on purpose: each setting's default, its parsing and its one-line
/// error sit together, so a key is read in one place (job types are in `+JobTypes`).
public struct ServerConfiguration: Sendable {
    public enum GPUSelection: Sendable, Equatable {
        /// One slot per GPU that `nvidia-smi -L` lists; `slots` CPU slots when there is none.
        case auto
        /// Ignore GPUs: `slots` CPU slots.
        case none
        /// Exactly these device indices, one slot each.
        case devices([String])
    }

    public enum StoreSelection: Sendable, Equatable {
        /// One SQLite file in the data directory: one machine.
        case sqlite
        /// A PostgreSQL database shared by every node.
        case postgres(PostgresLocation)
    }

    /// What this node does (with a shared store).
    public enum Role: String, Sendable, CaseIterable {
        /// HTTP API and slots that run jobs (`spool serve`).
        case all
        /// HTTP API only (`spool serve --no-slots`).
        case api
        /// Slots only, no HTTP API (`spool agent`).
        case agent
    }

    public var host = "127.0.0.1"
    public var port = 8080
    public var dataDirectory = "./spool-data"
    public var slots = 1
    /// Slots sharing each GPU (all pinned to the same device), for small jobs.
    public var slotsPerGPU = 1
    public var gpus: GPUSelection = .auto
    public var killGraceSeconds: Double = 10
    public var shutdownGraceSeconds: Double = 30
    public var synchronous: SQLiteJobStore.Synchronous = .full
    /// MiB kept in the SQLite file for recording jobs' ends on a full disk (0: none).
    public var diskReserveMiB = SQLiteJobStore.defaultDiskReserveMiB
    public var maxBodyBytes = 1 << 20
    public var logLimitBytes = 10 << 20
    public var jobTypes: [JobType] = []
    /// Key for the HMAC-SHA256 signature on webhook deliveries (never logged).
    public var webhookSecret: String?
    /// First retry delay of a failed webhook delivery (doubling, with full jitter).
    public var webhookRetryBaseSeconds: Double = 1
    public var store: StoreSelection = .sqlite
    public var role: Role = .all
    /// This node's name in a shared store; by default the host name and a digest of the
    /// data directory, so a restarted node knows its own jobs.
    public var node: String?
    /// How long a running job's claim stays valid without renewal (shared store).
    public var leaseSeconds: Double = 10
    /// An agent's port for `/metrics` and `/healthz` (on `host`); none: it answers no HTTP.
    public var metricsPort: Int?
    /// The most bytes of a finished job's log and outputs copied into a shared store.
    public var sharedFileLimitBytes = 64 << 20
    /// When a token is needed (`auto`: as soon as one exists).
    public var auth: AccessPolicy.Mode = .auto
    /// `/metrics` without a token.
    public var metricsPublic = false
    /// `Host` names served (`["*"]`: any); nil: the loopback names on a loopback address, else any.
    public var allowedHosts: [String]?
    /// Origins whose pages may call the API (CORS).
    public var corsOrigins: [String] = []
    /// Most jobs queued in all (submits beyond get 429).
    public var maxQueued: Int?
    /// PEM files: with both, the server speaks HTTPS (HTTP/1.1 and HTTP/2).
    public var tlsCertificate: String?
    public var tlsKey: String?
    /// A connection must send a request's headers within this long (slow clients are closed).
    public var headerTimeoutSeconds: Double = 10
    /// Most connections open at once; more are closed at once.
    public var maxConnections = 1024
    /// Webhooks may point at loopback, private and link-local addresses.
    public var webhookAllowPrivate = false
    /// Failed attempts in a row that quarantine a GPU slot; 0: never.
    public var quarantineAfterFailures = 3
    /// How often `nvidia-smi` is asked for the GPUs' health (and due self-tests run); 0: never.
    public var gpuHealthIntervalSeconds: Double = 30
    /// argv run pinned to a quarantined slot's GPU; exit 0 releases the slot.
    public var gpuSelfTest: [String]?
    public var gpuSelfTestTimeoutSeconds: Double = 120
    /// Days an ended job is kept (its row, events, webhook deliveries and files); 0: forever.
    public var retentionDays: Double = 30

    public init() {}

    /// Whether the server listens only on a loopback address.
    /// A 127.x.y.z address counts, as an address: a host *name* that begins with "127." may
    /// resolve anywhere (found by attacking the build: `--host 127.lab.example.com`, a network
    /// address, started with no token and answered remote clients as an administrator).
    public var bindsLoopback: Bool {
        if ["localhost", "::1", "[::1]"].contains(host.lowercased()) { return true }
        var address = in_addr()
        return inet_pton(AF_INET, host, &address) == 1 && UInt32(bigEndian: address.s_addr) >> 24 == 127
    }

    /// A character of a host name: an ASCII letter or digit, `-`, `.`, or `_` (container
    /// networks name services with it).
    private static func isNameCharacter(_ character: Character) -> Bool {
        (character.isASCII && (character.isLetter || character.isNumber)) || "-._".contains(character)
    }

    /// Whether `text` can be listened on: an IPv4 address, an IPv6 one (no brackets), or a
    /// host name (letters, digits, `-`, `_`, `.`).
    static func isListenAddress(_ text: String) -> Bool {
        guard !text.isEmpty else { return false }
        if text.contains(":") {   // an IPv6 address has two colons at least (`host:port` is not one)
            return text.count(where: { $0 == ":" }) >= 2 && text.allSatisfy { $0.isHexDigit || $0 == ":" || $0 == "." }
        }
        if text.allSatisfy({ $0.isNumber || $0 == "." }) {
            let parts = text.split(separator: ".", omittingEmptySubsequences: false)
            return parts.count == 4 && parts.allSatisfy { part in Int(part).map { (0...255).contains($0) } ?? false }
        }
        return text.allSatisfy(isNameCharacter)
    }

    /// Whether `text` can be a `Host` header's name: letters, digits, `-`, `_` and `.` (an IPv4
    /// address too), or an IPv6 address in brackets; then an optional `:port`.
    static func isHostName(_ text: String) -> Bool {
        var rest = Substring(text)
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]"), rest.index(after: rest.startIndex) < close,
                  rest[rest.index(after: rest.startIndex)..<close].allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else { return false }
            rest = rest[rest.index(after: close)...]
        } else {
            let name = rest.prefix { $0 != ":" }
            guard !name.isEmpty, name.allSatisfy(isNameCharacter) else { return false }
            rest = rest.dropFirst(name.count)
        }
        guard !rest.isEmpty else { return true }
        guard rest.first == ":", let port = Int(rest.dropFirst()), (1...65_535).contains(port) else { return false }
        return true
    }

    /// What the HTTP layer enforces, from these settings.
    public var accessPolicy: AccessPolicy {
        var policy = AccessPolicy()
        policy.mode = auth
        policy.metricsPublic = metricsPublic
        policy.allowedHosts = allowedHosts ?? (bindsLoopback ? AccessPolicy.loopbackHosts : nil)
        policy.corsOrigins = corsOrigins
        policy.secureCookies = tlsCertificate != nil
        policy.maxQueued = maxQueued
        return policy
    }

    /// The file's keys, as written in it.
    static let fileKeys: Set<String> = [
        "host", "port", "data_dir", "slots", "gpus", "slots_per_gpu", "kill_grace_s", "shutdown_grace_s", "sqlite_synchronous",
        "sqlite_disk_reserve_mb",
        "max_body_bytes", "log_limit_bytes", "webhook_secret", "webhook_retry_base_s", "job_types",
        "store", "role", "node", "lease_s", "shared_file_limit_bytes", "metrics_port",
        "auth", "metrics_public", "allowed_hosts", "cors_origins", "max_queued", "tls_cert", "tls_key", "header_timeout_s",
        "max_connections", "webhook_allow_private",
        "quarantine_after_failures", "gpu_health_interval_s", "gpu_self_test", "gpu_self_test_timeout_s",
        "retention_days",
    ]
    static let jobTypeKeys = Set(["command", "timeout_s", "max_attempts", "retry", "dedup", "input_schema", "env", "working_dir", "mode"])
        .union(workerKeys)
    static let workerKeys: Set<String> = [
        "max_jobs_per_worker", "max_rss_mb", "max_vram_mb", "vram_growth_mb", "idle_timeout_s", "heartbeat_s",
        "setup_timeout_s", "max_setup_failures",
    ]

    /// Applies one setting by its file key; the same parser serves the file, the environment
    /// and the flags, so each is validated the same way.
    mutating func apply(_ key: String, _ value: JSONValue, from source: String,
                        baseDirectory: String = FileManager.default.currentDirectoryPath) throws(ConfigurationError) {
        func fail(_ expectation: String) -> ConfigurationError {
            ConfigurationError("\(source): \(key) must be \(expectation), not \(value.canonicalText)")
        }
        func integer(_ range: ClosedRange<Int>) throws(ConfigurationError) -> Int {
            guard let number = value.intValue, let int = Int(exactly: number), range.contains(int) else {
                throw fail("an integer from \(range.lowerBound) to \(range.upperBound)")
            }
            return int
        }
        func seconds() throws(ConfigurationError) -> Double {
            guard let number = value.doubleValue, number >= 0, number <= 86_400 else { throw fail("a number of seconds (0 to 86400)") }
            return number
        }
        switch key {
        case "host":
            guard let text = value.stringValue, Self.isListenAddress(text) else {
                throw fail("an IP address or a host name to listen on (\"127.0.0.1\", \"0.0.0.0\", \"::\", \"gpu-box.lan\")")
            }
            host = text
        case "port": port = try integer(0...65_535)
        case "data_dir":
            guard let text = value.stringValue, !text.isEmpty else { throw fail("a directory path") }
            dataDirectory = text
        case "slots": slots = try integer(1...1024)
        case "slots_per_gpu": slotsPerGPU = try integer(1...64)
        case "gpus":
            guard let text = value.stringValue else { throw fail("\"auto\", \"none\" or a list like \"0,2\"") }
            switch text {
            case "auto": gpus = .auto
            case "none": gpus = .none   // not "": a blank value (a template variable left empty) is no choice
            default:
                // Every entry an index (ASCII digits; "1" and "01" name one device), a GPU's UUID
                // (`GPU-…`) or a MIG device (`MIG-…`), none empty, none twice (found by attacking the
                // build: the UUIDs and MIG ids README documents were refused).
                let devices = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
                func isIndex(_ device: String) -> Bool { !device.isEmpty && device.utf8.allSatisfy { (0x30...0x39).contains($0) } }
                func isNamed(_ device: String) -> Bool {
                    (device.hasPrefix("GPU-") || device.hasPrefix("MIG-")) && device.utf8.count > 4
                        && device.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "-/".unicodeScalars.contains($0)) }
                }
                let keys = devices.map { isIndex($0) ? String($0.drop { $0 == "0" }) : $0.lowercased() }
                guard devices.allSatisfy({ isIndex($0) || isNamed($0) }), Set(keys).count == devices.count
                else { throw fail("\"auto\", \"none\" or a list of distinct GPUs: indices like \"0,2\", GPU-… UUIDs or MIG-… ids") }
                gpus = .devices(devices)
            }
        case "kill_grace_s": killGraceSeconds = try seconds()
        case "shutdown_grace_s": shutdownGraceSeconds = try seconds()
        case "sqlite_synchronous":
            guard let text = value.stringValue, let mode = SQLiteJobStore.Synchronous(rawValue: text.lowercased()) else {
                throw fail("\"full\" (survives power loss) or \"normal\" (survives a crash)")
            }
            synchronous = mode
        case "webhook_secret":
            guard let text = value.stringValue, text.utf8.count >= 16 else {
                throw ConfigurationError("\(source): webhook_secret must be a string of at least 16 characters")
            }
            webhookSecret = text
        case "webhook_retry_base_s":
            guard let number = value.doubleValue, number > 0, number <= 3600 else { throw fail("a number of seconds above 0 (at most 3600)") }
            webhookRetryBaseSeconds = number
        case "store":
            guard let text = value.stringValue, !text.isEmpty else { throw fail("\"sqlite\" or a postgres:// URL") }
            if text == "sqlite" {
                store = .sqlite
            } else {
                do { store = .postgres(try PostgresLocation(url: text)) } catch {
                    throw ConfigurationError("\(source): store: \(error)")
                }
            }
        case "role":
            guard let text = value.stringValue, let role = Role(rawValue: text) else {
                throw fail("\"all\" (API and slots), \"api\" (no slots) or \"agent\" (slots, no API)")
            }
            self.role = role
        case "node":
            guard let text = value.stringValue, (1...64).contains(text.utf8.count),
                  text.unicodeScalars.allSatisfy({ $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "-_.:".unicodeScalars.contains($0)) })
            else { throw fail("a node name of 1 to 64 letters, digits, \"-\", \"_\", \".\" or \":\"") }
            node = text
        case "lease_s":
            guard let number = value.doubleValue, number >= 1, number <= 3600 else { throw fail("a number of seconds from 1 to 3600") }
            leaseSeconds = number
        case "shared_file_limit_bytes": sharedFileLimitBytes = try integer(0...(1 << 30))
        case "metrics_port": metricsPort = try integer(0...65_535)
        case "max_body_bytes": maxBodyBytes = try integer(1024...(1 << 30))
        case "log_limit_bytes": logLimitBytes = try integer(1024...(1 << 40))
        case "sqlite_disk_reserve_mb": diskReserveMiB = try integer(0...1024)
        case "auth":
            guard let text = value.stringValue, let mode = AccessPolicy.Mode(rawValue: text) else {
                throw fail("\"auto\" (a token is needed once one exists), \"required\" or \"off\"")
            }
            auth = mode
        case "metrics_public":
            guard let flag = value.boolValue ?? value.stringValue.flatMap(Bool.init) else { throw fail("true or false") }
            metricsPublic = flag
        case "webhook_allow_private":
            guard let flag = value.boolValue ?? value.stringValue.flatMap(Bool.init) else { throw fail("true or false") }
            webhookAllowPrivate = flag
        case "allowed_hosts", "cors_origins":
            let list: [String]
            switch value {
            case .array(let items) where items.allSatisfy({ $0.stringValue?.isEmpty == false }): list = items.compactMap(\.stringValue)
            case .string(let text): list = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            default: throw fail("a list of names")
            }
            if key == "allowed_hosts" {
                // An empty list would refuse every request (421), from loopback too.
                guard !list.isEmpty else { throw fail("at least one host name, or \"*\" for any") }
                // A name, an IPv4 address or a bracketed IPv6 one, with a port or not: what a Host header holds.
                if let bad = list.first(where: { $0 != "*" && !Self.isHostName($0) }) {
                    throw ConfigurationError("\(source): allowed_hosts must be host names like \"spool.example.com\" (a comma-separated list) "
                                             + "or \"*\", not \"\(bad)\"")
                }
                allowedHosts = list.contains("*") ? ["*"] : list   // any host, wherever the server listens
            } else {
                guard list.allSatisfy({ $0 == "*" || $0.hasPrefix("http://") || $0.hasPrefix("https://") }) else {
                    throw fail("a list of origins like \"https://app.example.com\"")
                }
                corsOrigins = list
            }
        case "max_queued": maxQueued = try integer(1...100_000_000)
        case "quarantine_after_failures": quarantineAfterFailures = try integer(0...1000)
        case "gpu_health_interval_s":
            // 0 is never; below a tenth of a second, nvidia-smi ran back to back (found by
            // attacking the build: 0.0004 made a 0-ms interval, hundreds of runs a second).
            guard let number = value.doubleValue, number == 0 || (number >= 0.1 && number <= 86_400) else {
                throw fail("0 (never) or a number of seconds from 0.1 to 86400")
            }
            gpuHealthIntervalSeconds = number
        case "retention_days":
            guard let number = value.doubleValue, number >= 0, number <= 36_500 else { throw fail("a number of days (0 to 36500; 0 keeps ended jobs forever)") }
            retentionDays = number
        case "gpu_self_test_timeout_s":
            guard let number = value.doubleValue, number > 0, number <= 86_400 else { throw fail("a number of seconds above 0 (at most 86400)") }
            gpuSelfTestTimeoutSeconds = number
        case "gpu_self_test":
            var argv: [JSONValue]?
            switch value {
            case .array(let items): argv = items
            case .string(let text) where text.hasPrefix("["):
                if case .array(let items)? = try? JSONParser.parse(Array(text.utf8)) { argv = items }
            case .string(let text): argv = text.split(separator: " ").map { .string(String($0)) }
            default: break
            }
            guard let argv, !argv.isEmpty, argv.allSatisfy({ $0.stringValue?.isEmpty == false }) else {
                throw fail("a command as a list of strings, like [\"/opt/bin/gpu-check\", \"--quick\"] (run without a shell)")
            }
            gpuSelfTest = argv.compactMap(\.stringValue)
        case "max_connections": maxConnections = try integer(1...1_000_000)
        case "header_timeout_s":
            guard let number = value.doubleValue, number > 0, number <= 3600 else { throw fail("a number of seconds above 0 (at most 3600)") }
            headerTimeoutSeconds = number
        case "tls_cert", "tls_key":
            guard let text = value.stringValue, !text.isEmpty else { throw fail("the path of a PEM file") }
            let path = text.hasPrefix("/") ? text
                : URL(fileURLWithPath: text, relativeTo: URL(fileURLWithPath: baseDirectory, isDirectory: true)).standardizedFileURL.path
            if key == "tls_cert" { tlsCertificate = path } else { tlsKey = path }
        case "job_types":
            guard case .object(let types) = value else { throw fail("an object mapping type names to their definitions") }
            for (name, definition) in types.sorted(by: { $0.key < $1.key }) {
                jobTypes.removeAll { $0.name == name }
                jobTypes.append(try Self.jobType(name, definition, source: source, baseDirectory: baseDirectory))
            }
        default:
            throw ConfigurationError("\(source): unknown setting \"\(key)\" (known: \(Self.fileKeys.sorted().joined(separator: ", ")))")
        }
    }

    /// Reads a JSON config file.
    public mutating func load(file path: String) throws(ConfigurationError) {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            throw ConfigurationError("the config file \(path) is a directory")
        }
        // Read to its end with read(2): a pipe too (`--config <(envsubst < t.json)`, /dev/stdin),
        // which Foundation's file reading refused as "You don't have permission" (found by
        // attacking the build).
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw ConfigurationError("cannot read the config file \(path): \(String(cString: strerror(errno)))") }
        defer { close(descriptor) }
        var status = stat()
        let regular = fstat(descriptor, &status) == 0 && status.st_mode & S_IFMT == S_IFREG
        var data = Data()
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count >= 0 else { throw ConfigurationError("cannot read the config file \(path): \(String(cString: strerror(errno)))") }
            if count == 0 { break }
            data.append(contentsOf: chunk[..<count])
            guard data.count <= 64 << 20 else { throw ConfigurationError("the config file \(path) is larger than 64 MiB") }
        }
        // Where and why it is not JSON, and a key given twice, which would otherwise pass with
        // one of the two values (found by attacking the build: "The given data was not valid
        // JSON." for a missing comma; {"slots": 3, "slots": 2} served 3 slots, saying nothing).
        let value: JSONValue
        do { value = try JSONParser.parse(data, uniqueKeys: true) } catch {
            let before = data.prefix(error.offset)
            let line = before.count { $0 == UInt8(ascii: "\n") } + 1
            let column = before.count - (before.lastIndex(of: UInt8(ascii: "\n")).map { $0 + 1 } ?? 0) + 1
            throw ConfigurationError("\(path) is not valid JSON: \(error.reason) at line \(line), column \(column)")
        }
        guard case .object(let settings) = value else { throw ConfigurationError("\(path) must hold a JSON object") }
        // Relative paths in it are read from its folder; from a pipe, from the current directory
        // (not /dev, for /dev/stdin).
        // (/dev/stdin redirected from a file reads as a regular file, and is under /dev all the same.)
        let special = path.hasPrefix("/dev/") || path.hasPrefix("/proc/")
        let directory = regular && !special ? URL(fileURLWithPath: path).deletingLastPathComponent().path : FileManager.default.currentDirectoryPath
        for (key, setting) in settings.sorted(by: { $0.key < $1.key }) { try apply(key, setting, from: path, baseDirectory: directory) }
    }

    /// `SPOOL_PORT=9000` etc.: each file key in upper case with a `SPOOL_` prefix (not job types).
    public mutating func load(environment: [String: String]) throws(ConfigurationError) {
        for key in Self.fileKeys.sorted() where key != "job_types" {
            let variable = "SPOOL_" + key.uppercased()
            guard let text = environment[variable] else { continue }
            try apply(text: text, to: key, from: variable)
        }
    }

    /// A setting given as text (a flag or a variable), by its file key.
    public mutating func apply(text: String, to key: String, from source: String) throws(ConfigurationError) {
        let value: JSONValue
        if Self.textKeys.contains(key) {
            value = .string(text)
        } else if let int = Int64(text) {
            value = .int(int)
        } else if let double = Double(text) {
            value = .double(double)
        } else {
            value = .string(text)
        }
        try apply(key, value, from: source)
    }

    static let textKeys: Set<String> = ["host", "data_dir", "gpus", "sqlite_synchronous", "webhook_secret", "store", "role", "node",
                                        "auth", "allowed_hosts", "cors_origins", "tls_cert", "tls_key", "metrics_public", "webhook_allow_private",
                                        "gpu_self_test"]

    /// The configured node name, or one derived from this machine and the data directory.
    public func nodeName(dataDirectory: String) -> String {
        if let node { return node }
        var digest: UInt64 = 0xcbf2_9ce4_8422_2325   // FNV-1a: stable across runs, unlike Hasher
        for byte in dataDirectory.utf8 { digest = (digest ^ UInt64(byte)) &* 0x100_0000_01b3 }
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "node"
        let safe = String(host.unicodeScalars.filter { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || $0 == "-") }.prefix(40))
        return (safe.isEmpty ? "node" : safe) + "-" + String(digest % 0x100_0000, radix: 16)
    }
}

/// Bad configuration: one line, said at startup, then exit non-zero.
public struct ConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
