import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import SluiceConfig
import Synchronization

/// A real HTTP origin for the tests, on an ephemeral port. Paths select behaviour:
///   /bytes/N        N bytes, streamed in 64 KiB pieces as the socket accepts them
///   /chunked/N      N chunks of "chunk-i\n" without Content-Length
///   /upload         reads the body (any size) without keeping it, answers its length
///   /status/N       status N
///   /slow/MS        answers after MS milliseconds
///   /reset          closes the connection without answering
///   /healthz        200, or 503 while `healthy` is false
///   anything else   JSON echo of method, path, headers and body
final class TestUpstream: @unchecked Sendable {
    let name: String
    let channel: Channel
    let connections = Atomic<Int>(0)
    let requests = Atomic<Int>(0)
    let healthChecks = Atomic<Int>(0)
    let healthy = Atomic<Bool>(true)
    var port: Int { channel.localAddress!.port! }

    static func start(name: String, group: EventLoopGroup) async throws -> TestUpstream {
        let box = Box()
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    box.upstream!.connections.add(1, ordering: .relaxed)
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(UpstreamBehaviour(upstream: box.upstream!))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let upstream = TestUpstream(name: name, channel: channel)
        box.upstream = upstream
        return upstream
    }

    private init(name: String, channel: Channel) {
        self.name = name
        self.channel = channel
    }

    func stop() async { try? await channel.close() }

    private final class Box: @unchecked Sendable { var upstream: TestUpstream? }
}

private final class UpstreamBehaviour: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart
    let upstream: TestUpstream
    var head: HTTPRequestHead?
    var bodyBytes = 0
    var body = ByteBuffer()
    var streamRemaining = 0
    var streaming = false
    var context: ChannelHandlerContext?

    init(upstream: TestUpstream) { self.upstream = upstream }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            bodyBytes = 0
            body.clear()
            if h.uri != "/healthz" { upstream.requests.add(1, ordering: .relaxed) }
        case .body(var b):
            bodyBytes += b.readableBytes
            if head?.uri != "/upload" && body.readableBytes < 1 << 20 { body.writeBuffer(&b) }
        case .end:
            guard let head else { return }
            respond(context: context, head: head)
        }
    }

    private func send(_ context: ChannelHandlerContext, _ status: HTTPResponseStatus, _ text: String, extra: [(String, String)] = []) {
        var headers = HTTPHeaders([("content-length", String(text.utf8.count)), ("x-upstream", upstream.name)])
        for (k, v) in extra { headers.add(name: k, value: v) }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        if head?.method != .HEAD { context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    private func respond(context: ChannelHandlerContext, head: HTTPRequestHead) {
        let parts = head.uri.split(separator: "?")[0].split(separator: "/").map(String.init)
        switch (parts.first ?? "", parts.count > 1 ? Int(parts[1]) : nil) {
        case ("bytes", let n?):
            let headers = HTTPHeaders([("content-length", String(n)), ("x-upstream", upstream.name)])
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            if head.method == .HEAD {
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
                return
            }
            streamRemaining = n
            streaming = true
            pump(context)
        case ("chunked", let n?):
            let headers = HTTPHeaders([("x-upstream", upstream.name), ("transfer-encoding", "chunked")])
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            for i in 0..<n { context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "chunk-\(i)\n")))), promise: nil) }
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        case ("trailers", _):
            // A chunked response with trailers, as gRPC-style origins send them over HTTP/1.1.
            let headers = HTTPHeaders([("x-upstream", upstream.name), ("transfer-encoding", "chunked"), ("trailer", "x-checksum")])
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "with trailers\n")))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(HTTPHeaders([("x-checksum", "c0ffee")]))), promise: nil)
        case ("upload", _):
            send(context, .ok, "received \(bodyBytes)\n")
        case ("status", let n?):
            send(context, HTTPResponseStatus(statusCode: n), "status \(n) from \(upstream.name)\n")
        case ("slow", let ms?):
            context.eventLoop.scheduleTask(in: .milliseconds(Int64(ms))) {
                self.send(context, .ok, "slow \(ms) from \(self.upstream.name)\n")
            }
        case ("reset", _):
            context.close(promise: nil)
        case ("healthz", _):
            upstream.healthChecks.add(1, ordering: .relaxed)
            if upstream.healthy.load(ordering: .relaxed) { send(context, .ok, "ok\n") } else { send(context, .serviceUnavailable, "down\n") }
        default:
            var json = "{\"upstream\":\"\(upstream.name)\",\"method\":\"\(head.method.rawValue)\",\"path\":\"\(head.uri)\",\"body_bytes\":\(bodyBytes),\"body\":\(jsonQuote(body.getString(at: body.readerIndex, length: body.readableBytes) ?? "")),\"headers\":{"
            json += head.headers.map { "\(jsonQuote($0.name.lowercased())):\(jsonQuote($0.value))" }.joined(separator: ",")
            json += "}}"
            send(context, .ok, json, extra: [("content-type", "application/json")])
        }
    }

    /// Streams the /bytes body only as fast as the socket drains: the test's own upstream
    /// must not be the thing that buffers 100 MB.
    private func pump(_ context: ChannelHandlerContext) {
        let piece = ByteBuffer(repeating: UInt8(ascii: "x"), count: 64 * 1024)
        while streaming && context.channel.isWritable && streamRemaining > 0 {
            let n = min(streamRemaining, piece.readableBytes)
            streamRemaining -= n
            context.write(wrapOutboundOut(.body(.byteBuffer(piece.getSlice(at: 0, length: n)!))), promise: nil)
        }
        if streaming && streamRemaining == 0 {
            streaming = false
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        } else {
            context.flush()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable && streaming { pump(context) }
        context.fireChannelWritabilityChanged()
    }
}

func jsonQuote(_ s: String) -> String { JSONRendering.quote(s) }
