import NIOCore
import NIOHTTP1

/// Answers requests the HTTP parser refused: 431 for an oversized header block, 400 for
/// anything else malformed; always with `Connection: close`, and then the connection closes
/// (the parser cannot resynchronise on a broken stream). Sits where NIO's own
/// HTTPServerProtocolErrorHandler would, which only knows 400.
final class DownstreamErrorHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private var responseInProgress = false
    private let stats: ListenerStats

    init(stats: ListenerStats) { self.stats = stats }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard let parserError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        stats.protocolErrors.increment()
        if !responseInProgress {
            let status: HTTPResponseStatus = parserError == .headerOverflow ? .requestHeaderFieldsTooLarge : .badRequest
            let body = status == .badRequest ? "malformed request\n" : "request headers too large\n"
            let headers = HTTPHeaders([("connection", "close"), ("content-length", String(body.utf8.count)), ("content-type", "text/plain")])
            stats.responses.record(status: Int(status.code))
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in context.close(promise: nil) }
        } else {
            context.close(promise: nil)
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head) where head.status.code < 200 && head.status != .switchingProtocols: break
        case .head: responseInProgress = true
        case .body: break
        case .end: responseInProgress = false
        }
        context.write(data, promise: promise)
    }
}
