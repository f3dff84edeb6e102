import NIOCore
import NIOHTTP1

/// First in a downstream HTTP/1 pipeline: sees raw bytes before the decoder, so it knows when
/// a request head has started arriving even though no head has been parsed yet. A head still
/// incomplete `request_headers_timeout` after its first byte gets a 408 and a close, written
/// here, below the HTTP encoder: no request exists yet for the HTTP layers to answer.
///
/// One lazy timer per connection, re-armed only when it fires: scheduling a task per request
/// showed up in profiles.
final class RequestHeadTimeout: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let timeout: TimeAmount
    private let stats: ListenerStats
    /// Heads the proxy has received, and the count it had when its last stream ended: a head
    /// is being read when the two are equal and bytes have come in since.
    private var headsReceived = 0
    private var headsFinished = 0
    private var headStartedAt: NIODeadline?
    private var timer: Scheduled<Void>?
    private var context: ChannelHandlerContext?

    init(timeout: TimeAmount, stats: ListenerStats) {
        self.timeout = timeout
        self.stats = stats
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if headStartedAt == nil && headsReceived == headsFinished {
            headStartedAt = .now()
            if timer == nil { schedule(context, in: timeout) }
        }
        context.fireChannelRead(data)
    }

    /// The proxy parsed a request head.
    func headReceived() {
        headsReceived += 1
        headStartedAt = nil
    }

    /// The proxy finished a stream and waits for the next head (idempotent).
    func streamEnded() { headsFinished = headsReceived }

    private func schedule(_ context: ChannelHandlerContext, in delay: TimeAmount) {
        timer = context.eventLoop.scheduleTask(in: delay) { [weak self] in self?.fired() }
    }

    private func fired() {
        timer = nil
        guard let context, let started = headStartedAt else { return }
        let waited = NIODeadline.now() - started
        guard waited >= timeout else {
            schedule(context, in: timeout - waited)
            return
        }
        stats.record(.requestHeadersTimeout)
        stats.responses.record(status: 408)
        let body = DownstreamRefusal.requestHeadersTimeout.message
        let response = "HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\ncontent-length: \(body.utf8.count)\r\nconnection: close\r\n\r\n\(body)"
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: response))).whenComplete { _ in
            context.close(promise: nil)
        }
    }
}

/// Between the request decoder and NIO's pipelining handler (which queues pipelined requests
/// until their turn): counts requests decoded but not yet answered. The request that reaches
/// `max_pipelined_requests` waiting is the connection's last: its response says
/// `Connection: close`, nothing after it is read, and the connection closes once it is out.
final class PipelineLimit: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let limit: Int
    private let stats: ListenerStats
    private var requests = 0
    private var responses = 0
    /// Set once the limit is hit: the number of the last request that will be answered.
    private var lastRequest: Int?

    init(limit: Int, stats: ListenerStats) {
        self.limit = limit
        self.stats = stats
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if lastRequest != nil { return }  // past the limit: nothing more is read
        if case .head = unwrapInboundIn(data) {
            requests += 1
            if requests - responses > limit {
                lastRequest = requests - 1
                stats.record(.pipelineLimit)
                if responses == lastRequest { context.close(promise: nil) }
                return
            }
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(var head) where head.status.code >= 200 || head.status == .switchingProtocols:
            if let last = lastRequest, responses + 1 == last {
                head.headers.replaceOrAdd(name: "connection", value: "close")
                context.write(wrapOutboundOut(.head(head)), promise: promise)
                return
            }
        case .end:
            responses += 1
            if let last = lastRequest, responses >= last {
                let written = context.writeAndFlush(data)
                written.cascade(to: promise)
                written.whenComplete { _ in context.close(promise: nil) }
                return
            }
        default:
            break
        }
        context.write(data, promise: promise)
    }
}
