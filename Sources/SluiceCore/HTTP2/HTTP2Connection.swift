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
        info = DownstreamConnectionInfo(id: DownstreamConnectionInfo.id(of: context.pipeline), remote: channel.remoteAddress, local: channel.localAddress,
                                        clientAddress: channel.remoteAddress?.ipAddress ?? "-", tls: tls)
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
    func makeStream(id: HTTP2StreamID) -> HTTP2StreamHandler? {
        guard case .open = state else { return nil }
        if let current = slot.listeners[listener.config.name] {
            listener = current
        } else {
            goAway()
            return nil
        }
        openStreams += 1
        lastStreamID = max(lastStreamID, id)
        state = .open(idleSince: nil)
        listener.stats.http2Streams.increment()
        return HTTP2StreamHandler(listener: listener, worker: slot.worker, connection: info, owner: self)
    }

    /// A stream's channel closed (completed or reset).
    func streamClosed() {
        openStreams -= 1
        guard openStreams == 0 else { return }
        switch state {
        case .open: state = .open(idleSince: .now())
        case .goingAway: closeAfterLastFrames()
        case .closed: break
        }
    }

    /// The last stream's final frames may still be unflushed when its channel closes: a last
    /// GOAWAY goes after them, and the connection closes once that is written.
    private func closeAfterLastFrames() {
        let frame = HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: lastStreamID, errorCode: .noError, opaqueData: nil))
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(frame)).whenComplete { _ in channel.close(promise: nil) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case let closed as StreamClosedEvent:
            if let reason = closed.reason, reason != .noError { listener.stats.http2Resets.increment() }
        case is ChannelShouldQuiesceEvent:
            goAway()
            return
        default:
            break
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // NIOHTTP2 reports a stream error after its RST_STREAM (the connection carries on) and
        // a connection error after its GOAWAY (HTTP2ConnectionErrorWatcher closes the
        // connection once that is out). Any other error (TLS, the socket) ends it here.
        if error is NIOHTTP2Error {
            listener.stats.http2ProtocolErrors.increment()
            return
        }
        if case .closed = state {} else { state = .goingAway }
        context.close(promise: nil)
    }

    /// Graceful end: no stream after the last one seen is accepted; those in flight finish.
    private func goAway() {
        guard case .open = state else { return }
        state = .goingAway
        listener.stats.http2GoAways.increment()
        let frame = HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: lastStreamID, errorCode: .noError, opaqueData: nil))
        if openStreams == 0 {
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(frame)).whenComplete { _ in channel.close(promise: nil) }
        } else {
            context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
        }
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

/// Sits between NIOHTTP2's handler and the socket (or TLS) and reads the frame headers of
/// what NIOHTTP2 writes: a GOAWAY with an error code means NIOHTTP2 found a connection error
/// (a flood, a protocol violation) and will take nothing more, so the connection is closed
/// once that GOAWAY is flushed. Stream errors (RST_STREAM) leave the connection alone, and a
/// graceful GOAWAY (NO_ERROR) lets the streams in flight finish.
final class HTTP2ConnectionErrorWatcher: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    /// Bytes of the current frame's payload still to pass.
    private var payloadLeft = 0
    /// The frame header (9 bytes), then for a GOAWAY its first 8 payload bytes, as they arrive.
    private var header: [UInt8] = []
    private var readingGoAway = false
    private var closeAfterFlush = false

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .byteBuffer(let buffer) = unwrapOutboundIn(data) { scan(buffer.readableBytesView) }
        context.write(data, promise: promise)
    }

    func flush(context: ChannelHandlerContext) {
        context.flush()
        if closeAfterFlush {
            closeAfterFlush = false
            context.close(promise: nil)
        }
    }

    private func scan(_ bytes: ByteBufferView) {
        var index = bytes.startIndex
        while index < bytes.endIndex {
            if payloadLeft > 0 && !readingGoAway {
                let skip = min(payloadLeft, bytes.endIndex - index)
                payloadLeft -= skip
                index += skip
                continue
            }
            header.append(bytes[index])
            index += 1
            if readingGoAway {
                payloadLeft -= 1
                if header.count == 8 || payloadLeft == 0 {
                    // Last-Stream-ID (4 bytes), then the error code (4 bytes).
                    let code = header.count == 8 ? header[4...7].reduce(UInt32(0)) { $0 << 8 | UInt32($1) } : 0
                    if code != 0 { closeAfterFlush = true }
                    readingGoAway = false
                    header.removeAll(keepingCapacity: true)
                }
            } else if header.count == 9 {
                payloadLeft = Int(header[0]) << 16 | Int(header[1]) << 8 | Int(header[2])
                let isGoAway = header[3] == 0x7
                header.removeAll(keepingCapacity: true)
                readingGoAway = isGoAway && payloadLeft >= 8
            }
        }
    }
}
