import SpoolCore

/// Which HTTP client each delivery uses, as a pure value (the clients are `Client`, so tests
/// use stand-ins). A client connects one host name only to one checked address (see
/// `WebhookClients`), so there is one per (host, address): kept while the host still resolves
/// to that address, so that its connections are reused, and let go — to be shut down — once
/// the host resolves elsewhere, or when more than `capacity` are kept, the least recently used
/// first. A client in use is never let go: it is shut down when its last user gives it back.
struct WebhookClientCache<Client> {
    struct Key: Hashable {
        /// The host name exactly as the HTTP client reads it from the URL.
        var host: String
        var address: IPAddress
    }

    private struct Entry {
        var client: Client
        var users = 0
        var lastUsed = 0
        /// Let go while in use: shut down when `users` drops to 0.
        var retired = false
    }

    let capacity: Int
    private var entries: [Key: Entry] = [:]
    private var uses = 0

    init(capacity: Int) { self.capacity = max(capacity, 1) }

    /// How many clients are kept (in use or not).
    var count: Int { entries.count }

    /// The client for `key`, made with `make` when there is none; `current` is every address
    /// the host resolves to now. Returns it with the clients let go, to be shut down.
    mutating func lease(_ key: Key, current: Set<IPAddress>, make: () -> Client) -> (client: Client, closing: [Client]) {
        uses += 1
        var closing: [Client] = []
        // The host's clients for addresses it no longer resolves to.
        for (other, entry) in entries where other.host == key.host && !current.contains(other.address) && !entry.retired {
            closing += retire(other)
        }
        // A client let go but still in use is kept after all when the host resolves to its address again.
        var entry = entries[key] ?? Entry(client: make())
        entry.retired = false
        entry.users += 1
        entry.lastUsed = uses
        entries[key] = entry
        closing += evictBeyondCapacity()
        return (entry.client, closing)
    }

    /// Gives back a client leased for `key`; returns it when it is to be shut down now.
    mutating func release(_ key: Key) -> [Client] {
        guard var entry = entries[key] else { return [] }
        entry.users -= 1
        if entry.retired && entry.users <= 0 {
            entries[key] = nil
            return [entry.client]
        }
        entries[key] = entry
        return []
    }

    /// Lets every client go (at shutdown, when none is in use).
    mutating func removeAll() -> [Client] {
        defer { entries = [:] }
        return entries.values.map(\.client)
    }

    /// Lets `key`'s client go: at once when nobody uses it, else when its last user gives it back.
    private mutating func retire(_ key: Key) -> [Client] {
        guard var entry = entries[key] else { return [] }
        if entry.users == 0 {
            entries[key] = nil
            return [entry.client]
        }
        entry.retired = true
        entries[key] = entry
        return []
    }

    /// The least recently used clients nobody uses, beyond `capacity`.
    private mutating func evictBeyondCapacity() -> [Client] {
        let idle = entries.filter { $0.value.users == 0 && !$0.value.retired }.sorted { $0.value.lastUsed < $1.value.lastUsed }
        let excess = entries.count - capacity
        guard excess > 0 else { return [] }
        return idle.prefix(excess).flatMap { retire($0.key) }
    }
}
