import Foundation
import SluiceConfig
import SluiceCore
import XCTest

/// TLS and HTTP/2 towards the upstream: certificates verified against a CA with the SNI
/// configured, a client certificate presented, the `upstream.*` TLS properties, and gRPC
/// proxied end to end to a real grpcio server (unary, status, streams both ways, metadata
/// and trailers), in cleartext and over TLS on both sides.
final class UpstreamTLSAndGRPCTests: XCTestCase {
    var upstream: TestUpstream!
    var certs: TestCertificates!
    var proxies: [ProxyUnderTest] = []
    var peers: [GRPCPeer] = []

    override func setUp() async throws {
        upstream = try await TestUpstream.start(name: "origin", group: testGroup)
        certs = try TestCertificates.make()
    }

    override func tearDown() async throws {
        for proxy in proxies { await proxy.stop() }
        for peer in peers { peer.stop() }
        await upstream.stop()
        certs.remove()
    }

    func start(_ yaml: String, ports: [String: Int], workers: Int = 2) async throws -> ProxyUnderTest {
        let proxy = try await ProxyUnderTest.start(yaml, ports: ports, workers: workers)
        proxies.append(proxy)
        return proxy
    }

    /// The back proxy: TLS with alpha.test's certificate, client certificates required, the
    /// conformance filter (which answers `x-test: tls-props` with what it sees).
    func startBack() async throws -> ProxyUnderTest {
        try await start("""
            listeners:
              - name: main
                address: 127.0.0.1:0
                http_filters: [conformance]
                tls:
                  certificates: [{ certificate_chain: \(certs.path("alpha.pem")), private_key: \(certs.path("alpha.key")) }]
                  client_ca: \(certs.path("ca.pem"))
                  require_client_certificate: true
                routes: [{ match: { prefix: / }, cluster: origin }]
            clusters:
              - { name: origin, endpoints: ["127.0.0.1:{{origin}}"] }
            plugins:
              - { name: conformance, module: \(try TestFilters.path("c-conformance")), root_id: conformance }
            """, ports: ["origin": upstream.port])
    }

    func startFront(back: Int, tls: String, filters: Bool = false) async throws -> ProxyUnderTest {
        try await start("""
            listeners:
              - name: main
                address: 127.0.0.1:0
                \(filters ? "http_filters: [conformance]" : "")
                routes: [{ match: { prefix: / }, cluster: back }]
            clusters:
              - { name: back, endpoints: ["127.0.0.1:{{back}}"], tls: \(tls) }
            \(filters ? "plugins: [{ name: conformance, module: \(try TestFilters.path("c-conformance")), root_id: conformance }]" : "")
            """, ports: ["back": back])
    }

    var clientCertificate: String { "certificate_chain: \(certs.path("client.pem")), private_key: \(certs.path("client.key"))" }

    /// A property header the conformance filter added; the last one (the back proxy runs the
    /// filter too, and the front's is added after the back's).
    func decoded(_ response: RawHTTPClient.Response, _ name: String) -> String? {
        guard let value = response.headers(name).last else { return nil }
        let parts = value.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts[0] == "0" else { return "not found" }
        let hex = Array(parts[1].utf8)
        let bytes = stride(from: 0, to: hex.count, by: 2).map { UInt8(String(decoding: hex[$0..<$0 + 2], as: UTF8.self), radix: 16)! }
        return String(decoding: bytes, as: UTF8.self)
    }

    func testUpstreamTLSVerifiesTheServerAndPresentsAClientCertificate() async throws {
        let back = try await startBack()
        let front = try await startFront(back: back.port(), tls: "{ server_name: alpha.test, trusted_ca: \(certs.path("ca.pem")), \(clientCertificate) }")
        // What the back saw: the SNI the front sent and the front's client certificate.
        let seen = try httpGet(front.port(), "/", headers: [("x-test", "tls-props")])
        XCTAssertEqual(seen.status, 200, seen.text)
        XCTAssertEqual(decoded(seen, "x-p-2"), "alpha.test")  // requested_server_name
        XCTAssertEqual(decoded(seen, "x-p-3"), "CN=client,O=Acme")  // subject_peer_certificate
        XCTAssertEqual(decoded(seen, "x-p-0"), "\u{1}")  // mtls
        // Through to the origin, two hops (X-Forwarded-Proto stays the client's: http).
        let through = try httpGet(front.port(), "/echo")
        XCTAssertEqual(through.status, 200)
        XCTAssertTrue(through.text.contains("\"x-forwarded-for\":\"127.0.0.1, 127.0.0.1\""), through.text)

        // A name the certificate does not carry: verification fails; that is a connect
        // failure (Sluice's 502 "upstream connect error"), and nothing is forwarded.
        let wrongName = try await startFront(back: back.port(), tls: "{ server_name: wrong.test, trusted_ca: \(certs.path("ca.pem")), \(clientCertificate) }")
        let refused = try httpGet(wrongName.port(), "/")
        XCTAssertEqual(refused.status, 502)
        XCTAssertEqual(refused.text, "upstream connect error\n")
        XCTAssertGreaterThanOrEqual(try wrongName.sample("sluice_cluster_connect_failures_total{cluster=\"back\"}") ?? 0, 1)
        // Without a client certificate the back refuses it (with TLS 1.3 after the client's
        // handshake has finished): the request fails, 502.
        let noCertificate = try await startFront(back: back.port(), tls: "{ server_name: alpha.test, trusted_ca: \(certs.path("ca.pem")) }")
        XCTAssertEqual(try httpGet(noCertificate.port(), "/").status, 502)
        // verify: false accepts any certificate (for origins with self-signed ones).
        let unverified = try await startFront(back: back.port(), tls: "{ server_name: wrong.test, verify: false, \(clientCertificate) }")
        XCTAssertEqual(try httpGet(unverified.port(), "/").status, 200)
    }

    /// Active health checks go over the cluster's TLS: they pass with the right name and
    /// client certificate, and fail (taking the endpoint out) with a name it does not carry.
    func testHealthChecksUseTheClusterTLS() async throws {
        let back = try await startBack()
        func front(_ name: String) async throws -> ProxyUnderTest {
            try await start("""
                listeners:
                  - { name: main, address: 127.0.0.1:0, routes: [{ match: { prefix: / }, cluster: back }] }
                clusters:
                  - name: back
                    endpoints: ["127.0.0.1:{{back}}"]
                    tls: { server_name: \(name), trusted_ca: \(certs.path("ca.pem")), \(clientCertificate) }
                    health_check: { path: /healthz, interval: 100ms, timeout: 1s, unhealthy_threshold: 1, healthy_threshold: 1 }
                """, ports: ["back": back.port()])
        }
        let good = try await front("alpha.test")
        XCTAssertTrue(try eventually { try good.sample("sluice_cluster_health_checks_passed_total{cluster=\"back\"}") ?? 0 >= 2 })
        XCTAssertEqual(try good.sample("sluice_cluster_health_checks_failed_total{cluster=\"back\"}"), 0)
        let wrong = try await front("wrong.test")
        XCTAssertTrue(try eventually { try wrong.sample("sluice_cluster_health_checks_failed_total{cluster=\"back\"}") ?? 0 >= 1 })
        XCTAssertTrue(try eventually { try httpGet(wrong.port(), "/").status == 503 }, "the endpoint that fails its TLS check is taken out")
    }

    func testFiltersSeeTheUpstreamTLSProperties() async throws {
        let back = try await startBack()
        let front = try await startFront(back: back.port(), tls: "{ server_name: alpha.test, trusted_ca: \(certs.path("ca.pem")), \(clientCertificate) }", filters: true)
        let r = try httpGet(front.port(), "/", headers: [("x-test", "upstream-tls-props")])
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(decoded(r, "x-up-0"), "TLSv1.3")
        XCTAssertEqual(decoded(r, "x-up-1"), "OU=alpha,O=Sluice")
        XCTAssertEqual(decoded(r, "x-up-2"), "CN=client,O=Acme")
        XCTAssertEqual(decoded(r, "x-up-3"), "alpha.test")
        XCTAssertEqual(decoded(r, "x-up-4"), "not found")
        XCTAssertEqual(decoded(r, "x-up-5")?.count, 64)
        // On a cleartext upstream they are not found, as in Envoy.
        let plain = try await start("""
            listeners:
              - { name: main, address: 127.0.0.1:0, http_filters: [conformance], routes: [{ match: { prefix: / }, cluster: origin }] }
            clusters:
              - { name: origin, endpoints: ["127.0.0.1:{{origin}}"] }
            plugins: [{ name: conformance, module: \(try TestFilters.path("c-conformance")), root_id: conformance }]
            """, ports: ["origin": upstream.port])
        let cleartext = try httpGet(plain.port(), "/", headers: [("x-test", "upstream-tls-props")])
        XCTAssertEqual(decoded(cleartext, "x-up-0"), "not found")
    }

    /// Starts tests/support/grpc_peer.py's server; returns its port.
    func startGRPCServer(tls: Bool, maxAgeMs: Int? = nil) throws -> Int {
        let peer = try GRPCPeer(["server"] + (tls ? ["--tls", certs.path("alpha.pem"), certs.path("alpha.key")] : [])
            + (maxAgeMs.map { ["--max-age-ms", String($0)] } ?? []))
        peers.append(peer)
        return peer.port
    }

    func runGRPCClient(_ arguments: [String], mode: String = "client") throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", packageRoot.appendingPathComponent("Tests/support/grpc_peer.py").path, mode] + arguments
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    func testGRPCProxiedOverCleartextHTTP2() async throws {
        let grpc = try startGRPCServer(tls: false)
        let proxy = try await start("""
            listeners:
              - { name: main, address: 127.0.0.1:0, routes: [{ match: { prefix: / }, cluster: grpc }] }
            clusters:
              - { name: grpc, protocol: http2, endpoints: ["127.0.0.1:{{grpc}}"] }
            """, ports: ["grpc": grpc])
        let report = try runGRPCClient(["127.0.0.1:\(proxy.port())"])
        XCTAssertTrue(report.hasSuffix("6 passed, 0 failed\n"), report)
        // One upstream connection carried every call.
        XCTAssertEqual(try proxy.sample("sluice_cluster_upstream_connections_total{cluster=\"grpc\"}"), 1)
    }

    /// A gRPC server that ends connections with GOAWAY (max connection age): the pool stops
    /// opening streams on a connection that said GOAWAY and opens a new one; no call fails.
    func testUpstreamGoAwayMovesNewStreamsToANewConnection() async throws {
        let grpc = try startGRPCServer(tls: false, maxAgeMs: 300)
        let proxy = try await start("""
            listeners:
              - { name: main, address: 127.0.0.1:0, routes: [{ match: { prefix: / }, cluster: grpc }] }
            clusters:
              - { name: grpc, protocol: http2, endpoints: ["127.0.0.1:{{grpc}}"] }
            """, ports: ["grpc": grpc], workers: 1)
        // A slow call holds the first connection open past its GOAWAY (the server's grace
        // period); the calls made meanwhile must go to a new connection.
        let report = try runGRPCClient(["127.0.0.1:\(proxy.port())"], mode: "goaway-check")
        XCTAssertTrue(report.hasSuffix("21 passed, 0 failed\n"), report)
        XCTAssertGreaterThanOrEqual(try proxy.sample("sluice_cluster_upstream_connections_total{cluster=\"grpc\"}") ?? 0, 2)
    }

    func testGRPCProxiedOverTLSOnBothSides() async throws {
        let grpc = try startGRPCServer(tls: true)
        let proxy = try await start("""
            listeners:
              - name: main
                address: 127.0.0.1:0
                tls: { certificates: [{ certificate_chain: \(certs.path("beta.pem")), private_key: \(certs.path("beta.key")) }] }
                routes: [{ match: { prefix: / }, cluster: grpc }]
            clusters:
              - { name: grpc, protocol: http2, endpoints: ["127.0.0.1:{{grpc}}"], tls: { server_name: alpha.test, trusted_ca: \(certs.path("ca.pem")) } }
            """, ports: ["grpc": grpc])
        let report = try runGRPCClient(["127.0.0.1:\(proxy.port())", "--tls", certs.path("ca.pem"), "beta.test"])
        XCTAssertTrue(report.hasSuffix("6 passed, 0 failed\n"), report)
    }
}
