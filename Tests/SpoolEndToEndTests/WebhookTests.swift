import Crypto
import Foundation
import SpoolCore
import Testing

/// Webhooks against the real binary: a Python receiver (standard library only) records every
/// request, checks its signature the way the README tells receivers to, answers 500 to the
/// very first request and 200 to the rest.
@Suite(.serialized) struct WebhookTests {
    static let secret = "e2e-webhook-secret-0123456789"

    final class Receiver: @unchecked Sendable {
        let process = Process()
        let log: String
        private(set) var url = ""

        init(directory: String) throws {
            log = directory + "/webhooks.jsonl"
            let script = """
                import hashlib, hmac, http.server, json, sys, threading
                secret, log = sys.argv[1].encode(), sys.argv[2]
                lock = threading.Lock()
                count = [0]
                class Handler(http.server.BaseHTTPRequestHandler):
                    def log_message(self, *args): pass
                    def do_POST(self):
                        body = self.rfile.read(int(self.headers["Content-Length"]))
                        ts = self.headers["Spool-Webhook-Timestamp"]
                        expected = "v1=" + hmac.new(secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
                        valid = hmac.compare_digest(expected, self.headers.get("Spool-Webhook-Signature", ""))
                        with lock:
                            count[0] += 1
                            status = 500 if count[0] == 1 else 200
                            with open(log, "a") as f:
                                f.write(json.dumps({"id": self.headers["Spool-Webhook-Id"], "valid": valid, "status": status,
                                                    "body": json.loads(body), "raw": body.decode(), "timestamp": ts,
                                                    "signature": self.headers.get("Spool-Webhook-Signature", "")}) + "\\n")
                        self.send_response(status)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
                print(server.server_address[1], flush=True)
                server.serve_forever()
                """
            process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
            process.arguments = ["-c", script, WebhookTests.secret, log]
            process.standardError = FileHandle.nullDevice
            let output = Pipe()
            process.standardOutput = output
            try process.run()
            let line = output.fileHandleForReading.availableData
            let port = String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            url = "http://127.0.0.1:\(port)/hook"
        }

        struct Request: Sendable {
            var id: String
            var valid: Bool
            var status: Int
            var body: JSONValue
            /// The body as sent, its timestamp and signature headers.
            var raw: String
            var timestamp: String
            var signature: String

            /// Whether `secret` signed it, as the README tells receivers to check.
            func signed(by secret: String) -> Bool {
                let code = HMAC<SHA256>.authenticationCode(for: Array((timestamp + "." + raw).utf8), using: SymmetricKey(data: Array(secret.utf8)))
                return signature == "v1=" + code.map { String(format: "%02x", $0) }.joined()
            }
        }

        var requests: [Request] {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            return text.split(separator: "\n").compactMap { line in
                guard let value = try? JSONDecoder().decode(JSONValue.self, from: Data(line.utf8)) else { return nil }
                return Request(id: value["id"]?.stringValue ?? "", valid: value["valid"] == .bool(true),
                               status: Int(value["status"]?.intValue ?? 0), body: value["body"] ?? .null,
                               raw: value["raw"]?.stringValue ?? "", timestamp: value["timestamp"]?.stringValue ?? "",
                               signature: value["signature"]?.stringValue ?? "")
            }
        }

        /// Waits until `done` holds for the recorded requests.
        func waitUntil(_ what: String, timeout: Duration = .seconds(60), _ done: @escaping @Sendable ([Request]) -> Bool) async throws {
            try await withDeadline(timeout, what) {
                while !done(self.requests) { try await Task.sleep(for: .milliseconds(50)) }
                return true
            }
        }

        /// Kills the receiver by pid (it also holds the test's stderr, so it must not outlive it).
        func stop() {
            let pid = process.processIdentifier
            if pid > 0 { kill(pid, SIGKILL) }
        }
    }

    @Test func signedCompletionsSurviveAFailedAttemptAndAKill9ExactlyOncePerDelivery() async throws {
        let server = try ServerHarness(config: .object([:]))
        try Data(Fixtures.config(scratch: server.scratch, extra: [
            "webhook_secret": .string(Self.secret), "webhook_retry_base_s": 0.2,
            "webhook_allow_private": true,   // the receiver listens on 127.0.0.1
        ]).canonicalText.utf8).write(to: URL(fileURLWithPath: server.configPath))
        let receiver = try Receiver(directory: server.scratch)
        defer { receiver.stop(); Task { await server.stop() } }
        try await server.start(["--slots", "1"])

        var ids: [String] = []
        for index in 0..<8 {
            var extra: [String: JSONValue] = ["webhook": .string(receiver.url)]
            if index == 0 { extra["webhook_events"] = .array(["started", "completed"]) }
            let reply = try await server.submit("sleep", .object(["seconds": 0.3]), extra: extra)
            ids.append(try #require(reply.json["id"]?.stringValue))
        }
        @Sendable func completions(_ requests: [Receiver.Request]) -> [Receiver.Request] {
            requests.filter { $0.body["event"] == .string("job.completed") && $0.status == 200 }
        }
        // Some jobs done and reported; then the server dies mid-way without warning.
        try await receiver.waitUntil("two completions before the crash") { completions($0).count >= 2 }
        await server.kill9()
        try await server.start(["--slots", "1"])
        let expected = Set(ids)
        try await receiver.waitUntil("a delivered completion for every job", timeout: .seconds(90)) { requests in
            Set(completions(requests).compactMap { $0.body["job"]?["id"]?.stringValue }) == expected
        }

        let requests = receiver.requests
        #expect(requests.allSatisfy { $0.valid }, "every delivery carries a valid signature")
        let first = try #require(requests.first)
        #expect(first.status == 500)
        #expect(requests.dropFirst().contains { $0.id == first.id && $0.status == 200 }, "the refused delivery was retried")
        for id in ids {
            let deliveryIDs = Set(requests.filter { $0.body["event"] == .string("job.completed") && $0.body["job"]?["id"]?.stringValue == id }
                .map(\.id))
            #expect(deliveryIDs.count == 1, "job \(id) has exactly one completion delivery, not \(deliveryIDs)")
        }
        #expect(requests.contains { $0.body["event"] == .string("job.started") && $0.body["job"]?["id"]?.stringValue == ids[0] })
        #expect(!requests.contains { $0.body["event"] == .string("job.started") && $0.body["job"]?["id"]?.stringValue != ids[0] })

        // The job shows its deliveries and their attempts.
        let firstJob = try #require(requests.first { $0.id == first.id }?.body["job"]?["id"]?.stringValue)
        let shown = try await server.request(.GET, "/v1/jobs/\(firstJob)/webhooks").json
        let deliveries = try #require(shown["deliveries"].flatMap { if case .array(let list) = $0 { list } else { nil } })
        let refused = try #require(deliveries.first { $0["id"]?.intValue.map(String.init) == first.id })
        #expect(refused["state"] == .string("delivered"))
        let attempts = try #require(refused["attempts"].flatMap { if case .array(let list) = $0 { list } else { nil } })
        #expect(attempts.count >= 2)
        #expect(attempts.first?["status"] == .int(500))
        #expect(attempts.last?["status"] == .int(200))
        #expect(attempts.first?["duration_ms"]?.doubleValue != nil)
    }

    /// With tokens, each tenant's deliveries are signed with a secret of its own, which it reads
    /// from `GET /v1/webhook-secret` and no other tenant can (found by attacking the build: one
    /// `webhook_secret` signed every tenant's deliveries, so any tenant could forge deliveries to
    /// every other tenant's receivers).
    @Test func eachTenantsDeliveriesAreSignedWithItsOwnSecret() async throws {
        let server = try ServerHarness(config: .object([:]))
        try Data(Fixtures.config(scratch: server.scratch, extra: [
            "webhook_secret": .string(Self.secret), "webhook_retry_base_s": 0.2, "webhook_allow_private": true,
        ]).canonicalText.utf8).write(to: URL(fileURLWithPath: server.configPath))
        let receiver = try Receiver(directory: server.scratch)
        defer { receiver.stop(); Task { await server.stop() } }
        let alice = try await server.createToken("alice")
        let bob = try await server.createToken("bob")
        let root = try await server.createToken("root", ["--admin"])
        try await server.start(["--slots", "1"])

        func secret(_ token: String, _ query: String = "") async throws -> (Int, JSONValue) {
            let reply = try await server.request(.GET, "/v1/webhook-secret" + query, headers: server.bearer(token))
            return (reply.status, reply.json)
        }
        let (aliceStatus, aliceSecret) = try await secret(alice)
        #expect(aliceStatus == 200 && aliceSecret["owner"] == "alice", "\(aliceSecret)")
        let aliceKey = try #require(aliceSecret["secret"]?.stringValue)
        let bobKey = try #require(try await secret(bob).1["secret"]?.stringValue)
        #expect(aliceKey != bobKey && aliceKey != Self.secret && aliceKey.count == 64)
        // A tenant may not read another's; an administrator may; no token, no secret.
        let (peek, problem) = try await secret(bob, "?owner=alice")
        #expect(peek == 403, "\(problem)")
        #expect(try await secret(root, "?owner=alice").1["secret"]?.stringValue == aliceKey)
        #expect(try await server.request(.GET, "/v1/webhook-secret").status == 401)

        var owners: [String: String] = [:]
        for (name, token) in [("alice", alice), ("bob", bob), ("alice", alice), ("bob", bob)] {
            let reply = try await server.submit("noop", extra: ["webhook": .string(receiver.url)], token: token)
            owners[try #require(reply.json["id"]?.stringValue)] = name
        }
        let jobs = Set(owners.keys)
        try await receiver.waitUntil("a delivered completion for every job") { requests in
            Set(requests.filter { $0.status == 200 }.compactMap { $0.body["job"]?["id"]?.stringValue }) == jobs
        }
        let keys = ["alice": aliceKey, "bob": bobKey]
        for request in receiver.requests {
            let id = try #require(request.body["job"]?["id"]?.stringValue)
            let owner = try #require(owners[id])
            #expect(request.body["job"]?["owner"] == .string(owner))
            #expect(request.signed(by: keys[owner]!), "\(owner)'s delivery verifies with \(owner)'s secret")
            #expect(!request.signed(by: keys[owner == "alice" ? "bob" : "alice"]!), "…and not with the other tenant's")
            #expect(!request.signed(by: Self.secret), "…nor with the server's own")
        }
    }
}
