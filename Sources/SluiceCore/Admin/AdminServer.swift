import NIOCore
import NIOHTTP1
import SluiceConfig
import Synchronization

/// The admin API: `/ready` (200 while serving, 503 once draining), `/stats` (Prometheus text;
/// also at `/stats/prometheus`, Envoy's path), `/config_dump` (effective config as JSON),
/// `/plugins` (module hashes, versions, errors), and `POST /reload` (loopback admin only).
final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let server: SluiceServer
    private let allowMutations: Bool
    private var head: HTTPRequestHead?

    init(server: SluiceServer, allowMutations: Bool) {
        self.server = server
        self.allowMutations = allowMutations
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            if head.method == .POST && head.uri.hasPrefix("/reload") {
                guard allowMutations else {
                    send(context, head, (.forbidden, "text/plain", "reload is only allowed on a loopback admin address\n"))
                    return
                }
                let server = self.server
                let loop = context.eventLoop
                let promise = loop.makePromise(of: ReloadOutcome.self)
                promise.completeWithTask { await server.reload() }
                promise.futureResult.whenSuccess { outcome in
                    let w = JSONWriter()
                    w.object {
                        w.key("ok") { w.raw(outcome.ok ? "true" : "false") }
                        w.field("generation", outcome.generation)
                        w.key("errors") { w.array(outcome.errors) { w.value($0) } }
                    }
                    self.send(context, head, (outcome.ok ? .ok : .badRequest, "application/json", w.text + "\n"))
                }
                return
            }
            send(context, head, respond(head))
        }
    }

    private func send(_ context: ChannelHandlerContext, _ head: HTTPRequestHead, _ response: (HTTPResponseStatus, String, String)) {
            let (status, type, body) = response
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: type)
            headers.add(name: "content-length", value: String(body.utf8.count))
            if !head.isKeepAlive { headers.add(name: "connection", value: "close") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
            let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
            if !head.isKeepAlive { done.whenComplete { _ in context.close(promise: nil) } }
    }

    private func respond(_ head: HTTPRequestHead) -> (HTTPResponseStatus, String, String) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        guard head.method == .GET || head.method == .HEAD else {
            return (.methodNotAllowed, "text/plain", "method not allowed\n")
        }
        switch path {
        case "/ready":
            return server.isDraining ? (.serviceUnavailable, "text/plain", "DRAINING\n") : (.ok, "text/plain", "LIVE\n")
        case "/stats", "/stats/prometheus", "/metrics":
            return (.ok, "text/plain; version=0.0.4", server.prometheusText())
        case "/config_dump":
            return (.ok, "application/json", server.config.jsonDump() + "\n")
        case "/plugins":
            return (.ok, "application/json", server.pluginsJSON() + "\n")
        case "/":
            return (.ok, "text/plain", "sluice admin: /ready /stats /config_dump /plugins, POST /reload\n")
        default:
            return (.notFound, "text/plain", "not found\n")
        }
    }
}
