import Hummingbird
import HTTPTypes
import NIOCore
import ServiceLifecycle
import SpoolCore
import SpoolStore

/// Server-Sent Events: `GET /v1/jobs/{id}/events` (one job) and `GET /v1/events` (all jobs).
///
/// Each stream reads the store's event log at its own pace — a slow or vanished client holds
/// nothing but its own connection, never the scheduler or other clients. Frames carry the
/// event id; a client that reconnects with `Last-Event-ID` (or `?after=`) gets every event it
/// missed, across a server restart too. A job's stream ends after its terminal state.
///
/// What a stream holds (500 of them on one server): its cursor, and one write of at most
/// `writeBytes`. New events come from the notifier's memory as frames encoded once at publish
/// and shared by every stream; a stream that falls out of that memory reads the store's log.
extension SpoolAPI {
    static let keepAlive = Duration.seconds(15)

    @Sendable func jobEvents(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let id = try jobID(context)
        _ = try await find(id, for: context.principal)
        return try await stream(request, job: id, for: context.principal)
    }

    /// Every job's events — a tenant's stream carries only its own jobs' events.
    @Sendable func allEvents(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        try await stream(request, job: nil, for: context.principal)
    }

    func stream(_ request: Request, job: JobID?, for principal: Principal) async throws -> Response {
        // Both are checked when both are sent (a malformed query is a 400, not ignored); the header wins.
        func eventID(_ text: String?, _ name: String) throws -> Int64? {
            // An empty Last-Event-ID is none (the SSE spec's reset), not a malformed one.
            guard let text, !text.isEmpty else { return nil }
            guard let value = Int64(text), value >= 0 else { throw APIError.badRequest("\(name) must be an event id this server sent") }
            return value
        }
        // An empty `after` is no id, unlike an empty Last-Event-ID (found by the contract test).
        if request.uri.queryParameters.get("after")?.isEmpty == true { throw APIError.badRequest("after must be an event id this server sent") }
        let afterQuery = try eventID(request.uri.queryParameters.get("after"), "after")
        let cursor = try eventID(request.headers[.lastEventID], "Last-Event-ID") ?? afterQuery
        let store = self.store, tokens = self.tokens
        let owner = job == nil ? try listingOwner(request, principal) : principal.ownerFilter
        let resumeFrom = cursor
        // A job's stream resumed after its end has nothing to send: 204, which also tells an
        // EventSource to stop reconnecting. Resumed between its final state and its outputs, it
        // waits for the outputs below, as a stream that sees the final state does.
        var seen = End.none
        // A finished job whose final state is no longer in the log (it keeps the newest events;
        // the job's row lasts longer): a stream would wait for it for ever (found by attacking
        // the build). Its final state is sent as the job has it, and the stream ends; resumed
        // after that, it has nothing to send.
        // Pruned only when the oldest event left is newer than the job's end: on PostgreSQL a
        // final event just committed may not be readable yet (the event horizon), and is waited
        // for as usual (found in review).
        var madeFinal: JobEvent?   // the final state, made from the job, for a log that lost it
        if let job, let ended = try await store.job(job), ended.state.isTerminal {
            if let (finished, oldest) = try await Self.pruned(ended, store) {
                // Resumed from an event after the job's end: it has had the end (or this one, made).
                if let cursor, cursor >= oldest { return Response(status: .noContent) }
                madeFinal = JobEvent(id: store.eventNotifier.latest, job: job, owner: ended.owner, kind: .state,
                                        at: finished, data: JobEvent.stateData(of: ended))
            } else if let cursor {
                seen = try await Self.end(store, of: job, through: cursor)
            }
        }
        if seen == .complete { return Response(status: .noContent) }
        let endedBefore = seen == .finalStateOnly, finalFromJob = madeFinal
        let headers: HTTPFields = [.contentType: "text/event-stream", .cacheControl: "no-cache", .init("X-Accel-Buffering")!: "no"]
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            // A job's stream starts at its first event; the global one at "now" unless resumed. An
            // id past the newest event (another server's, or from before a restore) resumes from
            // now: waiting for events after it would wait for ever (found by attacking the build:
            // a job's stream resumed so never ended).
            let newest = store.eventNotifier.latest
            var after = resumeFrom.map { min($0, newest) } ?? (job == nil ? newest : 0)
            try await writer.write(ByteBuffer(string: "retry: 2000\n\n"))
            if let finalFromJob {
                try await Self.write([EventFrame(finalFromJob)], to: &writer)
                try await writer.finish(nil)
                return
            }
            var lastWrite: ContinuousClock.Instant?
            // Frames or a keep-alive: the keep-alive is due `keepAlive` after this.
            var lastSent = ContinuousClock.now
            let notifier = store.eventNotifier
            notifier.addReader()
            defer { notifier.removeReader() }
            // Ends at once on graceful shutdown, even while waiting for the next event.
            try await withGracefulShutdownHandler {
                streaming: while !Task.isCancelled, !Task.isShuttingDownGracefully {
                    // A revoked token's stream ends (woken by the revoke, or at its next event or keep-alive);
                    // so does one whose name a new token took (found by attacking the build: it streamed on).
                    if !tokens.stillValid(principal) { break streaming }
                    // Paced: events that come while the last write is recent go out together.
                    if let lastWrite {
                        let next = lastWrite + Self.writeInterval(streams: notifier.readers)
                        if next > ContinuousClock.now { try? await Task.sleep(until: next) }
                    }
                    let (frames, through) = try await Self.events(store, after: after, job: job, owner: owner)
                    if !frames.isEmpty { (lastWrite, lastSent) = (ContinuousClock.now, ContinuousClock.now) }
                    try await Self.write(frames, to: &writer)
                    after = through
                    if job != nil, endedBefore || frames.contains(where: \.endsJob) {
                        // The outputs event follows the final state shortly: send it, then end.
                        let deadline = ContinuousClock.now + .seconds(2)
                        var sentOutputs = frames.contains { $0.event.kind == .outputs }
                        while !sentOutputs, ContinuousClock.now < deadline, !Task.isShuttingDownGracefully {
                            _ = await store.eventNotifier.wait(after: after, timeout: deadline - ContinuousClock.now)
                            let (rest, through) = try await Self.events(store, after: after, job: job, owner: owner)
                            after = through
                            try await Self.write(rest, to: &writer)
                            sentOutputs = rest.contains { $0.event.kind == .outputs }
                        }
                        break streaming
                    }
                    // Returns at once when the read was cut short (more is there already). Any
                    // job's event wakes it: the keep-alive goes 15 s after this stream's last
                    // write, whatever woke it meanwhile (found by attacking the build: a queued
                    // job's stream on a busy server sent nothing while others' events came).
                    let quiet = ContinuousClock.now - lastSent
                    if quiet < Self.keepAlive { _ = await store.eventNotifier.wait(after: after, timeout: Self.keepAlive - quiet) }
                    if ContinuousClock.now - lastSent >= Self.keepAlive, !Task.isShuttingDownGracefully {
                        try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                        lastSent = ContinuousClock.now
                    }
                }
            } onGracefulShutdown: {
                store.eventNotifier.stopWaiting()
            }
            try await writer.finish(nil)
        })
    }

    static let eventPage = 500

    /// The least time between two writes of one stream while `streams` are open: 0.1 ms a
    /// stream, at most 250 ms. Each write is a wake-up, a hop to the channel's event loop and
    /// a `writev` (and a read by the client, on the same cores). 500 streams writing every
    /// event apart — 1.5 M writes in `events_bench.py`'s 20 s — kept the event loops so busy
    /// that status requests waited behind them (p99 80 ms; 4–7 ms paced, server CPU 24 s →
    /// 15–18 s). Paced, the streams of one server make ~10,000 writes/s at most together,
    /// whatever the event rate: 500 streams write every 50 ms with what came meanwhile; one
    /// stream (a CLI's `--wait`) is not held back; the first event after a quiet spell goes at
    /// once on any stream.
    static func writeInterval(streams: Int) -> Duration {
        min(.microseconds(100) * max(streams, 1), .milliseconds(250))
    }

    /// When the finished job `ended`'s events are gone from the log: its end, and the oldest id
    /// left (0 for an empty log); nil while they may be there.
    static func pruned(_ ended: Job, _ store: any JobStore) async throws -> (finished: Timestamp, oldest: Int64)? {
        guard let finished = ended.finishedAt else { return nil }
        guard let oldest = try await store.events(after: 0, job: nil, owner: nil, limit: 1).first else {
            // An empty log (every event pruned, the jobs that followed deleted) holds none of its events either.
            return try await end(store, of: ended.id, through: .max) == .none ? (finished, 0) : nil
        }
        return oldest.at > finished ? (finished, oldest.id) : nil
    }

    /// How much of a finished job's end a stream read through `cursor` has carried.
    enum End { case none, finalStateOnly, complete }

    /// `complete`: its final state and its outputs (or the final state more than 2 s ago: no
    /// outputs follow); `finalStateOnly`: the outputs may still come.
    static func end(_ store: any JobStore, of job: JobID, through cursor: Int64) async throws -> End {
        var after: Int64 = 0
        var final: JobEvent?
        var outputs = false
        while true {
            let page = try await store.events(after: after, job: job, limit: eventPage)
            for event in page where event.id <= cursor {
                if event.endsJob { final = event }
                if event.kind == .outputs, final != nil { outputs = true }
            }
            guard page.count == eventPage, let last = page.last, last.id < cursor else { break }
            after = last.id
        }
        guard let final else { return .none }
        return outputs || WallClock.now().microseconds - final.at.microseconds > 2_000_000 ? .complete : .finalStateOnly
    }

    /// The events after `after` — at most a page, and from memory at most `writeBytes` of
    /// frames past the first — from the notifier's memory when it has them all (the common case
    /// for live streams: every stream shares the frames encoded at publish), else from the
    /// store (replays, far-behind readers, a gap while a commit is still being published), and
    /// the id the reader has now seen the log through. For one job's stream that cursor moves
    /// past other jobs' events too: left at the job's own last event, every other job's event
    /// would wake the stream to find nothing, again and again, without it ever suspending —
    /// two such streams held both threads of a 2-core server.
    static func events(_ store: any JobStore, after: Int64, job: JobID?, owner: String? = nil) async throws -> (frames: [EventFrame], through: Int64) {
        let notifier = store.eventNotifier
        if let recent = notifier.recentFrames(after: after, job: job, owner: owner, limit: eventPage, maxBytes: writeBytes) {
            return recent
        }
        // Every event up to the notifier's `latest` is committed and readable (the PostgreSQL
        // store publishes its horizon), so a read that is not a full page has seen up to it.
        let settled = notifier.latest
        let events = try await store.events(after: after, job: job, owner: owner, limit: eventPage)
        let last = events.last?.id ?? after
        return (events.map(EventFrame.init), events.count == eventPage ? last : max(last, settled))
    }

    /// How many bytes of frames one write carries at most (a single larger frame goes alone).
    /// Bounds what each of 500 streams holds at once; a stream further behind writes again at
    /// once (the body writer waits for the client to take the last write first).
    static let writeBytes = 32 << 10

    static func write(_ frames: [EventFrame], to writer: inout any ResponseBodyWriter) async throws {
        let encoded = frames.map(\.bytes)   // each frame's shared bytes, taken once
        var start = encoded.startIndex
        while start < encoded.endIndex {
            var end = start, size = 0
            while end < encoded.endIndex, end == start || size + encoded[end].count <= writeBytes {
                size += encoded[end].count
                end += 1
            }
            var buffer = ByteBufferAllocator().buffer(capacity: size)
            for bytes in encoded[start..<end] { buffer.writeBytes(bytes) }
            try await writer.write(buffer)
            start = end
        }
    }
}

extension HTTPField.Name {
    static let lastEventID = HTTPField.Name("Last-Event-ID")!
    /// On a 200 to a submit with result reuse: `joined` (a queued or running job) or `reused` (a succeeded one).
    static let spoolDedup = HTTPField.Name("Spool-Dedup")!
}

