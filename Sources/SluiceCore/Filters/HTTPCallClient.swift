import NIOCore
import NIOHTTP1
import NIOPosix
import ProxyWasm

/// The client behind proxy_http_call: one request on its own connection, the whole
/// response collected (up to 16 MiB), then handed back on the caller's event loop.
enum HTTPCallClient {
    struct Target {
        var address: SocketAddress?
        var host: String
        var port: Int
        var connectTimeout: Duration
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    typealias Response = (headers: HeaderMap, body: [UInt8], trailers: HeaderMap)

    static let maxResponseBytes = 16 << 20

    static func send(on loop: EventLoop, to target: Target, headers: [(String, String)], body: [UInt8], trailers: [(String, String)],
                     timeout: TimeAmount?, completion: @escaping (Result<Response, Failure>) -> Void) {
        let promise = loop.makePromise(of: Response.self)
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")
        for (name, value) in headers {
            switch name.lowercased() {
            case ":method": head.method = HTTPMethod(rawValue: value)
            case ":path": head.uri = value
            case ":authority": head.headers.replaceOrAdd(name: "host", value: value)
            case ":scheme": break
            default: head.headers.add(name: name, value: value)
            }
        }
        if !body.isEmpty || head.method == .POST || head.method == .PUT { head.headers.replaceOrAdd(name: "content-length", value: String(body.count)) }
        head.headers.replaceOrAdd(name: "connection", value: "close")
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(target.connectTimeout.timeAmount)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(CalloutHandler(head: head, body: body, trailers: trailers, promise: promise))
                }
            }
        let connecting = target.address.map { bootstrap.connect(to: $0) } ?? bootstrap.connect(host: target.host, port: target.port)
        connecting.whenComplete { result in
            switch result {
            case .failure(let error): promise.fail(Failure(description: "connect failed: \(error)"))
            case .success(let channel):
                if let timeout {
                    let timer = loop.scheduleTask(in: timeout) { promise.fail(Failure(description: "timeout")) }
                    promise.futureResult.whenComplete { _ in timer.cancel() }
                }
                promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
            }
        }
        promise.futureResult.whenComplete { result in
            completion(result.mapError { $0 as? Failure ?? Failure(description: "\($0)") })
        }
    }
}

private final class CalloutHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart
    let head: HTTPRequestHead
    let body: [UInt8]
    let trailers: [(String, String)]
    let promise: EventLoopPromise<HTTPCallClient.Response>
    var responseHeaders = HeaderMap()
    var responseBody: [UInt8] = []

    init(head: HTTPRequestHead, body: [UInt8], trailers: [(String, String)], promise: EventLoopPromise<HTTPCallClient.Response>) {
        self.head = head
        self.body = body
        self.trailers = trailers
        self.promise = promise
    }

    func channelActive(context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if !body.isEmpty { context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.end(trailers.isEmpty ? nil : HTTPHeaders(trailers))), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            var map = HeaderMap([(":status", String(h.status.code))])
            for (name, value) in h.headers { map.add(name, value) }
            responseHeaders = map
        case .body(let b):
            responseBody.append(contentsOf: b.readableBytesView)
            if responseBody.count > HTTPCallClient.maxResponseBytes {
                promise.fail(HTTPCallClient.Failure(description: "response too large"))
                context.close(promise: nil)
            }
        case .end(let t):
            var trailerMap = HeaderMap()
            for (name, value) in t ?? [:] { trailerMap.add(name, value) }
            promise.succeed((responseHeaders, responseBody, trailerMap))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(HTTPCallClient.Failure(description: "reset"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        promise.fail(HTTPCallClient.Failure(description: "\(error)"))
        context.close(promise: nil)
    }
}
