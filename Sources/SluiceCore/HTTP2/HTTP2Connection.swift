import NIOCore
import NIOHTTP2
import ProxyWasm
import Synchronization

/// An HTTP/2 downstream connection, behind NIO's `NIOHTTP2Handler` (which owns framing, HPACK,
/// flow control and the flood defences): counts streams, hands each new stream its own
/// `HTTP2StreamHandler` on the current configuration generation, and ends the connection:
/// GOAWAY on drain, reload removal, idle timeout and max connection duration, then a close
/// once the streams in flight are done.
final class HTTP2Connection: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    enum State {
        /// Taking new streams; `idleSince` is set while none is open.
        case open(idleSince: NIODeadline?)
        /// GOAWAY sent: the streams in flight finish, then the connection closes.
        case goingAway
        case closed
    }

    private var state = State.open(idleSince: .now())
    private var listener: ListenerRuntime
    private let slot: LoopSlot
    private let tls: TLSDetails?
    private var info: DownstreamConnectionInfo!
    private var context: ChannelHandlerContext!
    private var openStreams = 0
    private var lastStreamID = HTTP2StreamID(0)
    private var timer: Scheduled<Void>?
    private let connectionStart = NIODeadline.now()

    init(listener: ListenerRuntime, slot: LoopSlot, tls: TLSDetails?) {
        self.listener = listener
        self.slot = slot
        self.tls = tls
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let channel = context.channel
        info = DownstreamConnectionInfo(id: DownstreamConnectionInfo.nextID(), remote: channel.remoteAddress, local: channel.localAddress,
                                        clientAddress: channel.remoteAddress?.ipAddress ?? "-", tls: tls, isHTTP2: true)
        listener.stats.connectionsTotal.increment()
        listener.stats.connectionsActive.increment()
        listener.stats.http2Connections.increment()
        scheduleCheck()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .closed = state {} else {
            state = .closed
            listener.stats.connectionsActive.decrement()
        }
        timer?.cancel()
        context.fireChannelInactive()
    }

    /// The handler for a stream the client opened, on the configuration generation current
    /// now (a reload since the connection opened applies to its new streams); nil once the
    /// connection is going away or its listener was removed.
    func makeStream() -> HTTP2StreamHandler? {
        guard case .open = state else { return nil }
        if let current = slot.listeners[listener.config.name] {
            listener = current
        } else {
            goAway()
            return nil
        }
        listener.stats.http2Streams.increment()
        return HTTP2StreamHandler(listener: listener, worker: slot.worker, connection: info)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case let created as NIOHTTP2StreamCreatedEvent:
            openStreams += 1
            lastStreamID = max(lastStreamID, created.streamID)
            if case .open = state { state = .open(idleSince: nil) }
        case let closed as StreamClosedEvent:
            openStreams -= 1
            if let reason = closed.reason, reason != .noError { listener.stats.http2Resets.increment() }
            if openStreams == 0 {
                switch state {
                case .open: state = .open(idleSince: .now())
                case .goingAway: context.close(promise: nil)
                case .closed: break
                }
            }
        case is ChannelShouldQuiesceEvent:
            goAway()
            return
        default:
            break
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // NIOHTTP2 raises connection errors (floods, protocol violations, a peer that broke
        // the rules) after it has sent its GOAWAY; a TLS or socket error ends the connection
        // too. Either way it is over.
        if error is NIOHTTP2Error { listener.stats.http2ProtocolErrors.increment() }
        if case .closed = state {} else { state = .goingAway }
        context.close(promise: nil)
    }

    /// Graceful end: no stream after the last one seen is accepted; those in flight finish.
    private func goAway() {
        guard case .open = state else { return }
        state = .goingAway
        listener.stats.http2GoAways.increment()
        let frame = HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: lastStreamID, errorCode: .noError, opaqueData: nil))
        context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
        if openStreams == 0 { context.close(promise: nil) }
    }

    // MARK: deadlines

    private func scheduleCheck() {
        let config = listener.config
        var delay = config.idleTimeout.timeAmount
        if config.maxConnectionDuration > .zero { delay = min(delay, config.maxConnectionDuration.timeAmount) }
        timer = context.eventLoop.scheduleTask(in: max(.nanoseconds(delay.nanoseconds / 4), .milliseconds(50))) { [weak self] in
            self?.checkDeadlines()
        }
    }

    /// Idle (no stream open) for the idle timeout, or older than max_connection_duration:
    /// GOAWAY, as Envoy's connection manager does.
    private func checkDeadlines() {
        guard case .open(let idleSince) = state, context.channel.isActive else { return }
        let config = listener.config
        let now = NIODeadline.now()
        if let idleSince, now - idleSince >= config.idleTimeout.timeAmount {
            goAway()
            return
        }
        if config.maxConnectionDuration > .zero && now - connectionStart >= config.maxConnectionDuration.timeAmount {
            goAway()
            return
        }
        scheduleCheck()
    }
}
