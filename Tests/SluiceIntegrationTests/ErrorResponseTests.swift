import Foundation
import XCTest

/// The answers operators expect when things go wrong: 404, 502, 503, 504, and retries.
final class ErrorResponseTests: XCTestCase {
    /// A port with nothing listening.
    func deadPort() throws -> Int { SluiceProcess.freePort() }

    func testNotFoundBadGatewayUnavailableAndTimeout() async throws {
        let a = try await TestUpstream.start(name: "a", group: testGroup)
        let dead = try deadPort()
        let proxy = try await ProxyUnderTest.start("""
            listeners:
              - name: main
                address: 127.0.0.1:0
                routes:
                  - { match: { prefix: /dead }, cluster: dead }
                  - { match: { prefix: /ejected }, cluster: ejected }
                  - { match: { prefix: /slow }, cluster: a, timeout: 200ms }
                  - { match: { prefix: /reset }, cluster: a }
                  - { match: { prefix: /ok }, cluster: a }
            clusters:
              - { name: a, endpoints: ["127.0.0.1:{{a}}"] }
              - { name: dead, endpoints: ["127.0.0.1:{{dead}}"], connect_timeout: 1s }
              - name: ejected
                endpoints: ["127.0.0.1:{{dead}}"]
                outlier_detection: { consecutive_connect_failures: 1, base_ejection_time: 30s }
            """, ports: ["a": a.port, "dead": dead])
        let port = proxy.port()
        try await blocking {
            let client = try RawHTTPClient(port: port)
            var r = try client.request("GET", "/nowhere")
            XCTAssertEqual(r.status, 404)
            r = try client.request("GET", "/ok")
            XCTAssertEqual(r.status, 200, "the connection stays usable after a 404")

            r = try client.request("GET", "/dead")
            XCTAssertEqual(r.status, 502, "connection refused upstream is a 502")

            r = try client.request("GET", "/ejected")
            XCTAssertEqual(r.status, 502, "first failure: still tried")
            r = try client.request("GET", "/ejected")
            XCTAssertEqual(r.status, 503, "after ejection no endpoint is healthy: 503")

            r = try client.request("GET", "/slow/3000")
            XCTAssertEqual(r.status, 504)

            r = try RawHTTPClient(port: port).request("GET", "/reset")
            XCTAssertEqual(r.status, 502, "upstream closing without a response is a 502")
        }
        XCTAssertEqual(try proxy.sample("sluice_cluster_timeouts_total{cluster=\"a\"}"), 1)
        XCTAssertEqual(try proxy.sample("sluice_cluster_outlier_ejections_total{cluster=\"ejected\"}"), 1)
        XCTAssertEqual(try proxy.sample("sluice_cluster_endpoint_healthy{cluster=\"ejected\",endpoint=\"127.0.0.1:\(dead)\"}"), 0)
        await proxy.stop()
        await a.stop()
    }

    func testRetriesOnConnectFailureAndServerError() async throws {
        let good = try await TestUpstream.start(name: "good", group: testGroup)
        let dead = try deadPort()
        let proxy = try await ProxyUnderTest.start("""
            listeners:
              - name: main
                address: 127.0.0.1:0
                routes:
                  - match: { prefix: /status/503 }
                    cluster: good
                    retry: { attempts: 1, on: [5xx] }
                  - match: { prefix: / }
                    cluster: mixed
                    retry: { attempts: 2, on: [connect_failure] }
            clusters:
              - { name: mixed, lb: round_robin, endpoints: ["127.0.0.1:{{dead}}", "127.0.0.1:{{good}}"] }
              - { name: good, endpoints: ["127.0.0.1:{{good}}"] }
            """, ports: ["good": good.port, "dead": dead], workers: 1)
        let port = proxy.port()
        try await blocking {
            for _ in 0..<6 {
                let r = try httpGet(port, "/hello")
                XCTAssertEqual(r.status, 200, "a refused connection is retried on the other endpoint")
            }
            let r = try RawHTTPClient(port: port).request("POST", "/status/503", body: "payload")
            XCTAssertEqual(r.status, 503, "retried once, then the upstream's 503 is passed on")
        }
        XCTAssertGreaterThanOrEqual(try proxy.sample("sluice_cluster_retries_total{cluster=\"mixed\"}") ?? 0, 3)
        XCTAssertEqual(try proxy.sample("sluice_cluster_retries_total{cluster=\"good\"}"), 1)
        XCTAssertEqual(good.requests.load(ordering: .relaxed), 6 + 2, "the 503 request reached the good upstream twice (attempt + retry)")
        await proxy.stop()
        await good.stop()
    }

    func testHealthCheckEjectionAndReturn() async throws {
        let a = try await TestUpstream.start(name: "a", group: testGroup)
        let b = try await TestUpstream.start(name: "b", group: testGroup)
        let proxy = try await ProxyUnderTest.start("""
            listeners:
              - { name: main, address: "127.0.0.1:0", routes: [{ match: { prefix: / }, cluster: hc }] }
            clusters:
              - name: hc
                endpoints: ["127.0.0.1:{{a}}", "127.0.0.1:{{b}}"]
                health_check: { path: /healthz, interval: 50ms, timeout: 500ms, unhealthy_threshold: 2, healthy_threshold: 2 }
            """, ports: ["a": a.port, "b": b.port])
        let port = proxy.port()
        XCTAssertTrue(eventually { a.healthChecks.load(ordering: .relaxed) >= 2 })
        b.healthy.store(false, ordering: .relaxed)
        let ejected = try eventually { try proxy.sample("sluice_cluster_endpoint_healthy{cluster=\"hc\",endpoint=\"127.0.0.1:\(b.port)\"}") == 0 }
        XCTAssertTrue(ejected, "failing health checks take b out")
        try await blocking {
            for _ in 0..<10 { XCTAssertEqual(try httpGet(port, "/x").header("x-upstream"), "a") }
        }
        b.healthy.store(true, ordering: .relaxed)
        let back = try eventually { try proxy.sample("sluice_cluster_endpoint_healthy{cluster=\"hc\",endpoint=\"127.0.0.1:\(b.port)\"}") == 1 }
        XCTAssertTrue(back, "passing checks bring b back")
        let names = try await blocking { try (0..<10).map { _ in try httpGet(port, "/x").header("x-upstream") ?? "?" } }
        XCTAssertTrue(names.contains("b"), "b serves again: \(names)")

        a.healthy.store(false, ordering: .relaxed)
        b.healthy.store(false, ordering: .relaxed)
        let allDown = try eventually { try proxy.sample("sluice_cluster_endpoint_healthy{cluster=\"hc\",endpoint=\"127.0.0.1:\(a.port)\"}") == 0 && proxy.sample("sluice_cluster_endpoint_healthy{cluster=\"hc\",endpoint=\"127.0.0.1:\(b.port)\"}") == 0 }
        XCTAssertTrue(allDown)
        let status = try await blocking { try httpGet(port, "/x").status }
        XCTAssertEqual(status, 503, "no healthy endpoint: 503")
        await proxy.stop()
        await a.stop()
        await b.stop()
    }
}
