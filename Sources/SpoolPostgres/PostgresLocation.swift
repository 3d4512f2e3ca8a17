import PostgresNIO

/// Where the shared store lives, parsed from a `postgres://` URL:
///
///     postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=disable|require&application_name=…]
///
/// `HOST` may be a Unix socket directory written percent-encoded (`%2Ftmp%2Fpg`), as libpq
/// accepts. TLS: `sslmode=disable` (the default, for loopback and private networks) or
/// `require` (TLS with certificate verification against the system's trust store).
public struct PostgresLocation: Sendable, Equatable, CustomStringConvertible {
    public enum Endpoint: Sendable, Equatable {
        case tcp(host: String, port: Int)
        case unixSocket(path: String)
    }

    public var endpoint: Endpoint
    public var user: String
    public var password: String?
    public var database: String
    public var requireTLS: Bool

    public init(url: String) throws(StoreURLError) {
        guard let schemeEnd = url.range(of: "://"),
              ["postgres", "postgresql"].contains(url[..<schemeEnd.lowerBound].lowercased()) else {
            throw StoreURLError("a PostgreSQL store is written postgres://USER@HOST:PORT/DATABASE, not \(Self.redacted(url))")
        }
        var rest = Substring(url[schemeEnd.upperBound...])
        var query: Substring = ""
        if let mark = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: mark)...]
            rest = rest[..<mark]
        }
        guard let at = rest.lastIndex(of: "@") else {
            throw StoreURLError("the store URL needs a user name: postgres://USER@HOST:PORT/DATABASE")
        }
        let credentials = rest[..<at]
        let address = rest[rest.index(after: at)...]
        if let colon = credentials.firstIndex(of: ":") {
            user = Self.decode(credentials[..<colon])
            password = Self.decode(credentials[credentials.index(after: colon)...])
        } else {
            user = Self.decode(credentials)
            password = nil
        }
        guard !user.isEmpty else { throw StoreURLError("the store URL needs a user name: postgres://USER@HOST:PORT/DATABASE") }
        guard let slash = address.firstIndex(of: "/"), address.index(after: slash) < address.endIndex else {
            throw StoreURLError("the store URL needs a database name: postgres://USER@HOST:PORT/DATABASE")
        }
        database = Self.decode(address[address.index(after: slash)...])
        let hostPort = address[..<slash]
        let decodedHost = Self.decode(hostPort)
        if decodedHost.hasPrefix("/") {
            endpoint = .unixSocket(path: decodedHost + "/.s.PGSQL.5432")
        } else {
            var host = hostPort
            var port = 5432
            if let colon = hostPort.lastIndex(of: ":"), !hostPort.hasSuffix("]") {
                guard let number = Int(hostPort[hostPort.index(after: colon)...]), (1...65_535).contains(number) else {
                    throw StoreURLError("the store URL's port must be a number from 1 to 65535: \(Self.redacted(url))")
                }
                port = number
                host = hostPort[..<colon]
            }
            let name = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : String(host)
            guard !name.isEmpty else { throw StoreURLError("the store URL needs a host: postgres://USER@HOST:PORT/DATABASE") }
            endpoint = .tcp(host: name, port: port)
        }
        requireTLS = false
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw StoreURLError("the store URL has a malformed option \"\(pair)\"") }
            switch (parts[0], parts[1]) {
            case ("sslmode", "disable"): requireTLS = false
            case ("sslmode", "require"), ("sslmode", "verify-full"): requireTLS = true
            case ("sslmode", let mode): throw StoreURLError("sslmode must be disable or require, not \(mode)")
            case ("application_name", _), ("connect_timeout", _): break
            default: throw StoreURLError("the store URL has an option Spool does not know: \(parts[0]) (known: sslmode)")
            }
        }
    }

    /// A URL as an error may show it: any password replaced by `***`.
    static func redacted(_ url: String) -> String {
        guard let scheme = url.range(of: "://"), let at = url[scheme.upperBound...].firstIndex(of: "@") else { return url }
        let credentials = url[scheme.upperBound..<at]
        guard let colon = credentials.firstIndex(of: ":") else { return url }
        return String(url[..<colon]) + ":***" + String(url[at...])
    }

    /// The URL without its password, for logs.
    public var description: String {
        let host = switch endpoint {
        case .tcp(let host, let port): (host.contains(":") ? "[\(host)]" : host) + ":\(port)"
        case .unixSocket(let path): path
        }
        return "postgres://\(user)\(password == nil ? "" : ":***")@\(host)/\(database)"
    }

    func clientConfiguration() throws -> PostgresClient.Configuration {
        let tls: PostgresClient.Configuration.TLS = requireTLS ? .require(.makeClientConfiguration()) : .disable
        var configuration = switch endpoint {
        case .tcp(let host, let port):
            PostgresClient.Configuration(host: host, port: port, username: user, password: password, database: database, tls: tls)
        case .unixSocket(let path):
            PostgresClient.Configuration(unixSocketPath: path, username: user, password: password, database: database)
        }
        // Prepared statements (the slots' hot path) are planned for their actual arguments each
        // time: a generic plan cannot see the claim's LIMIT or how deep the queue is, and was
        // seen to pick a sequential scan of every job over the queue's index.
        configuration.options.additionalStartupParameters = [("application_name", "spool"), ("plan_cache_mode", "force_custom_plan")]
        return configuration
    }

    /// For a single connection (the reachability probe at start).
    func connectionConfiguration() throws -> PostgresConnection.Configuration {
        switch endpoint {
        case .tcp(let host, let port):
            PostgresConnection.Configuration(host: host, port: port, username: user, password: password, database: database,
                                             tls: requireTLS ? .require(try NIOSSLContext(configuration: .makeClientConfiguration())) : .disable)
        case .unixSocket(let path):
            PostgresConnection.Configuration(unixSocketPath: path, username: user, password: password, database: database)
        }
    }

    private static func decode(_ text: Substring) -> String {
        String(text).removingPercentEncoding ?? String(text)
    }
}

public struct StoreURLError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
