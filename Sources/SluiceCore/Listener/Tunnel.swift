import NIOCore
import NIOHTTP1

/// Copies bytes from its channel to a peer channel with backpressure: it stops reading while
/// the peer cannot write, and propagates half-close (a FIN becomes a shutdown of the peer's
/// output), which protocols like `nc -q` or TLS close_notify-less clients rely on.
final class SpliceHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    var peer: Channel?
    /// Counts bytes read from this side.
    let bytesRead: Counter?
    private var readPending = false
    private var context: ChannelHandlerContext?
    private var inputClosed = false
    private var peerInputClosed = false
    /// This side ended with an error (a reset), not a FIN.
    private var failed = false
    /// The FIN passed on to the peer, once everything before it is written.
    private var finPassed: EventLoopFuture<Void>?
    let onClose: (() -> Void)?

    init(peer: Channel?, bytesRead: Counter?, onClose: (() -> Void)? = nil) {
        self.peer = peer
        self.bytesRead = bytesRead
        self.onClose = onClose
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        bytesRead?.increment(by: buffer.readableBytes)
        peer?.write(buffer, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        peer?.flush()
    }

    func read(context: ChannelHandlerContext) {
        if let peer, !peer.isWritable {
            readPending = true
            return
        }
        context.read()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, let peer {
            // Our side drained: let the peer read again.
            peer.pipeline.handler(type: SpliceHandler.self).whenSuccess { $0.resume() }
        }
        context.fireChannelWritabilityChanged()
    }

    func resume() {
        guard readPending, let context else { return }
        readPending = false
        context.read()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            inputClosed = true
            // Half-close: pass the FIN on once everything read so far is written. When both
            // sides are done, the connections close after that FIN (completions run in the
            // order they were added), so what sits in between (network filters) sees the end
            // of the bytes before the close.
            guard let peer else {
                if peerInputClosed { context.close(promise: nil) }
                return
            }
            let finished = passFIN(to: peer)
            if peerInputClosed { finished.whenComplete { _ in context.close(promise: nil) } }
            peer.pipeline.handler(type: SpliceHandler.self).whenSuccess { other in
                other.peerInputClosed = true
                if other.inputClosed { finished.whenComplete { _ in context.close(promise: nil); peer.close(promise: nil) } }
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let peer, !inputClosed, !failed, peerInputClosed {
            // Our output was already shut (the peer's FIN passed on) and this side then ended
            // cleanly: NIO closes such a channel without an inputClosed event. It is still this
            // side's FIN, and goes on as one before the close.
            inputClosed = true
            _ = passFIN(to: peer)
        }
        if let peer {
            // After the FIN this side passed on, if any.
            if let finPassed { finPassed.whenComplete { _ in peer.close(promise: nil) } } else { peer.close(promise: nil) }
        }
        onClose?()
        context.fireChannelInactive()
    }

    /// Shuts the peer's output once everything this side read so far is written there; the
    /// returned future completes when that last write has.
    private func passFIN(to peer: Channel) -> EventLoopFuture<Void> {
        let finished = peer.writeAndFlush(ByteBuffer())
        finished.whenComplete { _ in peer.close(mode: .output, promise: nil) }
        finPassed = finished
        return finished
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        failed = true
        context.close(promise: nil)
    }
}

enum Tunnel {
    /// Turns an upgraded HTTP exchange into a raw byte tunnel: both pipelines lose their HTTP
    /// handlers and gain a SpliceHandler pointing at the other.
    static func splice(downstream: Channel, upstream: Channel, stats: ListenerStats, clusterStats: ClusterStats) {
        guard downstream.isActive, upstream.isActive else {
            downstream.close(promise: nil)
            upstream.close(promise: nil)
            return
        }
        let down = SpliceHandler(peer: upstream, bytesRead: stats.bytesReceived)
        let up = SpliceHandler(peer: downstream, bytesRead: clusterStats.bytesReceived)
        do {
            // Splice handlers go last, then the HTTP handlers are removed front to back of
            // the inbound path, so bytes a decoder had buffered flow on into the splice.
            let dp = downstream.pipeline.syncOperations
            try dp.addHandler(down)
            for h in [try dp.handler(type: HTTP1Connection.self) as RemovableChannelHandler,
                      try dp.handler(type: DownstreamErrorHandler.self),
                      try dp.handler(type: HTTPServerPipelineHandler.self),
                      try dp.handler(type: PipelineLimit.self)] {
                _ = dp.removeHandler(h)
            }
            if let headTimeout = try? dp.handler(type: RequestHeadTimeout.self) { _ = dp.removeHandler(headTimeout) }
            _ = dp.removeHandler(try dp.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self))
            _ = dp.removeHandler(try dp.handler(type: HTTPResponseEncoder.self))
            if let validator = try? dp.handler(type: NIOHTTPResponseHeadersValidator.self) { _ = dp.removeHandler(validator) }

            let up_ = upstream.pipeline.syncOperations
            try up_.addHandler(up)
            _ = up_.removeHandler(try up_.handler(type: UpstreamHandler.self))
            _ = up_.removeHandler(try up_.handler(type: ByteToMessageHandler<HTTPResponseDecoder>.self))
            _ = up_.removeHandler(try up_.handler(type: HTTPRequestEncoder.self))
            if let validator = try? up_.handler(type: NIOHTTPRequestHeadersValidator.self) { _ = up_.removeHandler(validator) }
            _ = downstream.setOption(.allowRemoteHalfClosure, value: true)
            _ = upstream.setOption(.allowRemoteHalfClosure, value: true)
            downstream.read()
            upstream.read()
        } catch {
            downstream.close(promise: nil)
            upstream.close(promise: nil)
        }
    }
}
