import NIOCore
import NIOHTTP1
import NIOHTTP2
import ProxyWasm

/// How a downstream connection on an HTTP listener becomes HTTP: TLS first if the listener
/// terminates it (SNI, handshake, ALPN), then HTTP/1.1 or HTTP/2, chosen by ALPN, by the
/// listener's codec, or (codec `auto` without ALPN) by whether the first bytes are HTTP/2's
/// connection preface, as Envoy's AUTO codec decides.
struct HTTPConnectionSetup {
    let listener: ListenerRuntime
    let slot: LoopSlot

    func configure(_ channel: Channel) throws {
        guard let tls = listener.tls else {
            try startHTTP(on: channel, alpn: nil, tls: nil)
            return
        }
        // The handshake is bounded like a request head: a client that opens a connection and
        // stalls mid-handshake is cut at the same deadline.
        let headers = listener.config.requestHeadersTimeout
        let timeout = headers > .zero ? headers.timeAmount : .seconds(10)
        let handshake = TLSHandshakeHandler(tls: tls, listener: listener, timeout: timeout) { channel, alpn, details in
            try self.startHTTP(on: channel, alpn: alpn, tls: details)
        }
        try TLSHandshakeHandler.install(on: channel, handler: handshake)
    }

    private func startHTTP(on channel: Channel, alpn: String?, tls: TLSDetails?) throws {
        // Network filters see the plaintext bytes, before the codec, as Envoy's network
        // filters before its http_connection_manager.
        _ = try NetworkFilterHandler.install(on: channel, listener: listener, worker: slot.worker)
        switch (alpn, listener.config.codec) {
        case ("h2", _), (nil, .http2): try configureHTTP2(channel, tls: tls)
        case ("http/1.1", _), (_, .http1): try configureHTTP1(channel, tls: tls)
        case (_, .auto), (_, .http2):
            try channel.pipeline.syncOperations.addHandler(HTTP2PrefaceSniffer(timeout: listener.config.idleTimeout.timeAmount) { channel, isHTTP2 in
                if isHTTP2 { try self.configureHTTP2(channel, tls: tls) } else { try self.configureHTTP1(channel, tls: tls) }
            })
        }
    }

    private func configureHTTP1(_ channel: Channel, tls: TLSDetails?) throws {
        let sync = channel.pipeline.syncOperations
        let config = listener.config
        let accessLog = slot.worker.accessLog
        var headTimeout: RequestHeadTimeout?
        if config.requestHeadersTimeout > .zero {
            // In front of the HTTP decoder (and behind TLS): it watches plaintext bytes arrive.
            headTimeout = RequestHeadTimeout(timeout: config.requestHeadersTimeout.timeAmount, stats: listener.stats, accessLog: accessLog, listener: config.name)
            try sync.addHandler(headTimeout!)
        }
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderListSize = config.maxRequestHeadersBytes
        limits.maxHeaderFieldSize = config.maxRequestHeadersBytes
        // An (empty) upgrade configuration makes the request decoder keep bytes that follow
        // an upgrade request, which the tunnel then forwards.
        let upgrade: NIOHTTPServerUpgradeConfiguration = (upgraders: [], completionHandler: { _ in })
        try sync.configureHTTPServerPipeline(
            withPipeliningAssistance: true, withServerUpgrade: upgrade, withErrorHandling: false,
            withOutboundHeaderValidation: true, withEncoderConfiguration: .init(), withDecoderLimitConfiguration: limits)
        let pipelineCounters = PipelineCounters()
        try sync.addHandler(PipelineLimit(limit: config.maxPipelinedRequests, stats: listener.stats, counters: pipelineCounters),
                            position: .before(try sync.handler(type: HTTPServerPipelineHandler.self)))
        try sync.addHandler(DownstreamErrorHandler(stats: listener.stats, accessLog: accessLog, listener: config.name))
        try sync.addHandler(HTTP1Connection(listener: listener, slot: slot, tls: tls, headTimeout: headTimeout, pipeline: pipelineCounters))
    }

    private func configureHTTP2(_ channel: Channel, tls: TLSDetails?) throws {
        let options = listener.config.http2
        var connection = NIOHTTP2Handler.ConnectionConfiguration()
        connection.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: options.maxConcurrentStreams),
            HTTP2Setting(parameter: .initialWindowSize, value: options.initialStreamWindowSize),
            HTTP2Setting(parameter: .maxFrameSize, value: options.maxFrameSize),
            // The header block is bounded as on HTTP/1.1 (max_request_headers_kb); HPACK's
            // decoder stops at it, so a small block expanding to a huge one is refused.
            HTTP2Setting(parameter: .maxHeaderListSize, value: listener.config.maxRequestHeadersBytes),
        ]
        connection.targetWindowSize = options.initialConnectionWindowSize
        var stream = NIOHTTP2Handler.StreamConfiguration()
        stream.targetWindowSize = options.initialStreamWindowSize
        // A response body is buffered per stream up to this before the upstream is paused.
        stream.outboundBufferSizeHighWatermark = 64 * 1024
        stream.outboundBufferSizeLowWatermark = 32 * 1024
        let connectionHandler = HTTP2Connection(listener: listener, slot: slot, tls: tls)
        // Between the socket (or TLS) and NIOHTTP2's handler, which is added after it.
        try channel.pipeline.syncOperations.addHandler(HTTP2ConnectionErrorWatcher())
        // Streams are created on the connection's loop; the pipeline (and with it this
        // closure) goes when the connection closes.
        let bound = NIOLoopBound(connectionHandler, eventLoop: channel.eventLoop)
        _ = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
            mode: .server, connectionConfiguration: connection, streamConfiguration: stream
        ) { streamChannel in
            streamChannel.eventLoop.makeCompletedFuture {
                let id = try streamChannel.syncOptions!.getOption(HTTP2StreamChannelOptions.streamID)
                guard let handler = bound.value.makeStream(id: id) else {
                    throw ChannelError.ioOnClosedChannel
                }
                try streamChannel.pipeline.syncOperations.addHandler(handler)
            }
        }
        try channel.pipeline.syncOperations.addHandler(connectionHandler)
    }
}

/// On a connection that may speak either version (Envoy's AUTO codec without ALPN): HTTP/2
/// if the first bytes are its connection preface, HTTP/1.1 at the first byte that is not.
/// Holds what it read, configures the pipeline, then passes the bytes on and leaves.
final class HTTP2PrefaceSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    private var buffered: ByteBuffer?
    private let decided: (Channel, Bool) throws -> Void
    /// A client that sends nothing, or stops inside the preface, is closed after the idle timeout.
    private let timeout: TimeAmount
    private var timer: Scheduled<Void>?

    init(timeout: TimeAmount, decided: @escaping (Channel, Bool) throws -> Void) {
        self.timeout = timeout
        self.decided = decided
    }

    func handlerAdded(context: ChannelHandlerContext) {
        timer = context.eventLoop.scheduleTask(in: timeout) { [weak context] in context?.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if var held = buffered {
            held.writeBuffer(&bytes)
            bytes = held
        }
        let seen = bytes.readableBytesView
        let compared = min(seen.count, Self.preface.count)
        let matches = seen.prefix(compared).elementsEqual(Self.preface.prefix(compared))
        guard !matches || compared == Self.preface.count else {
            buffered = bytes  // a prefix of the preface so far: wait for more
            return
        }
        buffered = nil
        do {
            try decided(context.channel, matches)
        } catch {
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(wrapInboundOut(bytes))
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
