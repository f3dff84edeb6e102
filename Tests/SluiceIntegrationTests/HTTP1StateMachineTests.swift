import NIOCore
import NIOEmbedded
import NIOHTTP1
import XCTest

@testable import SluiceCore

/// The HTTP/1 guards as state machines, on NIO's EmbeddedChannel (no sockets): one test per
/// transition that matters for desync.
final class HTTP1StateMachineTests: XCTestCase {
    private func upstreamChannel() throws -> (EmbeddedChannel, UpstreamHandler, ClusterStats) {
        let stats = ClusterStats(name: "c")
        let handler = UpstreamHandler(stats: stats)
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(handler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return (channel, handler, stats)
    }

    private func head(_ status: HTTPResponseStatus = .ok, keepAlive: Bool = true) -> HTTPClientResponsePart {
        var h = HTTPResponseHead(version: .http1_1, status: status)
        if !keepAlive { h.headers.add(name: "connection", value: "close") }
        return .head(h)
    }

    func testIdleToAwaitingToCompleteToIdle() throws {
        let (channel, handler, _) = try upstreamChannel()
        XCTAssertEqual(handler.state, .idle)
        try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")))
        XCTAssertEqual(handler.state, .awaitingResponse)
        try channel.writeInbound(head())
        XCTAssertEqual(handler.state, .receivingResponse(keepAlive: true))
        try channel.writeInbound(HTTPClientResponsePart.end(nil))
        XCTAssertEqual(handler.state, .responseComplete(keepAlive: true))
        XCTAssertTrue(handler.returnToPool())
        XCTAssertEqual(handler.state, .idle)
        XCTAssertTrue(channel.isActive)
    }

    func testConnectionCloseResponseIsNotPooled() throws {
        let (channel, handler, _) = try upstreamChannel()
        try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")))
        try channel.writeInbound(head(keepAlive: false))
        try channel.writeInbound(HTTPClientResponsePart.end(nil))
        XCTAssertEqual(handler.state, .responseComplete(keepAlive: false))
        XCTAssertFalse(handler.returnToPool())
    }

    func testAResponseWhileIdlePoisonsAndCloses() throws {
        let (channel, handler, stats) = try upstreamChannel()
        try channel.writeInbound(head())
        XCTAssertEqual(handler.state, .poisoned(.unsolicitedResponse))
        XCTAssertFalse(channel.isActive)
        XCTAssertEqual(stats.protocolErrors[UpstreamProtocolError.unsolicitedResponse.rawValue].load, 1)
    }

    func testBytesAfterACompleteResponsePoisonAndClose() throws {
        let (channel, handler, _) = try upstreamChannel()
        try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")))
        try channel.writeInbound(head())
        try channel.writeInbound(HTTPClientResponsePart.end(nil))
        try channel.writeInbound(head())  // a second response nobody asked for
        XCTAssertEqual(handler.state, .poisoned(.unsolicitedResponse))
        XCTAssertFalse(handler.returnToPool())
        XCTAssertFalse(channel.isActive)
    }

    /// One exchange whose response ends inside a read that is still going on, and the
    /// connection back in the pool.
    private func pooledInTheMiddleOfARead() throws -> (EmbeddedChannel, UpstreamHandler) {
        let (channel, handler, _) = try upstreamChannel()
        try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/a")))
        channel.pipeline.fireChannelRead(NIOAny(head()))
        channel.pipeline.fireChannelRead(NIOAny(HTTPClientResponsePart.end(nil)))
        XCTAssertTrue(handler.returnToPool())
        return (channel, handler)
    }

    /// The pool handed the connection to a new request from inside the read that ended the
    /// previous response; a response head later in that same read was already on the wire
    /// before the new request was written, so it cannot be its answer.
    func testAResponseFromTheReadThatCarriedTheRequestWriteIsRefused() throws {
        let (channel, handler) = try pooledInTheMiddleOfARead()
        // Same read (no channelReadComplete yet): the next request is written...
        try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/b")))
        // ...and the rest of that read holds a response.
        channel.pipeline.fireChannelRead(NIOAny(head()))
        XCTAssertEqual(handler.state, .poisoned(.unsolicitedResponse))
        XCTAssertFalse(channel.isActive)
    }

    func testAResponseInALaterReadIsTheAnswer() throws {
        let (channel, handler) = try pooledInTheMiddleOfARead()
        try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/b")))
        channel.pipeline.fireChannelReadComplete()
        channel.pipeline.fireChannelRead(NIOAny(head()))
        XCTAssertEqual(handler.state, .receivingResponse(keepAlive: true))
    }

    func testAParseErrorIsAMalformedResponse() throws {
        let (channel, handler, stats) = try upstreamChannel()
        try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")))
        channel.pipeline.fireErrorCaught(HTTPParserError.invalidStatus)
        XCTAssertEqual(handler.protocolError, .malformedResponse)
        XCTAssertEqual(stats.protocolErrors[UpstreamProtocolError.malformedResponse.rawValue].load, 1)
        XCTAssertFalse(channel.isActive)
    }

    func testWritingARequestOnABusyConnectionIsRefused() throws {
        let (channel, handler, _) = try upstreamChannel()
        try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/a")))
        XCTAssertThrowsError(try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/b"))))
        XCTAssertNotNil(handler.protocolError)
    }

    // MARK: request validation (pure)

    private func validate(_ method: HTTPMethod, uri: String = "/", version: HTTPVersion = .http1_1, _ headers: [(String, String)]) -> Result<ValidatedRequest, DownstreamRefusal> {
        RequestValidation.validate(HTTPRequestHead(version: version, method: method, uri: uri, headers: HTTPHeaders(headers)))
    }

    private func refusal(_ r: Result<ValidatedRequest, DownstreamRefusal>) -> DownstreamRefusal? {
        if case .failure(let f) = r { return f }
        return nil
    }

    func testFramingDecisions() {
        XCTAssertEqual(try validate(.POST, [("host", "t"), ("content-length", "5")]).get().framing, .contentLength(5))
        XCTAssertEqual(try validate(.POST, [("host", "t"), ("transfer-encoding", "Chunked")]).get().framing, .chunked)
        XCTAssertEqual(try validate(.GET, [("host", "t")]).get().framing, BodyFraming.none)
        XCTAssertEqual(refusal(validate(.POST, [("host", "t"), ("content-length", "5"), ("transfer-encoding", "chunked")])), .contentLengthWithTransferEncoding)
        XCTAssertEqual(refusal(validate(.POST, [("host", "t"), ("content-length", "5, 5")])), .invalidContentLength)
        XCTAssertEqual(refusal(validate(.POST, [("host", "t"), ("content-length", "+5")])), .invalidContentLength)
        XCTAssertEqual(refusal(validate(.POST, [("host", "t"), ("content-length", "1234567890123456789")])), .invalidContentLength)
        XCTAssertEqual(refusal(validate(.POST, [("host", "t"), ("transfer-encoding", "gzip, chunked")])), .unsupportedTransferCoding)
        XCTAssertEqual(refusal(validate(.POST, [("host", "t"), ("transfer-encoding", "chunked, gzip")])), .unknownTransferEncoding)
        XCTAssertEqual(refusal(validate(.POST, uri: "/", version: .http1_0, [("host", "t"), ("transfer-encoding", "chunked")])), .transferEncodingInHTTP10)
        XCTAssertEqual(refusal(validate(.TRACE, [("host", "t"), ("content-length", "1")])), .traceWithBody)
        XCTAssertEqual(refusal(validate(.CONNECT, uri: "t:443", [("host", "t:443")])), .connectMethod)
    }

    func testTargetAndHostDecisions() throws {
        let absolute = try validate(.GET, uri: "http://abs.example:8080/p?q=1", [("host", "t")]).get()
        XCTAssertEqual(absolute.head.uri, "/p?q=1")
        XCTAssertEqual(absolute.authority, "abs.example:8080")
        XCTAssertEqual(absolute.head.headers["host"], ["abs.example:8080"])
        XCTAssertEqual(try validate(.GET, uri: "http://t", [("host", "t")]).get().head.uri, "/")
        XCTAssertEqual(refusal(validate(.GET, uri: "http://u@t/x", [("host", "t")])), .invalidTarget)
        XCTAssertEqual(refusal(validate(.GET, uri: "/x#f", [("host", "t")])), .invalidTarget)
        XCTAssertEqual(refusal(validate(.GET, uri: "t:80", [("host", "t")])), .invalidTarget)
        XCTAssertEqual(refusal(validate(.GET, uri: "*", [("host", "t")])), .invalidTarget)
        XCTAssertNil(refusal(validate(.OPTIONS, uri: "*", [("host", "t")])))
        XCTAssertEqual(refusal(validate(.GET, uri: "/", [("host", "a"), ("host", "b")])), .duplicateHost)
        XCTAssertEqual(refusal(validate(.GET, uri: "/", [])), .missingHost)
        XCTAssertEqual(refusal(validate(.GET, uri: "http://t/", [])), .missingHost)
        XCTAssertNil(refusal(validate(.GET, uri: "/", version: .http1_0, [])))
        XCTAssertEqual(refusal(validate(.GET, uri: "/", [("host", "t:abc")])), .invalidTarget)
        XCTAssertEqual(try validate(.GET, uri: "/", [("host", " [::1]:80 ")]).get().authority, "[::1]:80")
    }
}
