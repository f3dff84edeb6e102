import Foundation
import NIOConcurrencyHelpers
import XCTest

/// gRPC callouts (proxy_grpc_call / _stream / _send / _cancel / _close) from the C test filter
/// (filters/test/c/grpc.c) to a real grpcio server (Tests/support/grpc_peer.py), to a cluster
/// nothing listens on, and to a server that drops the connection mid-stream. Each request's
/// answer lists what the callout delivered, in order; the expected texts are what Envoy 1.40
/// delivers for the same calls (envoy-compat/network.py compares the two side by side).
final class GrpcCalloutTests: EngineMatrixTestCase {
    var proxy: ProxyUnderTest!
    var peers: [GRPCPeer] = []

    override func setUp() async throws {
        let grpc = try GRPCPeer(["server"])
        let cut = try GRPCPeer(["cut-server"])
        peers = [grpc, cut]
        proxy = try await ProxyUnderTest.start("""
            listeners:
              - { name: main, address: 127.0.0.1:0, http_filters: [caller], routes: [{ match: { prefix: / }, direct_response: { status: 404 } }] }
            clusters:
              - { name: grpc, protocol: http2, endpoints: ["127.0.0.1:{{grpc}}"] }
              - { name: dead, protocol: http2, endpoints: ["127.0.0.1:{{dead}}"] }
              - { name: cut, protocol: http2, endpoints: ["127.0.0.1:{{cut}}"] }
            plugins:
              - { name: caller, module: \(try TestFilters.path("c-grpc")), configuration: "grpc dead cut" }
            """, ports: ["grpc": grpc.port, "dead": SluiceProcess.freePort(), "cut": cut.port])
    }

    override func tearDown() async throws {
        await proxy?.stop()
        for peer in peers { peer.stop() }
        try await super.tearDown()
    }

    func call(_ path: String) throws -> String {
        let response = try httpGet(proxy.port(), path)
        XCTAssertEqual(response.status, 200, path)
        return response.text.trimmingCharacters(in: .newlines).replacingOccurrences(of: "\n", with: " / ")
    }

    static let ok = "trailing content-type=- grpc-status=0 grpc-message= x-trailer=- / close 0 0 via_upstream"
    static let opened = "initial content-type=application/grpc grpc-status=- grpc-message=- x-trailer=-"

    func testUnaryCallAndItsStatuses() throws {
        XCTAssertEqual(try call("/unary/hello"), "message 5 hello", "a unary success is one proxy_on_grpc_receive, no close")
        XCTAssertEqual(try call("/fail"), "close 5 5 no such thing{via_upstream}", "the server's status and message")
    }

    func testDeadlineExceeded() throws {
        XCTAssertEqual(try call("/hold/200"), "close 14 14 upstream request timeout{response_timeout}")
    }

    func testUnknownAndUnavailableClusters() throws {
        XCTAssertEqual(try call("/unknown"), "call status 4", "a name that is no cluster: ParseFailure from the hostcall")
        XCTAssertEqual(try call("/dead"), "close 14 14 upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"
                       + "{upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}}")
    }

    func testStreamsInBothDirections() throws {
        XCTAssertEqual(try call("/count/3"), "\(Self.opened) / message 3 n=0 / message 3 n=1 / message 3 n=2 / \(Self.ok)", "server stream")
        XCTAssertEqual(try call("/sum"), "\(Self.opened) / message 2 11 / \(Self.ok)", "client stream ended with proxy_grpc_close")
        XCTAssertEqual(try call("/chat"), "\(Self.opened) / message 5 HELLO / message 4 GRPC / \(Self.ok)", "bidirectional")
    }

    func testServerDropsTheConnectionMidStream() throws {
        XCTAssertEqual(try call("/cut"), "\(Self.opened) / message 3 n=0 / message 3 n=1 / trailing content-type=- grpc-status=- grpc-message=- x-trailer=- / "
                       + "close 13 13 upstream_reset_after_response_started{connection_termination}")
    }

    /// A server answering a unary call with three messages: the last one is the reply, as
    /// Envoy's client takes it.
    func testAUnaryReplyWithSeveralMessages() throws {
        XCTAssertEqual(try call("/many"), "message 5 three")
    }

    func testCancelDeliversNothingMore() throws {
        XCTAssertEqual(try call("/cancel"), "cancel status 0 / cancel again status 1", "no callback for a cancelled call (the answer comes 600 ms later)")
    }

    func testManyConcurrentCallsShareOneConnection() throws {
        let port = proxy.port()
        let wrong = NIOLockedValueBox<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 40) { i in
            let text = (try? httpGet(port, "/unary/c\(i)").text) ?? "error"
            if text != "message \("c\(i)".utf8.count) c\(i)\n" { wrong.withLockedValue { $0.append(text) } }
        }
        XCTAssertEqual(wrong.withLockedValue { $0 }, [])
        XCTAssertLessThanOrEqual(try proxy.sample("sluice_cluster_upstream_connections_total{cluster=\"grpc\"}") ?? 0, 2,
                                 "callouts multiplex on the endpoint's HTTP/2 connection (one per worker)")
    }
}
