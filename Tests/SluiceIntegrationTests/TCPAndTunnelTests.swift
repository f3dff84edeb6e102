import Foundation
import NIOCore
import NIOPosix
import XCTest

/// A TCP echo server that answers with what it received once the client half-closes,
/// then closes its side: it proves FIN travels through the proxy in both directions.
final class EchoOnCloseHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    var received = ByteBuffer()

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var b = unwrapInboundIn(data)
        // Echo immediately too, so interactive round trips work before the half-close.
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(buffer: b)), promise: nil)
        received.writeBuffer(&b)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            let summary = ByteBuffer(string: "|total \(received.readableBytes)")
            context.writeAndFlush(wrapOutboundOut(summary)).whenComplete { _ in context.close(promise: nil) }
        }
    }
}

final class TCPAndTunnelTests: XCTestCase {
    func testTCPEchoWithHalfClose() async throws {
        let echo = try await ServerBootstrap(group: testGroup)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { ch in ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(EchoOnCloseHandler()) } }
            .bind(host: "127.0.0.1", port: 0).get()
        let proxy = try await ProxyUnderTest.start("""
            listeners:
              - { name: main, address: "127.0.0.1:0", protocol: tcp, cluster: echo }
            clusters:
              - { name: echo, endpoints: ["127.0.0.1:{{echo}}"] }
            """, ports: ["echo": echo.localAddress!.port!])
        let port = proxy.port()
        let received = try await blocking { () -> String in
            let client = try RawHTTPClient(port: port)
            try client.send("hello ")
            try client.send("tcp")
            client.shutdownWrite()
            return String(decoding: try client.readToEOF(), as: UTF8.self)
        }
        XCTAssertEqual(received, "hello tcp|total 9", "bytes echoed, then the upstream saw our FIN and answered before closing")
        XCTAssertTrue(try eventually { try proxy.sample("sluice_listener_connections_active{listener=\"main\"}") == 0 })
        XCTAssertEqual(try proxy.sample("sluice_listener_bytes_received_total{listener=\"main\"}"), 9)
        await proxy.stop()
        try await echo.close()
    }

    func testTCPConnectFailureClosesDownstream() async throws {
        let dead = SluiceProcess.freePort()
        let proxy = try await ProxyUnderTest.start("""
            listeners:
              - { name: main, address: "127.0.0.1:0", protocol: tcp, cluster: dead }
            clusters:
              - { name: dead, endpoints: ["127.0.0.1:{{dead}}"] }
            """, ports: ["dead": dead])
        let port = proxy.port()
        let closed = try await blocking { try RawHTTPClient(port: port, timeout: 5).isClosedByPeer() }
        XCTAssertTrue(closed)
        await proxy.stop()
    }

    /// An HTTP/1.1 Upgrade (as WebSocket uses) becomes a byte tunnel after the upstream's 101.
    func testUpgradeBecomesTunnel() async throws {
        try await assertUpgradeTunnels(filters: "", plugins: "")
    }

    /// The same through a listener with a Wasm filter: the filter sees the HTTP exchange, the
    /// tunnel carries the bytes.
    func testUpgradeThroughAListenerWithAFilter() async throws {
        let module = try TestFilters.path("swift-headers")
        try await assertUpgradeTunnels(filters: ", http_filters: [f]", plugins: "plugins: [{ name: f, module: \"\(module)\" }]")
    }

    private func assertUpgradeTunnels(filters: String, plugins: String) async throws {
        let upgradeServer = try await ServerBootstrap(group: testGroup)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { ch in ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(FakeWebSocketServer()) } }
            .bind(host: "127.0.0.1", port: 0).get()
        let proxy = try await ProxyUnderTest.start("""
            listeners:
              - { name: main, address: "127.0.0.1:0"\(filters), routes: [{ match: { prefix: / }, cluster: ws }] }
            clusters:
              - { name: ws, endpoints: ["127.0.0.1:{{ws}}"] }
            \(plugins)
            """, ports: ["ws": upgradeServer.localAddress!.port!])
        let port = proxy.port()
        try await blocking {
            let client = try RawHTTPClient(port: port)
            try client.send("GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            let r = try client.readResponse().0
            XCTAssertEqual(r.status, 101)
            XCTAssertEqual(r.header("upgrade")?.lowercased(), "websocket")
            XCTAssertEqual(r.header("connection")?.lowercased(), "upgrade")
            try client.send("frame-1")
            var got = [UInt8](repeating: 0, count: 64)
            let n = recv(client.fd, &got, 64, 0)
            XCTAssertEqual(String(decoding: got[0..<max(0, n)], as: UTF8.self), "echo:frame-1")
        }
        await proxy.stop()
        try await upgradeServer.close()
    }
}

/// Answers an upgrade request with 101, then echoes raw bytes prefixed with "echo:".
final class FakeWebSocketServer: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    var upgraded = false
    var pending = ""

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var b = unwrapInboundIn(data)
        let text = b.readString(length: b.readableBytes) ?? ""
        if upgraded {
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "echo:" + text)), promise: nil)
            return
        }
        pending += text
        if pending.contains("\r\n\r\n") {
            upgraded = true
            let response = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: HSmrc0sMlYUkAGmm5OPpG2HaGWk=\r\n\r\n"
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: response)), promise: nil)
        }
    }
}
