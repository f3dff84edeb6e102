import Foundation
import XCTest

/// Host and path routing, rewrites, direct responses and forwarded headers, end to end.
final class RoutingTests: XCTestCase {
    func testHostAndPathRouting() async throws {
        let a = try await TestUpstream.start(name: "a", group: testGroup)
        let b = try await TestUpstream.start(name: "b", group: testGroup)
        let c = try await TestUpstream.start(name: "c", group: testGroup)
        let proxy = try await ProxyUnderTest.start("""
            listeners:
              - name: main
                address: 127.0.0.1:0
                routes:
                  - name: api-exact-host
                    match: { host: api.example.com, prefix: /v1/ }
                    cluster: a
                    prefix_rewrite: /internal/
                  - name: wildcard
                    match: { host: "*.example.com" }
                    cluster: b
                  - name: exact-path
                    match: { path: /exact }
                    cluster: c
                  - name: regex
                    match: { regex: "^/items/[0-9]+$" }
                    cluster: a
                  - name: post-only
                    match: { prefix: /write, methods: [POST] }
                    cluster: c
                  - name: canary
                    match: { prefix: /, headers: [{ name: x-canary, value: "1" }] }
                    cluster: c
                    host_rewrite: canary.internal
                  - name: teapot
                    match: { path: /teapot }
                    direct_response: { status: 418, body: "short and stout" }
                  - name: fallback
                    match: { prefix: /static/ }
                    cluster: b
            clusters:
              - { name: a, endpoints: ["127.0.0.1:{{a}}"] }
              - { name: b, endpoints: ["127.0.0.1:{{b}}"] }
              - { name: c, endpoints: ["127.0.0.1:{{c}}"] }
            """, ports: ["a": a.port, "b": b.port, "c": c.port])
        let port = proxy.port()
        try await blocking {
            var r = try httpGet(port, "/v1/users?x=1", host: "api.example.com")
            XCTAssertEqual(r.header("x-upstream"), "a")
            XCTAssertTrue(r.text.contains("\"path\":\"/internal/users?x=1\""), r.text)

            r = try httpGet(port, "/v1/users", host: "API.Example.com:8080")
            XCTAssertEqual(r.header("x-upstream"), "a", "host match ignores case and port")

            r = try httpGet(port, "/anything", host: "shop.example.com")
            XCTAssertEqual(r.header("x-upstream"), "b")
            r = try httpGet(port, "/anything", host: "example.com")
            XCTAssertEqual(r.status, 404, "*.example.com does not match the bare domain")

            r = try httpGet(port, "/exact")
            XCTAssertEqual(r.header("x-upstream"), "c")
            r = try httpGet(port, "/exact/more")
            XCTAssertEqual(r.status, 404)

            r = try httpGet(port, "/items/42")
            XCTAssertEqual(r.header("x-upstream"), "a")
            r = try httpGet(port, "/items/abc")
            XCTAssertEqual(r.status, 404)

            r = try RawHTTPClient(port: port).request("POST", "/write", body: "x")
            XCTAssertEqual(r.header("x-upstream"), "c")
            r = try httpGet(port, "/write")
            XCTAssertEqual(r.status, 404, "GET does not match a POST-only route")

            r = try httpGet(port, "/whatever", headers: [("x-canary", "1")])
            XCTAssertEqual(r.header("x-upstream"), "c")
            XCTAssertTrue(r.text.contains("\"host\":\"canary.internal\""), r.text)

            r = try httpGet(port, "/teapot")
            XCTAssertEqual(r.status, 418)
            XCTAssertEqual(r.text, "short and stout")

            r = try httpGet(port, "/static/app.js")
            XCTAssertEqual(r.header("x-upstream"), "b")
        }
        let routeCount = try proxy.sample("sluice_route_requests_total{listener=\"main\",route=\"api-exact-host\"}")
        XCTAssertEqual(routeCount, 2)
        await proxy.stop()
        for u in [a, b, c] { await u.stop() }
    }

    func testForwardedHeadersAndHopByHopStripping() async throws {
        let a = try await TestUpstream.start(name: "a", group: testGroup)
        let proxy = try await ProxyUnderTest.start("""
            listeners:
              - { name: main, address: "127.0.0.1:0", routes: [{ match: { prefix: / }, cluster: a }] }
            clusters:
              - { name: a, endpoints: ["127.0.0.1:{{a}}"] }
            """, ports: ["a": a.port])
        let port = proxy.port()
        try await blocking {
            var r = try httpGet(port, "/h", headers: [("Connection", "x-secret"), ("X-Secret", "1"), ("Keep-Alive", "timeout=5"), ("TE", "trailers")])
            let body = r.text
            XCTAssertTrue(body.contains("\"x-forwarded-for\":\"127.0.0.1\""), body)
            XCTAssertTrue(body.contains("\"x-forwarded-proto\":\"http\""), body)
            let id = try echoedHeaders(r)["x-request-id"] ?? ""
            XCTAssertNotNil(id.wholeMatch(of: /[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}/), "a UUID v4 request id: \(id)")
            XCTAssertFalse(body.contains("x-secret"), "headers named in Connection are hop-by-hop: \(body)")
            XCTAssertFalse(body.contains("keep-alive"), body)
            XCTAssertFalse(body.contains("\"te\""), body)

            r = try httpGet(port, "/h", headers: [("X-Forwarded-For", "203.0.113.9"), ("X-Request-Id", "req-123"), ("X-Forwarded-Proto", "https")])
            XCTAssertTrue(r.text.contains("\"x-forwarded-for\":\"203.0.113.9, 127.0.0.1\""), r.text)
            XCTAssertTrue(r.text.contains("\"x-request-id\":\"req-123\""), r.text)
            XCTAssertTrue(r.text.contains("\"x-forwarded-proto\":\"https\""), r.text)
        }
        await proxy.stop()
        await a.stop()
    }

    func testRoundRobinOverThreeEndpointsAndKeepAliveReuse() async throws {
        let ups = [try await TestUpstream.start(name: "e0", group: testGroup),
                   try await TestUpstream.start(name: "e1", group: testGroup),
                   try await TestUpstream.start(name: "e2", group: testGroup)]
        let proxy = try await ProxyUnderTest.start("""
            listeners:
              - { name: main, address: "127.0.0.1:0", routes: [{ match: { prefix: / }, cluster: rr }] }
            clusters:
              - name: rr
                lb: round_robin
                endpoints: ["127.0.0.1:{{e0}}", "127.0.0.1:{{e1}}", "127.0.0.1:{{e2}}"]
            """, ports: ["e0": ups[0].port, "e1": ups[1].port, "e2": ups[2].port], workers: 1)
        let port = proxy.port()
        let seen = try await blocking { () -> [String] in
            let client = try RawHTTPClient(port: port)
            return try (0..<300).map { _ in try client.request("GET", "/rr").header("x-upstream") ?? "?" }
        }
        for name in ["e0", "e1", "e2"] {
            XCTAssertEqual(seen.filter { $0 == name }.count, 100, "round robin spreads evenly: \(name)")
        }
        XCTAssertEqual(Set(seen[0..<3]), ["e0", "e1", "e2"], "consecutive requests go to different endpoints")
        let totalConnections = ups.reduce(0) { $0 + $1.connections.load(ordering: .relaxed) }
        XCTAssertLessThanOrEqual(totalConnections, 6, "300 requests reuse a handful of pooled connections, not \(totalConnections)")
        await proxy.stop()
        for u in ups { await u.stop() }
    }
}
