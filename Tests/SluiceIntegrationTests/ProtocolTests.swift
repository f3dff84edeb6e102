import Foundation
import XCTest

/// HTTP/1.1 on the wire: malformed input, oversized headers, smuggling attempts, chunked
/// bodies both ways, pipelining, HEAD, 100-continue and upgrades.
final class ProtocolTests: XCTestCase {
    var upstream: TestUpstream!
    var proxy: ProxyUnderTest!
    var port: Int { proxy.port() }

    override func setUp() async throws {
        upstream = try await TestUpstream.start(name: "u", group: testGroup)
        proxy = try await ProxyUnderTest.start("""
            listeners:
              - name: main
                address: 127.0.0.1:0
                max_request_headers_kb: 8
                routes: [{ match: { prefix: / }, cluster: u }]
            clusters:
              - { name: u, endpoints: ["127.0.0.1:{{u}}"] }
            """, ports: ["u": upstream.port])
    }

    override func tearDown() async throws {
        await proxy.stop()
        await upstream.stop()
    }

    /// Sends raw bytes and expects `status`, a `Connection: close` and the connection closed.
    func expectRefusal(_ raw: String, status: Int, file: StaticString = #filePath, line: UInt = #line) async throws {
        let port = self.port
        let (response, closed) = try await blocking { () -> (RawHTTPClient.Response, Bool) in
            let client = try RawHTTPClient(port: port, timeout: 5)
            try client.send(raw)
            let r = try client.readResponse().0
            return (r, client.isClosedByPeer())
        }
        XCTAssertEqual(response.status, status, "for \(raw.debugDescription)", file: file, line: line)
        XCTAssertEqual(response.header("connection")?.lowercased(), "close", file: file, line: line)
        XCTAssertTrue(closed, "the connection is closed after \(status)", file: file, line: line)
    }

    func testMalformedRequestLinesGet400AndClose() async throws {
        try await expectRefusal("GARBAGE\r\n\r\n", status: 400)
        try await expectRefusal("GET /x HTTP/1.1 extra\r\nHost: a\r\n\r\n", status: 400)
        try await expectRefusal("GET /x HTTP/9.9\r\nHost: a\r\n\r\n", status: 400)
        try await expectRefusal("GET /x HTTP/1.1\r\nBad Header Name: 1\r\n\r\n", status: 400)
        try await expectRefusal("GET /x HTTP/1.1\r\n\r\n", status: 400)  // HTTP/1.1 requires Host
        XCTAssertEqual(upstream.requests.load(ordering: .relaxed), 0, "nothing malformed reaches the upstream")
        XCTAssertGreaterThanOrEqual(try proxy.sample("sluice_listener_protocol_errors_total{listener=\"main\"}") ?? 0, 5)
    }

    func testOversizedHeadersGet431() async throws {
        let big = String(repeating: "a", count: 9 * 1024)
        try await expectRefusal("GET /x HTTP/1.1\r\nHost: a\r\nX-Big: \(big)\r\n\r\n", status: 431)
        let many = (0..<400).map { "X-H\($0): 0123456789012345678901234567\r\n" }.joined()
        try await expectRefusal("GET /x HTTP/1.1\r\nHost: a\r\n\(many)\r\n", status: 431)
        // Just under the limit is fine.
        let port = self.port
        let ok = try await blocking { try httpGet(port, "/x", headers: [("X-Fine", String(repeating: "b", count: 6 * 1024))]).status }
        XCTAssertEqual(ok, 200)
    }

    func testRequestSmugglingIsRejected() async throws {
        try await expectRefusal("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", status: 400)
        try await expectRefusal("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", status: 400)
        try await expectRefusal("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!", status: 400)
        try await expectRefusal("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", status: 400)
        try await expectRefusal("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", status: 400)
        XCTAssertEqual(upstream.requests.load(ordering: .relaxed), 0)
    }

    func testChunkedBothWays() async throws {
        let port = self.port
        try await blocking {
            let client = try RawHTTPClient(port: port)
            try client.send("POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
            let up = try client.readResponse().0
            XCTAssertEqual(up.status, 200)
            XCTAssertTrue(up.text.contains("\"body\":\"hello world\""), up.text)
            XCTAssertTrue(up.text.contains("\"transfer-encoding\":\"chunked\""), "the upstream gets a chunked request: \(up.text)")

            let down = try client.request("GET", "/chunked/50")
            XCTAssertEqual(down.header("transfer-encoding"), "chunked")
            XCTAssertNil(down.header("content-length"))
            XCTAssertEqual(down.text, (0..<50).map { "chunk-\($0)\n" }.joined())
        }
    }

    func testPipelinedRequestsAnswerInOrder() async throws {
        let port = self.port
        try await blocking {
            let client = try RawHTTPClient(port: port)
            let paths = ["/slow/150", "/p1", "/slow/50", "/p2", "/bytes/10"]
            try client.send(paths.map { "GET \($0) HTTP/1.1\r\nHost: a\r\n\r\n" }.joined())
            let r0 = try client.readResponse().0
            XCTAssertTrue(r0.text.hasPrefix("slow 150"), r0.text)
            XCTAssertTrue(try client.readResponse().0.text.contains("\"path\":\"/p1\""))
            XCTAssertTrue(try client.readResponse().0.text.hasPrefix("slow 50"))
            XCTAssertTrue(try client.readResponse().0.text.contains("\"path\":\"/p2\""))
            XCTAssertEqual(try client.readResponse().0.body.count, 10)
        }
    }

    func testHeadAndConnectionClose() async throws {
        let port = self.port
        try await blocking {
            let client = try RawHTTPClient(port: port)
            let head = try client.request("HEAD", "/bytes/5000")
            XCTAssertEqual(head.status, 200)
            XCTAssertEqual(head.header("content-length"), "5000", "HEAD keeps the length of the GET")
            let next = try client.request("GET", "/bytes/3")
            XCTAssertEqual(next.body.count, 3, "no stray body bytes after HEAD")

            let closing = try client.request("GET", "/x", headers: [("Connection", "close")])
            XCTAssertEqual(closing.status, 200)
            XCTAssertEqual(closing.header("connection"), "close")
            XCTAssertTrue(client.isClosedByPeer())

            let old = try RawHTTPClient(port: port)
            try old.send("GET /x HTTP/1.0\r\nHost: a\r\n\r\n")
            let r = try old.readResponse().0
            XCTAssertEqual(r.status, 200)
            XCTAssertTrue(old.isClosedByPeer(), "HTTP/1.0 without keep-alive closes")
        }
    }

    func testExpect100Continue() async throws {
        let port = self.port
        try await blocking {
            let client = try RawHTTPClient(port: port)
            try client.send("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
            var raw: [UInt8] = []
            // The interim response arrives before any body is sent.
            var chunk = [UInt8](repeating: 0, count: 1024)
            let n = recv(client.fd, &chunk, 1024, 0)
            XCTAssertGreaterThan(n, 0)
            raw = Array(chunk[0..<max(0, n)])
            XCTAssertTrue(String(decoding: raw, as: UTF8.self).hasPrefix("HTTP/1.1 100 Continue"), String(decoding: raw, as: UTF8.self))
            try client.send("ping")
            let r = try client.readResponse().0
            XCTAssertEqual(r.status, 200)
            XCTAssertTrue(r.text.contains("\"body\":\"ping\""), r.text)
            XCTAssertFalse(r.text.contains("expect"), "the upstream does not see Expect")
        }
    }
}
