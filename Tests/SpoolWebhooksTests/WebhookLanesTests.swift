import SpoolCore
import SpoolStore
@testable import SpoolWebhooks
import Testing

/// Which due deliveries take the free sending lanes: each host and each tenant up to its share
/// while others wait, then anyone.
@Suite struct WebhookLanesTests {
    let lanes = WebhookLanes(perHost: 2, perOwner: 4)

    /// A delivery number `id` of `owner`'s job to `host` (oldest first by id).
    func delivery(_ id: Int64, _ host: String, owner: String?) -> WebhookDelivery {
        var job: [String: JSONValue] = ["id": "job_x"]
        if let owner { job["owner"] = .string(owner) }
        let draft = WebhookDelivery.Draft(job: JobID.random(), event: .completed, eventID: id, url: "http://\(host)/hook",
                                          payload: .object(["event": "job.completed", "job": .object(job)]),
                                          createdAt: Timestamp(microseconds: id))
        return WebhookDelivery(id: WebhookDeliveryID(id), draft: draft, state: .pending, attempts: 0, nextAttemptAt: nil)
    }

    /// One job's deliveries go one at a time, oldest first: its completion waits for its last
    /// progress to be answered (found by attacking the build: the two started 0.2 ms apart on two
    /// lanes, and the receiver often got job.completed first, though README promises the last
    /// progress before the completion). Another job's delivery takes the free lane meanwhile.
    @Test func aJobsDeliveriesGoOneAtATimeOldestFirst() {
        let job = JobID.random()
        func of(_ job: JobID, _ id: Int64, _ event: WebhookEvent) -> WebhookDelivery {
            var delivery = delivery(id, "hooks.example", owner: nil)
            delivery.draft.job = job
            delivery.draft.event = event
            return delivery
        }
        let progress = of(job, 1, .progress), completed = of(job, 2, .completed), other = of(JobID.random(), 3, .completed)
        let first = lanes.pick(from: [progress, completed, other], busy: [], free: 8)
        #expect(first.map(\.0.id) == [progress.id, other.id], "\(first.map(\.0.id))")
        // While the progress is in flight, its job's completion waits.
        let busy = first.filter { $0.0.id == progress.id }.map(\.1)
        #expect(lanes.pick(from: [completed], busy: busy, free: 7).isEmpty)
        #expect(lanes.pick(from: [completed], busy: [], free: 8).map(\.0.id) == [completed.id])
    }

    /// One host whatever its port or case (found by attacking the build: a dead receiver on four
    /// ports took all eight lanes); two names are two hosts.
    @Test func aHostIsOneWhateverItsPort() {
        let keys = ["http://hooks.example:8001/a", "https://HOOKS.example:8443/b", "http://hooks.example/c"].map(WebhookLanes.hostKey)
        #expect(Set(keys).count == 1, "\(keys)")
        #expect(WebhookLanes.hostKey("http://other.example/a") != keys[0])
    }

    /// A tenant whose receivers on four host names never answer holds at most its share of the
    /// lanes while another tenant's delivery waits (found by attacking the build: a share per host
    /// gave it one for each name, so every lane, and the other tenant's delivery waited for a
    /// dead attempt's timeout).
    @Test func aTenantOnManyHostsHoldsAtMostItsShare() {
        let hog = ["a", "b", "c", "d"].flatMap { host in [host, host] }.enumerated()
            .map { delivery(Int64($0.offset + 1), "\($0.element).example", owner: "hog") }
        let other = delivery(100, "e.example", owner: "bob")
        // All lanes free: the hog's first four, the other tenant's one, then the hog's again.
        let first = lanes.pick(from: hog + [other], busy: [], free: 8)
        #expect(first.count == 8)
        #expect(first.contains { $0.0.id == other.id }, "\(first.map(\.0.id))")
        #expect(first.filter { $0.1.owner == "hog" }.count == 7, "the lanes no one else needs go to the hog")
        // Seven lanes held by the hog's dead attempts, one freed: it goes to the other tenant.
        let held = hog.prefix(7).map(WebhookLanes.Lane.init)
        let next = lanes.pick(from: [hog[7], other], busy: held, free: 1)
        #expect(next.map(\.0.id) == [other.id])
        // Alone, a tenant uses every lane.
        #expect(lanes.pick(from: Array(hog), busy: [], free: 8).count == 8)
    }

    /// A lane that frees goes to a host with nothing in flight before a host that holds lanes,
    /// whichever delivery is older (found by attacking the build: four dead receivers held all
    /// eight lanes, each retaking the lane its attempt freed with its next older delivery, and a
    /// healthy receiver's delivery waited for every older dead attempt — without tokens, or a
    /// tenant's own healthy receiver behind its dead ones).
    @Test func aFreedLaneGoesFirstToAHostWithNothingInFlight() {
        for owner in [nil, "alice"] as [String?] {
            let dead = (1...40).map { delivery(Int64($0), ["a", "b", "c", "d"][$0 % 4] + ".example", owner: owner) }
            let healthy = delivery(100, "e.example", owner: owner)
            // Owner-less: every lane held by the dead hosts, two each; one frees.
            // A tenant's: its share (4) held by the dead hosts, one each; one frees.
            let holding = owner == nil ? dead.prefix(8) : dead.prefix(4)
            let held = Array(holding.dropFirst().map(WebhookLanes.Lane.init))
            // The dead hosts started theirs in turn; the one whose lane freed may be idle now too.
            let started = Dictionary(holding.enumerated().map { (WebhookLanes.Lane($0.element).host, UInt64($0.offset + 1)) }, uniquingKeysWith: max)
            let next = lanes.pick(from: Array(dead.dropFirst(holding.count)) + [healthy], busy: held, free: 1, lastStarted: started)
            #expect(next.map(\.0.id) == [healthy.id], "owner \(owner ?? "none"): \(next.map(\.0.id))")
        }
        // One dead host of a tenant holding every lane (its backlog alone), one frees: the
        // tenant's own healthy receiver takes it, past the tenant's share.
        let dead = (1...20).map { delivery(Int64($0), "a.example", owner: "alice") }
        let healthy = delivery(100, "e.example", owner: "alice")
        let held = dead.prefix(7).map(WebhookLanes.Lane.init)
        let next = lanes.pick(from: Array(dead.dropFirst(8)) + [healthy], busy: Array(held), free: 1, lastStarted: ["a.example": 8])
        #expect(next.map(\.0.id) == [healthy.id], "\(next.map(\.0.id))")
    }

    /// A tenant with dead receivers on more host names than there are lanes, none started yet,
    /// takes its share of the free lanes, not all of them: another tenant's delivery gets one.
    @Test func aTenantOnMoreHostsThanLanesStillLeavesAnotherItsLane() {
        let hog = (1...12).map { delivery(Int64($0), "h\($0).example", owner: "hog") }
        let other = delivery(100, "e.example", owner: "bob")
        let picked = lanes.pick(from: hog + [other], busy: [], free: 8)
        #expect(picked.contains { $0.0.id == other.id }, "\(picked.map(\.0.id))")
        #expect(picked.count == 8)
    }

    /// Deliveries of jobs without an owner (no tokens) share by host only.
    @Test func withoutAnOwnerTheHostShareAlone() {
        let due = ["a", "a", "a", "b", "c", "d", "e"].enumerated().map { delivery(Int64($0.offset + 1), "\($0.element).example", owner: nil) }
        let picked = lanes.pick(from: due, busy: [], free: 6)
        #expect(picked.map(\.0.id.rawValue) == [1, 4, 5, 6, 7, 2], "one for each host, then host a's second")
    }
}
