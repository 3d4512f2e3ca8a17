import SpoolCore
import SpoolStore

/// Which due deliveries take the free sending lanes: first the hosts (whatever the port) with
/// nothing in flight, one delivery each, the host that started one least recently first; then,
/// oldest first, each host and each tenant up to its share while others' deliveries wait; then
/// the lanes left to anyone, so one host's backlog alone uses them all (and gives one up at
/// each attempt's end).
///
/// Shares, found by attacking the build: with no share, 32 deliveries to a dead URL delayed
/// another tenant's healthy one by 39 s; keyed by host and port, one dead receiver listening on
/// four ports took all eight lanes; keyed by host alone, a tenant with dead receivers on several
/// host names took a share for each; with shares alone, four dead receivers held every lane, each
/// retaking the lane its attempt freed with its next older delivery, while a healthy receiver's
/// waited for all of them.
struct WebhookLanes {
    /// Where a delivery in flight goes, and whose job it reports.
    struct Lane: Sendable, Equatable {
        var host: String
        var owner: String?
        /// The job whose delivery it is: one of a job's at a time.
        var job: JobID?

        init(host: String, owner: String?, job: JobID? = nil) {
            self.host = host
            self.owner = owner
            self.job = job
        }

        init(_ delivery: WebhookDelivery) {
            self.init(host: WebhookLanes.hostKey(delivery.draft.url), owner: WebhookLanes.owner(of: delivery), job: delivery.draft.job)
        }
    }

    /// Most lanes one host gets while another host's deliveries wait.
    var perHost: Int
    /// Most lanes one tenant's deliveries get, over all its hosts, while others wait.
    var perOwner: Int

    /// The deliveries of `due` (oldest first, none of them in flight) to start on `free` lanes,
    /// with the lanes `busy` already taken; `lastStarted` orders the hosts by when a delivery to
    /// each last started (higher is later; a host not in it never started one).
    func pick(from due: [WebhookDelivery], busy: [Lane], free: Int, lastStarted: [String: UInt64] = [:]) -> [(WebhookDelivery, Lane)] {
        var perHost: [String: Int] = [:]
        var perOwner: [String: Int] = [:]
        func take(_ lane: Lane) {
            perHost[lane.host, default: 0] += 1
            if let owner = lane.owner { perOwner[owner, default: 0] += 1 }
        }
        busy.forEach(take)
        // One delivery of a job at a time, its oldest first (`due` is oldest first): its last
        // progress is answered before its completion goes (found by attacking the build: sent on
        // two lanes at once, the completion often arrived first).
        var jobs = Set(busy.compactMap(\.job))
        let due = due.filter { delivery in jobs.insert(delivery.draft.job).inserted }
        var free = free
        var picked: [(WebhookDelivery, Lane)] = []
        var started: Set<WebhookDeliveryID> = []
        // Each idle host's oldest delivery, the host that started one least recently first (a
        // dead host whose attempt just freed a lane does not take it back from one that waits).
        var idle: [String: WebhookDelivery] = [:]
        for delivery in due where perHost[Lane(delivery).host] == nil { idle[Lane(delivery).host] = idle[Lane(delivery).host] ?? delivery }
        let firsts = idle.values.sorted { a, b in
            let (x, y) = (lastStarted[Lane(a).host] ?? 0, lastStarted[Lane(b).host] ?? 0)
            return x != y ? x < y : a.id.rawValue < b.id.rawValue
        }
        enum Pass { case idleHostsInShare, idleHosts, shares, anyone }
        for pass in [Pass.idleHostsInShare, .idleHosts, .shares, .anyone] {
            for delivery in pass == .idleHostsInShare || pass == .idleHosts ? firsts : due where free > 0 && !started.contains(delivery.id) {
                let lane = Lane(delivery)
                switch pass {
                case .idleHostsInShare:
                    // Within each tenant's share first: a tenant with dead receivers on many host
                    // names does not take every lane from another's (found in review).
                    guard perHost[lane.host] == nil else { continue }
                    if let owner = lane.owner, perOwner[owner, default: 0] >= self.perOwner { continue }
                case .idleHosts:
                    // Then whoever's it is: a tenant's healthy receiver is not held behind that
                    // tenant's dead ones (found by attacking the build: its share was theirs, 28 s).
                    guard perHost[lane.host] == nil else { continue }
                case .shares:
                    guard perHost[lane.host, default: 0] < self.perHost else { continue }
                    if let owner = lane.owner, perOwner[owner, default: 0] >= self.perOwner { continue }
                case .anyone:
                    break
                }
                take(lane)
                free -= 1
                started.insert(delivery.id)
                picked.append((delivery, lane))
            }
        }
        return picked
    }

    /// The tenant whose job a delivery reports (`job.owner` in its body; none for jobs submitted
    /// without a token, and for deliveries planned before the body carried it).
    static func owner(of delivery: WebhookDelivery) -> String? {
        delivery.draft.payload["job"]?["owner"]?.stringValue
    }

    /// The host a delivery goes to, whatever its port (its whole URL when that does not parse: it
    /// fails on its own).
    static func hostKey(_ url: String) -> String {
        guard let (host, _) = try? WebhookTarget.parse(url) else { return url }
        return host.lowercased()
    }
}
