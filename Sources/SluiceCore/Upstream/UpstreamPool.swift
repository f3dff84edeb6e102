import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import ProxyWasm
import SluiceConfig

/// What an upstream connection reports to the request currently using it.
protocol UpstreamDelegate: AnyObject {
    func upstreamRead(_ part: HTTPClientResponsePart)
    func upstreamReadComplete()
    func upstreamClosed(_ connection: UpstreamConnection)
    func upstreamWritabilityChanged(writable: Bool)
    /// Upstream reads pause while the downstream cannot take more bytes (backpressure).
    var downstreamWritable: Bool { get }
}

/// One HTTP/1.1 connection to an endpoint, owned by its worker's pool.
final class UpstreamConnection {
    let channel: Channel
    let endpointIndex: Int
    let handler: UpstreamHandler
    /// Reused from the pool (as opposed to freshly connected): a reset before any response
    /// byte then most likely means the upstream closed it while idle, and is safe to retry.
    var reused = false
    /// When the connection went back to the pool (for the idle sweep).
    var idleSince: NIODeadline?
    var closed = false
    /// The connection's TLS, read once when its handshake finished (nil: cleartext).
    var tls: TLSDetails?

    init(channel: Channel, endpointIndex: Int, handler: UpstreamHandler) {
        self.channel = channel
        self.endpointIndex = endpointIndex
        self.handler = handler
    }
}

/// The upstream side of one connection, with the state of its current exchange. It is the
/// guard against response desync: a response part that arrives when no request is waiting for
/// one (bytes after a complete response, an answer nobody asked for) closes the connection
/// instead of being handed to whichever request uses it next, and a connection goes back to
/// its pool only after a complete, keep-alive response. A response head that was already in
/// the read buffer when the request was written (the pool handed the connection to the next
/// request from inside that read) cannot be the answer to it: that closes the connection too.
final class UpstreamHandler: ChannelDuplexHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    enum ExchangeState: Equatable {
        /// No request on the connection (fresh, or pooled).
        case idle
        /// A request head was written; no response head yet.
        case awaitingResponse
        case receivingResponse(keepAlive: Bool)
        /// The response ended; the connection may be pooled.
        case responseComplete(keepAlive: Bool)
        /// Something arrived that no request asked for, or the stream could not be parsed.
        case poisoned(UpstreamProtocolError)
        /// Sluice gave up on the exchange (timeout, client gone, refused response); the
        /// connection is being closed and whatever still arrives on it is ignored.
        case abandoned
    }

    weak var delegate: UpstreamDelegate?
    var onClose: (() -> Void)?
    private(set) var state: ExchangeState = .idle
    /// Reads are numbered; a request written while read N was being handled can only be
    /// answered by bytes from a later read.
    private var readNumber = 0
    private var inRead = false
    private var requestWrittenInRead: Int?
    private var readPending = false
    private(set) var context: ChannelHandlerContext?
    let stats: ClusterStats

    init(stats: ClusterStats) { self.stats = stats }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    /// The failure that ended this connection, if it was the upstream's fault.
    var protocolError: UpstreamProtocolError? {
        if case .poisoned(let error) = state { return error }
        return nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        inRead = true
        switch (state, part) {
        case (.awaitingResponse, .head(let head)) where requestWrittenInRead != readNumber:
            state = .receivingResponse(keepAlive: head.isKeepAlive)
        case (.receivingResponse, .body(let buffer)):
            stats.bytesReceived.increment(by: buffer.readableBytes)
        case (.receivingResponse(let keepAlive), .end):
            state = .responseComplete(keepAlive: keepAlive)
        case (.poisoned, _), (.abandoned, _):
            return
        default:
            poison(.unsolicitedResponse, context: context)
            return
        }
        delegate?.upstreamRead(part)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        inRead = false
        readNumber += 1
        delegate?.upstreamReadComplete()
    }

    /// A request head starts an exchange; the connection must be idle.
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head:
            if state != .idle {
                promise?.fail(ChannelError.inappropriateOperationForState)
                poison(.unsolicitedResponse, context: context)
                return
            }
            state = .awaitingResponse
            requestWrittenInRead = inRead ? readNumber : nil
        case .body(.byteBuffer(let buffer)):
            stats.bytesSent.increment(by: buffer.readableBytes)
        default:
            break
        }
        context.write(data, promise: promise)
    }

    /// The pool takes the connection back: only after a complete keep-alive response.
    func returnToPool() -> Bool {
        switch state {
        case .idle: return true
        case .responseComplete(keepAlive: true):
            state = .idle
            return true
        default: return false
        }
    }

    private func poison(_ error: UpstreamProtocolError, context: ChannelHandlerContext) {
        if protocolError == nil { stats.record(error) }
        state = .poisoned(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        let close = onClose
        onClose = nil
        close?()
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        delegate?.upstreamWritabilityChanged(writable: context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    /// A parse error (malformed status line, ambiguous framing, bad chunk): the connection
    /// cannot be resynchronised.
    /// The decoder's own unsolicited-response check (bytes when no request is outstanding)
    /// fires before any part reaches channelRead.
    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if protocolError == nil, let decoderError = error as? NIOHTTPDecoderError, decoderError == .unsolicitedResponse {
            poison(.unsolicitedResponse, context: context)
        } else if protocolError == nil && error is HTTPParserError {
            poison(.malformedResponse, context: context)
        } else {
            context.close(promise: nil)
        }
    }

    func read(context: ChannelHandlerContext) {
        if let delegate, !delegate.downstreamWritable {
            readPending = true
            return
        }
        context.read()
    }

    /// Called when the downstream drained its buffer: reads resume.
    func resumeReading() {
        guard readPending, let context else { return }
        readPending = false
        context.read()
    }

    /// The exchange was abandoned mid-way (timeout, client gone, refused response).
    func abandon() {
        if case .poisoned = state { return }
        state = .abandoned
    }
}

/// Keep-alive connections to one endpoint, on one event loop. LIFO reuse keeps the hottest
/// connection busy and lets the rest reach their idle timeout.
// @unchecked Sendable: used only on its event loop; NIO future callbacks run there too.
final class EndpointPool: @unchecked Sendable {
    let endpoint: Endpoint
    let cluster: ClusterRuntime
    let eventLoop: EventLoop
    private var idle: [UpstreamConnection] = []
    private(set) var openConnections = 0
    private var sweep: Scheduled<Void>?
    /// Set when a reload replaced this pool's configuration.
    var retired = false

    init(endpoint: Endpoint, cluster: ClusterRuntime, eventLoop: EventLoop) {
        self.endpoint = endpoint
        self.cluster = cluster
        self.eventLoop = eventLoop
    }

    enum AcquireError: Error { case overflow }

    /// An idle connection now, or a new one once connected. On HTTP/2 a new stream on the
    /// endpoint's connection (which `maxConnections` then bounds the streams of).
    func acquire(endpointIndex: Int, maxConnections: Int, totalOpen: Int) -> EventLoopFuture<UpstreamConnection> {
        if cluster.config.upstreamProtocol == .http2 {
            if totalOpen >= maxConnections { return eventLoop.makeFailedFuture(AcquireError.overflow) }
            return openStream(endpointIndex: endpointIndex)
        }
        while let connection = idle.popLast() {
            connection.idleSince = nil
            if connection.channel.isActive && !connection.closed && connection.handler.state == .idle {
                connection.reused = true
                return eventLoop.makeSucceededFuture(connection)
            }
        }
        if totalOpen >= maxConnections {
            return eventLoop.makeFailedFuture(AcquireError.overflow)
        }
        return connect(endpointIndex: endpointIndex)
    }

    private func connect(endpointIndex: Int) -> EventLoopFuture<UpstreamConnection> {
        openConnections += 1
        let stats = cluster.stats
        let handler = UpstreamHandler(stats: stats)
        let handshake = cluster.tls.map { _ in UpstreamHandshakeWaiter(eventLoop: eventLoop, timeout: cluster.config.connectTimeout.timeAmount) }
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(cluster.config.connectTimeout.timeAmount)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.autoRead, value: true)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // Sluice sets the framing headers of every upstream request itself (see
                    // BodyFraming); NIO's automatic framing would drop a body it does not
                    // expect for the method (a chunked GET) and send it unframed.
                    var encoder = HTTPRequestEncoder.Configuration()
                    encoder.automaticallySetFramingHeaders = false
                    // A response head larger than Envoy's default max_response_headers_kb (60)
                    // is refused (502), not buffered without bound.
                    var limits = NIOHTTPDecoderLimitConfiguration()
                    limits.maxHeaderListSize = 60 * 1024
                    limits.maxHeaderFieldSize = 60 * 1024
                    if let tls = self.cluster.tls, let handshake { try tls.install(on: channel, host: self.endpoint.address.host, waiter: handshake) }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers(
                        leftOverBytesStrategy: .forwardBytes, encoderConfiguration: encoder, decoderLimitConfiguration: limits)
                    try channel.pipeline.syncOperations.addHandler(handler, name: "sluice.upstream")
                }
            }
        var future: EventLoopFuture<Channel>
        if let address = endpoint.socketAddress {
            future = bootstrap.connect(to: address)
        } else {
            future = bootstrap.connect(host: endpoint.address.host, port: endpoint.address.port)
        }
        if let handshake { future = handshake.after(future) }
        return future.flatMapError { error in
            self.openConnections -= 1
            return self.eventLoop.makeFailedFuture(error)
        }.map { channel in
            let connection = self.adopt(channel, handler: handler, endpointIndex: endpointIndex)
            connection.tls = self.cluster.tls?.details(of: channel)
            return connection
        }
    }

    /// A connected channel becomes one of this pool's connections: counted, and when it
    /// closes, removed and its current request told.
    func adopt(_ channel: Channel, handler: UpstreamHandler, endpointIndex: Int) -> UpstreamConnection {
        let stats = cluster.stats
        stats.connectionsTotal.increment()
        stats.connectionsActive.increment()
        let connection = UpstreamConnection(channel: channel, endpointIndex: endpointIndex, handler: handler)
        // Strong capture of `connection`: the cycle handler → onClose → connection → handler
        // is broken when the channel closes and `onClose` is cleared.
        handler.onClose = { [weak self] in
            stats.connectionsActive.decrement()
            connection.closed = true
            guard let self else { return }
            self.openConnections -= 1
            self.idle.removeAll { $0 === connection }
            connection.handler.delegate?.upstreamClosed(connection)
        }
        return connection
    }

    /// The connection leaves the pool for good, to carry a tunnel (an accepted upgrade): it no
    /// longer counts against the endpoint's connections, and its close is the tunnel's.
    func handOver(_ connection: UpstreamConnection) {
        connection.handler.delegate = nil
        connection.handler.onClose = nil
        openConnections -= 1
        cluster.stats.connectionsActive.decrement()
    }

    // MARK: HTTP/2

    /// One HTTP/2 connection to the endpoint and the streams open on it.
    // @unchecked Sendable: like its pool, touched only on the pool's event loop.
    final class MultiplexedUpstream: @unchecked Sendable {
        let channel: Channel
        let streams: NIOHTTP2Handler.StreamMultiplexer
        let tls: TLSDetails?
        var openStreams = 0
        /// No new streams (the upstream sent GOAWAY, the pool was retired, or it idled out):
        /// it closes once its last stream ends.
        var draining = false
        var idleSince: NIODeadline?

        init(channel: Channel, streams: NIOHTTP2Handler.StreamMultiplexer, tls: TLSDetails?) {
            self.channel = channel
            self.streams = streams
            self.tls = tls
        }
    }

    /// The endpoint's HTTP/2 connection on this loop: being connected (requests wait for it),
    /// or up.
    private enum MultiplexedConnection {
        case connecting(EventLoopFuture<MultiplexedUpstream>)
        case ready(MultiplexedUpstream)
    }
    private var multiplexed: MultiplexedConnection?

    /// A stream for one request, presented to UpstreamRequest as a connection: NIOHTTP2's
    /// HTTP/1 codec turns the request parts into frames and the response frames back, so the
    /// exchange state machine (UpstreamHandler) is the same as on HTTP/1.1. A stream is never
    /// pooled; it ends with its exchange.
    private func openStream(endpointIndex: Int) -> EventLoopFuture<UpstreamConnection> {
        let (upstream, reused) = currentMultiplexed()
        openConnections += 1
        let handler = UpstreamHandler(stats: cluster.stats)
        let scheme: HTTP2FramePayloadToHTTP1ClientCodec.HTTPProtocol = cluster.tls == nil ? .http : .https
        return upstream.flatMap { upstream in
            upstream.streams.createStreamChannel { stream in
                stream.eventLoop.makeCompletedFuture {
                    try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ClientCodec(httpProtocol: scheme))
                    try stream.pipeline.syncOperations.addHandler(handler, name: "sluice.upstream")
                }
            }.map { ($0, upstream) }
        }.flatMapError { error in
            self.openConnections -= 1
            return self.eventLoop.makeFailedFuture(error)
        }.map { (stream, upstream) in
            let connection = UpstreamConnection(channel: stream, endpointIndex: endpointIndex, handler: handler)
            connection.reused = reused
            connection.tls = upstream.tls
            upstream.openStreams += 1
            upstream.idleSince = nil
            handler.onClose = { [weak self] in
                connection.closed = true
                connection.handler.delegate?.upstreamClosed(connection)
                upstream.openStreams -= 1
                guard let self else { return }
                self.openConnections -= 1
                if self.retired { upstream.draining = true }
                self.streamEnded(on: upstream)
            }
            return connection
        }
    }

    /// The endpoint's HTTP/2 connection for a new stream: the open one, the one being
    /// connected, or a new one.
    private func currentMultiplexed() -> (EventLoopFuture<MultiplexedUpstream>, reused: Bool) {
        switch multiplexed {
        case .ready(let current) where current.channel.isActive && !current.draining:
            return (eventLoop.makeSucceededFuture(current), true)
        case .connecting(let future):
            return (future, false)
        default:
            return (connectMultiplexed(), false)
        }
    }

    /// A bare HTTP/2 stream to the endpoint, whatever the cluster's protocol (gRPC callouts
    /// need HTTP/2): `configure` adds its handlers. It counts as an open stream of the
    /// connection until it closes.
    func openHTTP2Stream(configure: @escaping @Sendable (Channel) throws -> Void) -> EventLoopFuture<Channel> {
        let (upstream, _) = currentMultiplexed()
        return upstream.flatMap { upstream in
            upstream.streams.createStreamChannel { stream in
                stream.eventLoop.makeCompletedFuture { try configure(stream) }
            }.map { stream in
                upstream.openStreams += 1
                upstream.idleSince = nil
                stream.closeFuture.whenComplete { _ in
                    upstream.openStreams -= 1
                    if self.retired { upstream.draining = true }
                    self.streamEnded(on: upstream)
                }
                return stream
            }
        }
    }

    /// The last stream of a draining connection closes it; on one still in use, the idle
    /// timeout starts.
    private func streamEnded(on upstream: MultiplexedUpstream) {
        guard upstream.openStreams == 0 else { return }
        if upstream.draining {
            upstream.channel.close(promise: nil)
            return
        }
        let since = NIODeadline.now()
        upstream.idleSince = since
        eventLoop.scheduleTask(in: cluster.config.idleTimeout.timeAmount) { [weak self] in
            guard let self, upstream.idleSince == since, upstream.openStreams == 0 else { return }
            self.drain(upstream)
        }
    }

    /// No new streams on this connection: the next request opens another one.
    private func drain(_ upstream: MultiplexedUpstream) {
        upstream.draining = true
        if case .ready(let current) = multiplexed, current === upstream { multiplexed = nil }
        if upstream.openStreams == 0 { upstream.channel.close(promise: nil) }
    }

    private func connectMultiplexed() -> EventLoopFuture<MultiplexedUpstream> {
        let stats = cluster.stats
        let tls = cluster.tls
        let host = endpoint.address.host
        let promise = eventLoop.makePromise(of: MultiplexedUpstream.self)
        multiplexed = .connecting(promise.futureResult)
        // Set by the channel initializer; handed out once the connection is up.
        let made = NIOLoopBoundBox<NIOHTTP2Handler.StreamMultiplexer?>(nil, eventLoop: eventLoop)
        let handshake = tls.map { _ in UpstreamHandshakeWaiter(eventLoop: eventLoop, timeout: cluster.config.connectTimeout.timeAmount) }
        // A GOAWAY from the upstream (a server's max connection age, its shutdown) retires the
        // connection for new streams; those in flight finish on it.
        let goAway = NIOLoopBoundBox<MultiplexedUpstream?>(nil, eventLoop: eventLoop)
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(cluster.config.connectTimeout.timeAmount)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls, let handshake { try tls.install(on: channel, host: host, waiter: handshake, http2: true) }
                    // The upstream may not open streams towards Sluice (no server push).
                    let multiplexer = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                        mode: .client, connectionConfiguration: .init(), streamConfiguration: .init()
                    ) { pushed in pushed.close() }
                    try channel.pipeline.syncOperations.addHandler(UpstreamGoAwayWatcher { [weak self] in
                        if let upstream = goAway.value { self?.drain(upstream) }
                    })
                    made.value = multiplexer
                }
            }
        var connected = endpoint.socketAddress.map { bootstrap.connect(to: $0) } ?? bootstrap.connect(host: host, port: endpoint.address.port)
        if let handshake { connected = handshake.after(connected) }
        connected.whenComplete { result in
            switch result {
            case .success(let channel):
                stats.connectionsTotal.increment()
                stats.connectionsActive.increment()
                guard let multiplexer = made.value else {
                    self.multiplexed = nil
                    promise.fail(ChannelError.inappropriateOperationForState)
                    return
                }
                let upstream = MultiplexedUpstream(channel: channel, streams: multiplexer, tls: tls?.details(of: channel))
                goAway.value = upstream
                self.multiplexed = .ready(upstream)
                promise.succeed(upstream)
                channel.closeFuture.whenComplete { _ in
                    stats.connectionsActive.decrement()
                    if case .ready(let current) = self.multiplexed, current === upstream { self.multiplexed = nil }
                }
            case .failure(let error):
                self.multiplexed = nil
                promise.fail(error)
            }
        }
        return promise.futureResult
    }

    /// Returns a connection to the pool if its exchange ended cleanly: a fresh connection no
    /// request used, or a complete keep-alive response. Anything else is closed.
    func release(_ connection: UpstreamConnection) {
        connection.handler.delegate = nil
        if cluster.config.upstreamProtocol == .http2 {
            // A stream carries one exchange; closing a finished one is a no-op, an unfinished
            // one is reset.
            connection.handler.abandon()
            connection.channel.close(promise: nil)
            return
        }
        guard connection.channel.isActive, !connection.closed, !retired, connection.handler.returnToPool() else {
            discard(connection)
            return
        }
        connection.idleSince = .now()
        idle.append(connection)
        scheduleSweep()
    }

    /// Closes connections idle longer than the cluster's idle timeout. One sweep timer per
    /// pool instead of a task per released connection (that cost showed in profiles).
    private func scheduleSweep() {
        guard sweep == nil else { return }
        let timeout = cluster.config.idleTimeout.timeAmount
        sweep = eventLoop.scheduleTask(in: timeout) { [weak self] in
            guard let self else { return }
            self.sweep = nil
            let now = NIODeadline.now()
            var kept: [UpstreamConnection] = []
            for c in self.idle {
                if let since = c.idleSince, now - since >= timeout { c.channel.close(promise: nil) } else { kept.append(c) }
            }
            self.idle = kept
            if !kept.isEmpty { self.scheduleSweep() }
        }
    }

    /// Closes a connection that cannot be reused (half-read response, timeout, reset).
    func discard(_ connection: UpstreamConnection) {
        connection.handler.delegate = nil
        connection.handler.abandon()
        connection.channel.close(promise: nil)
    }

    func closeIdle() {
        let connections = idle
        idle.removeAll()
        for c in connections { c.channel.close(promise: nil) }
        // The HTTP/2 connection closes once its last stream ends (at once if none is open):
        // a reload or shutdown does not cut the requests in flight.
        if case .ready(let upstream) = multiplexed { drain(upstream) }
    }

    var idleCount: Int { idle.count }
}

/// In an upstream HTTP/2 connection's pipeline, after NIOHTTP2's handler: tells the pool when
/// the upstream sends GOAWAY.
final class UpstreamGoAwayWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame
    typealias InboundOut = HTTP2Frame
    private let onGoAway: () -> Void

    init(onGoAway: @escaping () -> Void) { self.onGoAway = onGoAway }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .goAway = unwrapInboundIn(data).payload { onGoAway() }
        context.fireChannelRead(data)
    }
}
