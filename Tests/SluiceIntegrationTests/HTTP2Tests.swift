import Foundation
import NIOCore
import NIOHTTP2
import SluiceConfig
import SluiceCore
import XCTest

/// HTTP/2 downstream over real sockets: h2c by prior knowledge and h2 over TLS, many streams
/// on one connection through the same filter chain as HTTP/1.1, trailers both ways, bodies
/// larger than every window, resets, limits, drain and reload.
final class HTTP2Tests: XCTestCase {
    var upstream: TestUpstream!
    var proxies: [ProxyUnderTest] = []

    override func setUp() async throws {
        upstream = try await TestUpstream.start(name: "origin", group: testGroup)
    }

    override func tearDown() async throws {
        for proxy in proxies { await proxy.stop() }
        await upstream.stop()
    }

    func start(_ extra: String = "", filters: String = "", plugins: String = "") async throws -> ProxyUnderTest {
        let proxy = try await ProxyUnderTest.start("""
            listeners:
              - name: main
                address: 127.0.0.1:0
                \(extra)
                \(filters)
                routes:
                  - { match: { path: /direct }, direct_response: { status: 200, body: "direct\\n" } }
                  - { match: { prefix: / }, cluster: origin }
            clusters:
              - { name: origin, endpoints: ["127.0.0.1:{{origin}}"] }
            \(plugins)
            """, ports: ["origin": upstream.port])
        proxies.append(proxy)
        return proxy
    }

    func testManyStreamsOnOneConnectionWithAFilter() async throws {
        let proxy = try await start(filters: "http_filters: [swift]", plugins: "plugins: [{ name: swift, module: \(try TestFilters.path("swift-headers")), configuration: h2 }]")
        let client = try await H2TestClient.connect(port: proxy.port())
        let responses = try await withThrowingTaskGroup(of: H2TestClient.Response.self) { group in
            for i in 0..<50 { group.addTask { try await client.request("GET", "/item/\(i)") } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        await client.close()
        XCTAssertEqual(responses.count, 50)
        for r in responses {
            XCTAssertEqual(r.status, 200)
            // The filter ran on every stream (request header seen by the origin, response header added).
            XCTAssertEqual(r.header("x-swift-response"), "yes")
            XCTAssertTrue(r.text.contains("\"x-swift-filter\":\"h2\""), r.text)
            XCTAssertTrue(r.text.contains("\"x-forwarded-proto\":\"http\""), r.text)
        }
        XCTAssertEqual(try proxy.sample("sluice_listener_http2_connections_total{listener=\"main\"}"), 1)
        XCTAssertEqual(try proxy.sample("sluice_listener_http2_streams_total{listener=\"main\"}"), 50)
    }

    func testTrailersBothWaysAndBodiesLargerThanTheWindows() async throws {
        let proxy = try await start()
        let client = try await H2TestClient.connect(port: proxy.port())
        // Response trailers from an HTTP/1.1 origin's chunked response reach the h2 client.
        let trailers = try await client.request("GET", "/trailers")
        XCTAssertEqual(trailers.status, 200)
        XCTAssertEqual(trailers.text, "with trailers\n")
        XCTAssertEqual(trailers.trailers.first { $0.0 == "x-checksum" }?.1, "c0ffee")
        // A request with trailers and a body of unknown length goes upstream chunked.
        let upload = try await client.request("POST", "/upload", body: ByteBuffer(repeating: 7, count: 3 * 1024 * 1024), trailers: [("x-sum", "1")])
        XCTAssertEqual(upload.status, 200)
        XCTAssertEqual(upload.text, "received \(3 * 1024 * 1024)\n")
        // 8 MiB down through a 64 KiB stream window and a 1 MiB connection window.
        let download = try await client.request("GET", "/bytes/\(8 * 1024 * 1024)")
        XCTAssertEqual(download.body.readableBytes, 8 * 1024 * 1024)
        // A local reply without a body is one HEADERS frame with END_STREAM.
        let direct = try await client.request("GET", "/direct")
        XCTAssertEqual(direct.text, "direct\n")
        await client.close()
    }

    func testCurlOverH2cAndAutoDetectionKeepsHTTP1() async throws {
        let proxy = try await start()
        let h2c = try curl(["--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "http://127.0.0.1:\(proxy.port())/"])
        XCTAssertEqual(h2c.output, "2 200")
        let h1 = try curl(["--http1.1", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "http://127.0.0.1:\(proxy.port())/"])
        XCTAssertEqual(h1.output, "1.1 200")
        // A listener set to HTTP/1.1 only does not take the preface as HTTP/2.
        let h1only = try await start("codec: http1")
        let refused = try curl(["--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(h1only.port())/"])
        XCTAssertNotEqual(refused.output, "200")
    }

    func testH2OverTLSWithTheSwiftClient() async throws {
        let certs = try TestCertificates.make()
        defer { certs.remove() }
        let proxy = try await start("tls: { certificates: [{ certificate_chain: \(certs.path("alpha.pem")), private_key: \(certs.path("alpha.key")) }] }")
        let client = try await H2TestClient.connect(port: proxy.port(), tls: certs, serverName: "alpha.test")
        let r = try await client.request("GET", "/", authority: "alpha.test", scheme: "https")
        XCTAssertEqual(r.status, 200)
        XCTAssertTrue(r.text.contains("\"x-forwarded-proto\":\"https\""), r.text)
        XCTAssertTrue(r.text.contains("\"host\":\"alpha.test\""), r.text)
        await client.close()
    }

    func testStreamLimitRefusesExtraStreamsAndTheRestAreServed() async throws {
        let proxy = try await start("http2: { max_concurrent_streams: 4 }")
        let client = try await H2TestClient.connect(port: proxy.port())
        let results = try await withThrowingTaskGroup(of: H2TestClient.Response.self) { group in
            for _ in 0..<12 { group.addTask { try await client.request("GET", "/slow/300") } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        // NIOHTTP2's client queues streams beyond the peer's limit, so all complete in turn;
        // the server never had more than 4 open.
        XCTAssertEqual(results.filter { $0.status == 200 }.count, 12)
        await client.close()
    }

    func testClientResetCancelsTheUpstreamRequest() async throws {
        let proxy = try await start()
        let client = try await H2TestClient.connect(port: proxy.port())
        let streamDone = Task { try await client.request("GET", "/slow/2000") }
        try await Task.sleep(for: .milliseconds(200))
        // Closing the connection resets its streams: the stream ends at once, logged as a
        // downstream reset, and the origin's connection is not kept for it.
        await client.close()
        _ = try? await streamDone.value
        XCTAssertTrue(try eventually { try proxy.sample("sluice_listener_connections_active{listener=\"main\"}") == 0 })
        let after = try await H2TestClient.connect(port: proxy.port())
        let ok = try await after.request("GET", "/")
        XCTAssertEqual(ok.status, 200)
        await after.close()
    }

    func testDrainSendsGoAwayAndFinishesStreamsInFlight() async throws {
        let proxy = try await start()
        let client = try await H2TestClient.connect(port: proxy.port())
        let inFlight = Task { try await client.request("GET", "/slow/500") }
        try await Task.sleep(for: .milliseconds(100))
        let server = proxy.server
        let shutdown = Task { await server.shutdown(drainTimeout: .seconds(5)) }
        let r = try await inFlight.value
        XCTAssertEqual(r.status, 200, "the stream in flight finished during the drain")
        await shutdown.value
        XCTAssertGreaterThanOrEqual(server.prometheusText().components(separatedBy: "sluice_listener_http2_goaways_total{listener=\"main\"} 1").count, 2)
        proxies.removeAll()
    }

    func testMalformedRequestsAreRefusedPerStream() async throws {
        let proxy = try await start()
        let client = try await H2TestClient.connect(port: proxy.port())
        // Smuggling vectors that HTTP/2 makes malformed: a connection-specific header and a
        // Content-Length that disagrees with the body. Each is a stream error; the connection
        // keeps serving.
        let te = try? await client.request("GET", "/", headers: [("transfer-encoding", "chunked")])
        XCTAssertNotEqual(te?.status, 200)
        let length = try? await client.request("POST", "/upload", headers: [("content-length", "10")], body: ByteBuffer(string: "12345"))
        XCTAssertNotEqual(length?.status, 200)
        let ok = try await client.request("GET", "/")
        XCTAssertEqual(ok.status, 200)
        await client.close()
    }
}
