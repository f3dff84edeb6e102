import NIOCore
import NIOPosix
import NIOHTTP1
import NIOHTTP2
import ProxyWasm

/// The client behind proxy_grpc_call and proxy_grpc_stream: one HTTP/2 stream per callout on
/// the cluster endpoint's multiplexed connection (NIOHTTP2's HTTP/1 codec per stream), gRPC's
/// length-prefixed messages over it, and what happens reported as Envoy's gRPC client does:
/// failures before a response become UNAVAILABLE with Envoy's local-reply message, a reset
/// after the response began becomes INTERNAL.
// @unchecked Sendable: confined to the worker's event loop (the stream's, as the
// connection's pool lives on the worker's loop).
final class GrpcCallout: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = Never
    typealias OutboundOut = HTTPClientRequestPart

    /// What the VM hears, in order; `close` ends it (a unary success ends with `message`).
    enum Event {
        case initialMetadata(HeaderMap)
        case message([UInt8])
        case trailingMetadata(HeaderMap)
        case close(status: UInt32, message: String)
    }

    enum Phase {
        /// Waiting for the stream (and maybe the connection) to open; what the filter sends
        /// meanwhile waits here.
        case opening(pending: [(HTTPClientRequestPart, bytes: Int)])
        case open(ChannelHandlerContext)
        case finished
    }

    enum Kind { case call, stream }

    static let maxMessageBytes = 16 << 20
    /// Stream messages written but not yet taken by the peer, at most.
    static let maxUnsentBytes = 16 << 20

    let kind: Kind
    let request: GrpcCalloutRequest
    private let deliver: (Event) -> Void
    private var phase = Phase.opening(pending: [])
    private var responseHead: HTTPResponseHead?
    private var received = ByteBuffer()
    /// A call's reply message, once it came.
    private var reply: [UInt8]?
    private var timer: Scheduled<Void>?
    private var unsentBytes = 0

    init(kind: Kind, request: GrpcCalloutRequest, deliver: @escaping (Event) -> Void) {
        self.kind = kind
        self.request = request
        self.deliver = deliver
    }

    /// Opens the stream on `pool`'s HTTP/2 connection and sends the request headers (and a
    /// call's message).
    func start(on pool: EndpointPool, httpProtocol: HTTP2FramePayloadToHTTP1ClientCodec.HTTPProtocol, eventLoop: EventLoop) {
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/\(request.service)/\(request.method)")
        head.headers.add(name: "host", value: request.authority)
        head.headers.add(name: "content-type", value: "application/grpc")
        head.headers.add(name: "te", value: "trailers")
        for (name, value) in request.initialMetadata { head.headers.add(name: name, value: value) }
        // The deadline travels with the call, as Envoy sends it, so the server can give up
        // too; Sluice's own timer below still ends the call.
        if request.timeoutMs > 0 { head.headers.add(name: "grpc-timeout", value: Self.grpcTimeout(milliseconds: request.timeoutMs)) }
        enqueue(.head(head))
        if let message = request.message {
            enqueue(.body(.byteBuffer(Self.frame(message))))
            enqueue(.end(nil))
        }
        if request.timeoutMs > 0 {
            timer = eventLoop.assumeIsolatedUnsafeUnchecked().scheduleTask(in: .milliseconds(Int64(request.timeoutMs))) { [weak self] in
                self?.fail(status: 14, message: Self.envoyMessage("upstream request timeout", details: "response_timeout"))
            }
        }
        pool.openHTTP2Stream { [self] stream in
            try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ClientCodec(httpProtocol: httpProtocol))
            try stream.pipeline.syncOperations.addHandler(self)
        }.whenFailure { [weak self] error in
            self?.fail(status: 14, message: Self.connectFailureMessage(error))
        }
    }

    /// A gRPC message on the wire: compressed-flag 0, big-endian length, the bytes.
    static func frame(_ message: [UInt8]) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(5 + message.count)
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(UInt32(message.count))
        buffer.writeBytes(message)
        return buffer
    }

    /// A stream's next message, or only its end (message nil). Messages the peer has not
    /// taken yet (HTTP/2 flow control) are bounded: past `maxUnsentBytes` the callout ends
    /// with RESOURCE_EXHAUSTED rather than buffering without limit.
    func send(_ message: [UInt8]?, endStream: Bool) {
        if let message {
            unsentBytes += message.count + 5
            guard unsentBytes <= Self.maxUnsentBytes else {
                fail(status: 8, message: Self.envoyMessage("", details: "more than \(Self.maxUnsentBytes) bytes of messages not yet sent"))
                return
            }
            enqueue(.body(.byteBuffer(Self.frame(message))), bytes: message.count + 5)
        }
        if endStream { enqueue(.end(nil)) }
    }

    /// The filter cancelled: the stream is reset, nothing more is delivered.
    func cancel() {
        let context = openContext
        phase = .finished
        timer?.cancel()
        context?.close(promise: nil)
    }

    private var openContext: ChannelHandlerContext? {
        if case .open(let context) = phase { return context }
        return nil
    }

    /// Writes a part, or keeps it until the stream is open. `bytes` of a message count as
    /// unsent until the write completes.
    private func enqueue(_ part: HTTPClientRequestPart, bytes: Int = 0) {
        switch phase {
        case .opening(var pending):
            pending.append((part, bytes))
            phase = .opening(pending: pending)
        case .open(let context):
            write(part, bytes: bytes, context: context)
            context.flush()
        case .finished:
            break
        }
    }

    private func write(_ part: HTTPClientRequestPart, bytes: Int, context: ChannelHandlerContext) {
        let written = context.write(wrapOutboundOut(part))
        if bytes > 0 { written.whenComplete { [self] _ in unsentBytes -= bytes } }
    }

    // MARK: channel events

    func handlerAdded(context: ChannelHandlerContext) {
        guard case .opening(let pending) = phase else {
            context.close(promise: nil)  // cancelled while opening
            return
        }
        phase = .open(context)
        for (part, bytes) in pending { write(part, bytes: bytes, context: context) }
        context.flush()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .open = phase else { return }
        switch unwrapInboundIn(data) {
        case .head(let head):
            responseHead = head
            // A trailers-only response (status in the headers) says everything at its end.
            if kind == .stream, head.status == .ok, head.headers["grpc-status"].isEmpty {
                deliver(.initialMetadata(Self.metadata(head)))
            }
        case .body(var buffer):
            received.writeBuffer(&buffer)
            readMessages(context: context)
        case .end(let trailers):
            finish(trailers: trailers)
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .open = phase {
            if responseHead == nil {
                fail(status: 14, message: Self.envoyMessage("upstream connect error or disconnect/reset before headers. reset reason: connection termination",
                                                            details: "upstream_reset_before_response_started{connection_termination}"))
            } else {
                // As Envoy's client: the stream hears empty trailing metadata, then INTERNAL.
                if kind == .stream { deliver(.trailingMetadata(HeaderMap())) }
                fail(status: 13, message: Self.envoyMessage("", details: "upstream_reset_after_response_started{connection_termination}"))
            }
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    private func readMessages(context: ChannelHandlerContext) {
        while received.readableBytes >= 5 {
            let compressed = received.getInteger(at: received.readerIndex, as: UInt8.self)!
            let length = Int(received.getInteger(at: received.readerIndex + 1, as: UInt32.self)!)
            guard compressed == 0, length <= Self.maxMessageBytes else {
                fail(status: 13, message: compressed != 0 ? "compressed messages are not supported" : "message larger than \(Self.maxMessageBytes) bytes")
                context.close(promise: nil)
                return
            }
            guard received.readableBytes >= 5 + length else { return }
            received.moveReaderIndex(forwardBy: 5)
            let message = received.readBytes(length: length)!
            if kind == .stream {
                deliver(.message(message))
            } else {
                // A unary reply is one message; of a server sending more, the last one counts,
                // as in Envoy's client (and only one is ever kept).
                reply = message
            }
        }
        received.discardReadBytes()
    }

    private func finish(trailers: HTTPHeaders?) {
        guard let head = responseHead else { return }
        let trailersOnly = trailers == nil || trailers!.isEmpty
        let source = trailersOnly ? head.headers : trailers!
        var status: UInt32
        let message = Self.envoyMessage(source["grpc-message"].first.map(Self.percentDecoded) ?? "", details: "via_upstream")
        if head.status != .ok {
            status = Self.grpcStatus(httpStatus: Int(head.status.code))
        } else if let text = source["grpc-status"].first, let code = UInt32(text) {
            status = code
        } else {
            status = 2  // UNKNOWN: no status at all
        }
        if kind == .stream {
            if trailersOnly { deliver(.initialMetadata(HeaderMap())) }
            var map = HeaderMap()
            if trailersOnly { map = Self.metadata(head) } else { for (n, v) in source { map.add(n.lowercased(), v) } }
            deliver(.trailingMetadata(map))
        } else if status == 0 {
            guard let reply else {
                end(.close(status: 13, message: Self.envoyMessage("", details: "via_upstream")))
                return
            }
            end(.message(reply))
            return
        }
        end(.close(status: status, message: message))
    }

    private func fail(status: UInt32, message: String) {
        guard !isFinished else { return }
        let context = openContext
        end(.close(status: status, message: message))
        context?.close(promise: nil)
    }

    private var isFinished: Bool {
        if case .finished = phase { return true }
        return false
    }

    private func end(_ event: Event) {
        guard !isFinished else { return }
        phase = .finished
        timer?.cancel()
        deliver(event)
    }

    /// gRPC's timeout header: at most 8 digits and a unit.
    static func grpcTimeout(milliseconds: UInt32) -> String {
        milliseconds <= 99_999_999 ? "\(milliseconds)m" : "\(milliseconds / 1000)S"
    }

    /// The status message as Envoy's gRPC client reports it: the message, then the response
    /// code details in braces (the details alone when there is no message).
    static func envoyMessage(_ message: String, details: String) -> String {
        message.isEmpty ? details : "\(message){\(details)}"
    }

    /// Why the connection for a callout failed, in Envoy's words.
    static func connectFailureMessage(_ error: Error) -> String {
        let prefix = "upstream connect error or disconnect/reset before headers. reset reason: "
        func errno(_ error: Error) -> Int32? {
            if let io = error as? IOError { return io.errnoCode }
            if let connection = error as? NIOConnectionError {
                return connection.connectionErrors.lazy.compactMap { errno($0.error) }.first
            }
            return nil
        }
        if let error = error as? ChannelError, case .connectTimeout = error {
            return envoyMessage(prefix + "connection timeout", details: "upstream_reset_before_response_started{connection_timeout}")
        }
        if errno(error) == ECONNREFUSED {
            return envoyMessage(prefix + "remote connection failure",
                                details: "upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}")
        }
        return envoyMessage(prefix + "remote connection failure", details: "upstream_reset_before_response_started{remote_connection_failure}")
    }

    static func metadata(_ head: HTTPResponseHead) -> HeaderMap {
        var map = HeaderMap([(":status", String(head.status.code))])
        for (name, value) in head.headers { map.add(name.lowercased(), value) }
        return map
    }

    /// Envoy's mapping of an HTTP status to a gRPC one (grpc/status.h's table).
    static func grpcStatus(httpStatus: Int) -> UInt32 {
        switch httpStatus {
        case 400: return 13
        case 401: return 16
        case 403: return 7
        case 404: return 12
        case 429, 502, 503, 504: return 14
        default: return 2
        }
    }

    /// grpc-message is percent-encoded on the wire.
    static func percentDecoded(_ text: String) -> String {
        guard text.contains("%") else { return text }
        var bytes: [UInt8] = []
        var utf8 = Array(text.utf8)[...]
        while let b = utf8.popFirst() {
            if b == UInt8(ascii: "%"), utf8.count >= 2, let v = UInt8(String(decoding: utf8.prefix(2), as: UTF8.self), radix: 16) {
                bytes.append(v)
                utf8 = utf8.dropFirst(2)
            } else {
                bytes.append(b)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
