import NIOCore
import NIOHTTP1

/// First in a downstream HTTP/1 pipeline: sees raw bytes before the decoder, so it knows when
/// a request head has started arriving even though no head has been parsed yet. A head still
/// incomplete `request_headers_timeout` after its first byte gets a 408 and a close, written
/// here, below the HTTP encoder: no request exists yet for the HTTP layers to answer.
///
/// One lazy timer per connection, re-armed only when it fires: scheduling a task per request
/// showed up in profiles.
final class RequestHeadTimeout: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let timeout: TimeAmount
    private let stats: ListenerStats
    private let accessLog: AccessLogBuffer
    private let listener: String
    /// Heads the proxy has received, and the count it had when its last stream ended: a head
    /// is being read when the two are equal and bytes have come in since.
    private var headsReceived = 0
    private var headsFinished = 0
    private var headStartedAt: NIODeadline?
    private var timer: Scheduled<Void>?
    private var context: ChannelHandlerContext?

    init(timeout: TimeAmount, stats: ListenerStats, accessLog: AccessLogBuffer, listener: String) {
        self.timeout = timeout
        self.stats = stats
        self.accessLog = accessLog
        self.listener = listener
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
        if accessLog.enabled {
            accessLog.record(.connectionRefusal(.requestHeadersTimeout, listener: listener, client: context.channel.remoteAddress?.ipAddress ?? "-"))
        }
        let body = DownstreamRefusal.requestHeadersTimeout.message
        let response = "HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\ncontent-length: \(body.utf8.count)\r\nconnection: close\r\n\r\n\(body)"
        context.writeAndFlush(NIOAny(context.channel.allocator.buffer(string: response))).whenComplete { _ in
            context.close(promise: nil)
        }
    }
}

/// The per-connection request counts PipelineLimit and the proxy handler share (both on the
/// connection's event loop).
final class PipelineCounters {
    /// Streams the proxy handler has finished (response out, request read).
    var finished = 0
    /// Set once the limit is hit: the number of the last request that will be answered.
    var lastRequest: Int?
}

/// Between the request decoder and NIO's pipelining handler (which queues pipelined requests
/// until their turn): counts requests decoded but not yet answered. The request that reaches
/// `max_pipelined_requests` waiting is the connection's last: the proxy answers it with
/// `Connection: close` and closes; nothing after it is read. Inbound only, so responses do
/// not pass through it.
final class PipelineLimit: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    private let limit: Int
    private let stats: ListenerStats
    let counters: PipelineCounters
    private var requests = 0

    init(limit: Int, stats: ListenerStats, counters: PipelineCounters) {
        self.limit = limit
        self.stats = stats
        self.counters = counters
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if counters.lastRequest != nil { return }  // past the limit: nothing more is read
        if case .head = unwrapInboundIn(data) {
            requests += 1
            if requests - counters.finished > limit {
                let last = requests - 1
                counters.lastRequest = last
                stats.record(.pipelineLimit)
                if counters.finished >= last { context.close(promise: nil) }
                return
            }
        }
        context.fireChannelRead(data)
    }
}
