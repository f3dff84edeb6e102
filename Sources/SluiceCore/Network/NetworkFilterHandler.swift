import NIOCore
import ProxyWasm

/// The network (TCP) Proxy-Wasm filters of one downstream connection: a handler at the front
/// of the connection's pipeline (behind TLS), so it sees the client's bytes before whatever
/// terminates them (the TCP proxy, or the HTTP codec on an HTTP listener) and the bytes
/// written back before they reach the socket.
///
/// Iteration follows Envoy's network filter manager, which filters were written against:
/// - Client bytes gather in one read buffer. Each read runs the filters from the first; a
///   filter that answers StopIteration leaves the buffer where it is, and the next read shows
///   every filter up to it the whole buffer again (as Envoy does). Past the last filter the
///   buffer goes to the terminal. `proxy_continue_stream(Downstream)` runs the filters after
///   the one that asked.
/// - `proxy_on_new_connection` runs on each filter as iteration first reaches it; a stop there
///   holds the terminal: the TCP proxy neither connects nor reads until the filter continues
///   (on an HTTP listener the codec's reads bring data callbacks, which can move on).
/// - Bytes towards the client run through the filters in reverse order. A stop keeps them
///   (Envoy cannot resume this direction: continue answers Unimplemented); the next upstream
///   bytes show the filter everything kept.
/// - Held bytes are bounded by the smallest `buffer_limit_kb` of the filters: above it the
///   client stops being read until they drop; towards the client, the connection closes (no
///   continue exists for that direction, so a pause could never end).
/// - At the end, per filter in order: `proxy_on_downstream_connection_close` (Local when Sluice
///   closed or its FIN ended the connection, Remote when the client closed, reset or sent the
///   last FIN), then on_done, on_log, on_delete (Envoy's onCloseTCP).
///   An upstream FIN reaches filters as upstream data with end_of_stream, then
///   `proxy_on_upstream_connection_close` (Unknown), as in Envoy.
final class NetworkFilterHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    final class Slot {
        let plugin: PluginWorker
        let vm: PluginVM
        var contextID: UInt32?
        /// proxy_on_new_connection has run (Envoy's `initialized_`).
        var started = false
        /// fail_open after a failure: bytes pass this filter untouched.
        var bypassed = false
        /// Held strongly here: the VM keeps only a weak reference.
        var actions: NetworkConnectionActions?
        init(plugin: PluginWorker, vm: PluginVM) {
            self.plugin = plugin
            self.vm = vm
        }
    }

    /// The connection's phases.
    enum Phase {
        /// Filters run; the terminal has not been started (no filter has let the connection
        /// through yet).
        case filtering
        /// The terminal is started: what passes the filters reaches it.
        case passing
        /// Closed: the close callbacks have run.
        case closed
    }

    private let slots: [Slot]
    let data: NetworkConnectionData
    private var phase = Phase.filtering
    private var context: ChannelHandlerContext?

    /// Client bytes not yet past the filters, and whether the client's FIN came after them.
    private var downstream = ByteBuffer()
    private var downstreamEnded = false
    private var downstreamEndPassed = false
    /// The client's FIN came after ours.
    private var clientEndedLast = false
    /// A read the terminal asked for while the held bytes were above the limit.
    private var readWaiting = false

    /// Bytes towards the client not yet past the filters, and the writes they came in.
    private var upstream = ByteBuffer()
    private var upstreamPromises: [EventLoopPromise<Void>] = []
    private var upstreamEnded = false
    private var upstreamEndPassed = false
    private var upstreamClosePromise: EventLoopPromise<Void>?

    /// Sluice closed the connection (a filter, the proxy, an idle timeout); else the client did.
    private var closedLocally = false
    /// The socket failed (the client reset it): the close is the client's, whoever then
    /// closed the channel.
    private var failed = false

    /// Installed after a TLS handshake: the handlers behind this one came to an active
    /// channel and get no channelActive.
    private var addedToActiveChannel = false
    /// Bounds a connection held in `filtering`, where nothing behind runs its timeouts.
    private var idleTimer: Scheduled<Void>?
    private let idleTimeout: Duration

    init(plugins: [PluginWorker], info: StreamInfo, idleTimeout: Duration) {
        self.idleTimeout = idleTimeout
        self.slots = plugins.compactMap { p in p.activeVM.map { Slot(plugin: p, vm: $0) } }
        self.data = NetworkConnectionData(info: info)
        for slot in slots { slot.plugin.streamStarted() }
    }

    /// The smallest buffer limit of the filters: held bytes above it stop reads.
    private var bufferLimit: Int { slots.map { $0.plugin.runtime.config.bufferLimitBytes }.min() ?? Int.max }

    // MARK: downstream (client → terminal)

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive {
            // Installed after a TLS handshake: the handlers behind this one are added to an
            // active channel too, and expect no channelActive. The connection starts once
            // they are in place.
            addedToActiveChannel = true
            context.eventLoop.assumeIsolatedUnsafeUnchecked().execute { [self] in start(context) }
        }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context)
    }

    /// Reads are left to what follows: the TCP proxy reads nothing until its upstream is
    /// connected, so a filter that stops at proxy_on_new_connection holds the connection
    /// until it continues (as Envoy's tcp_proxy disables reading until then); the HTTP codec
    /// reads on, and its bytes reach the filters.
    private func start(_ context: ChannelHandlerContext) {
        runDownstream(context, from: 0)
        if case .filtering = phase {
            // Nothing behind this handler has started, so none of its timeouts run: a
            // connection the filters hold is bounded by the listener's idle timeout here.
            idleTimer = context.eventLoop.assumeIsolatedUnsafeUnchecked().scheduleTask(in: idleTimeout.timeAmount) { [self] in
                if case .filtering = phase { closeAfterFlush(context) }
            }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .closed = phase { return }
        takeHeldDownstreamEdits(context)
        Self.append(unwrapInboundIn(data), to: &downstream)
        runDownstream(context, from: 0)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            downstreamEnded = true
            clientEndedLast = upstreamEndPassed
            runDownstream(context, from: 0)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func read(context: ChannelHandlerContext) {
        if downstream.readableBytes > bufferLimit {
            readWaiting = true
            return
        }
        context.read()
    }

    /// Edits a filter made to the client's bytes it holds from outside a data callback (a
    /// tick, a callout's answer) become the bytes, before anything else touches them.
    private func takeHeldDownstreamEdits(_ context: ChannelHandlerContext) {
        if let edited = data.downstreamData?.edited { downstream = context.channel.allocator.buffer(bytes: edited) }
        data.downstreamData = nil
    }

    /// The same for the bytes towards the client.
    private func takeHeldUpstreamEdits(_ context: ChannelHandlerContext) {
        if let edited = data.upstreamData?.edited { upstream = context.channel.allocator.buffer(bytes: edited) }
        data.upstreamData = nil
    }

    /// Runs the client's bytes through filters `start...`, then to the terminal.
    private func runDownstream(_ context: ChannelHandlerContext, from start: Int) {
        takeHeldDownstreamEdits(context)
        for i in start..<max(start, slots.count) {
            if case .closed = phase { return }
            let slot = slots[i]
            if slot.bypassed { continue }
            guard let id = contextID(slot) else {
                if stopAfterFailure(slot, context) { return }
                continue
            }
            if !slot.started {
                slot.started = true
                let action = slot.vm.onNewConnection(id)
                if stopAfterFailure(slot, context) { return }
                if action == .stopIteration || isClosing { return }
            }
            if downstream.readableBytes > 0 || downstreamEnded {
                data.downstreamData = StreamBody(downstream)
                let action = slot.vm.onDownstreamData(id, size: downstream.readableBytes, endOfStream: downstreamEnded)
                if let edited = data.downstreamData?.edited { downstream = context.channel.allocator.buffer(bytes: edited) }
                data.downstreamData = nil
                if stopAfterFailure(slot, context) { return }
                if action == .stopIteration || isClosing {
                    // Held: still the filter's to read and edit until it continues.
                    data.downstreamData = StreamBody(downstream)
                    checkDownstreamPressure(context)
                    return
                }
            }
        }
        pass(context)
    }

    /// Everything past the last filter goes to the terminal, which starts on first reach.
    private func pass(_ context: ChannelHandlerContext) {
        if case .filtering = phase {
            phase = .passing
            idleTimer?.cancel()
            if !addedToActiveChannel { context.fireChannelActive() }
        }
        guard case .passing = phase else { return }
        if downstream.readableBytes > 0 {
            let bytes = downstream
            downstream = ByteBuffer()
            context.fireChannelRead(wrapInboundOut(bytes))
            context.fireChannelReadComplete()
        }
        if downstreamEnded && !downstreamEndPassed {
            downstreamEndPassed = true
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        }
        checkDownstreamPressure(context)
    }

    /// Adds bytes to what is held: the common case, nothing held, takes the buffer as it is
    /// (no copy).
    private static func append(_ bytes: ByteBuffer, to held: inout ByteBuffer) {
        if held.readableBytes == 0 {
            held = bytes
        } else {
            var more = bytes
            held.writeBuffer(&more)
        }
    }

    private func checkDownstreamPressure(_ context: ChannelHandlerContext) {
        if readWaiting && downstream.readableBytes <= bufferLimit {
            readWaiting = false
            context.read()
        }
    }

    // MARK: upstream (terminal → client)

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard !slots.isEmpty, case .passing = phase else {
            context.write(data, promise: promise)
            return
        }
        switch unwrapOutboundIn(data) {
        case .byteBuffer(let bytes):
            if bytes.readableBytes == 0 {
                // An empty write (the TCP proxy's marker before it passes a FIN) goes straight
                // on: its completion must not wait for bytes a filter holds, or the FIN that
                // follows it never comes (the end reaches the filters through close(.output)).
                context.write(data, promise: promise)
                return
            }
            takeHeldUpstreamEdits(context)
            Self.append(bytes, to: &upstream)
            if let promise { upstreamPromises.append(promise) }
            runUpstream(context)
        case .fileRegion:
            context.write(data, promise: promise)
        }
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        switch mode {
        case .output where !slots.isEmpty && !upstreamEnded:
            // The upstream's FIN, passed on by the TCP proxy.
            upstreamEnded = true
            upstreamClosePromise = promise
            runUpstream(context)
        case .all:
            // After both FINs the close is the connection's natural end, not Sluice's choice.
            if !(downstreamEnded && upstreamEndPassed) { closedLocally = true }
            context.close(mode: mode, promise: promise)
        default:
            context.close(mode: mode, promise: promise)
        }
    }

    /// Runs the bytes towards the client through the filters, last to first.
    private func runUpstream(_ context: ChannelHandlerContext) {
        guard case .passing = phase else { return }
        takeHeldUpstreamEdits(context)
        for slot in slots.reversed() where !slot.bypassed {
            guard case .passing = phase else { return }
            guard let id = contextID(slot) else {
                if stopAfterFailure(slot, context) { return }
                continue
            }
            guard upstream.readableBytes > 0 || upstreamEnded else { continue }
            data.upstreamData = StreamBody(upstream)
            let action = slot.vm.onUpstreamData(id, size: upstream.readableBytes, endOfStream: upstreamEnded)
            if let edited = data.upstreamData?.edited { upstream = context.channel.allocator.buffer(bytes: edited) }
            data.upstreamData = nil
            if upstreamEnded && !slot.vm.failed { slot.vm.onUpstreamConnectionClose(id, peer: .unknown) }
            if stopAfterFailure(slot, context) { return }
            if action == .stopIteration || isClosing {
                data.upstreamData = StreamBody(upstream)
                checkUpstreamPressure()
                return
            }
        }
        let promises = upstreamPromises
        upstreamPromises = []
        if upstream.readableBytes > 0 {
            let bytes = upstream
            upstream = ByteBuffer()
            let written = context.write(wrapOutboundOut(.byteBuffer(bytes)))
            for promise in promises { written.cascade(to: promise) }
            context.flush()
        } else {
            for promise in promises { promise.succeed() }
        }
        if upstreamEnded && !upstreamEndPassed {
            upstreamEndPassed = true
            let promise = upstreamClosePromise
            upstreamClosePromise = nil
            context.close(mode: .output, promise: promise)
        }
        checkUpstreamPressure()
    }

    /// Above the limit the connection is closed (what already passed is flushed). Pausing the
    /// upstream would not help: a filter can release held upstream bytes only from its next
    /// upstream data callback (continue answers Unimplemented for this direction, as in
    /// Envoy), which a paused upstream never brings; Envoy's watermark leaves such a
    /// connection stuck. On an HTTP listener the codec cannot be paused from here either.
    private func checkUpstreamPressure() {
        guard upstream.readableBytes > bufferLimit, let context else { return }
        upstream.clear()
        for promise in upstreamPromises { promise.fail(ChannelError.ioOnClosedChannel) }
        upstreamPromises = []
        closeAfterFlush(context)
    }

    // MARK: the end

    func channelInactive(context: ChannelHandlerContext) {
        if upstreamEndPassed && !downstreamEnded && !failed && !closedLocally, case .passing = phase {
            // Our FIN went out first and the client then ended cleanly: NIO closes such a
            // socket without an inputClosed event. It is still the client's FIN, and the
            // filters see it as one.
            downstreamEnded = true
            clientEndedLast = true
            runDownstream(context, from: 0)
        }
        // Both directions ended: the socket closes itself, and Envoy counts the close as the
        // side's whose FIN came last (ours: Local; the client's: Remote).
        let bothEnded = downstreamEnded && upstreamEndPassed
        let local = closedLocally || (bothEnded && !clientEndedLast)
        finish(peer: !failed && local ? .local : .remote)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        failed = true
        context.fireErrorCaught(error)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        finish(peer: .local)
    }

    /// The close callbacks, once, filter by filter in order: the close, then on_done, on_log,
    /// on_delete. Writes still held are failed.
    private func finish(peer: PeerType) {
        if case .closed = phase { return }
        phase = .closed
        data.info.endTime = .now
        for slot in slots {
            if let id = slot.contextID, !slot.vm.failed {
                slot.vm.onDownstreamConnectionClose(id, peer: peer)
                slot.vm.finishConnection(id)
            }
            slot.plugin.streamEnded()
        }
        for promise in upstreamPromises { promise.fail(ChannelError.ioOnClosedChannel) }
        upstreamPromises = []
        upstreamClosePromise?.fail(ChannelError.ioOnClosedChannel)
        upstreamClosePromise = nil
        idleTimer?.cancel()
    }

    private var isClosing: Bool {
        if case .closed = phase { return true }
        return closedLocally
    }

    // MARK: contexts and failures

    private func contextID(_ slot: Slot) -> UInt32? {
        if let id = slot.contextID { return id }
        guard !slot.vm.failed, let index = slots.firstIndex(where: { $0 === slot }) else { return nil }
        let actions = NetworkSlotActions(handler: self, index: index)
        slot.actions = actions
        let id = slot.vm.createConnection(data: data, actions: actions, root: slot.plugin.rootID)
        slot.contextID = id
        return slot.vm.failed ? nil : id
    }

    /// After a callback: if the VM failed, the plugin's policy. fail_open lets bytes pass the
    /// filter from now on; fail_closed and reload close the connection (Envoy's failStream on
    /// a network context). True when iteration must stop.
    private func stopAfterFailure(_ slot: Slot, _ context: ChannelHandlerContext) -> Bool {
        guard slot.vm.failed else { return false }
        switch slot.plugin.failurePolicy {
        case .failOpen:
            slot.plugin.runtime.stats.failedOpenStreams.increment()
            slot.bypassed = true
            return false
        case .failClosed, .reload:
            slot.plugin.runtime.stats.failedClosedStreams.increment()
            closeAfterFlush(context)
            return true
        }
    }

    /// Envoy's FlushWrite close: what was written goes out first.
    private func closeAfterFlush(_ context: ChannelHandlerContext) {
        guard !closedLocally else { return }
        closedLocally = true
        context.writeAndFlush(wrapOutboundOut(.byteBuffer(context.channel.allocator.buffer(capacity: 0)))).whenComplete { _ in
            context.close(promise: nil)
        }
    }

    // MARK: filter actions (after the callback that asked, never inside it)

    /// proxy_continue_stream(Downstream) from filter `index`: the filters after it run.
    fileprivate func continueDownstream(after index: Int) {
        later { $0.runDownstream($1, from: index + 1) }
    }

    fileprivate func closeConnection() {
        later { handler, context in handler.closeAfterFlush(context) }
    }

    private func later(_ work: @escaping (NetworkFilterHandler, ChannelHandlerContext) -> Void) {
        guard let context else { return }
        context.eventLoop.assumeIsolatedUnsafeUnchecked().execute { [self] in
            if case .closed = phase { return }
            work(self, context)
        }
    }
}

/// One filter's actions on its connection.
private final class NetworkSlotActions: NetworkConnectionActions {
    weak var handler: NetworkFilterHandler?
    let index: Int

    init(handler: NetworkFilterHandler, index: Int) {
        self.handler = handler
        self.index = index
    }

    func continueDownstream() { handler?.continueDownstream(after: index) }
    func closeConnection(_ type: StreamType) { handler?.closeConnection() }
}

extension NetworkFilterHandler {
    struct RefusedByFailedFilter: Error {}

    /// Puts the listener's network filters at the current end of a new connection's pipeline
    /// (the front of what follows). Nil when the listener has none, or none is active.
    /// Throws when a filter whose VM failed has fail_closed: the connection is refused, as
    /// Envoy closes it.
    static func install(on channel: Channel, listener: ListenerRuntime, worker: Worker) throws -> NetworkFilterHandler? {
        switch worker.networkFilters(listener: listener.config) {
        case .failedClosed:
            throw RefusedByFailedFilter()
        case .chain(let plugins):
            guard !plugins.isEmpty else { return nil }
            let info = StreamInfo()
            info.connectionID = DownstreamConnectionInfo.nextID()
            info.sourceAddress = channel.remoteAddress?.ipAddress ?? ""
            info.sourcePort = channel.remoteAddress?.port ?? 0
            info.destinationAddress = channel.localAddress?.ipAddress ?? ""
            info.destinationPort = channel.localAddress?.port ?? 0
            info.protocolName = ""
            info.listenerName = listener.config.name
            info.listenerMetadata = listener.metadata
            if let cluster = listener.tcpCluster {
                info.clusterName = cluster.config.name
                info.clusterMetadata = cluster.metadata
            }
            let handler = NetworkFilterHandler(plugins: plugins, info: info, idleTimeout: listener.config.idleTimeout)
            try channel.pipeline.syncOperations.addHandler(handler)
            return handler
        }
    }

    /// The TCP proxy chose an endpoint: `upstream.address` names it from then on, connected
    /// or not, as in Envoy.
    func upstreamChosen(_ endpoint: Endpoint) {
        data.info.upstreamAddress = endpoint.address.host
        data.info.upstreamPort = endpoint.address.port
    }


}
