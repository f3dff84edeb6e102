import NIOCore
import NIOHTTP1
import SluiceConfig

/// The last element of every HTTP filter chain, as Envoy's router filter: it takes the
/// request as the filters left it, picks the route (again, only if a filter cleared the route
/// cache or edited the request headers), answers what needs no upstream (no route, direct
/// response) and otherwise hands the request to an `UpstreamRequest`, whose response it feeds
/// back into the chain's response side.
final class RouterFilter {
    enum State {
        /// The request headers have not passed the filters yet.
        case waitingForHeaders
        /// The request is (being) proxied.
        case forwarding(UpstreamRequest)
        /// The router answered itself (no route, direct response).
        case answered
        /// The stream gave up on the upstream side (local reply, reset, client gone).
        case aborted
    }

    private(set) var state = State.waitingForHeaders
    unowned let stream: HTTPStream
    /// A response head without a body is handed on with its end, once the upstream's end has
    /// arrived (in the same read), so that the upstream connection is pooled first.
    private var bodylessHead: HTTPResponseHead?

    init(stream: HTTPStream) {
        self.stream = stream
    }

    var upstream: UpstreamRequest? {
        if case .forwarding(let request) = state { return request }
        return nil
    }

    /// Whether the client's request body may be read now: not while the upstream connection
    /// is being set up or cannot take more bytes. Before routing the filters hold the body
    /// (bounded by their buffer limit).
    var acceptsRequestData: Bool {
        upstream?.acceptsRequestData ?? true
    }

    // MARK: request side (from the chain)

    func decodeHeaders(endOfStream: Bool) {
        guard case .waitingForHeaders = state else { return }
        let request = stream.requestForUpstream()
        guard let route = stream.routeForUpstream(request) else {
            state = .answered
            stream.sendLocalReply(status: .notFound, body: "no route matched \(request.head.uri)\n", flag: .noRoute)
            return
        }
        switch route.config.action {
        case .directResponse(let status, let body):
            state = .answered
            stream.sendLocalReply(status: HTTPResponseStatus(statusCode: status), body: body, flag: .directResponse)
        case .cluster(let target):
            guard let cluster = route.cluster else {
                state = .answered
                stream.sendLocalReply(status: .serviceUnavailable, body: "no healthy upstream\n", flag: .noHealthyUpstream)
                return
            }
            forward(request, route: route, target: target, cluster: cluster, endOfStream: endOfStream)
        }
    }

    func decodeData(_ buffer: ByteBuffer, endOfStream: Bool) {
        guard let upstream else { return }
        if buffer.readableBytes > 0 { upstream.sendBody(buffer) }
        if endOfStream { upstream.sendEnd(nil) }
    }

    func decodeTrailers(_ trailers: HTTPHeaders) {
        upstream?.sendEnd(trailers)
    }

    /// The stream no longer wants the upstream side.
    func abort() {
        if let upstream { upstream.abort() }
        if case .waitingForHeaders = state { state = .aborted }
        if case .forwarding = state { state = .aborted }
    }

    func flushUpstream() { upstream?.flush() }

    private func forward(_ request: UpstreamBoundRequest, route: CompiledRoute, target: ClusterRoute, cluster: ClusterRuntime, endOfStream: Bool) {
        var head = HTTPRequestHead(version: .http1_1, method: request.head.method, uri: route.rewrite(path: request.head.uri))
        var headers = request.head.headers
        let isUpgrade = headers.asksForUpgrade
        // `TE: trailers` is hop-by-hop, but says the client takes trailers, which gRPC servers
        // require: kept towards an HTTP/2 upstream (the one TE value HTTP/2 allows). Read from
        // the client's request: the filters' header map never holds hop-by-hop fields.
        let acceptsTrailers = cluster.config.upstreamProtocol == .http2
            && stream.request.headers["te"].contains { RequestValidation.transferCodings([$0]).contains("trailers") }
        if isUpgrade, let allowed = stream.listener.config.upgradeTypes,
           !headers["upgrade"].contains(where: { allowed.contains($0.trimmingOWS().lowercased()) }) {
            // As Envoy without a matching upgrade_configs entry: 403, and the connection ends.
            state = .answered
            stream.listener.stats.record(DownstreamRefusal.upgradeNotAllowed)
            stream.sendLocalReply(status: .forbidden, body: "", flag: .refused(.upgradeNotAllowed))
            return
        }
        stripHopByHop(&headers, keepUpgrade: isUpgrade)
        if isUpgrade { headers.replaceOrAdd(name: "connection", value: "upgrade") }
        if acceptsTrailers { headers.add(name: "te", value: "trailers") }
        // Expect: 100-continue is answered here, as Envoy does: the upstream sees a plain request.
        var expectContinue = false
        if headers["expect"].contains(where: { $0.lowercased() == "100-continue" }) {
            headers.remove(name: "expect")
            expectContinue = true
        }
        if let host = target.hostRewrite { headers.replaceOrAdd(name: "host", value: host) }
        let client = stream.connection.clientAddress
        let xff = headers["x-forwarded-for"].joined(separator: ", ")
        headers.replaceOrAdd(name: "x-forwarded-for", value: xff.isEmpty ? client : "\(xff), \(client)")
        if !headers.contains(name: "x-forwarded-proto") { headers.add(name: "x-forwarded-proto", value: stream.connection.scheme) }
        if headers.first(name: "x-request-id")?.isEmpty ?? true { headers.replaceOrAdd(name: "x-request-id", value: stream.requestID) }
        // Framing decided here, never inherited: exactly one validated Content-Length, or
        // chunked, whatever the method (the encoder adds nothing of its own).
        headers.remove(name: "content-length")
        headers.remove(name: "transfer-encoding")
        switch request.framing {
        case .none: break
        case .contentLength(let length): headers.add(name: "content-length", value: String(length))
        case .chunked: headers.add(name: "transfer-encoding", value: "chunked")
        }
        head.headers = headers

        let upstream = UpstreamRequest(router: self, head: head, method: request.head.method, target: target, cluster: cluster,
                                       loop: stream.worker.state(for: cluster), isUpgrade: isUpgrade, eventLoop: stream.eventLoop)
        state = .forwarding(upstream)
        // No 100 for an HTTP/1.0 client (RFC 9110 §15.2.1).
        if expectContinue && (stream.request.version.major > 1 || stream.request.version.minor >= 1) {
            stream.continueSent = true
            stream.downstream.writeContinue()
        }
        upstream.start()
        if endOfStream { upstream.sendEnd(nil) }
    }

    // MARK: from the upstream request

    func attemptStarted(_ upstream: UpstreamRequest, endpoint: Endpoint) {
        stream.upstreamAttemptStarted(endpoint: endpoint, attempts: upstream.attempts)
    }

    func upstreamWritable() {
        stream.requestReadsChanged()
    }

    func responseHead(_ head: HTTPResponseHead) {
        if let tls = upstream?.connection?.tls { stream.upstreamConnected(tls: tls) }
        // A refused upgrade leaves HTTP/1.1's request parser in upgrade mode: the connection
        // ends with this stream.
        if upstream?.isUpgrade == true { stream.downstream.closeAfterStream() }
        let code = head.status.code
        // The method the upstream was sent decides whether its response has a body (a filter
        // may have changed it).
        let method = upstream?.head.method ?? stream.request.method
        let bodyless = method == .HEAD || code == 204 || code == 304 || head.headers.first(name: "content-length") == "0"
        if bodyless {
            bodylessHead = head
            return
        }
        stream.receiveUpstreamHead(head, endOfStream: false)
    }

    func responseBody(_ buffer: ByteBuffer) {
        guard bodylessHead == nil else { return }
        stream.receiveUpstreamData(buffer)
    }

    func responseEnd(_ trailers: HTTPHeaders?) {
        if let head = bodylessHead {
            bodylessHead = nil
            stream.receiveUpstreamHead(head, endOfStream: true)
            return
        }
        if let trailers {
            stream.chain.responseTrailers(trailers)
        } else {
            stream.chain.responseData(stream.allocator.buffer(capacity: 0), endOfStream: true)
        }
    }

    func upstreamFailed(_ failure: UpstreamFailure) {
        state = .aborted
        stream.upstreamFailed(failure)
    }

    func upgradeAccepted(_ head: HTTPResponseHead) {
        stream.upgradeAccepted(head)
    }

    func upgradeComplete(_ connection: UpstreamConnection, clusterStats: ClusterStats) {
        state = .answered
        stream.tunnel(to: connection, clusterStats: clusterStats)
    }

    var downstreamCanTakeMore: Bool {
        stream.downstream.isWritable && !stream.chain.responseAboveWatermark
    }

    func resumeUpstreamReads() {
        upstream?.resumeReading()
    }

    func flushDownstream() {
        stream.downstream.flush()
    }
}
