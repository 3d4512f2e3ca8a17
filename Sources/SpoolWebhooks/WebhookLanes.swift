import SpoolCore
import SpoolStore

/// Which due deliveries take the free sending lanes. Oldest first, each host (whatever the
/// port) and each tenant up to its share while others' deliveries wait; then the lanes left
/// to anyone, so one host's backlog alone uses them all (and gives one up at each attempt's end).
///
/// Shares, found by attacking the build: with no share, 32 deliveries to a dead URL delayed
/// another tenant's healthy one by 39 s; keyed by host and port, one dead receiver listening on
/// four ports took all eight lanes; keyed by host alone, a tenant with dead receivers on several
/// host names took a share for each.
struct WebhookLanes {
    /// Where a delivery in flight goes, and whose job it reports.
    struct Lane: Sendable, Equatable {
        var host: String
        var owner: String?

        init(host: String, owner: String?) {
            self.host = host
            self.owner = owner
        }

        init(_ delivery: WebhookDelivery) {
            self.init(host: WebhookLanes.hostKey(delivery.draft.url), owner: WebhookLanes.owner(of: delivery))
        }
    }

    /// Most lanes one host gets while another host's deliveries wait.
    var perHost: Int
    /// Most lanes one tenant's deliveries get, over all its hosts, while others wait.
    var perOwner: Int

    /// The deliveries of `due` (oldest first, none of them in flight) to start on `free` lanes,
    /// with the lanes `busy` already taken.
    func pick(from due: [WebhookDelivery], busy: [Lane], free: Int) -> [(WebhookDelivery, Lane)] {
        var perHost: [String: Int] = [:]
        var perOwner: [String: Int] = [:]
        func take(_ lane: Lane) {
            perHost[lane.host, default: 0] += 1
            if let owner = lane.owner { perOwner[owner, default: 0] += 1 }
        }
        busy.forEach(take)
        var free = free
        var picked: [(WebhookDelivery, Lane)] = []
        var started: Set<WebhookDeliveryID> = []
        for shared in [true, false] {
            for delivery in due where free > 0 && !started.contains(delivery.id) {
                let lane = Lane(delivery)
                if shared {
                    guard perHost[lane.host, default: 0] < self.perHost else { continue }
                    if let owner = lane.owner, perOwner[owner, default: 0] >= self.perOwner { continue }
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
