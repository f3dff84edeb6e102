import Foundation
import XCTest

/// HTTP/1.1 conformance at both edges: raw request bytes written the way attackers and sloppy
/// clients write them (WireCases.swift), and malformed or hostile upstream responses
/// (UpstreamCases.swift). Every case checks what the client got, whether the connection
/// closed, what a strict upstream parsed byte for byte, and that fresh connections still get
/// their own answers afterwards.
class WireConformanceTests: XCTestCase {
    var upstream: RawUpstream!
    var proxy: ProxyUnderTest!
    var runner: WireRunner { WireRunner(proxyPort: proxy.port(), upstream: upstream) }

    /// Listener lines added by a subclass (a filter chain).
    class var filterConfig: (listener: String, plugins: String) { ("", "") }

    /// One worker, so that every case and its probes share one upstream pool: a connection
    /// poisoned by one case would be handed to the next request.
    override func setUp() async throws {
        upstream = try await RawUpstream.start(group: testGroup)
        let filters = Self.filterConfig
        proxy = try await ProxyUnderTest.start("""
            listeners:
              - name: main
                address: 127.0.0.1:0
                max_request_headers_kb: 16\(filters.listener)
                routes:
                  - { match: { host: abs.example, prefix: / }, cluster: raw, prefix_rewrite: /abs/, timeout: 2s }
                  - { match: { prefix: / }, cluster: raw, timeout: 2s }
            clusters:
              - { name: raw, endpoints: ["127.0.0.1:{{raw}}"] }\(filters.plugins)
            """, ports: ["raw": upstream.port], workers: 1)
    }

    override func tearDown() async throws {
        await proxy.stop()
        await upstream.stop()
    }

    func testRequestCases() async throws {
        let runner = self.runner
        let failures = try await blocking { () -> [String] in
            var failures: [String] = []
            var names = Set<String>()
            for c in wireCases {
                precondition(names.insert(c.name).inserted, "duplicate case name \(c.name)")
                do { try runner.run(c) } catch { failures.append("\(c.name): \(error)") }
            }
            return failures
        }
        for f in failures { XCTFail(f) }
        XCTAssertGreaterThanOrEqual(wireCases.count, 150)
        // Refusals are counted by reason.
        for reason in ["duplicate_host", "missing_host", "invalid_target", "malformed_request", "connect_refused", "trace_with_body", "unsupported_transfer_coding"] {
            XCTAssertGreaterThan(try proxy.sample("sluice_listener_refused_total{listener=\"main\",reason=\"\(reason)\"}") ?? 0, 0, reason)
        }
        print("wire request cases: \(wireCases.count - failures.count) of \(wireCases.count) as expected")
    }

    func testUpstreamCases() async throws {
        let runner = self.runner
        let failures = try await blocking { () -> [String] in
            var failures: [String] = []
            for c in upstreamCases {
                do { try runner.run(c) } catch { failures.append("\(c.name): \(error)") }
            }
            return failures
        }
        for f in failures { XCTFail(f) }
        XCTAssertGreaterThanOrEqual(upstreamCases.count, 40)
        for reason in ["malformed_response", "unsupported_transfer_coding", "unsolicited_upgrade", "unsolicited_response"] {
            XCTAssertGreaterThan(try proxy.sample("sluice_cluster_protocol_errors_total{cluster=\"raw\",reason=\"\(reason)\"}") ?? 0, 0, reason)
        }
        print("upstream response cases: \(upstreamCases.count - failures.count) of \(upstreamCases.count) as expected")
    }
}

/// The same cases through a listener with a pass-through Proxy-Wasm filter: the filter path
/// rebuilds the request and response heads, so its framing is proven separately.
final class WireConformanceThroughFilterTests: WireConformanceTests {
    override class var filterConfig: (listener: String, plugins: String) {
        let module = (try? TestFilters.path("c-conformance")) ?? "missing"
        return ("\n    http_filters: [c]", "\nplugins:\n  - { name: c, module: \"\(module)\" }")
    }

    // Test discovery on Linux lists only methods a class declares itself.
    override func testRequestCases() async throws { try await super.testRequestCases() }
    override func testUpstreamCases() async throws { try await super.testUpstreamCases() }
}
