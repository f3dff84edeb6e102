import NIOCore
import NIOHTTP1
import NIOPosix
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

    init(channel: Channel, endpointIndex: Int, handler: UpstreamHandler) {
        self.channel = channel
        self.endpointIndex = endpointIndex
        self.handler = handler
    }
}

final class UpstreamHandler: ChannelDuplexHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    weak var delegate: UpstreamDelegate?
    var onClose: (() -> Void)?
    private var readPending = false
    private(set) var context: ChannelHandlerContext?
    let stats: ClusterStats

    init(stats: ClusterStats) { self.stats = stats }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if case .body(let buffer) = part { stats.bytesReceived.increment(by: buffer.readableBytes) }
        delegate?.upstreamRead(part)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        delegate?.upstreamReadComplete()
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

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
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

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .body(.byteBuffer(let buffer)) = unwrapOutboundIn(data) { stats.bytesSent.increment(by: buffer.readableBytes) }
        context.write(data, promise: promise)
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

    /// An idle connection now, or a new one once connected.
    func acquire(endpointIndex: Int, maxConnections: Int, totalOpen: Int) -> EventLoopFuture<UpstreamConnection> {
        while let connection = idle.popLast() {
            connection.idleSince = nil
            if connection.channel.isActive && !connection.closed {
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
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(cluster.config.connectTimeout.timeAmount)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.autoRead, value: true)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers(leftOverBytesStrategy: .forwardBytes)
                    try channel.pipeline.syncOperations.addHandler(handler, name: "sluice.upstream")
                }
            }
        let future: EventLoopFuture<Channel>
        if let address = endpoint.socketAddress {
            future = bootstrap.connect(to: address)
        } else {
            future = bootstrap.connect(host: endpoint.address.host, port: endpoint.address.port)
        }
        return future.flatMapError { error in
            self.openConnections -= 1
            return self.eventLoop.makeFailedFuture(error)
        }.map { channel in
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
    }

    /// Returns a connection whose exchange completed cleanly; it closes after the idle timeout.
    func release(_ connection: UpstreamConnection) {
        connection.handler.delegate = nil
        guard connection.channel.isActive, !connection.closed else { return }
        if retired {
            connection.channel.close(promise: nil)
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
        connection.channel.close(promise: nil)
    }

    func closeIdle() {
        let connections = idle
        idle.removeAll()
        for c in connections { c.channel.close(promise: nil) }
    }

    var idleCount: Int { idle.count }
}
