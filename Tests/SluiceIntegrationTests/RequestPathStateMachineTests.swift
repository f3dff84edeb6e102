import NIOCore
import NIOEmbedded
import NIOHTTP1
import SluiceConfig
import XCTest

@testable import SluiceCore

/// The request path's state machines on NIO's EmbeddedChannel, without sockets: the
/// downstream connection (`HTTP1Connection.State`), the stream (`HTTPStream.State`) and the
/// upstream request (`UpstreamRequest.State`), one test per transition. The downstream and a
/// pooled upstream connection are embedded channels on one embedded event loop, so each step
/// runs to completion before the test looks at the states.
final class RequestPathStateMachineTests: XCTestCase {
    private var loop: EmbeddedEventLoop!
    private var downstream: EmbeddedChannel!
    private var connection: HTTP1Connection!
    private var upstream: EmbeddedChannel!
    private var upstreamHandler: UpstreamHandler!
    private var runtime: ProxyRuntime!

    override func setUp() async throws {
        loop = EmbeddedEventLoop()
        let config = try ConfigLoader.parse(yaml: """
            listeners:
              - name: main
                address: 127.0.0.1:0
                routes:
                  - { match: { prefix: /direct }, direct_response: { status: 202, body: "direct" } }
                  - { match: { prefix: /up }, cluster: origin }
            clusters:
              - { name: origin, endpoints: ["127.0.0.1:1"] }
            """)
        runtime = ProxyRuntime(config: config, eventLoops: [loop])
        let worker = runtime.worker(for: loop)
        // One keep-alive upstream connection waits in the endpoint's pool.
        upstream = EmbeddedChannel(loop: loop)
        upstreamHandler = UpstreamHandler(stats: runtime.clusters["origin"]!.stats)
        try upstream.pipeline.syncOperations.addHandler(upstreamHandler)
        try await upstream.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).get()
        let pool = worker.state(for: runtime.clusters["origin"]!).pools[0]
        pool.release(pool.adopt(upstream, handler: upstreamHandler, endpointIndex: 0))

        let slot = LoopSlot(eventLoop: loop, worker: worker, listeners: runtime.listeners)
        connection = HTTP1Connection(listener: runtime.listeners["main"]!, slot: slot)
        downstream = EmbeddedChannel(loop: loop)
        try downstream.pipeline.syncOperations.addHandler(connection)
        try await downstream.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 2)).get()
    }

    // MARK: helpers

    private func request(_ method: HTTPMethod = .GET, _ uri: String, headers: [(String, String)] = []) throws {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: uri)
        head.headers.add(name: "host", value: "t")
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        try downstream.writeInbound(HTTPServerRequestPart.head(head))
    }

    private func requestBody(_ text: String) throws {
        try downstream.writeInbound(HTTPServerRequestPart.body(ByteBuffer(string: text)))
    }

    private func requestEnd() throws {
        try downstream.writeInbound(HTTPServerRequestPart.end(nil))
    }

    private func upstreamRespond(_ status: HTTPResponseStatus = .ok, headers: [(String, String)] = [("content-length", "2")]) throws {
        try upstream.writeInbound(HTTPClientResponsePart.head(HTTPResponseHead(version: .http1_1, status: status, headers: HTTPHeaders(headers))))
    }

    /// What the upstream connection was sent, in order.
    private func upstreamReceived() throws -> [HTTPClientRequestPart] {
        var parts: [HTTPClientRequestPart] = []
        while let part = try upstream.readOutbound(as: HTTPClientRequestPart.self) { parts.append(part) }
        return parts
    }

    /// What the client was sent, in order.
    private func clientReceived() throws -> [HTTPServerResponsePart] {
        var parts: [HTTPServerResponsePart] = []
        while let part = try downstream.readOutbound(as: HTTPServerResponsePart.self) { parts.append(part) }
        return parts
    }

    private var stream: HTTPStream? { connection.stream }
    private var upstreamState: UpstreamRequest.State? { stream?.chain.router.upstream?.state }

    private func isIdle() -> Bool {
        if case .idle = connection.state { return true }
        return false
    }

    private func isClosing() -> Bool {
        if case .closing = connection.state { return true }
        return false
    }

    // MARK: connection: idle → active → idle

    func testABodylessRequestIsCompleteWithItsHeadAndTheConnectionGoesBackToIdle() throws {
        XCTAssertTrue(isIdle())
        try request(.GET, "/up/a")
        XCTAssertEqual(stream?.state, .awaitingResponse, "no body: the request is complete with its head")
        guard case .awaitingResponse? = upstreamState else { return XCTFail("upstream: \(String(describing: upstreamState))") }
        let sent = try upstreamReceived()
        guard case .head(let head)? = sent.first else { return XCTFail("no head upstream") }
        XCTAssertEqual(head.uri, "/up/a")
        guard case .end? = sent.last else { return XCTFail("no end upstream") }

        try requestEnd()  // NIO's end part: nothing changes
        XCTAssertEqual(stream?.state, .awaitingResponse)

        try upstreamRespond()
        XCTAssertEqual(stream?.state, .responding)
        guard case .receivingResponse(_, requestSent: true)? = upstreamState else { return XCTFail("upstream: \(String(describing: upstreamState))") }
        try upstream.writeInbound(HTTPClientResponsePart.body(ByteBuffer(string: "ok")))
        try upstream.writeInbound(HTTPClientResponsePart.end(nil))
        XCTAssertTrue(isIdle(), "the stream ended; the connection waits for the next request")
        XCTAssertEqual(upstreamHandler.state, .idle, "the upstream connection went back to its pool")
        let got = try clientReceived()
        XCTAssertEqual(got.count, 3)
        guard case .head(let response) = got[0] else { return XCTFail() }
        XCTAssertEqual(response.status, .ok)
        XCTAssertNil(response.headers.first(name: "connection"))
    }

    // MARK: stream: receivingRequest → awaitingResponse → responding → ended

    func testARequestBodyStreamsThenTheRequestEnds() throws {
        try request(.POST, "/up/b", headers: [("content-length", "5")])
        XCTAssertEqual(stream?.state, .receivingRequest)
        guard case .sendingRequest? = upstreamState else { return XCTFail("upstream: \(String(describing: upstreamState))") }
        try requestBody("hel")
        try requestBody("lo")
        XCTAssertEqual(stream?.state, .receivingRequest)
        try requestEnd()
        XCTAssertEqual(stream?.state, .awaitingResponse)
        guard case .awaitingResponse? = upstreamState else { return XCTFail("upstream: \(String(describing: upstreamState))") }
        let body = try upstreamReceived().compactMap { part -> String? in
            if case .body(.byteBuffer(let b)) = part { return String(buffer: b) }
            return nil
        }.joined()
        XCTAssertEqual(body, "hello")
        try upstreamRespond(headers: [("content-length", "0")])
        try upstream.writeInbound(HTTPClientResponsePart.end(nil))
        XCTAssertTrue(isIdle())
    }

    // MARK: stream: receivingRequest → respondingWhileReceiving → discardingRequest → ended

    func testAnEarlyResponseEndsTheConnectionAfterTheRestOfTheRequestIsReadAway() throws {
        try request(.POST, "/up/c", headers: [("content-length", "10")])
        try requestBody("12345")
        try upstreamRespond(.payloadTooLarge)
        XCTAssertEqual(stream?.state, .respondingWhileReceiving)
        guard case .receivingResponse(_, requestSent: false)? = upstreamState else { return XCTFail("upstream: \(String(describing: upstreamState))") }
        try upstream.writeInbound(HTTPClientResponsePart.body(ByteBuffer(string: "no")))
        try upstream.writeInbound(HTTPClientResponsePart.end(nil))
        XCTAssertEqual(stream?.state, .discardingRequest(dropped: 0))
        guard case .head(let response)? = try clientReceived().first else { return XCTFail() }
        XCTAssertEqual(response.headers.first(name: "connection"), "close", "the request did not arrive whole: the connection ends")
        try requestBody("67890")
        XCTAssertEqual(stream?.state, .discardingRequest(dropped: 5))
        try requestEnd()
        XCTAssertTrue(isClosing())
        XCTAssertFalse(downstream.isActive, "closed once the rest was read")
    }

    // MARK: stream: local replies (one path)

    func testNoRouteIsALocalReplyAndTheConnectionStaysOpen() throws {
        try request(.GET, "/nowhere")
        XCTAssertTrue(isIdle())
        guard case .head(let response)? = try clientReceived().first else { return XCTFail() }
        XCTAssertEqual(response.status, .notFound)
        XCTAssertTrue(downstream.isActive)
        XCTAssertEqual(upstreamHandler.state, .idle, "nothing went upstream")
    }

    func testADirectResponseIsALocalReply() throws {
        try request(.GET, "/direct")
        let got = try clientReceived()
        guard case .head(let response)? = got.first, case .body(.byteBuffer(let body)) = got[1] else { return XCTFail("\(got)") }
        XCTAssertEqual(response.status, .accepted)
        XCTAssertEqual(String(buffer: body), "direct")
        XCTAssertTrue(isIdle())
    }

    func testARefusedRequestIsAnsweredAndTheConnectionCloses() throws {
        try request(.GET, "/up/x", headers: [("host", "second")])  // two Host fields
        XCTAssertTrue(isClosing())
        guard case .head(let response)? = try clientReceived().first else { return XCTFail() }
        XCTAssertEqual(response.status, .badRequest)
        XCTAssertEqual(response.headers.first(name: "connection"), "close")
        XCTAssertFalse(downstream.isActive)
    }

    // MARK: stream: reset

    func testAnUpstreamResetAfterTheHeadResetsTheStream() throws {
        try request(.GET, "/up/d")
        try upstreamRespond(headers: [("content-length", "100")])
        XCTAssertEqual(stream?.state, .responding)
        let routed = stream
        try upstream.close().wait()
        XCTAssertEqual(routed?.state, .ended)
        XCTAssertEqual(routed?.flag, .upstreamResetAfterHeaders)
        XCTAssertFalse(downstream.isActive, "HTTP/1.1 can only tell the client by closing")
    }

    func testAnUpstreamResetBeforeTheHeadIsA502() throws {
        try request(.POST, "/up/e", headers: [("content-length", "1")])  // not idempotent: no replay
        try requestBody("x")
        try requestEnd()
        try upstream.close().wait()
        guard case .head(let response)? = try clientReceived().first else { return XCTFail() }
        XCTAssertEqual(response.status, .badGateway)
        XCTAssertTrue(isIdle(), "a local answer: the connection stays usable")
    }

    func testTheClientLeavingEndsTheStreamAndClosesTheUpstreamConnection() throws {
        try request(.GET, "/up/f")
        let routed = stream
        try downstream.close().wait()
        XCTAssertEqual(routed?.state, .ended)
        XCTAssertEqual(routed?.flag, .downstreamReset)
        XCTAssertFalse(upstream.isActive, "mid-exchange: closed, never pooled")
    }

    // MARK: connection: pipelining

    func testAPipelinedHeadWaitsForTheCurrentStream() throws {
        try request(.GET, "/up/first")
        try requestEnd()
        try request(.GET, "/direct")  // arrives while the first stream is open
        XCTAssertEqual(stream?.request.uri, "/up/first")
        try upstreamRespond(headers: [("content-length", "0")])
        try upstream.writeInbound(HTTPClientResponsePart.end(nil))
        let statuses = try clientReceived().compactMap { part -> UInt? in
            if case .head(let h) = part { return h.status.code }
            return nil
        }
        XCTAssertEqual(statuses, [200, 202], "answered in order, the second after the first ended")
        XCTAssertTrue(isIdle())
    }

    func testAClientAskingToCloseGetsItsAnswerThenTheConnectionCloses() throws {
        try request(.GET, "/direct", headers: [("connection", "close")])
        guard case .head(let response)? = try clientReceived().first else { return XCTFail() }
        XCTAssertEqual(response.headers.first(name: "connection"), "close")
        XCTAssertTrue(isClosing())
        XCTAssertFalse(downstream.isActive)
    }

    // MARK: upstream request: connecting → … → finished, and its timeout

    func testTheRouteTimeoutAnswers504AndClosesTheUpstreamConnection() throws {
        try request(.GET, "/up/slow")
        guard case .awaitingResponse? = upstreamState else { return XCTFail() }
        loop.advanceTime(by: .seconds(16))  // the route timeout defaults to 15 s
        guard case .head(let response)? = try clientReceived().first else { return XCTFail() }
        XCTAssertEqual(response.status, .gatewayTimeout)
        XCTAssertFalse(upstream.isActive, "mid-exchange: closed, never pooled")
        XCTAssertTrue(isIdle())
    }
    // MARK: connection: drain and upgrade

    func testADrainClosesAnIdleConnectionAtOnce() throws {
        downstream.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        XCTAssertFalse(downstream.isActive)
    }

    func testADrainLetsTheStreamInFlightFinishThenCloses() throws {
        try request(.GET, "/up/g")
        downstream.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        XCTAssertTrue(downstream.isActive, "the stream in flight finishes")
        try upstreamRespond(headers: [("content-length", "0")])
        try upstream.writeInbound(HTTPClientResponsePart.end(nil))
        guard case .head(let response)? = try clientReceived().first else { return XCTFail() }
        XCTAssertEqual(response.headers.first(name: "connection"), "close")
        XCTAssertFalse(downstream.isActive)
    }

    func testAnAcceptedUpgradeEndsTheStreamAndTunnelsTheConnection() throws {
        try request(.GET, "/up/ws", headers: [("connection", "upgrade"), ("upgrade", "websocket")])
        guard case .head(let sent)? = try upstreamReceived().first else { return XCTFail() }
        XCTAssertEqual(sent.headers.first(name: "upgrade"), "websocket")
        let routed = stream
        try upstreamRespond(.switchingProtocols, headers: [("connection", "upgrade"), ("upgrade", "websocket")])
        guard case .upgrading? = upstreamState else { return XCTFail("upstream: \(String(describing: upstreamState))") }
        try upstream.writeInbound(HTTPClientResponsePart.end(nil))
        guard case .tunnelled = connection.state else { return XCTFail("connection: \(connection.state)") }
        XCTAssertEqual(routed?.state, .ended)
        XCTAssertEqual(routed?.flag, .upgrade)
        guard case .head(let response)? = try clientReceived().first else { return XCTFail() }
        XCTAssertEqual(response.status, .switchingProtocols)
    }

    func testARefusedUpgradeEndsTheConnectionWithTheStream() throws {
        try request(.GET, "/up/ws", headers: [("connection", "upgrade"), ("upgrade", "websocket")])
        try upstreamRespond(headers: [("content-length", "0")])
        try upstream.writeInbound(HTTPClientResponsePart.end(nil))
        guard case .head(let response)? = try clientReceived().first else { return XCTFail() }
        XCTAssertEqual(response.headers.first(name: "connection"), "close", "HTTP/1.1's parser is in upgrade mode now")
        XCTAssertFalse(downstream.isActive)
    }
    // MARK: found in review

    /// R1 proxied, R2 answered on the spot and the head and part of R3's chunked body, all
    /// pipelined: R3 gets only its own parts, and its end only when the client sends it.
    func testPipelinedPartsAreReplayedInOrderAcrossStreamsThatEndAtOnce() throws {
        try request(.GET, "/up/first")
        try requestEnd()
        try request(.GET, "/direct")
        try requestEnd()
        try request(.POST, "/up/third", headers: [("transfer-encoding", "chunked")])
        try requestBody("abc")
        XCTAssertEqual(stream?.request.uri, "/up/first")
        _ = try upstreamReceived()
        try upstreamRespond(headers: [("content-length", "0")])
        try upstream.writeInbound(HTTPClientResponsePart.end(nil))
        XCTAssertEqual(stream?.request.uri, "/up/third", "the second was answered, the third started")
        XCTAssertEqual(stream?.state, .receivingRequest, "the third's end has not arrived")
        var sentEnd = false
        var body = ""
        for part in try upstreamReceived() {
            switch part {
            case .body(.byteBuffer(let b)): body += String(buffer: b)
            case .end: sentEnd = true
            default: break
            }
        }
        XCTAssertEqual(body, "abc")
        XCTAssertFalse(sentEnd, "no end upstream before the client's")
        try requestBody("def")
        try requestEnd()
        XCTAssertEqual(stream?.state, .awaitingResponse)
    }

    /// An upgrade request Sluice answers itself: NIO's decoder no longer parses this
    /// connection, so it must end with the answer.
    func testAnUpgradeRequestAnsweredLocallyEndsTheConnection() throws {
        try request(.GET, "/direct", headers: [("connection", "upgrade"), ("upgrade", "h2c")])
        guard case .head(let response)? = try clientReceived().first else { return XCTFail() }
        XCTAssertEqual(response.headers.first(name: "connection"), "close")
        XCTAssertFalse(downstream.isActive)
    }

    /// A tunnel takes its upstream connection out of the pool's count.
    func testAnAcceptedUpgradeGivesBackItsPoolSlot() throws {
        let stats = runtime.clusters["origin"]!.stats
        XCTAssertEqual(stats.connectionsActive.load, 1)
        try request(.GET, "/up/ws", headers: [("connection", "upgrade"), ("upgrade", "websocket")])
        try upstreamRespond(.switchingProtocols, headers: [("connection", "upgrade"), ("upgrade", "websocket")])
        try upstream.writeInbound(HTTPClientResponsePart.end(nil))
        XCTAssertEqual(stats.connectionsActive.load, 0, "the tunnel no longer counts as a pooled connection")
    }
}
