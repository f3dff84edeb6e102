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
    /// A request or response said `Connection: close`: bytes after that request are not a
    /// request the client may expect an answer to (the decoder calls them an error), so no 400
    /// either, and no cut before the last response is out. An error inside the request itself
    /// (a bad chunk in its body) is still answered.
    private var closeAnnounced = false
    private var inRequest = false
    private let stats: ListenerStats
    private let accessLog: AccessLogBuffer
    private let listener: String

    init(stats: ListenerStats, accessLog: AccessLogBuffer, listener: String) {
        self.stats = stats
        self.accessLog = accessLog
        self.listener = listener
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard let parserError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        if closeAnnounced && !inRequest {
            return  // the proxy closes once its last response is out
        }
        let refusal: DownstreamRefusal = parserError == .headerOverflow ? .headersTooLarge : .malformedRequest
        stats.record(refusal)
        if accessLog.enabled {
            accessLog.record(.connectionRefusal(refusal, listener: listener, client: context.channel.remoteAddress?.ipAddress ?? "-"))
        }
        if !responseInProgress {
            let status = refusal.status
            let body = refusal.message
            let headers = HTTPHeaders([("connection", "close"), ("content-length", String(body.utf8.count)), ("content-type", "text/plain")])
            stats.responses.record(status: Int(status.code))
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in context.close(promise: nil) }
        } else {
            context.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            inRequest = true
            if !head.isKeepAlive { closeAnnounced = true }
        case .end:
            inRequest = false
        case .body:
            break
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head) where head.status.code < 200 && head.status != .switchingProtocols: break
        case .head(let head):
            responseInProgress = true
            // Sluice sends `connection` on a response only to say close (or keep-alive to an
            // HTTP/1.0 client); most responses carry none, so this is one scan.
            if head.headers.contains(name: "connection") && !head.isKeepAlive { closeAnnounced = true }
        case .body: break
        case .end: responseInProgress = false
        }
        context.write(data, promise: promise)
    }
}
