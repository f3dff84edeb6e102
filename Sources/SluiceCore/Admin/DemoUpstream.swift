import NIOCore
import NIOHTTP1
import NIOPosix
import SluiceConfig

/// A small origin server for the quickstart and for trying routes by hand: it answers every
/// request with a JSON description of what it received (method, path, headers, body size)
/// and its own name, so a reader can see exactly what the proxy forwarded.
/// `GET /bytes/N` returns N bytes; `/status/N` answers with status N.
public enum DemoUpstream {
    public static func start(host: String, port: Int, name: String, group: EventLoopGroup) async throws -> Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(DemoHandler(name: name))
                }
            }
            .bind(host: host, port: port).get()
    }
}

private final class DemoHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let name: String
    var head: HTTPRequestHead?
    var bodyBytes = 0

    init(name: String) { self.name = name }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            bodyBytes = 0
        case .body(let b):
            bodyBytes += b.readableBytes
        case .end:
            guard let head else { return }
            var status = HTTPResponseStatus.ok
            var body: ByteBuffer
            let parts = head.uri.split(separator: "/")
            if parts.count == 2, parts[0] == "bytes", let n = Int(parts[1]), n >= 0, n <= 64 << 20 {
                body = context.channel.allocator.buffer(repeating: UInt8(ascii: "x"), count: n)
            } else {
                if parts.count == 2, parts[0] == "status", let n = Int(parts[1]), (200...599).contains(n) {
                    status = HTTPResponseStatus(statusCode: n)
                }
                var json = "{\"upstream\":\(quote(name)),\"method\":\(quote(head.method.rawValue)),\"path\":\(quote(head.uri)),\"body_bytes\":\(bodyBytes),\"headers\":{"
                json += head.headers.map { "\(quote($0.name.lowercased())):\(quote($0.value))" }.joined(separator: ",")
                json += "}}\n"
                body = context.channel.allocator.buffer(string: json)
            }
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: parts.first == "bytes" ? "application/octet-stream" : "application/json")
            headers.add(name: "content-length", value: String(body.readableBytes))
            headers.add(name: "x-upstream", value: name)
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
            let keepAlive = head.isKeepAlive
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
                if !keepAlive { context.close(promise: nil) }
            }
            self.head = nil
        }
    }

    private func quote(_ s: String) -> String { JSONRendering.quote(s) }
}
