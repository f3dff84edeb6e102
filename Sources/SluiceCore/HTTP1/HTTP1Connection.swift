import NIOCore
import NIOHTTP1
import ProxyWasm
import SluiceConfig
import Synchronization

/// Hop-by-hop headers and HTTP/1.1's connection: keep-alive, pipelining, the downstream
/// deadlines, drain and upgrades. Each request becomes an `HTTPStream` (which does not know it
/// is on HTTP/1.1); this handler feeds it request parts and writes its response with
/// HTTP/1.1's framing. NIO's `HTTPServerPipelineHandler` in front of it serialises pipelined
/// requests; a head that still arrives while a stream is open waits here for its turn.
final class HTTP1Connection: ChannelDuplexHandler, RemovableChannelHandler, StreamDownstream {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    enum State {
        /// Between streams, waiting for a request head (the idle timeout runs).
        case idle(since: NIODeadline)
        /// A stream is open: from its head until its response is out and its request read.
        case active(HTTPStream)
        /// The connection ends once what was written is out; nothing more is read or answered.
        case closing
        /// The connection is a byte tunnel now (an accepted upgrade).
        case tunnelled
    }

    /// What happens after the current stream.
    enum Persistence: Comparable {
        case keepAlive
        /// Close after the response; a request body still arriving is read and dropped first
        /// (closing with unread bytes would reset the connection and could destroy the response).
        case close
        /// Close as soon as the response is written, reading nothing more.
        case closeWithoutReading
    }

    private(set) var state: State
    private(set) var persistence = Persistence.keepAlive
    /// The configuration generation this connection's next request uses; refreshed from
    /// `slot` at each new request, so keep-alive connections follow reloads.
    private(set) var listener: ListenerRuntime
    private var worker: Worker
    private let slot: LoopSlot
    private var context: ChannelHandlerContext!
    private var readPending = false
    /// Request parts not handled yet, in arrival order (a pipelined head waits here while the
    /// previous stream is open).
    private var pendingParts: [HTTPServerRequestPart] = []
    private var processingParts = false
    /// When the connection entered `.closing` or last made write progress in it.
    private var closingSince = NIODeadline.now()
    /// One timer per connection for every downstream timeout (idle, stream idle, request,
    /// connection duration), re-armed only when it fires: a task per request showed in profiles.
    private var connectionTimer: Scheduled<Void>?
    private var timerDeadline = NIODeadline.now()
    private let connectionStart = NIODeadline.now()
    /// Told when heads arrive and streams end, so it knows when a head is being read.
    private let headTimeout: RequestHeadTimeout?
    /// Shared with PipelineLimit: streams finished here, and the last request it lets through.
    private let pipeline: PipelineCounters
    private var requestsStarted = 0
    private var info: DownstreamConnectionInfo!
    /// Completes when the latest response's end has been written to the socket.
    private var lastResponseEnd: EventLoopFuture<Void>?
    /// The current stream's request version and method (they decide response framing).
    private var requestVersion = HTTPVersion.http1_1
    private var requestMethod = HTTPMethod.GET
    private let tls: TLSDetails?

    init(listener: ListenerRuntime, slot: LoopSlot, tls: TLSDetails? = nil, headTimeout: RequestHeadTimeout? = nil, pipeline: PipelineCounters = PipelineCounters()) {
        self.tls = tls
        self.headTimeout = headTimeout
        self.pipeline = pipeline
        self.listener = listener
        self.worker = slot.worker
        self.slot = slot
        self.state = .idle(since: .now())
    }

    var stream: HTTPStream? {
        if case .active(let stream) = state { return stream }
        return nil
    }

    // MARK: channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let remote = context.channel.remoteAddress
        info = DownstreamConnectionInfo(id: DownstreamConnectionInfo.id(of: context.pipeline), remote: remote,
                                        local: context.channel.localAddress, clientAddress: remote?.ipAddress ?? "-", tls: tls)
        // Added after a TLS handshake or protocol sniffing, the channel is already active.
        if context.channel.isActive { becameActive() }
    }

    func channelActive(context: ChannelHandlerContext) {
        becameActive()
        context.fireChannelActive()
    }

    private var counted = false
    private func becameActive() {
        guard !counted else { return }
        counted = true
        listener.stats.connectionsTotal.increment()
        listener.stats.connectionsActive.increment()
        becomeIdle()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if counted { listener.stats.connectionsActive.decrement() }
        connectionTimer?.cancel()
        connectionTimer = nil
        if let stream { stream.downstreamClosed() }
        if case .tunnelled = state {} else { state = .closing }
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            persistence = max(persistence, .close)
            if case .idle = state { close() }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Every part goes through one queue, in order. NIO's pipelining handler hands over the
        // next pipelined request from inside the write that ends the current response, before
        // the current stream is over: its head waits here until that stream has ended.
        pendingParts.append(unwrapInboundIn(data))
        processPendingParts()
    }

    /// Feeds queued request parts to the current stream, or starts the next stream, until a
    /// head must wait for the stream in progress. Never re-entered: a stream that ends while a
    /// part is being handled lets this same loop continue with the next part, in order.
    private func processPendingParts() {
        guard !processingParts else { return }
        processingParts = true
        defer { processingParts = false }
        while let part = pendingParts.first {
            switch state {
            case .closing, .tunnelled:
                // A close-announcing response went out: whatever the client pipelined after
                // it is not a request Sluice will answer.
                pendingParts.removeAll()
                return
            case .active(let stream):
                if part.isHead { return }
                pendingParts.removeFirst()
                switch part {
                case .head: break
                case .body(let buffer):
                    listener.stats.bytesReceived.increment(by: buffer.readableBytes)
                    stream.receiveBody(buffer)
                case .end(let trailers):
                    stream.receiveEnd(trailers)
                }
            case .idle:
                pendingParts.removeFirst()
                // Anything but a head here belongs to a stream that already ended.
                if case .head(let head) = part { startStream(head) }
            }
        }
    }

    private func startStream(_ head: HTTPRequestHead) {
        if slot.worker !== worker {
            // A reload happened since the last request on this connection.
            if let current = slot.listeners[listener.config.name] {
                listener = current
                worker = slot.worker
            } else {
                persistence = max(persistence, .close)  // the listener was removed: finish this one and close
            }
        }
        listener.stats.requests.increment()
        requestsStarted += 1
        if requestsStarted == pipeline.lastRequest { persistence = max(persistence, .close) }
        headTimeout?.headReceived()
        requestVersion = head.version
        requestMethod = head.method
        switch RequestValidation.validate(head) {
        case .success(let request):
            if !request.head.isKeepAlive { persistence = max(persistence, .close) }
            // NIO's decoder stops parsing after a request asking to upgrade; unless a 101
            // turns the connection into a tunnel, it ends with this stream.
            if request.head.headers.asksForUpgrade {
                persistence = max(persistence, .close)
            }
            let stream = HTTPStream(downstream: self, connection: info, listener: listener, worker: worker,
                                    request: request.head, authority: request.authority, framing: request.framing)
            state = .active(stream)
            armStreamTimer(stream)
            stream.start()
        case .failure(let refusal):
            // Counted by reason, answered, and the connection closed once the answer is out:
            // the rest of the stream cannot be trusted.
            listener.stats.record(refusal)
            persistence = .closeWithoutReading
            let stream = HTTPStream(downstream: self, connection: info, listener: listener, worker: worker,
                                    request: head, authority: "", framing: .none)
            state = .active(stream)
            stream.refuse(refusal)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        stream?.chain?.router.flushUpstream()
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if case .closing = state { closingSince = .now() }  // the last response is still moving
        if context.channel.isWritable { stream?.downstreamBecameWritable() }
        context.fireChannelWritabilityChanged()
    }

    /// Backpressure on the request body: no more reads while the stream cannot take them
    /// (the upstream connection is not ready or full, or a filter holds too much).
    func read(context: ChannelHandlerContext) {
        if let stream, !stream.wantsRequestData {
            readPending = true
            return
        }
        context.read()
    }

    // MARK: StreamDownstream

    var eventLoop: EventLoop { context.eventLoop }
    var allocator: ByteBufferAllocator { context.channel.allocator }
    var isWritable: Bool { context.channel.isWritable }

    func writeContinue() {
        context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: requestVersion, status: .continue))), promise: nil)
    }

    func writeResponseHead(_ head: consuming HTTPResponseHead, for stream: HTTPStream) {
        head.version = requestVersion
        // A response that starts before the whole request arrived ends the connection: the
        // rest of the request is read away, then the connection closes.
        if !stream.requestComplete { persistence = max(persistence, .close) }
        frame(&head)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
    }

    /// How the response reaches this client: an HTTP/1.0 client cannot take chunked, so a
    /// response without a length is delimited by closing the connection; one that will stay
    /// open says so (HTTP/1.0 closes by default).
    private func frame(_ head: inout HTTPResponseHead) {
        let code = head.status.code
        let bodyless = requestMethod == .HEAD || code == 204 || code == 304 || code < 200
        if head.version.minor == 0 && head.version.major == 1 {
            if !bodyless && !head.headers.contains(name: "content-length") { persistence = max(persistence, .close) }
            if persistence == .keepAlive { head.headers.replaceOrAdd(name: "connection", value: "keep-alive") }
        }
        if persistence != .keepAlive { head.headers.replaceOrAdd(name: "connection", value: "close") }
    }

    func writeResponseBody(_ buffer: ByteBuffer) {
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
    }

    func writeResponseEnd(_ trailers: HTTPHeaders?) {
        lastResponseEnd = context.writeAndFlush(wrapOutboundOut(.end(trailers)))
    }

    func flush() {
        context.flush()
    }

    func writeUpgradeResponse(_ head: HTTPResponseHead) {
        var head = head
        head.version = requestVersion
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        lastResponseEnd = context.writeAndFlush(wrapOutboundOut(.end(nil)))
    }

    func requestReadsChanged() {
        guard readPending, stream?.wantsRequestData ?? true else { return }
        readPending = false
        context.read()
    }

    func shouldReadRestOfRequest(_ stream: HTTPStream) -> Bool {
        // A client waiting for 100-continue (none was sent) will not send the body: close instead.
        if stream.framing.hasBody && !stream.continueSent && stream.request.headers["expect"].contains(where: { $0.lowercased() == "100-continue" }) {
            persistence = .closeWithoutReading
        }
        return persistence != .closeWithoutReading
    }

    func closeAfterStream() {
        persistence = max(persistence, .close)
    }

    func streamEnded(_ stream: HTTPStream) {
        guard case .active(let current) = state, current === stream else { return }
        pipeline.finished += 1
        // The pipelining cap was reached after the last allowed request had started.
        if let last = pipeline.lastRequest, requestsStarted >= last { persistence = max(persistence, .close) }
        guard context.channel.isActive else {
            state = .closing
            return
        }
        if persistence != .keepAlive {
            state = .closing
            pendingParts.removeAll()
            closeAfterWrites()
            return
        }
        becomeIdle()
        if readPending {
            readPending = false
            context.read()
        }
        processPendingParts()
        // Parts replayed here did not come from a downstream read, whose end would flush
        // what they wrote upstream.
        self.stream?.chain?.router.flushUpstream()
    }

    func resetStream(_ stream: HTTPStream) {
        state = .closing
        pendingParts.removeAll()
        close()
    }

    func startTunnel(to upstream: UpstreamConnection, clusterStats: ClusterStats) {
        state = .tunnelled
        pipeline.finished += 1
        connectionTimer?.cancel()
        connectionTimer = nil
        let downstream = context.channel
        let written = lastResponseEnd ?? context.eventLoop.makeSucceededVoidFuture()
        let listenerStats = listener.stats
        // Deferred to the next tick so that no HTTP decoder is still mid-call when removed.
        context.eventLoop.execute {
            written.whenComplete { _ in
                Tunnel.splice(downstream: downstream, upstream: upstream.channel, stats: listenerStats, clusterStats: clusterStats)
            }
        }
    }

    // MARK: closing

    private func close() {
        context.close(promise: nil)
    }

    /// Closes once the last response has been written out, so it is not lost; a client that
    /// stops reading does not keep the connection: without write progress for the idle
    /// timeout, it is closed anyway.
    private func closeAfterWrites() {
        closingSince = .now()
        ensureTimer(by: closingSince + listener.config.idleTimeout.timeAmount)
        let channel = context.channel
        if let written = lastResponseEnd {
            written.whenComplete { _ in channel.close(promise: nil) }
        } else {
            channel.close(promise: nil)
        }
    }

    // MARK: deadlines

    /// Marks the connection idle from now and makes sure the connection timer runs.
    private func becomeIdle() {
        let now = NIODeadline.now()
        state = .idle(since: now)
        headTimeout?.streamEnded()
        var deadline = now + listener.config.idleTimeout.timeAmount
        if listener.config.maxConnectionDuration > .zero && persistence == .keepAlive {
            deadline = min(deadline, connectionStart + listener.config.maxConnectionDuration.timeAmount)
        }
        ensureTimer(by: deadline)
    }

    /// A request started: its deadlines must be checked in time. Re-arms only when the timer
    /// would fire too late, which in steady keep-alive traffic is never.
    private func armStreamTimer(_ stream: HTTPStream) {
        let config = listener.config
        var first = config.idleTimeout
        if config.streamIdleTimeout > .zero { first = min(first, config.streamIdleTimeout) }
        if config.requestTimeout > .zero { first = min(first, config.requestTimeout) }
        ensureTimer(by: stream.startTime + first.timeAmount)
    }

    private func ensureTimer(by deadline: NIODeadline) {
        if connectionTimer != nil && timerDeadline <= deadline { return }
        connectionTimer?.cancel()
        scheduleTimer(in: deadline - .now())
    }

    private func scheduleTimer(in delay: TimeAmount) {
        let delay = max(delay, .milliseconds(1))
        timerDeadline = .now() + delay
        connectionTimer = context.eventLoop.scheduleTask(in: delay) { [weak self] in
            guard let self else { return }
            self.connectionTimer = nil
            self.checkTimeouts()
        }
    }

    /// Every downstream deadline, checked when the connection timer fires; the timer is then
    /// re-armed for the nearest one still ahead.
    private func checkTimeouts() {
        guard context.channel.isActive else { return }
        let config = listener.config
        let now = NIODeadline.now()
        var next = config.idleTimeout.timeAmount
        if config.maxConnectionDuration > .zero && persistence == .keepAlive {
            let left = config.maxConnectionDuration.timeAmount - (now - connectionStart)
            if left <= .zero {
                // Like a drain: the request in flight (if any) finishes, then the connection closes.
                persistence = .close
                if case .idle = state {
                    close()
                    return
                }
            } else {
                next = min(next, left)
            }
        }
        switch state {
        case .idle(let since):
            let left = config.idleTimeout.timeAmount - (now - since)
            if left <= .zero {
                close()
                return
            }
            next = min(next, left)
        case .active(let stream):
            if case .discardingRequest = stream.state {
                // The response is out; the rest of the request has the idle timeout to arrive.
                let left = config.idleTimeout.timeAmount - (now - stream.lastActivity)
                if left <= .zero {
                    close()
                    return
                }
                next = min(next, left)
                break
            }
            if config.streamIdleTimeout > .zero {
                let left = config.streamIdleTimeout.timeAmount - (now - stream.lastActivity)
                if left <= .zero {
                    streamTimedOut(stream, .streamIdleTimeout)
                    return
                }
                next = min(next, left)
            }
            if config.requestTimeout > .zero && !stream.requestComplete {
                let left = config.requestTimeout.timeAmount - (now - stream.startTime)
                if left <= .zero {
                    streamTimedOut(stream, .requestTimeout)
                    return
                }
                next = min(next, left)
            }
        case .closing:
            let left = config.idleTimeout.timeAmount - (now - closingSince)
            if left <= .zero {
                close()
                return
            }
            next = min(next, left)
        case .tunnelled:
            return
        }
        scheduleTimer(in: next)
    }

    /// A stream ran out of time: it answers (or resets), and the connection closes once the
    /// answer is out, since its request stream cannot be trusted to be in step. A stalled
    /// body is not waited for.
    private func streamTimedOut(_ stream: HTTPStream, _ reason: DownstreamRefusal) {
        listener.stats.record(reason)
        persistence = .closeWithoutReading
        stream.timedOut(reason)
        // A filter may hold the answer: the connection does not wait for it.
        if case .active(let current) = state, current === stream { close() }
    }
}

extension HTTPServerRequestPart {
    var isHead: Bool {
        if case .head = self { return true }
        return false
    }
}
