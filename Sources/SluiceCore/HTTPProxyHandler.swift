import Foundation
import NIOCore
import NIOHTTP1
import ProxyWasm
import SluiceConfig
import Synchronization

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1), plus any named in `Connection`.
let hopByHopHeaders: Set<String> = ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"]

func stripHopByHop(_ headers: inout HTTPHeaders, keepUpgrade: Bool = false) {
    // One pass to see whether anything must go: most requests carry no hop-by-hop header but
    // `connection`, and removing by name costs a scan per name.
    var named: [String] = []
    var present = false
    for (name, value) in headers {
        let n = name.utf8.count
        guard n == 2 || n == 7 || n == 10 || n == 16 || n == 17 else { continue }
        let lower = name.lowercased()
        guard hopByHopHeaders.contains(lower) else { continue }
        present = true
        if lower == "connection" {
            for token in value.split(separator: ",") {
                let t = token.trimmingCharacters(in: .whitespaces).lowercased()
                if !t.isEmpty && !connectionNominationProtected.contains(t) && t != "close" && t != "keep-alive" { named.append(t) }
            }
        }
    }
    guard present else { return }
    for name in named { headers.remove(name: name) }
    for name in hopByHopHeaders {
        if keepUpgrade && (name == "upgrade" || name == "connection") { continue }
        headers.remove(name: name)
    }
}

/// One request/response exchange on a downstream connection.
final class Exchange {
    let head: HTTPRequestHead
    let route: CompiledRoute
    let target: ClusterRoute
    let cluster: ClusterRuntime
    let state: ClusterLoopState
    let start = Date()
    let requestID: String
    let upstreamHead: HTTPRequestHead
    let isUpgrade: Bool

    /// Parts received before an upstream connection is ready, in order.
    var pending: [HTTPServerRequestPart] = []
    /// A copy of the body while it is small, so the request can be replayed on a retry.
    var replay: [ByteBuffer]? = []
    var replayBytes = 0
    var requestComplete = false
    var requestSent = false
    var upstream: UpstreamConnection?
    var endpointIndex: Int?
    var attempts = 0
    var isRetry = false
    var responseStatus = 0
    var responseHeadSent = false
    var bytesReceived = 0
    var bytesSent = 0
    var timeout: Scheduled<Void>?
    /// Why Sluice ended this exchange itself, if it did.
    var flag: StreamFlag?
    var upstreamAddress = "-"
    /// The upstream agreed to an upgrade; the tunnel starts when its 101 is complete.
    var tunnelPending = false

    init(head: HTTPRequestHead, route: CompiledRoute, target: ClusterRoute, cluster: ClusterRuntime, state: ClusterLoopState, requestID: String, upstreamHead: HTTPRequestHead, isUpgrade: Bool) {
        self.head = head
        self.route = route
        self.target = target
        self.cluster = cluster
        self.state = state
        self.requestID = requestID
        self.upstreamHead = upstreamHead
        self.isUpgrade = isUpgrade
    }
}

/// The downstream side of an HTTP/1.1 listener: routes each request, drives one upstream
/// exchange at a time (NIO's pipelining handler serialises pipelined requests), and moves
/// bodies both ways with backpressure: neither side is read faster than the other can write.
final class HTTPProxyHandler: ChannelDuplexHandler, RemovableChannelHandler, UpstreamDelegate {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    static let replayLimit = 64 * 1024
    static let discardLimit = 1 << 20

    /// The configuration generation this connection's current request uses; refreshed from
    /// `slot` at each new request, so keep-alive connections follow reloads.
    var listener: ListenerRuntime
    var worker: Worker
    let slot: LoopSlot
    var context: ChannelHandlerContext!
    var exchange: Exchange?
    private var readPending = false
    /// From a request head until this handler is done with that stream (response written,
    /// request body read).
    private var streamOpen = false
    /// Parts of a pipelined request delivered while the previous stream was still open.
    private var deferredParts: [HTTPServerRequestPart] = []
    /// A response with `Connection: close` went out: nothing more is read or answered.
    private var closing = false
    /// Requests after the current one are refused: the client asked to close, or we are draining.
    var closeAfterResponse = false
    /// A local answer went out while the request body still arrives: drop the rest of it.
    var discardingBody = false
    private var discardedBytes = 0
    private var draining = false
    /// One timer per connection for every downstream timeout (idle, stream idle, request,
    /// connection duration), re-armed only when it fires: a task per request showed in profiles.
    private var connectionTimer: Scheduled<Void>?
    private var timerDeadline = NIODeadline.now()
    /// When the connection last became idle; nil while a request is in flight.
    private var idleSince: NIODeadline?
    /// When the current request's head arrived, and when bytes last moved for it either way.
    private var streamStart = NIODeadline.now()
    private var lastActivity = NIODeadline.now()
    private let connectionStart = NIODeadline.now()
    /// Told when heads arrive and streams end, so it knows when a head is being read.
    private let headTimeout: RequestHeadTimeout?
    /// Shared with PipelineLimit: streams finished here, and the last request it lets through.
    private let pipeline: PipelineCounters
    private var requestsStarted = 0
    var clientAddress = "-"
    /// Completes when the latest response's end has been written to the socket.
    var lastResponseEnd: EventLoopFuture<Void>?
    /// The Proxy-Wasm filters of the current request, when the listener has any.
    var chain: FilterChain?
    var streamData: HTTPStreamData?
    /// The request as received, for logs when a filter answers before routing.
    var chainHead: HTTPRequestHead?
    var chainRoute: CompiledRoute?
    var requestEndReceived = false
    var responseHeadWritten = false
    /// How the current request's body is framed (validated; re-applied upstream).
    var requestFraming: BodyFraming = .none
    var requestHeadersHadNoBody: Bool { !requestFraming.hasBody }
    /// How the body goes upstream when filters changed it; nil: as it came.
    var upstreamFraming: BodyFraming?
    private static let connectionIDs = Atomic<UInt64>(0)
    let connectionID: UInt64

    init(listener: ListenerRuntime, slot: LoopSlot, headTimeout: RequestHeadTimeout? = nil, pipeline: PipelineCounters = PipelineCounters()) {
        self.headTimeout = headTimeout
        self.pipeline = pipeline
        self.listener = listener
        self.worker = slot.worker
        self.slot = slot
        self.connectionID = Self.connectionIDs.add(1, ordering: .relaxed).newValue
    }

    // MARK: channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        clientAddress = context.channel.remoteAddress?.ipAddress ?? "-"
    }

    func channelActive(context: ChannelHandlerContext) {
        listener.stats.connectionsTotal.increment()
        listener.stats.connectionsActive.increment()
        armIdleTimer()
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        listener.stats.connectionsActive.decrement()
        connectionTimer?.cancel()
        connectionTimer = nil
        if let exchange {
            // The client went away mid-exchange: the upstream connection is in an unknown state.
            if exchange.responseStatus == 0 { exchange.flag = .downstreamReset }
            finish(exchange, reusable: false)
        }
        endFilters()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            draining = true
            closeAfterResponse = true
            if exchange == nil && !discardingBody { context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        // The last response said `Connection: close`: whatever the client pipelined after it
        // is not a request Sluice will answer.
        if closing { return }
        // NIO's pipelining handler hands over the next pipelined request from inside the write
        // that ends the current response, before this handler is done with the current
        // stream. It waits its turn here, and is replayed when the stream is over.
        if !deferredParts.isEmpty || (streamOpen && part.isHead) {
            deferredParts.append(part)
            return
        }
        if !part.isEnd { lastActivity = .now() }
        switch part {
        case .head(let head):
            streamOpen = true
            requestsStarted += 1
            if requestsStarted == pipeline.lastRequest { closeAfterResponse = true }
            idleSince = nil
            streamStart = lastActivity
            headTimeout?.headReceived()
            armStreamTimer()
            requestHead(head)
        case .body(let buffer):
            listener.stats.bytesReceived.increment(by: buffer.readableBytes)
            if discardingBody {
                discardedBytes += buffer.readableBytes
                if discardedBytes > Self.discardLimit { context.close(promise: nil) }
                return
            }
            if let chain {
                streamData?.info.requestBodyBytes += buffer.readableBytes
                chain.requestData(Array(buffer.readableBytesView), endOfStream: false)
                return
            }
            forwardRequestBody(buffer)
        case .end(let trailers):
            requestEndReceived = true
            if discardingBody {
                discardingBody = false
                afterExchange()
                return
            }
            if let chain {
                if let trailers {
                    chain.requestTrailers(HeaderMap(trailers.map { ($0.name.lowercased(), $0.value) }))
                } else if !requestHeadersHadNoBody {
                    chain.requestData([], endOfStream: true)
                }
                return
            }
            forwardRequestEnd(trailers)
        }
    }

    /// A request body chunk that passed the filters (if any) goes upstream.
    func forwardRequestBody(_ buffer: ByteBuffer) {
            guard let exchange else { return }
            exchange.bytesReceived += buffer.readableBytes
            if exchange.replay != nil {
                exchange.replayBytes += buffer.readableBytes
                if exchange.replayBytes > Self.replayLimit { exchange.replay = nil } else { exchange.replay!.append(buffer) }
            }
            if let upstream = exchange.upstream {
                upstream.channel.write(HTTPClientRequestPart.body(.byteBuffer(buffer)), promise: nil)
            } else {
                exchange.pending.append(.body(buffer))
            }
    }

    /// The end of the request (after the filters, if any).
    func forwardRequestEnd(_ trailers: HTTPHeaders?) {
            guard let exchange else { return }
            exchange.requestComplete = true
            if let upstream = exchange.upstream {
                sendRequestEnd(exchange, upstream, trailers)
            } else {
                exchange.pending.append(.end(trailers))
            }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        exchange?.upstream?.channel.flush()
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { exchange?.upstream?.handler.resumeReading() }
        context.fireChannelWritabilityChanged()
    }

    /// Backpressure on the request body: no more downstream reads while the upstream
    /// connection is not ready or cannot take more bytes.
    func read(context: ChannelHandlerContext) {
        if let exchange, !discardingBody, exchange.upstream.map({ !$0.channel.isWritable }) ?? !exchange.requestComplete {
            readPending = true
            return
        }
        context.read()
    }

    private func resumeDownstreamReads() {
        guard readPending else { return }
        readPending = false
        context.read()
    }

    // MARK: request start

    private func requestHead(_ head: HTTPRequestHead) {
        if slot.worker !== worker {
            // A reload happened since the last request on this connection.
            if let current = slot.listeners[listener.config.name] {
                listener = current
                worker = slot.worker
            } else {
                closeAfterResponse = true  // the listener was removed: finish this one and close
            }
        }
        listener.stats.requests.increment()
        requestFraming = .none
        upstreamFraming = nil
        requestEndReceived = false
        responseHeadWritten = false
        chain = nil
        streamData = nil
        let request: ValidatedRequest
        switch RequestValidation.validate(head) {
        case .success(let valid):
            request = valid
        case .failure(let refusal):
            refuse(head: head, refusal)
            return
        }
        let head = request.head
        requestFraming = request.framing
        if !head.isKeepAlive { closeAfterResponse = true }
        let route = listener.router.route(method: head.method, authority: request.authority, path: head.uri, headers: head.headers)
        if !listener.config.httpFilters.isEmpty {
            if startFilters(head: head, route: route) { return }
        }
        routeAndProxy(head: head, route: route, authority: request.authority)
    }

    /// After the filters (if any): answer directly, or proxy to the route's cluster.
    func routeAndProxy(head: HTTPRequestHead, route: CompiledRoute?, authority: String) {
        guard let route else {
            if let chain {
                markEnvoyFlags(.noRouteFound)
                chain.localReply(status: 404, body: "no route matched \(head.uri)\n", details: "route_not_found", startingAt: chain.slots.count - 1)
                return
            }
            respondLocally(head: head, route: nil, status: .notFound, body: "no route matched \(head.uri)\n", flag: .noRoute)
            return
        }
        if chain == nil { route.stats.requests.increment() }
        switch route.config.action {
        case .directResponse(let status, let body):
            if let chain {
                chain.localReply(status: status, body: body, details: "direct_response", startingAt: chain.slots.count - 1)
                return
            }
            respondLocally(head: head, route: route, status: HTTPResponseStatus(statusCode: status), body: body, flag: .directResponse)
        case .cluster(let target):
            guard let cluster = route.cluster else { return }
            startProxying(head: head, route: route, target: target, cluster: cluster, authority: authority)
        }
    }

    func startProxying(head: HTTPRequestHead, route: CompiledRoute, target: ClusterRoute, cluster: ClusterRuntime, authority: String) {
        var upstreamHead = HTTPRequestHead(version: .http1_1, method: head.method, uri: route.rewrite(path: head.uri))
        var headers = head.headers
        let connectionTokens = headers[canonicalForm: "connection"].map { $0.lowercased() }
        let isUpgrade = headers.contains(name: "upgrade") && connectionTokens.contains("upgrade")
        stripHopByHop(&headers, keepUpgrade: isUpgrade)
        if isUpgrade {
            headers.replaceOrAdd(name: "connection", value: "upgrade")
        }
        // Expect: 100-continue is answered here, as Envoy does: the upstream sees a plain request.
        var expectContinue = false
        if headers["expect"].contains(where: { $0.lowercased() == "100-continue" }) {
            headers.remove(name: "expect")
            expectContinue = true
        }
        if let host = target.hostRewrite { headers.replaceOrAdd(name: "host", value: host) }
        let xff = headers["x-forwarded-for"].joined(separator: ", ")
        headers.replaceOrAdd(name: "x-forwarded-for", value: xff.isEmpty ? clientAddress : "\(xff), \(clientAddress)")
        if !headers.contains(name: "x-forwarded-proto") { headers.add(name: "x-forwarded-proto", value: "http") }
        var requestID = headers.first(name: "x-request-id") ?? ""
        if requestID.isEmpty {
            requestID = RequestID.make()
            headers.replaceOrAdd(name: "x-request-id", value: requestID)
        }
        // Framing decided here, never inherited: exactly one validated Content-Length, or
        // chunked, whatever the method (the encoder adds nothing of its own).
        headers.remove(name: "content-length")
        headers.remove(name: "transfer-encoding")
        switch upstreamFraming ?? requestFraming {
        case .none: break
        case .contentLength(let length): headers.add(name: "content-length", value: String(length))
        case .chunked: headers.add(name: "transfer-encoding", value: "chunked")
        }
        upstreamHead.headers = headers

        let state = worker.state(for: cluster)
        let exchange = Exchange(head: head, route: route, target: target, cluster: cluster, state: state, requestID: requestID, upstreamHead: upstreamHead, isUpgrade: isUpgrade)
        self.exchange = exchange
        state.totalActiveRequests += 1
        if expectContinue {
            context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))), promise: nil)
        }
        attempt(exchange)
    }

    // MARK: upstream attempts

    private func attempt(_ exchange: Exchange) {
        let state = exchange.state
        guard let index = state.pick(avoid: exchange.endpointIndex) else {
            exchange.cluster.stats.noHealthyEndpoint.increment()
            fail(exchange, status: .serviceUnavailable, body: "no healthy upstream\n", flag: .noHealthyUpstream)
            return
        }
        exchange.attempts += 1
        exchange.endpointIndex = index
        let endpoint = exchange.cluster.endpoints[index]
        exchange.upstreamAddress = endpoint.address.description
        state.requestStarted(endpoint: index)
        exchange.cluster.stats.requests.increment()
        let pool = state.pools[index]
        pool.acquire(endpointIndex: index, maxConnections: exchange.cluster.config.maxConnections, totalOpen: state.connectionCount).whenComplete { result in
            guard self.exchange === exchange, exchange.upstream == nil else {
                // The exchange ended (client gone) while we were connecting.
                if case .success(let connection) = result { pool.release(connection) }
                state.requestFinished(endpoint: index)
                return
            }
            switch result {
            case .success(let connection):
                _ = endpoint.recordConnect(success: true, policy: exchange.cluster.config.outlierDetection, now: .now())
                self.attach(exchange, connection)
            case .failure(let error):
                state.requestFinished(endpoint: index)
                if error is EndpointPool.AcquireError {
                    self.fail(exchange, status: .serviceUnavailable, body: "upstream connection limit reached\n", flag: .upstreamOverflow)
                    return
                }
                exchange.cluster.stats.connectFailures.increment()
                if endpoint.recordConnect(success: false, policy: exchange.cluster.config.outlierDetection, now: .now()) {
                    exchange.cluster.stats.outlierEjections.increment()
                }
                if self.retry(exchange, on: .connectFailure) { return }
                self.fail(exchange, status: .badGateway, body: "upstream connect error\n", flag: .upstreamConnectFailure)
            }
        }
    }

    /// Starts another attempt if the route's policy and the cluster's retry budget allow it.
    private func retry(_ exchange: Exchange, on condition: RetryCondition) -> Bool {
        guard let policy = exchange.target.retry, policy.on.contains(condition),
              exchange.attempts <= policy.attempts, exchange.replay != nil,
              exchange.state.mayRetry(policy: policy) else { return false }
        exchange.cluster.stats.retries.increment()
        if !exchange.isRetry {
            exchange.isRetry = true
            exchange.state.activeRetries += 1
        }
        rebuildPending(exchange)
        attempt(exchange)
        return true
    }

    /// After a failed attempt the request is replayed from the copy of its body.
    private func rebuildPending(_ exchange: Exchange) {
        guard let replay = exchange.replay else { return }
        let queuedEnd = exchange.pending.first { if case .end = $0 { return true } else { return false } }
        exchange.pending = replay.map { .body($0) }
        if exchange.requestComplete { exchange.pending.append(queuedEnd ?? .end(nil)) }
        exchange.requestSent = false
    }

    private func attach(_ exchange: Exchange, _ connection: UpstreamConnection) {
        exchange.upstream = connection
        connection.handler.delegate = self
        var head = exchange.upstreamHead
        // An HTTP/1.0 request may come without Host; the upstream always gets one.
        if !head.headers.contains(name: "host") { head.headers.add(name: "host", value: exchange.upstreamAddress) }
        connection.channel.write(HTTPClientRequestPart.head(head), promise: nil)
        let pending = exchange.pending
        exchange.pending.removeAll()
        for part in pending {
            switch part {
            case .head: break
            case .body(let buffer): connection.channel.write(HTTPClientRequestPart.body(.byteBuffer(buffer)), promise: nil)
            case .end(let trailers):
                sendRequestEnd(exchange, connection, trailers)
                return
            }
        }
        connection.channel.flush()
        resumeDownstreamReads()
    }

    private func sendRequestEnd(_ exchange: Exchange, _ connection: UpstreamConnection, _ trailers: HTTPHeaders?) {
        exchange.requestSent = true
        connection.channel.writeAndFlush(HTTPClientRequestPart.end(trailers), promise: nil)
        // The route timeout runs from the moment the whole request is upstream until the
        // response head arrives (see docs/CONFIG.md).
        if exchange.timeout == nil && exchange.responseStatus == 0 && !exchange.isUpgrade {
            let timeout = exchange.target.timeout.timeAmount
            exchange.timeout = context.eventLoop.scheduleTask(in: timeout) { [weak self, weak exchange] in
                guard let self, let exchange, self.exchange === exchange, exchange.responseStatus == 0 else { return }
                exchange.cluster.stats.timeouts.increment()
                self.fail(exchange, status: .gatewayTimeout, body: "upstream request timeout\n", flag: .upstreamTimeout)
            }
        }
    }

    // MARK: UpstreamDelegate

    var downstreamWritable: Bool { context.channel.isWritable }

    func upstreamRead(_ part: HTTPClientResponsePart) {
        guard let exchange, let connection = exchange.upstream else { return }
        if case .end = part {} else { lastActivity = .now() }
        switch part {
        case .head(var head):
            if let error = Self.responseProblem(head, isUpgrade: exchange.isUpgrade) {
                exchange.cluster.stats.record(error)
                fail(exchange, status: .badGateway, body: "upstream protocol error\n", flag: .upstreamProtocolError)
                return
            }
            let status = Int(head.status.code)
            let policy = exchange.cluster.config.outlierDetection
            if exchange.cluster.endpoints[connection.endpointIndex].recordResponse(status: status, policy: policy, now: .now()) {
                exchange.cluster.stats.outlierEjections.increment()
            }
            exchange.cluster.stats.responses.record(status: status)
            if status >= 500 && exchange.requestComplete && exchange.target.retry?.on.contains(.serverError) == true {
                let checkRetry = exchange.target.retry!
                if exchange.attempts <= checkRetry.attempts && exchange.replay != nil && exchange.state.mayRetry(policy: checkRetry) {
                    detachUpstream(exchange, reusable: false)
                    _ = retry(exchange, on: .serverError)
                    return
                }
            }
            exchange.timeout?.cancel()
            exchange.timeout = nil
            exchange.responseStatus = status
            if exchange.isUpgrade && head.status == .switchingProtocols {
                // The decoder delivers `.end` right after this head; the tunnel starts there.
                var response = head
                response.version = exchange.head.version
                exchange.responseHeadSent = true
                exchange.tunnelPending = true
                exchange.flag = .upgrade
                context.write(wrapOutboundOut(.head(response)), promise: nil)
                lastResponseEnd = context.writeAndFlush(wrapOutboundOut(.end(nil)))
                return
            }
            // A refused upgrade leaves the request parser in upgrade mode: the connection ends here.
            if exchange.isUpgrade { closeAfterResponse = true }
            stripHopByHop(&head.headers)
            head.version = exchange.head.version
            frameDownstreamResponse(&head, method: exchange.head.method)
            if let chain {
                exchange.responseHeadSent = true  // from the upstream's side: no retry any more
                var map = HeaderMap([(":status", String(head.status.code))])
                for (name, value) in head.headers { map.add(name, value) }
                streamData?.responseHeaders = map
                streamData?.info.responseCode = status
                streamData?.info.responseCodeDetails = "via_upstream"
                let noBody = exchange.head.method == .HEAD || status == 204 || status == 304 || head.headers.first(name: "content-length") == "0"
                chain.responseHeaders(endOfStream: noBody)
                return
            }
            if closeAfterResponse || !exchange.requestComplete { head.headers.replaceOrAdd(name: "connection", value: "close") }
            exchange.responseHeadSent = true
            responseHeadWritten = true
            context.write(wrapOutboundOut(.head(head)), promise: nil)
        case .body(let buffer):
            guard exchange.responseHeadSent else { return }
            if let chain {
                streamData?.info.responseBodyBytes += buffer.readableBytes
                chain.responseData(Array(buffer.readableBytesView), endOfStream: false)
                return
            }
            exchange.bytesSent += buffer.readableBytes
            listener.stats.bytesSent.increment(by: buffer.readableBytes)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        case .end(let trailers):
            guard exchange.responseHeadSent else { return }
            if exchange.tunnelPending {
                startTunnel(exchange, connection)
                return
            }
            let reusable = exchange.requestSent
            if let chain {
                // The upstream is done: its connection goes back to the pool now, even if
                // a filter still holds the response.
                detachUpstream(exchange, reusable: reusable)
                if let trailers {
                    chain.responseTrailers(HeaderMap(trailers.map { ($0.name.lowercased(), $0.value) }))
                } else {
                    chain.responseData([], endOfStream: true)
                }
                return
            }
            if !exchange.requestComplete { discardRestOfRequest() }
            lastResponseEnd = context.writeAndFlush(wrapOutboundOut(.end(trailers)))
            finish(exchange, reusable: reusable)
        }
    }

    /// A response head Sluice will not forward: an upgrade nobody asked for, a transfer coding
    /// it does not decode (forwarding the body as identity would relabel it), or a status
    /// outside 1xx–5xx. Ambiguous framing (CL with TE, bad lengths) the decoder refuses first.
    static func responseProblem(_ head: HTTPResponseHead, isUpgrade: Bool) -> UpstreamProtocolError? {
        let code = head.status.code
        if code == 101 && !isUpgrade { return .unsolicitedUpgrade }
        if code < 100 || code > 599 { return .malformedResponse }
        let te = head.headers["transfer-encoding"]
        if !te.isEmpty && RequestValidation.transferCodings(te) != ["chunked"] { return .unsupportedTransferCoding }
        return nil
    }

    /// How the response reaches this client: an HTTP/1.0 client cannot take chunked, so a
    /// response without a length is delimited by closing the connection; one that will stay
    /// open says so (HTTP/1.0 closes by default).
    func frameDownstreamResponse(_ head: inout HTTPResponseHead, method: HTTPMethod) {
        let code = head.status.code
        let bodyless = method == .HEAD || code == 204 || code == 304 || code < 200
        if head.version.minor == 0 && head.version.major == 1 {
            if !bodyless && !head.headers.contains(name: "content-length") { closeAfterResponse = true }
            if !closeAfterResponse { head.headers.replaceOrAdd(name: "connection", value: "keep-alive") }
        }
        if closeAfterResponse { head.headers.replaceOrAdd(name: "connection", value: "close") }
    }

    func upstreamReadComplete() {
        context.flush()
    }

    func upstreamClosed(_ connection: UpstreamConnection) {
        guard let exchange, exchange.upstream === connection else { return }
        exchange.upstream = nil
        exchange.state.requestFinished(endpoint: connection.endpointIndex)
        if exchange.responseHeadSent {
            // Mid-response reset: HTTP/1.1 can only tell the client by closing.
            exchange.flag = .upstreamResetAfterHeaders
            finish(exchange, reusable: false)
            context.close(promise: nil)
            return
        }
        if exchange.responseStatus == 0 && connection.reused && exchange.replay != nil && connection.handler.protocolError == nil
            && exchange.head.method.isIdempotent {
            // A pooled connection the upstream closed while idle: replay on a fresh one.
            rebuildPending(exchange)
            exchange.attempts -= 1
            attempt(exchange)
            return
        }
        if connection.handler.protocolError != nil {
            fail(exchange, status: .badGateway, body: "upstream protocol error\n", flag: .upstreamProtocolError)
            return
        }
        if retry(exchange, on: .connectFailure) { return }
        fail(exchange, status: .badGateway, body: "upstream connection reset before response\n", flag: .upstreamReset)
    }

    func upstreamWritabilityChanged(writable: Bool) {
        if writable { resumeDownstreamReads() }
    }

    // MARK: tunnels (HTTP upgrade, e.g. WebSocket)

    /// Hands both connections over to a byte tunnel once the 101 is written. Deferred to the
    /// next event-loop tick so that no HTTP decoder is still mid-call when it is removed.
    private func startTunnel(_ exchange: Exchange, _ connection: UpstreamConnection) {
        let downstream = context.channel
        let upstream = connection.channel
        connection.handler.delegate = nil
        connection.handler.onClose = nil
        exchange.upstream = nil
        exchange.state.requestFinished(endpoint: connection.endpointIndex)
        exchange.state.totalActiveRequests -= 1
        exchange.cluster.stats.connectionsActive.decrement()  // the tunnel no longer counts as pooled
        logAndCount(exchange)
        self.exchange = nil
        // The HTTP stream ends here for the filters (on_log, on_done, on_delete); the tunnel
        // that follows carries bytes they do not see.
        endFilters()
        let written = lastResponseEnd ?? context.eventLoop.makeSucceededVoidFuture()
        let listenerStats = listener.stats
        context.eventLoop.execute {
            written.whenComplete { _ in
                Tunnel.splice(downstream: downstream, upstream: upstream, stats: listenerStats, clusterStats: exchange.cluster.stats)
            }
        }
    }

    // MARK: finishing

    func detachUpstream(_ exchange: Exchange, reusable: Bool) {
        guard let connection = exchange.upstream else { return }
        exchange.upstream = nil
        exchange.state.requestFinished(endpoint: connection.endpointIndex)
        let pool = exchange.state.pools[connection.endpointIndex]
        if reusable { pool.release(connection) } else { pool.discard(connection) }
    }

    /// Answers with an error if nothing was sent yet; otherwise the client learns by a close.
    private func fail(_ exchange: Exchange, status: HTTPResponseStatus, body: String, flag: StreamFlag) {
        exchange.flag = flag  // finish() marks it for the filters
        detachUpstream(exchange, reusable: false)
        if exchange.responseHeadSent {
            finish(exchange, reusable: false)
            context.close(promise: nil)
            return
        }
        exchange.responseStatus = Int(status.code)
        if let chain {
            // Errors are answers too: response filters see them, as in Envoy.
            chain.localReply(status: Int(status.code), body: body, details: flag.label, startingAt: chain.slots.count - 1)
            return
        }
        exchange.bytesSent += body.utf8.count
        if !exchange.requestComplete { discardRestOfRequest() }
        writeLocalResponse(version: exchange.head.version, status: status, body: body, requestID: exchange.requestID)
        finish(exchange, reusable: false)
    }

    func finish(_ exchange: Exchange, reusable: Bool) {
        guard self.exchange === exchange else { return }
        if let flag = exchange.flag { markEnvoyFlags(flag.envoyFlags) }
        exchange.timeout?.cancel()
        detachUpstream(exchange, reusable: reusable && !exchange.isUpgrade)
        if exchange.isRetry { exchange.state.activeRetries -= 1 }
        exchange.state.totalActiveRequests -= 1
        logAndCount(exchange)
        self.exchange = nil
        endFilters()
        if context.channel.isActive { afterExchange() }
    }

    func logAndCount(_ exchange: Exchange) {
        logStream(head: exchange.head, route: exchange.route, status: exchange.responseStatus, start: exchange.start,
                  bytesReceived: exchange.bytesReceived, bytesSent: exchange.bytesSent, upstream: exchange.upstreamAddress,
                  requestID: exchange.requestID, flags: exchange.flag.label, responseFlags: exchange.flag?.envoyFlags ?? [])
    }

    /// The one place a finished stream is counted (responses by status class, listener and
    /// route) and written to the access log, whichever way it ended: proxied, answered by
    /// Sluice, or answered by a filter.
    func logStream(head: HTTPRequestHead, route: CompiledRoute?, status: Int, start: Date, bytesReceived: Int, bytesSent: Int,
                   upstream: String, requestID: String, flags: String, responseFlags: ResponseFlags) {
        if status > 0 {
            listener.stats.responses.record(status: status)
            route?.stats.responses.record(status: status)
        }
        guard worker.accessLog.enabled else { return }
        worker.accessLog.record(AccessLogEntry(
            start: start, durationMs: Date().timeIntervalSince(start) * 1000, clientAddress: clientAddress,
            method: head.method.rawValue, path: head.uri, version: "HTTP/\(head.version.major).\(head.version.minor)",
            authority: head.headers.first(name: "host") ?? "-", status: status, bytesReceived: bytesReceived, bytesSent: bytesSent,
            listener: listener.config.name, route: route?.config.name ?? "-", upstream: upstream, requestID: requestID,
            userAgent: head.headers.first(name: "user-agent") ?? "-", flags: flags, responseFlags: responseFlags.shortString))
    }

    /// The response is complete but the request body is still arriving: read and drop it so
    /// the connection stays usable (closing with unread bytes would reset the connection and
    /// could destroy the response in flight), up to a limit past which we close instead.
    func discardRestOfRequest() {
        discardingBody = true
        discardedBytes = 0
    }

    /// Between requests: close if asked to, otherwise wait (idle timer) for the next one.
    func afterExchange() {
        // The pipelining cap was reached after the last allowed request had started.
        if let last = pipeline.lastRequest, requestsStarted >= last { closeAfterResponse = true }
        if closeAfterResponse && !discardingBody {
            closing = true
            deferredParts = []
            endStream()
            // Close only once the last response has been written out, so it is not lost.
            let channel = context.channel
            if let written = lastResponseEnd {
                written.whenComplete { _ in channel.close(promise: nil) }
            } else {
                channel.close(promise: nil)
            }
            return
        }
        armIdleTimer()
        resumeDownstreamReads()
        guard !discardingBody else { return }  // the stream's body is still being read
        endStream()
        if !deferredParts.isEmpty {
            let parts = deferredParts
            deferredParts = []
            for part in parts { channelRead(context: context, data: NIOAny(part)) }
        }
    }

    /// The handler is done with the current stream (once per stream).
    private func endStream() {
        guard streamOpen else { return }
        streamOpen = false
        pipeline.finished += 1
    }

    /// Marks the connection idle from now and makes sure the connection timer runs.
    private func armIdleTimer() {
        idleSince = .now()
        headTimeout?.streamEnded()
        var deadline = idleSince! + listener.config.idleTimeout.timeAmount
        if listener.config.maxConnectionDuration > .zero && !closeAfterResponse {
            deadline = min(deadline, connectionStart + listener.config.maxConnectionDuration.timeAmount)
        }
        ensureTimer(by: deadline)
    }

    /// A request started: its deadlines must be checked in time. Re-arms only when the timer
    /// would fire too late, which in steady keep-alive traffic is never.
    private func armStreamTimer() {
        let config = listener.config
        var first = config.idleTimeout
        if config.streamIdleTimeout > .zero { first = min(first, config.streamIdleTimeout) }
        if config.requestTimeout > .zero { first = min(first, config.requestTimeout) }
        ensureTimer(by: streamStart + first.timeAmount)
    }

    private func ensureTimer(by deadline: NIODeadline) {
        if connectionTimer != nil && timerDeadline <= deadline { return }
        connectionTimer?.cancel()
        scheduleTimer(in: deadline - .now())
    }

    private func scheduleTimer(in delay: TimeAmount) {
        let delay = max(delay, .milliseconds(1))
        timerDeadline = .now() + delay
        connectionTimer = context.eventLoop.scheduleTask(in: delay) { [weak self] in
            guard let self else { return }
            self.connectionTimer = nil
            self.checkTimeouts()
        }
    }

    /// Every downstream deadline, checked when the connection timer fires; the timer is then
    /// re-armed for the nearest one still ahead.
    private func checkTimeouts() {
        guard context.channel.isActive else { return }
        let config = listener.config
        let now = NIODeadline.now()
        var next = config.idleTimeout.timeAmount
        if config.maxConnectionDuration > .zero && !closeAfterResponse {
            let left = config.maxConnectionDuration.timeAmount - (now - connectionStart)
            if left <= .zero {
                // Like a drain: the request in flight (if any) finishes, then the connection closes.
                closeAfterResponse = true
                if idleSince != nil && !discardingBody {
                    context.close(promise: nil)
                    return
                }
            } else {
                next = min(next, left)
            }
        }
        if let since = idleSince {
            let left = config.idleTimeout.timeAmount - (now - since)
            if left <= .zero {
                context.close(promise: nil)
                return
            }
            next = min(next, left)
        } else {
            if config.streamIdleTimeout > .zero {
                let left = config.streamIdleTimeout.timeAmount - (now - lastActivity)
                if left <= .zero {
                    streamTimedOut(.streamIdleTimeout)
                    return
                }
                next = min(next, left)
            }
            if config.requestTimeout > .zero && !requestEndReceived {
                let left = config.requestTimeout.timeAmount - (now - streamStart)
                if left <= .zero {
                    streamTimedOut(.requestTimeout)
                    return
                }
                next = min(next, left)
            }
        }
        scheduleTimer(in: next)
    }

    /// A stream ran out of time. Before any response byte: 408 while the request is still
    /// arriving, 504 while Sluice waits for the upstream; after: the connection is cut. The
    /// upstream connection, mid-exchange, is closed rather than pooled; the downstream
    /// connection closes too, since its request stream cannot be trusted to be in step.
    private func streamTimedOut(_ reason: DownstreamRefusal) {
        listener.stats.record(reason)
        closeAfterResponse = true
        let requestArrived = exchange?.requestComplete ?? requestEndReceived
        let status: HTTPResponseStatus = requestArrived ? .gatewayTimeout : .requestTimeout
        if let exchange, !responseHeadWritten {
            fail(exchange, status: status, body: reason.message, flag: .refused(reason))
        } else if let chain, !responseHeadWritten {
            markEnvoyFlags(StreamFlag.refused(reason).envoyFlags)
            chain.localReply(status: Int(status.code), body: reason.message, details: reason.label, startingAt: chain.slots.count - 1)
        } else if let exchange {
            exchange.flag = .refused(reason)
            finish(exchange, reusable: false)
        }
        // Whatever was written, the connection ends once it is out; a stalled body is not
        // waited for.
        discardingBody = false
        let channel = context.channel
        if let written = lastResponseEnd {
            written.whenComplete { _ in channel.close(promise: nil) }
        } else {
            channel.close(promise: nil)
        }
    }

    // MARK: local responses

    /// Envoy's response flags for the filters' `response.flags` property (read in on_log).
    func markEnvoyFlags(_ flags: ResponseFlags) {
        guard let info = streamData?.info else { return }
        info.responseFlags |= Int(flags.rawValue)
    }

    /// A request Sluice will not process: counted by reason, answered, and the connection
    /// closed once the answer is out (the rest of the stream cannot be trusted).
    func refuse(head: HTTPRequestHead, _ refusal: DownstreamRefusal) {
        listener.stats.record(refusal)
        closeAfterResponse = true
        respondLocally(head: head, route: nil, status: refusal.status, body: refusal.message, flag: .refused(refusal), closing: true)
    }

    /// `closing`: the connection ends after this answer, without reading what follows.
    func respondLocally(head: HTTPRequestHead, route: CompiledRoute?, status: HTTPResponseStatus, body: String, flag: StreamFlag, closing: Bool = false) {
        let requestID = head.headers.first(name: "x-request-id") ?? RequestID.make()
        // If a body may still be on its way, read and drop it so the connection stays usable;
        // a client waiting on 100-continue will not send it, so close instead.
        if requestFraming.hasBody && head.headers["expect"].contains(where: { $0.lowercased() == "100-continue" }) {
            closeAfterResponse = true
        }
        // Until `.end` (which follows at once when there is no body), request bytes are dropped.
        discardRestOfRequest()
        writeLocalResponse(version: head.version, status: status, body: body, requestID: requestID)
        logStream(head: head, route: route, status: Int(status.code), start: Date(), bytesReceived: 0, bytesSent: body.utf8.count,
                  upstream: "-", requestID: requestID, flags: flag.label, responseFlags: flag.envoyFlags)
        if closing {
            discardingBody = false
            afterExchange()
        }
    }

    func writeLocalResponse(version: HTTPVersion, status: HTTPResponseStatus, body: String, requestID: String) {
        var headers = HTTPHeaders()
        if !body.isEmpty { headers.add(name: "content-type", value: "text/plain") }
        headers.add(name: "content-length", value: String(body.utf8.count))
        headers.add(name: "x-request-id", value: requestID)
        if closeAfterResponse {
            headers.add(name: "connection", value: "close")
        } else if version == .http1_0 {
            headers.add(name: "connection", value: "keep-alive")
        }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: status, headers: headers))), promise: nil)
        if !body.isEmpty {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        }
        lastResponseEnd = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        listener.stats.bytesSent.increment(by: body.utf8.count)
    }
}

extension HTTPServerRequestPart {
    var isHead: Bool {
        if case .head = self { return true }
        return false
    }

    var isEnd: Bool {
        if case .end = self { return true }
        return false
    }
}

extension HTTPMethod {
    /// RFC 9110 §9.2.2: a request that may be repeated after a connection failure.
    var isIdempotent: Bool {
        switch self {
        case .GET, .HEAD, .OPTIONS, .TRACE, .PUT, .DELETE: return true
        default: return false
        }
    }
}
