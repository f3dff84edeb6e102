import Foundation
import SluiceConfig
import XCTest

/// The sample filters of filters/samples, through the real proxy.
final class SampleFilterTests: EngineMatrixTestCase {
    func testHeadersSampleAddsRemovesAndRenames() async throws {
        let upstream = try await TestUpstream.start(name: "origin", group: testGroup)
        let module = try TestFilters.path("sample-headers")
        let proxy = try await ProxyUnderTest.start("""
            listeners:
              - { name: main, address: "127.0.0.1:0", http_filters: [headers], routes: [{ match: { prefix: / }, cluster: origin }] }
            clusters:
              - { name: origin, endpoints: ["127.0.0.1:{{origin}}"] }
            plugins:
              - name: headers
                module: "\(module)"
                configuration:
                  request: { add: { x-edge: sluice }, remove: [x-internal], rename: { x-old: x-new } }
                  response: { add: { x-served-by: sluice }, remove: [x-upstream] }
            """, ports: ["origin": upstream.port])
        let r = try httpGet(proxy.port(), "/h", headers: [("x-internal", "secret"), ("x-old", "moved")])
        let seen = try echoedHeaders(r)
        XCTAssertEqual(seen["x-edge"], "sluice")
        XCTAssertNil(seen["x-internal"])
        XCTAssertNil(seen["x-old"])
        XCTAssertEqual(seen["x-new"], "moved")
        XCTAssertEqual(r.header("x-served-by"), "sluice")
        XCTAssertNil(r.header("x-upstream"), "the response header was removed")
        await proxy.stop()

        // A configuration that is not JSON is refused when the plugin loads.
        do {
            _ = try await ProxyUnderTest.start("""
                listeners:
                  - { name: main, address: "127.0.0.1:0", http_filters: [headers], routes: [{ match: { prefix: / }, direct_response: { status: 200 } }] }
                plugins:
                  - { name: headers, module: "\(module)", configuration: "not json" }
                """)
            XCTFail("a broken configuration was accepted")
        } catch {
            XCTAssertTrue("\(error)".contains("proxy_on_configure returned false"), "\(error)")
        }
        await upstream.stop()
    }

    /// Both builds of auth-apikey (Swift and C) must behave the same: one test, two modules.
    func testAuthAPIKeyInSwiftAndC() async throws {
        for module in ["sample-auth-apikey", "sample-auth-apikey-c"] {
            let upstream = try await TestUpstream.start(name: "origin", group: testGroup)
            let proxy = try await ProxyUnderTest.start("""
                listeners:
                  - name: main
                    address: 127.0.0.1:0
                    http_filters: [apikey]
                    routes:
                      - { match: { path: /healthz }, direct_response: { status: 200, body: ok }, plugins: { apikey: { disabled: true } } }
                      - { match: { prefix: / }, cluster: origin }
                clusters:
                  - { name: origin, endpoints: ["127.0.0.1:{{origin}}"] }
                plugins:
                  - name: apikey
                    module: "\(try TestFilters.path(module))"
                    configuration: { header: x-key, keys: { "k-123": team-a, "k-456": team-b }, realm: tests }
                """, ports: ["origin": upstream.port])
            let port = proxy.port()
            var r = try httpGet(port, "/data")
            XCTAssertEqual(r.status, 401, module)
            XCTAssertEqual(r.header("www-authenticate"), "ApiKey realm=\"tests\"", module)
            XCTAssertEqual(r.text, "missing API key\n", module)
            r = try httpGet(port, "/data", headers: [("x-key", "nope")])
            XCTAssertEqual(r.status, 401, module)
            XCTAssertEqual(r.text, "unknown API key\n", module)
            r = try httpGet(port, "/data", headers: [("x-key", "k-456")])
            XCTAssertEqual(r.status, 200, module)
            let seen = try echoedHeaders(r)
            XCTAssertEqual(seen["x-api-key-id"], "team-b", module)
            XCTAssertNil(seen["x-key"], "\(module): the key itself never reaches the upstream")
            XCTAssertEqual(try httpGet(port, "/healthz").status, 200, "\(module): disabled on the health route")
            XCTAssertEqual(upstream.requests.load(ordering: .relaxed), 1, module)
            await proxy.stop()
            await upstream.stop()
        }
    }

    func testRateLimitIsSharedAcrossWorkers() async throws {
        let upstream = try await TestUpstream.start(name: "origin", group: testGroup)
        let proxy = try await ProxyUnderTest.start("""
            listeners:
              - { name: main, address: "127.0.0.1:0", http_filters: [rl], routes: [{ match: { prefix: / }, cluster: origin }] }
            clusters:
              - { name: origin, endpoints: ["127.0.0.1:{{origin}}"] }
            plugins:
              - { name: rl, module: "\(try TestFilters.path("sample-ratelimit"))", vm_id: rl,
                  configuration: { requests_per_second: 1, burst: 5, key_header: x-client-id } }
            """, ports: ["origin": upstream.port], workers: 2)
        let port = proxy.port()
        // New connections spread over both workers; the bucket is one.
        var statuses: [Int] = []
        for _ in 0..<8 { statuses.append(try httpGet(port, "/", headers: [("x-client-id", "alice")]).status) }
        XCTAssertEqual(statuses.filter { $0 == 200 }.count, 5, "a burst of 5, whichever worker serves: \(statuses)")
        XCTAssertEqual(Array(statuses.prefix(5)), [200, 200, 200, 200, 200])
        let limited = try httpGet(port, "/", headers: [("x-client-id", "alice")])
        XCTAssertEqual(limited.status, 429)
        XCTAssertEqual(limited.header("retry-after"), "1")
        XCTAssertEqual(try httpGet(port, "/", headers: [("x-client-id", "bob")]).status, 200, "buckets are per client")
        usleep(1_100_000)
        XCTAssertEqual(try httpGet(port, "/", headers: [("x-client-id", "alice")]).status, 200, "a token comes back after a second")
        await proxy.stop()
        await upstream.stop()
    }

    func testObservabilityMetricsLogsAndServerTiming() async throws {
        let upstream = try await TestUpstream.start(name: "origin", group: testGroup)
        let proxy = try await ProxyUnderTest.start("""
            listeners:
              - name: main
                address: 127.0.0.1:0
                http_filters: [observability]
                routes:
                  - { name: api, match: { prefix: /api/ }, cluster: origin }
                  - { name: other, match: { prefix: / }, cluster: origin }
            clusters:
              - { name: origin, endpoints: ["127.0.0.1:{{origin}}"] }
            plugins:
              - { name: observability, module: "\(try TestFilters.path("sample-observability"))" }
            """, ports: ["origin": upstream.port], workers: 1)
        let port = proxy.port()
        let r = try httpGet(port, "/api/a")
        XCTAssertNotNil(r.header("server-timing")?.wholeMatch(of: /sluice;dur=[0-9]+\.[0-9]/), r.header("server-timing") ?? "none")
        _ = try httpGet(port, "/api/b")
        _ = try httpGet(port, "/status/503")
        let stats = try proxy.stats()
        XCTAssertTrue(stats.contains("requests_total{route=\"api\",class=\"2xx\"} 2"), stats)
        XCTAssertTrue(stats.contains("requests_total{route=\"other\",class=\"5xx\"} 1"), stats)
        XCTAssertTrue(stats.contains("# TYPE request_duration_ms histogram"))
        XCTAssertTrue(stats.contains("request_duration_ms_count{route=\"api\"} 2"), stats)
        XCTAssertTrue(stats.contains("request_duration_ms_bucket{route=\"api\",le=\"+Inf\"} 2"), stats)
        await proxy.stop()
        await upstream.stop()
    }

    /// A proxy running the ext-authz sample in front of `origin`, asking `authz`.
    func extAuthzProxy(origin: TestUpstream, authz: TestUpstream, extra: String, configuration: String) async throws -> ProxyUnderTest {
        try await ProxyUnderTest.start("""
            listeners:
              - { name: main, address: "127.0.0.1:0", http_filters: [authz], routes: [{ match: { prefix: / }, cluster: origin }] }
            clusters:
              - { name: origin, endpoints: ["127.0.0.1:{{origin}}"] }
              - { name: authz, endpoints: ["127.0.0.1:{{authz}}"] }
            plugins:
              - name: authz
                module: "\(try TestFilters.path("sample-ext-authz"))"
                \(extra)
                configuration: { \(configuration) }
            """, ports: ["origin": origin.port, "authz": authz.port])
    }

    func testExtAuthzAllowsDeniesAndFailsClosed() async throws {
        let origin = try await TestUpstream.start(name: "origin", group: testGroup)
        let authz = try await TestUpstream.start(name: "authz-service", group: testGroup)
        func start(_ prefix: String, timeout: Int = 500) async throws -> ProxyUnderTest {
            try await extAuthzProxy(origin: origin, authz: authz, extra: "", configuration:
                "cluster: authz, path_prefix: \"\(prefix)\", timeout_ms: \(timeout), forward_headers: [authorization], upstream_headers: [x-upstream]")
        }
        var proxy = try await start("/check")
        var r = try httpGet(proxy.port(), "/doc", headers: [("authorization", "Bearer t")])
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(try echoedHeaders(r)["x-upstream"], "authz-service", "headers from the service's answer are injected")
        await proxy.stop()

        proxy = try await start("/status/403")
        r = try httpGet(proxy.port(), "/doc")
        XCTAssertEqual(r.status, 403)
        XCTAssertEqual(r.text, "status 403 from authz-service\n", "the service's status and body go to the client")
        await proxy.stop()

        proxy = try await start("/slow/2000", timeout: 200)
        r = try httpGet(proxy.port(), "/doc")
        XCTAssertEqual(r.status, 403, "a timeout fails closed")
        XCTAssertEqual(r.text, "authorization service unavailable\n")
        await proxy.stop()
        XCTAssertEqual(origin.requests.load(ordering: .relaxed), 1, "only the allowed request reached the origin")
        await origin.stop()
        await authz.stop()
    }

    /// The ext-authz bypass: a filter that pauses request headers while it asks a service
    /// must hold the body too. Under Envoy's default (StopIteration holds the whole stream) and
    /// with allow_on_headers_stop_iteration (the sample holds its body callbacks itself).
    func testExtAuthzHoldsARequestBodyUntilTheAnswerUnderBothPauseSemantics() async throws {
        for allow in [false, true] {
            let origin = try await TestUpstream.start(name: "origin", group: testGroup)
            let authz = try await TestUpstream.start(name: "authz-service", group: testGroup)
            func start(_ prefix: String) async throws -> ProxyUnderTest {
                try await extAuthzProxy(origin: origin, authz: authz, extra: "allow_on_headers_stop_iteration: \(allow)",
                                        configuration: "cluster: authz, path_prefix: \"\(prefix)\", timeout_ms: 3000")
            }
            // Allowed after 400 ms: nothing reaches the origin before the answer.
            var proxy = try await start("/slow/400")
            let port = proxy.port()
            let pending = Task { try await blocking { try RawHTTPClient(port: port).request("POST", "/doc", body: "the body") } }
            try await Task.sleep(for: .milliseconds(250))
            XCTAssertEqual(origin.requests.load(ordering: .relaxed), 0, "allow_on_headers_stop_iteration \(allow): the request went upstream before the answer")
            let allowed = try await pending.value
            XCTAssertEqual(allowed.status, 200)
            XCTAssertTrue(allowed.text.contains(#""body":"the body""#), allowed.text)
            await proxy.stop()
            // Denied: the origin never sees it.
            proxy = try await start("/status/403")
            let denied = try RawHTTPClient(port: proxy.port()).request("POST", "/doc", body: "the body")
            XCTAssertEqual(denied.status, 403)
            XCTAssertEqual(origin.requests.load(ordering: .relaxed), 1, "allow_on_headers_stop_iteration \(allow): a denied request reached the origin")
            await proxy.stop()
            await origin.stop()
            await authz.stop()
        }
    }

    func testBodyRewriteReplacesAndRedactsUnderEitherPauseSemantics() async throws {
        for allow in [false, true] {
        let upstream = try await TestUpstream.start(name: "internal.example", group: testGroup)
        let proxy = try await ProxyUnderTest.start("""
            listeners:
              - { name: main, address: "127.0.0.1:0", http_filters: [rewrite], routes: [{ match: { prefix: / }, cluster: origin }] }
            clusters:
              - { name: origin, endpoints: ["127.0.0.1:{{origin}}"] }
            plugins:
              - name: rewrite
                module: "\(try TestFilters.path("sample-body-rewrite"))"
                allow_on_headers_stop_iteration: \(allow)
                configuration: { replace: { "internal.example": "example.com" }, redact: [password], requests: true, responses: true }
            """, ports: ["origin": upstream.port])
        let r = try RawHTTPClient(port: proxy.port()).request("POST", "/login", headers: [("content-type", "application/json")],
                                                             body: #"{"user":"ann","password":"hunter2","n":1}"#)
        XCTAssertEqual(r.status, 200)
        // The request body reached the upstream redacted; the echo then passes the response rewrite.
        XCTAssertTrue(r.text.contains(#"\"password\":\"[redacted]\""#), r.text)
        XCTAssertFalse(r.text.contains("hunter2"))
        XCTAssertTrue(r.text.contains(#""upstream":"example.com""#), "response replacement: \(r.text)")
        XCTAssertNil(r.header("content-length"), "the original length is gone; the rewritten body is chunked")
        XCTAssertEqual(r.header("transfer-encoding"), "chunked")
        await proxy.stop()
        await upstream.stop()
        }
    }
}
