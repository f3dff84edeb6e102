import Foundation
import XCTest

/// Slow and stalled clients: every downstream wait has a bound, a timed-out request frees its
/// upstream connection, and each is counted by reason.
final class DownstreamTimeoutTests: XCTestCase {
    var upstream: TestUpstream!
    var proxy: ProxyUnderTest!
    var port: Int { proxy.port() }

    /// A cluster of one connection per worker, one worker: a request that kept its upstream
    /// connection would starve every other.
    func start(_ listenerExtra: String) async throws {
        upstream = try await TestUpstream.start(name: "u", group: testGroup)
        proxy = try await ProxyUnderTest.start("""
            listeners:
              - name: main
                address: 127.0.0.1:0
            \(listenerExtra)
                routes: [{ match: { prefix: / }, cluster: u, timeout: 10s }]
            clusters:
              - { name: u, endpoints: ["127.0.0.1:{{u}}"], max_connections: 1 }
            """, ports: ["u": upstream.port], workers: 1)
    }

    override func tearDown() async throws {
        await proxy?.stop()
        await upstream?.stop()
    }

    func refusals(_ reason: String) throws -> Int {
        try proxy.sample("sluice_listener_refused_total{listener=\"main\",reason=\"\(reason)\"}") ?? -1
    }

    func testSlowHeadersGet408AndClose() async throws {
        try await start("    request_headers_timeout: 500ms")
        let port = self.port
        let (status, closed, elapsed) = try await blocking { () -> (Int, Bool, Double) in
            let client = try RawHTTPClient(port: port, timeout: 5)
            let started = Date()
            // One header byte at a time, slower than the timeout allows in total.
            for byte in "GET /x HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaa".utf8 {
                guard (try? client.send([byte])) != nil else { break }
                usleep(40_000)
                if Date().timeIntervalSince(started) > 1.5 { break }
            }
            let response = try client.readResponse().0
            return (response.status, client.isClosedByPeer(), Date().timeIntervalSince(started))
        }
        XCTAssertEqual(status, 408)
        XCTAssertTrue(closed)
        XCTAssertLessThan(elapsed, 3, "cut at the header timeout, not the idle timeout")
        XCTAssertEqual(try refusals("request_headers_timeout"), 1)
        XCTAssertEqual(upstream.requests.load(ordering: .relaxed), 0)
    }

    func testManySlowHeaderClientsAreAllCut() async throws {
        try await start("    request_headers_timeout: 400ms")
        let port = self.port
        let results = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<20 {
                group.addTask {
                    try await blocking { () -> Int in
                        let client = try RawHTTPClient(port: port, timeout: 5)
                        try client.send("GET / HTTP/1.1\r\nHo")
                        return (try? client.readResponse().0.status) ?? 0
                    }
                }
            }
            var statuses: [Int] = []
            for try await status in group { statuses.append(status) }
            return statuses
        }
        XCTAssertEqual(results, Array(repeating: 408, count: 20))
        // The proxy still serves.
        let ok = try await blocking { try httpGet(port, "/after").status }
        XCTAssertEqual(ok, 200)
    }

    func testAnIdleKeepAliveConnectionIsNotAHeaderTimeout() async throws {
        try await start("    request_headers_timeout: 300ms")
        let port = self.port
        let statuses = try await blocking { () -> [Int] in
            let client = try RawHTTPClient(port: port, timeout: 5)
            let first = try client.request("GET", "/one").status
            usleep(800_000)  // idle between requests, no bytes: only the idle timeout applies
            let second = try client.request("GET", "/two").status
            return [first, second]
        }
        XCTAssertEqual(statuses, [200, 200])
    }

    func testStalledBodyGets408AndFreesTheUpstreamConnection() async throws {
        try await start("    stream_idle_timeout: 500ms")
        let port = self.port
        let (status, closed) = try await blocking { () -> (Int, Bool) in
            let client = try RawHTTPClient(port: port, timeout: 5)
            try client.send("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
            let response = try client.readResponse().0
            return (response.status, client.isClosedByPeer())
        }
        XCTAssertEqual(status, 408)
        XCTAssertTrue(closed)
        XCTAssertEqual(try refusals("stream_idle_timeout"), 1)
        // The cluster's only upstream connection was released: the next request is served.
        let next = try await blocking { try httpGet(port, "/next").status }
        XCTAssertEqual(next, 200)
    }

    func testStalledBodiesDoNotStarveOtherClients() async throws {
        try await start("    stream_idle_timeout: 400ms")
        let port = self.port
        // Five clients hold a head without a body; the pool has one connection.
        let stalled = try await blocking { () -> [RawHTTPClient] in
            try (0..<5).map { _ in
                let c = try RawHTTPClient(port: port, timeout: 5)
                try c.send("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n")
                return c
            }
        }
        let started = Date()
        let status = try await blocking { () -> Int in
            var last = 0
            for _ in 0..<20 {
                last = (try? httpGet(port, "/served").status) ?? 0
                if last == 200 { break }
                usleep(100_000)
            }
            return last
        }
        XCTAssertEqual(status, 200)
        XCTAssertLessThan(Date().timeIntervalSince(started), 3)
        _ = stalled
    }

    func testRequestTimeoutBoundsATricklingBody() async throws {
        try await start("    stream_idle_timeout: 5s\n    request_timeout: 700ms")
        let port = self.port
        let status = try await blocking { () -> Int in
            let client = try RawHTTPClient(port: port, timeout: 5)
            try client.send("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n")
            // A byte every 100 ms: never idle, never done.
            for _ in 0..<30 {
                guard (try? client.send("x")) != nil else { break }
                usleep(100_000)
            }
            return (try? client.readResponse().0.status) ?? 0
        }
        XCTAssertEqual(status, 408)
        XCTAssertEqual(try refusals("request_timeout"), 1)
    }

    func testStreamIdleWhileWaitingForTheUpstreamGives504() async throws {
        try await start("    stream_idle_timeout: 400ms")
        let port = self.port
        let status = try await blocking { try httpGet(port, "/slow/3000").status }
        XCTAssertEqual(status, 504)
    }

    func testMaxConnectionDurationClosesAfterTheCurrentRequest() async throws {
        try await start("    max_connection_duration: 300ms")
        let port = self.port
        // A request in flight when the connection's time is up is answered, with close.
        let (status, connection, closed) = try await blocking { () -> (Int, String?, Bool) in
            let client = try RawHTTPClient(port: port, timeout: 5)
            let r = try client.request("GET", "/slow/800")
            return (r.status, r.header("connection"), client.isClosedByPeer())
        }
        XCTAssertEqual(status, 200)
        XCTAssertEqual(connection, "close")
        XCTAssertTrue(closed)
        // An idle keep-alive connection is closed when its time is up.
        let (answered, elapsed) = try await blocking { () -> ([Int], Double) in
            let client = try RawHTTPClient(port: port, timeout: 5)
            let started = Date()
            let first = try client.request("GET", "/x").status
            XCTAssertTrue(client.isClosedByPeer())
            return ([first], Date().timeIntervalSince(started))
        }
        XCTAssertEqual(answered, [200])
        XCTAssertGreaterThan(elapsed, 0.25)
        XCTAssertLessThan(elapsed, 3)
    }

    func testPipelinedRequestsBeyondTheCapAreNotRead() async throws {
        try await start("    max_pipelined_requests: 4")
        let port = self.port
        let (statuses, connections, closed) = try await blocking { () -> ([Int], [String?], Bool) in
            let client = try RawHTTPClient(port: port, timeout: 5)
            try client.send(String(repeating: "GET /p HTTP/1.1\r\nHost: t\r\n\r\n", count: 10))
            var statuses: [Int] = []
            var connections: [String?] = []
            while let r = try? client.readResponse().0 {
                statuses.append(r.status)
                connections.append(r.header("connection"))
            }
            return (statuses, connections, client.isClosedByPeer())
        }
        XCTAssertEqual(statuses, [200, 200, 200, 200])
        XCTAssertEqual(connections.last ?? nil, "close")
        XCTAssertTrue(closed)
        XCTAssertEqual(upstream.requests.load(ordering: .relaxed), 4)
        XCTAssertEqual(try refusals("pipeline_limit"), 1)
    }
}

/// Every refusal is in the access log with its reason as the flag, including the ones made
/// before a request head exists (a parse error, a slow head).
final class RefusalAccessLogTests: XCTestCase {
    func testRefusalsAreLoggedWithTheirReason() async throws {
        let upstream = try await RawUpstream.start(group: testGroup)
        upstream.setScript("upgrade", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n")
        let log = NSTemporaryDirectory() + "sluice-access-\(UUID().uuidString).log"
        defer { try? FileManager.default.removeItem(atPath: log) }
        let proxy = try await ProxyUnderTest.start("""
            admin: { address: 127.0.0.1:0 }
            access_log: { format: json, path: "\(log)" }
            listeners:
              - name: main
                address: 127.0.0.1:0
                request_headers_timeout: 300ms
                routes: [{ match: { prefix: / }, cluster: raw }]
            clusters:
              - { name: raw, endpoints: ["127.0.0.1:{{raw}}"] }
            """, ports: ["raw": upstream.port], workers: 1)
        let port = proxy.port()
        let statuses = try await blocking { () -> [Int] in
            var statuses: [Int] = []
            for raw in ["GARBAGE\r\n\r\n", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "GET / HTTP/1.1\r\nHo",
                        "GET /script/upgrade HTTP/1.1\r\nHost: t\r\n\r\n"] {
                let client = try RawHTTPClient(port: port, timeout: 5)
                try client.send(raw)
                statuses.append(try client.readResponse().0.status)
            }
            return statuses
        }
        XCTAssertEqual(statuses, [400, 400, 408, 502])
        let logged = eventually {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            return ["malformed_request", "duplicate_host", "request_headers_timeout", "upstream_protocol_error"]
                .allSatisfy { text.contains("\"flags\":\"\($0)\"") }
                // Envoy's names beside Sluice's: a protocol error each way.
                && text.contains("\"flags\":\"duplicate_host\",\"response_flags\":\"DPE\"")
                && text.contains("\"flags\":\"upstream_protocol_error\",\"response_flags\":\"UPE\"")
        }
        XCTAssertTrue(logged, (try? String(contentsOfFile: log, encoding: .utf8)) ?? "no log")
        await proxy.stop()
        await upstream.stop()
    }
}
