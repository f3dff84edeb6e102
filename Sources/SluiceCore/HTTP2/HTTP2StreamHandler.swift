import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2

/// One HTTP/2 stream, on its own child channel: turns the client's HEADERS and DATA into an
/// `HTTPStream` (the same stream state machine and filter chain as HTTP/1.1) and writes the
/// stream's response back as frames. Flow control follows the stream: request DATA is read
/// only while the stream wants it (NIOHTTP2 opens the client's window as it is read), and a
/// response the client does not read fills this channel's buffer, which pauses the upstream.
final class HTTP2StreamHandler: ChannelDuplexHandler, StreamDownstream {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias OutboundIn = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload

    enum State {
        /// Waiting for the request's HEADERS.
        case awaitingHeaders
        case active(HTTPStream)
        /// The stream is over; whatever still arrives is dropped.
        case ended
    }

    private var state = State.awaitingHeaders
    private let listener: ListenerRuntime
    private let worker: Worker
    private let info: DownstreamConnectionInfo
    private var context: ChannelHandlerContext!
    private var readPending = false
    /// The response head, held until its body, end or a flush: a response without a body
    /// goes out as one HEADERS frame with END_STREAM, as Envoy sends it.
    private var pendingHead: HPACKHeaders?
    private var timer: Scheduled<Void>?
    /// Completes when the response's last frame has been written.
    private var responseEnd: EventLoopFuture<Void>?

    /// Told when this stream's channel closes (it counts open streams for drain and idle).
    private weak var owner: HTTP2Connection?

    init(listener: ListenerRuntime, worker: Worker, connection: DownstreamConnectionInfo, owner: HTTP2Connection) {
        self.listener = listener
        self.worker = worker
        self.info = connection
        self.owner = owner
    }

    private var stream: HTTPStream? {
        if case .active(let stream) = state { return stream }
        return nil
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch (unwrapInboundIn(data), state) {
        case (.headers(let headers), .awaitingHeaders):
            startStream(headers.headers, endStream: headers.endStream)
        case (.headers(let trailers), .active(let stream)):
            // Trailers end the request (NIOHTTP2 refuses HEADERS without END_STREAM here).
            stream.receiveEnd(HTTPHeaders(trailers.headers.map { ($0.name, $0.value) }))
        case (.data(let data), .active(let stream)):
            guard case .byteBuffer(let buffer) = data.data else { return }
            if buffer.readableBytes > 0 {
                listener.stats.bytesReceived.increment(by: buffer.readableBytes)
                stream.receiveBody(buffer)
            }
            if data.endStream, case .active(let current) = state, current === stream { current.receiveEnd(nil) }
        case (.rstStream, .active(let stream)):
            state = .ended
            stream.downstreamClosed()
        default:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        stream?.chain?.router.flushUpstream()
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        if case .active(let stream) = state {
            state = .ended
            stream.downstreamClosed()
        }
        owner?.streamClosed()
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { stream?.downstreamBecameWritable() }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if let stream, !stream.wantsRequestData {
            readPending = true
            return
        }
        context.read()
    }

    // MARK: the request

    private func startStream(_ fields: HPACKHeaders, endStream: Bool) {
        listener.stats.requests.increment()
        // NIOHTTP2 has checked the block (pseudo-headers present once and first, names lower
        // case, no connection-specific fields); here it becomes a request head. Cookie crumbs
        // are joined again for HTTP/1.1 upstreams (RFC 9113 §8.2.3).
        var method = "", path = "", authority: String?
        var headers = HTTPHeaders()
        var cookies: [String] = []
        for (name, value, _) in fields {
            switch name {
            case ":method": method = value
            case ":path": path = value
            case ":authority": authority = value
            case ":scheme", ":protocol": break
            case "cookie": cookies.append(value)
            case "host": if authority == nil { authority = value }
            default: headers.add(name: name, value: value)
            }
        }
        if !cookies.isEmpty { headers.add(name: "cookie", value: cookies.joined(separator: "; ")) }
        if let authority { headers.replaceOrAdd(name: "host", value: authority) }
        let head = HTTPRequestHead(version: .http2, method: HTTPMethod(rawValue: method), uri: path, headers: headers)
        switch RequestValidation.validate(head) {
        case .success(let request):
            // HTTP/2 frames the body itself: END_STREAM on HEADERS means none; otherwise a
            // Content-Length (which NIOHTTP2 holds DATA to) or a body of unknown length.
            var framing = request.framing
            if endStream {
                framing = .none
            } else if case .none = framing {
                framing = .chunked
            }
            let stream = HTTPStream(downstream: self, connection: info, listener: listener, worker: worker,
                                    request: request.head, authority: request.authority, framing: framing)
            state = .active(stream)
            armTimer()
            stream.start()
            if endStream, case .active(let current) = state, current === stream { current.receiveEnd(nil) }
        case .failure(let refusal):
            listener.stats.record(refusal)
            let stream = HTTPStream(downstream: self, connection: info, listener: listener, worker: worker,
                                    request: head, authority: "", framing: .none)
            state = .active(stream)
            stream.refuse(refusal)
        }
    }

    // MARK: StreamDownstream

    var eventLoop: EventLoop { context.eventLoop }
    var allocator: ByteBufferAllocator { context.channel.allocator }
    var isWritable: Bool { context.channel.isWritable }

    func writeContinue() {
        let headers = HTTP2Frame.FramePayload.Headers(headers: [":status": "100"])
        context.writeAndFlush(wrapOutboundOut(.headers(headers)), promise: nil)
    }

    func writeResponseHead(_ head: consuming HTTPResponseHead, for stream: HTTPStream) {
        var fields = HPACKHeaders()
        fields.reserveCapacity(head.headers.count + 1)
        fields.add(name: ":status", value: String(head.status.code))
        for (name, value) in head.headers {
            let lowered = name.asciiLowercased
            // Connection-specific fields have no meaning on HTTP/2 and are malformed there.
            if HTTP2StreamHandler.connectionSpecific.contains(lowered) { continue }
            fields.add(name: lowered, value: value)
        }
        pendingHead = fields
    }

    static let connectionSpecific: Set<String> = ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te"]

    private func writePendingHead(endStream: Bool) {
        guard let head = pendingHead else { return }
        pendingHead = nil
        context.write(wrapOutboundOut(.headers(.init(headers: head, endStream: endStream))), promise: nil)
    }

    func writeResponseBody(_ buffer: ByteBuffer) {
        writePendingHead(endStream: false)
        listener.stats.bytesSent.increment(by: buffer.readableBytes)
        context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(buffer)))), promise: nil)
    }

    func writeResponseEnd(_ trailers: HTTPHeaders?) {
        if let trailers, !trailers.isEmpty {
            writePendingHead(endStream: false)
            let fields = HPACKHeaders(trailers.map { ($0.name.asciiLowercased, $0.value) })
            responseEnd = context.writeAndFlush(wrapOutboundOut(.headers(.init(headers: fields, endStream: true))))
        } else if let head = pendingHead {
            pendingHead = nil
            responseEnd = context.writeAndFlush(wrapOutboundOut(.headers(.init(headers: head, endStream: true))))
        } else {
            responseEnd = context.writeAndFlush(wrapOutboundOut(.data(.init(data: .byteBuffer(allocator.buffer(capacity: 0)), endStream: true))))
        }
    }

    func flush() {
        writePendingHead(endStream: false)
        context.flush()
    }

    func writeUpgradeResponse(_ head: HTTPResponseHead) {
        // HTTP/2 carries no Upgrade (NIOHTTP2 refuses the header): never reached; a stream
        // that gets here cannot go on.
        context.close(promise: nil)
    }

    func requestReadsChanged() {
        guard readPending, stream?.wantsRequestData ?? true else { return }
        readPending = false
        context.read()
    }

    func shouldReadRestOfRequest(_ stream: HTTPStream) -> Bool {
        // The response is complete: the rest of the request is refused with RST_STREAM
        // (NO_ERROR would do too, RFC 9113 §8.1); other streams are unaffected.
        false
    }

    func closeAfterStream() {}

    func streamEnded(_ stream: HTTPStream) {
        guard case .active(let current) = state, current === stream else { return }
        state = .ended
        timer?.cancel()
        // Both ends closed: NIOHTTP2 closes the child channel itself. A request still
        // arriving is cut (RST_STREAM) once the response is out.
        if !stream.requestComplete {
            let channel = context.channel
            (responseEnd ?? context.eventLoop.makeSucceededVoidFuture()).whenComplete { _ in channel.close(promise: nil) }
        }
    }

    func resetStream(_ stream: HTTPStream) {
        state = .ended
        timer?.cancel()
        context.close(promise: nil)  // a child channel closed early sends RST_STREAM
    }

    func startTunnel(to upstream: UpstreamConnection, clusterStats: ClusterStats) {
        upstream.channel.close(promise: nil)
        context.close(promise: nil)
    }

    // MARK: deadlines

    /// The stream idle and request timeouts, checked per stream (a stalled stream does not
    /// hold the connection's other streams).
    private func armTimer() {
        let config = listener.config
        var delay = config.idleTimeout
        if config.streamIdleTimeout > .zero { delay = min(delay, config.streamIdleTimeout) }
        if config.requestTimeout > .zero { delay = min(delay, config.requestTimeout) }
        timer = context.eventLoop.scheduleTask(in: max(delay.timeAmount, .milliseconds(1))) { [weak self] in
            self?.checkTimeouts()
        }
    }

    private func checkTimeouts() {
        guard case .active(let stream) = state else { return }
        let config = listener.config
        let now = NIODeadline.now()
        var next = config.idleTimeout.timeAmount
        if config.streamIdleTimeout > .zero {
            let left = config.streamIdleTimeout.timeAmount - (now - stream.lastActivity)
            if left <= .zero { return timedOut(stream, .streamIdleTimeout) }
            next = min(next, left)
        }
        if config.requestTimeout > .zero && !stream.requestComplete {
            let left = config.requestTimeout.timeAmount - (now - stream.startTime)
            if left <= .zero { return timedOut(stream, .requestTimeout) }
            next = min(next, left)
        }
        timer = context.eventLoop.scheduleTask(in: max(next, .milliseconds(1))) { [weak self] in
            self?.checkTimeouts()
        }
    }

    private func timedOut(_ stream: HTTPStream, _ reason: DownstreamRefusal) {
        listener.stats.record(reason)
        stream.timedOut(reason)
    }
}
