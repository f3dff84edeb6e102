import NIOCore
import NIOPosix

/// A downstream TCP connection: connect to an endpoint of the listener's cluster (trying the
/// others once if that fails), then splice bytes both ways. Nothing is read from the client
/// until the upstream is connected, so a slow upstream cannot make the proxy buffer.
final class TCPProxyHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer

    private let listener: ListenerRuntime
    private let worker: Worker
    /// The connection's network filters (in front of this handler), if it has any.
    private let networkFilters: NetworkFilterHandler?
    private var pending: [ByteBuffer] = []
    private var inputClosed = false

    /// Reads grow up to 256 KiB on a busy byte stream (NIO's default stops at 64 KiB): fewer
    /// reads, writes and filter callbacks per megabyte moved.
    static let readSizes = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 2048, maximum: 256 << 10)

    init(listener: ListenerRuntime, worker: Worker, networkFilters: NetworkFilterHandler?) {
        self.listener = listener
        self.worker = worker
        self.networkFilters = networkFilters
    }

    func channelActive(context: ChannelHandlerContext) {
        listener.stats.connectionsTotal.increment()
        listener.stats.connectionsActive.increment()
        guard let cluster = listener.tcpCluster else {
            context.close(promise: nil)
            return
        }
        connect(context: context, cluster: cluster, state: worker.state(for: cluster), avoid: nil, triesLeft: cluster.endpoints.count)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Only reached while still connecting; afterwards the splice handler owns the close.
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        listener.stats.bytesReceived.increment(by: buffer.readableBytes)
        pending.append(buffer)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            inputClosed = true
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// No reads until connected; the first read after the splice is installed starts the flow.
    func read(context: ChannelHandlerContext) {}

    private func connect(context: ChannelHandlerContext, cluster: ClusterRuntime, state: ClusterLoopState, avoid: Int?, triesLeft: Int) {
        guard triesLeft > 0, let index = state.pick(avoid: avoid) else {
            cluster.stats.noHealthyEndpoint.increment()
            context.close(promise: nil)
            return
        }
        let endpoint = cluster.endpoints[index]
        networkFilters?.upstreamChosen(endpoint)
        let downstream = context.channel
        let stats = listener.stats
        let upstreamSplice = NIOLoopBound(SpliceHandler(peer: downstream, bytesRead: cluster.stats.bytesReceived, onClose: {
            cluster.stats.connectionsActive.decrement()
        }), eventLoop: context.eventLoop)
        let bootstrap = ClientBootstrap(group: context.eventLoop)
            .connectTimeout(cluster.config.connectTimeout.timeAmount)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.recvAllocator, value: TCPProxyHandler.readSizes)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(upstreamSplice.value)
                }
            }
        let connecting = endpoint.socketAddress.map { bootstrap.connect(to: $0) } ?? bootstrap.connect(host: endpoint.address.host, port: endpoint.address.port)
        connecting.whenComplete { result in
            switch result {
            case .success(let upstream):
                _ = endpoint.recordConnect(success: true, policy: cluster.config.outlierDetection, now: .now())
                cluster.stats.connectionsTotal.increment()
                cluster.stats.connectionsActive.increment()
                guard downstream.isActive else {
                    upstream.close(promise: nil)
                    return
                }
                for buffer in self.pending { upstream.write(buffer, promise: nil) }
                self.pending.removeAll()
                upstream.flush()
                let splice = SpliceHandler(peer: upstream, bytesRead: stats.bytesReceived, onClose: { stats.connectionsActive.decrement() })
                do {
                    try downstream.pipeline.syncOperations.addHandler(splice)
                    _ = downstream.pipeline.syncOperations.removeHandler(self)
                } catch {
                    downstream.close(promise: nil)
                    return
                }
                if self.inputClosed {
                    splice.userInboundEventTriggered(context: try! downstream.pipeline.syncOperations.context(handler: splice), event: ChannelEvent.inputClosed)
                }
                downstream.read()
            case .failure:
                cluster.stats.connectFailures.increment()
                if endpoint.recordConnect(success: false, policy: cluster.config.outlierDetection, now: .now()) {
                    cluster.stats.outlierEjections.increment()
                }
                guard downstream.isActive else { return }
                self.connect(context: context, cluster: cluster, state: state, avoid: index, triesLeft: triesLeft - 1)
            }
        }
    }
}

