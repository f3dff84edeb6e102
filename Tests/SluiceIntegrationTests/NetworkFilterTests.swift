import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SluiceConfig
import XCTest

/// An upstream that keeps what it receives and, at the client's FIN, answers "|total N" and
/// closes: the test knows exactly which bytes reached the upstream.
final class RecordingSink: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let record: NIOLockedValueBox<[UInt8]>
    init(record: NIOLockedValueBox<[UInt8]>) { self.record = record }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let b = unwrapInboundIn(data)
        record.withLockedValue { $0.append(contentsOf: b.readableBytesView) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            let total = record.withLockedValue { $0.count }
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "|total \(total)"))).whenComplete { _ in context.close(promise: nil) }
        }
    }
}

/// Network (TCP) Proxy-Wasm filters through Sluice, with filters built from source
/// (filters/test/c/network.c, the Swift SDK's tcp-guard sample): real sockets, a real
/// upstream, and the bytes each side actually got.
final class NetworkFilterTests: EngineMatrixTestCase {
    var servers: [Channel] = []
    var proxies: [ProxyUnderTest] = []
    var peers: [GRPCPeer] = []

    override func tearDown() async throws {
        for proxy in proxies { await proxy.stop() }
        for server in servers { try? await server.close() }
        for peer in peers { peer.stop() }
        try await super.tearDown()
    }

    func echoServer() async throws -> Int {
        let server = try await ServerBootstrap(group: testGroup)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { ch in ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(EchoOnCloseHandler()) } }
            .bind(host: "127.0.0.1", port: 0).get()
        servers.append(server)
        return server.localAddress!.port!
    }

    func sinkServer(_ record: NIOLockedValueBox<[UInt8]>) async throws -> Int {
        let server = try await ServerBootstrap(group: testGroup)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { ch in ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(RecordingSink(record: record)) } }
            .bind(host: "127.0.0.1", port: 0).get()
        servers.append(server)
        return server.localAddress!.port!
    }

    /// A TCP listener `main` with the network filter in `mode`, and an HTTP listener `report`
    /// whose HTTP filter (same module, same vm_id: the same VM) reports the shared data.
    func start(mode: String, upstream: Int, policy: String = "fail_closed", extra: String = "") async throws -> ProxyUnderTest {
        let module = try TestFilters.path("c-network")
        let proxy = try await ProxyUnderTest.start("""
            listeners:
              - { name: main, address: 127.0.0.1:0, protocol: tcp, cluster: up, network_filters: [net] }
              - { name: report, address: 127.0.0.1:0, http_filters: [report], routes: [{ match: { prefix: / }, direct_response: { status: 200 } }] }
            clusters:
              - { name: up, endpoints: ["127.0.0.1:{{up}}"] }
            plugins:
              - { name: net, module: \(module), vm_id: net, configuration: "\(mode)", failure_policy: \(policy)\(extra) }
              - { name: report, module: \(module), vm_id: net, configuration: "report" }
            """, ports: ["up": upstream])
        proxies.append(proxy)
        return proxy
    }

    /// The counters line and the per-connection traces, once `connections` traces are in.
    func report(_ proxy: ProxyUnderTest, connections: Int) throws -> (counters: String, traces: [String]) {
        var text = ""
        _ = try eventually {
            text = try httpGet(proxy.port("report"), "/").text
            return text.split(separator: "\n").count >= connections + 1
        }
        let lines = text.split(separator: "\n").map(String.init)
        return (lines.first ?? "", Array(lines.dropFirst()))
    }

    func testCountsConnectionsAndBytesIntoSharedDataAnHTTPFilterReads() async throws {
        let proxy = try await start(mode: "count", upstream: try await echoServer())
        let port = proxy.port()
        for message in ["hello tcp", "second", "third!"] {
            let got = try await blocking { () -> String in
                let client = try RawHTTPClient(port: port)
                try client.send(message)
                let echoed = try client.receive(message.utf8.count)
                client.shutdownWrite()
                return echoed + String(decoding: try client.readToEOF(), as: UTF8.self)
            }
            XCTAssertEqual(got, "\(message)|total \(message.utf8.count)", "echoed, then half-close reached the upstream and its answer came back")
        }
        let (counters, traces) = try report(proxy, connections: 3)
        // Downstream bytes counted once each; upstream bytes include each "|total N".
        XCTAssertEqual(counters, "connections=3 down=21 up=\(21 + "|total 9|total 6|total 6".utf8.count)")
        XCTAssertEqual(traces.count, 3)
        for trace in traces {
            XCTAssertTrue(trace.hasPrefix("new source:0+ destination:0+ connection_id:0+ request_path:1 down("), trace)
            // The client's FIN, the upstream's answer and FIN, then the close in Envoy's order.
            XCTAssertTrue(trace.hasSuffix("down(0,1) up(8,0) up(0,1) upclose(0) downclose(1) done log cluster:0+ upstream:0+ delete"), trace)
        }
    }

    func testRewritesBothWays() async throws {
        let received = NIOLockedValueBox<[UInt8]>([])
        let proxy = try await start(mode: "rewrite", upstream: try await sinkServer(received))
        let port = proxy.port()
        let got = try await blocking { () -> String in
            let client = try RawHTTPClient(port: port)
            try client.send("hello, upstream")
            client.shutdownWrite()
            return String(decoding: try client.readToEOF(), as: UTF8.self)
        }
        XCTAssertEqual(String(decoding: received.withLockedValue { $0 }, as: UTF8.self), "HELLO, UPSTREAM", "the client's bytes were replaced")
        XCTAssertEqual(got, "<|total 15>", "the upstream's bytes got a prefix and a suffix")
    }

    /// A filter holds the client's bytes until a tick resumes them: meanwhile Sluice stops
    /// reading at the buffer limit (the client's writes block), and after the resume every
    /// byte reaches the upstream, in order.
    func testPauseHoldsWithBackpressureThenResumes() async throws {
        let received = NIOLockedValueBox<[UInt8]>([])
        let proxy = try await start(mode: "hold-once 1500", upstream: try await sinkServer(received), extra: ", buffer_limit_kb: 256")
        let port = proxy.port()
        let total = 24 << 20
        let sent = NIOLockedValueBox(0)
        let payload = (0..<total).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 11) }
        let client = try RawHTTPClient(port: port, timeout: 30)
        let writer = Thread {
            var offset = 0
            while offset < total {
                let end = min(total, offset + 65536)
                guard (try? client.send(Array(payload[offset..<end]))) != nil else { return }
                offset = end
                sent.withLockedValue { $0 = offset }
            }
            client.shutdownWrite()
        }
        writer.start()
        try await Task.sleep(for: .milliseconds(900))
        let sentWhilePaused = sent.withLockedValue { $0 }
        XCTAssertEqual(received.withLockedValue { $0.count }, 0, "nothing passes while the filter holds")
        XCTAssertLessThan(sentWhilePaused, 12 << 20, "Sluice stopped reading (256 KiB limit + socket buffers), so the client could not push everything")
        let answer = try await blocking { String(decoding: try client.readToEOF(), as: UTF8.self) }
        XCTAssertEqual(answer, "|total \(total)")
        XCTAssertTrue(received.withLockedValue { $0 == payload }, "every byte arrived, in order")
        let (_, traces) = try report(proxy, connections: 1)
        XCTAssertTrue(traces[0].contains("resume:0"), traces[0])
    }

    func testPauseUntilALineArrives() async throws {
        let proxy = try await start(mode: "pause-line", upstream: try await echoServer())
        let port = proxy.port()
        try await blocking {
            let client = try RawHTTPClient(port: port, timeout: 5)
            try client.send("abc")
            usleep(200_000)
            XCTAssertFalse(client.hasDataToRead(), "held until a newline")
            try client.send("def\n")
            XCTAssertEqual(try client.receive(7), "abcdef\n", "the next data callback saw the held bytes again, and let them all go")
        }
    }

    func testClosesTheConnectionOnAPattern() async throws {
        let received = NIOLockedValueBox<[UInt8]>([])
        let proxy = try await start(mode: "close-on", upstream: try await sinkServer(received))
        let port = proxy.port()
        let closed = try await blocking { () -> Bool in
            let client = try RawHTTPClient(port: port, timeout: 5)
            try client.send("fine ")
            usleep(200_000)
            try client.send("then EVIL")
            return client.isClosedByPeer()
        }
        XCTAssertTrue(closed)
        XCTAssertTrue(eventually { received.withLockedValue { String(decoding: $0, as: UTF8.self) } == "fine " }, "the bytes with the pattern never reached the upstream")
        let (_, traces) = try report(proxy, connections: 1)
        XCTAssertTrue(traces[0].contains("close-downstream downclose(1) done log"), traces[0])
    }

    /// A trap in a network filter: fail_closed closes the connection, fail_open lets the
    /// bytes pass the failed filter; the worker lives on either way.
    func testFailurePolicies() async throws {
        let closedProxy = try await start(mode: "trap", upstream: try await echoServer(), policy: "fail_closed")
        let closedPort = closedProxy.port()
        let closed = try await blocking { () -> Bool in
            let client = try RawHTTPClient(port: closedPort, timeout: 5)
            try client.send("BOOM")
            return client.isClosedByPeer()
        }
        XCTAssertTrue(closed, "fail_closed: the connection is closed")
        XCTAssertEqual(try closedProxy.sample("sluice_plugin_failed_closed_streams_total{plugin=\"net\"}"), 1)

        let openProxy = try await start(mode: "trap", upstream: try await echoServer(), policy: "fail_open")
        let openPort = openProxy.port()
        let echoed = try await blocking { () -> String in
            let client = try RawHTTPClient(port: openPort, timeout: 5)
            try client.send("BOOM")
            let first = try client.receive(4)
            try client.send("after")
            return first + (try client.receive(5))
        }
        XCTAssertEqual(echoed, "BOOMafter", "fail_open: the bytes the filter failed on went on, and so does the rest")
    }

    /// A reload swaps the filter's configuration: a connection open across it keeps the VM
    /// it started with; a new one gets the new filter.
    func testReloadKeepsInFlightConnectionsOnTheirVM() async throws {
        let echo = try await echoServer()
        let proxy = try await start(mode: "rewrite", upstream: echo)
        let port = proxy.port()
        let old = try RawHTTPClient(port: port, timeout: 5)
        try await blocking {
            try old.send("a")
            XCTAssertEqual(try old.receive(3), "<A>")
        }
        let module = try TestFilters.path("c-network")
        let next = try ConfigLoader.parse(yaml: """
            admin: { address: 127.0.0.1:0 }
            access_log: { format: off }
            listeners:
              - { name: main, address: 127.0.0.1:\(port), protocol: tcp, cluster: up, network_filters: [net] }
              - { name: report, address: 127.0.0.1:\(proxy.port("report")), http_filters: [report], routes: [{ match: { prefix: / }, direct_response: { status: 200 } }] }
            clusters:
              - { name: up, endpoints: ["127.0.0.1:\(echo)"] }
            plugins:
              - { name: net, module: \(module), vm_id: net, configuration: "count" }
              - { name: report, module: \(module), vm_id: net, configuration: "report" }
            """, file: "reload.yaml")
        let outcome = await proxy.server.reload(config: next)
        XCTAssertTrue(outcome.ok, "\(outcome.errors)")
        try await blocking {
            try old.send("b")
            XCTAssertEqual(try old.receive(3), "<B>", "the open connection still runs the filter it started with")
            let fresh = try RawHTTPClient(port: port, timeout: 5)
            try fresh.send("c")
            XCTAssertEqual(try fresh.receive(1), "c", "a new connection runs the new configuration")
        }
    }

    /// The Swift SDK sample tcp-guard: each new connection waits for a gRPC answer from a real
    /// grpcio server; the answer lets it in (Unary echoes the address) or refuses it (Fail
    /// answers NOT_FOUND); a blocked pattern closes it; counters land in shared data.
    func testSwiftSampleGuardsConnectionsThroughAGRPCCallout() async throws {
        let peer = try GRPCPeer(["server"])
        peers.append(peer)
        let echo = try await echoServer()
        let module = try TestFilters.path("sample-tcp-guard")
        let proxy = try await ProxyUnderTest.start("""
            listeners:
              - { name: main, address: 127.0.0.1:0, protocol: tcp, cluster: up, network_filters: [allow] }
              - { name: denied, address: 127.0.0.1:0, protocol: tcp, cluster: up, network_filters: [deny] }
            clusters:
              - { name: up, endpoints: ["127.0.0.1:{{up}}"] }
              - { name: authz, protocol: http2, endpoints: ["127.0.0.1:{{grpc}}"] }
            plugins:
              - name: allow
                module: \(module)
                vm_id: guard
                configuration: { authz_cluster: authz, authz_service: sluice.test.Echo, authz_method: Unary, block: "DROP TABLE" }
              - name: deny
                module: \(module)
                vm_id: guard
                configuration: { authz_cluster: authz, authz_service: sluice.test.Echo, authz_method: Fail }
            """, ports: ["up": echo, "grpc": peer.port])
        proxies.append(proxy)
        let allowed = proxy.port(), denied = proxy.port("denied")
        try await blocking {
            let client = try RawHTTPClient(port: allowed, timeout: 5)
            try client.send("select 1")
            XCTAssertEqual(try client.receive(8), "select 1", "authorised: the held connection went through")
            try client.send("; DROP TABLE users")
            XCTAssertTrue(client.isClosedByPeer(), "the blocked pattern closed it")
            let refused = try RawHTTPClient(port: denied, timeout: 5)
            try? refused.send("hello")
            XCTAssertTrue(refused.isClosedByPeer(), "NOT_FOUND from the authorization service: refused")
        }
    }

    /// A gradual rollout applies to network filters as to HTTP ones: with weight 100 every
    /// connection runs the rollout version.
    func testRolloutTakesConnections() async throws {
        let module = try TestFilters.path("c-network")
        let proxy = try await start(mode: "count", upstream: try await echoServer(), extra: ", rollout: { module: \(module), weight: 100 }")
        let port = proxy.port()
        for _ in 0..<3 {
            try await blocking {
                let client = try RawHTTPClient(port: port, timeout: 5)
                try client.send("x")
                XCTAssertEqual(try client.receive(1), "x")
            }
        }
        XCTAssertEqual(try proxy.sample("sluice_plugin_streams_total{plugin=\"net\",version=\"rollout\"}"), 3)
        XCTAssertEqual(try proxy.sample("sluice_plugin_streams_total{plugin=\"net\",version=\"primary\"}") ?? 0, 0)
    }

    /// On an HTTP listener that terminates TLS, network filters sit behind TLS and before the
    /// HTTP codec: they see the plaintext request and response, as Envoy's do, and the HTTP
    /// streams on the connection see the same `connection.id` as its network contexts.
    func testNetworkFilterOnATLSHTTPListenerSeesPlaintext() async throws {
        let certs = try TestCertificates.make()
        defer { certs.remove() }
        let module = try TestFilters.path("c-network")
        let proxy = try await ProxyUnderTest.start("""
            listeners:
              - name: main
                address: 127.0.0.1:0
                tls: { certificates: [{ certificate_chain: \(certs.path("alpha.pem")), private_key: \(certs.path("alpha.key")) }] }
                network_filters: [net]
                routes: [{ match: { prefix: / }, direct_response: { status: 200, body: "plain" } }]
              - { name: report, address: 127.0.0.1:0, http_filters: [report], routes: [{ match: { prefix: / }, direct_response: { status: 200 } }] }
            plugins:
              - { name: net, module: \(module), vm_id: net, configuration: "count" }
              - { name: report, module: \(module), vm_id: net, configuration: "report" }
            """)
        proxies.append(proxy)
        let (status, output) = try curl(["--http1.1", "--cacert", certs.path("ca.pem"), "--resolve", "alpha.test:\(proxy.port()):127.0.0.1",
                                         "https://alpha.test:\(proxy.port())/path"])
        XCTAssertEqual(status, 0, output)
        XCTAssertEqual(output, "plain")
        let ids = try await ProxyUnderTest.start("""
            listeners:
              - { name: main, address: 127.0.0.1:0, network_filters: [net], http_filters: [ids], routes: [{ match: { prefix: / }, direct_response: { status: 200 } }] }
            plugins:
              - { name: net, module: \(module), vm_id: net, configuration: "count" }
              - { name: ids, module: \(module), vm_id: net, configuration: "report-ids" }
            """)
        proxies.append(ids)
        let answer = try httpGet(ids.port(), "/").text
        let parts = answer.split(separator: " ")
        XCTAssertEqual(parts.count, 2, answer)
        XCTAssertEqual(parts.first.map { $0.dropFirst(5) }, parts.last.map { $0.dropFirst(4) }, "one connection id: \(answer)")
        let (_, traces) = try report(proxy, connections: 1)
        XCTAssertTrue(traces[0].hasPrefix("new source:0+ destination:0+ connection_id:0+ request_path:1 down("), traces[0])
        let written = try XCTUnwrap(traces[0].split(separator: " ").first { $0.hasPrefix("down(") })
        let size = Int(written.dropFirst(5).split(separator: ",")[0])!
        XCTAssertLessThan(size, 200, "the request's plaintext size, not TLS records: \(traces[0])")
    }
}
