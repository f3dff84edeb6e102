import Foundation
import NIOCore
import NIOHTTP1
import ProxyWasm
import SluiceConfig

/// One request and its response, from the request head to the last byte either way, on any
/// protocol: the connection (`StreamDownstream`) hands it request parts and writes what it
/// returns. Its filter chain always exists (empty without filters) and ends in the router.
///
///     receivingRequest ──requestEnded──▶ awaitingResponse
///          │ responseStarted                  │ responseStarted
///          ▼                                  ▼
///     respondingWhileReceiving ─requestEnded─▶ responding
///          │ responseEnded                    │ responseEnded
///          ▼                                  ▼
///     discardingRequest ───requestEnded────▶ ended
///
/// `reset` (a failure after the response began, a filter's close_stream, the client leaving)
/// goes to `ended` from anywhere. The stream is logged, and its filters get on_log, on_done
/// and on_delete, exactly once: when its response is complete or it is reset.
final class HTTPStream {
    enum State: Equatable {
        /// The request head arrived and its body is still arriving; no response byte sent.
        case receivingRequest
        /// The whole request arrived; no response byte sent yet.
        case awaitingResponse
        /// The response began while the request body still arrives.
        case respondingWhileReceiving
        /// The request is complete; the response is going out.
        case responding
        /// The response is complete; the rest of the request body is read and dropped.
        case discardingRequest(dropped: Int)
        /// Over, for the connection too.
        case ended
    }

    static let discardLimit = 1 << 20

    private(set) var state = State.receivingRequest
    let downstream: StreamDownstream
    let connection: DownstreamConnectionInfo
    let listener: ListenerRuntime
    let worker: Worker
    /// The request as the client sent it (validated), for logs and routing.
    let request: HTTPRequestHead
    let authority: String
    let framing: BodyFraming
    let requestID: String
    /// The route chosen when the head arrived; chosen again by the router only if a filter
    /// cleared the route cache.
    private(set) var route: CompiledRoute?
    private(set) var chain: FilterChain!
    /// What the filters read and change; nil without filters.
    private var filterData: HTTPStreamData?
    /// The response head while no filter needs it as a header map (taken when written).
    private var responseHead: HTTPResponseHead?

    // Facts for the access log.
    private let startDate = Date()
    let startTime: NIODeadline
    /// When bytes last moved for this stream either way (stream idle timeout).
    var lastActivity: NIODeadline
    private(set) var status = 0
    private(set) var flag: StreamFlag?
    private var bytesReceived = 0
    private var bytesSent = 0
    private var upstreamAddress = "-"
    private var logged = false
    /// A 100 Continue went to the client: its body is coming.
    var continueSent = false

    init(downstream: StreamDownstream, connection: DownstreamConnectionInfo, listener: ListenerRuntime, worker: Worker,
         request: HTTPRequestHead, authority: String, framing: BodyFraming) {
        self.downstream = downstream
        self.connection = connection
        self.listener = listener
        self.worker = worker
        self.request = request
        self.authority = authority
        self.framing = framing
        startTime = .now()
        lastActivity = startTime
        let id = request.headers.first(name: "x-request-id") ?? ""
        self.requestID = id.isEmpty ? worker.requestIDs.make() : id
    }

    var eventLoop: EventLoop { downstream.eventLoop }
    var allocator: ByteBufferAllocator { downstream.allocator }

    var requestComplete: Bool {
        switch state {
        case .awaitingResponse, .responding, .ended: return true
        case .receivingRequest, .respondingWhileReceiving, .discardingRequest: return false
        }
    }

    var responseStarted: Bool {
        switch state {
        case .receivingRequest, .awaitingResponse: return false
        default: return true
        }
    }

    /// Whether the connection should read more of the request now.
    var wantsRequestData: Bool {
        switch state {
        case .receivingRequest, .respondingWhileReceiving:
            return !chain.requestAboveWatermark && chain.router.acceptsRequestData
        case .awaitingResponse, .responding, .discardingRequest, .ended:
            return true
        }
    }

    // MARK: starting

    /// A valid request: its filters (chosen for its route) run, then the router.
    func start() {
        // A request without a body is complete with its head (NIO's end part follows at once,
        // and may come after the answer).
        if !framing.hasBody { state = .awaitingResponse }
        route = listener.routes.route(method: request.method, authority: authority, path: request.uri, headers: request.headers)
        route?.stats.requests.increment()
        let plugins: [PluginWorker]
        switch worker.httpFilters(listener: listener.config, route: route) {
        case .chain(let selected):
            plugins = selected
        case .failedClosed:
            chain = FilterChain(plugins: [], data: nil, stream: self, router: RouterFilter(stream: self))
            chain.localReply(status: 503, body: "", details: "wasm_fail_stream", startingAt: -1)
            return
        }
        if !plugins.isEmpty { filterData = makeFilterData() }
        chain = FilterChain(plugins: plugins, data: filterData, stream: self, router: RouterFilter(stream: self))
        chain.requestHeaders(endOfStream: !framing.hasBody)
    }

    /// A request Sluice will not process: answered without filters or upstream.
    func refuse(_ refusal: DownstreamRefusal) {
        state = .awaitingResponse  // nothing more of this request will be read
        chain = FilterChain(plugins: [], data: nil, stream: self, router: RouterFilter(stream: self))
        chain.localReply(status: Int(refusal.status.code), body: refusal.message, details: refusal.label, flag: .refused(refusal), startingAt: -1)
    }

    private func makeFilterData() -> HTTPStreamData {
        let info = StreamInfo()
        info.connectionID = connection.id
        info.sourceAddress = connection.remote == nil ? "" : connection.clientAddress
        info.sourcePort = connection.remote?.port ?? 0
        info.destinationAddress = connection.localAddress
        info.destinationPort = connection.local?.port ?? 0
        // As Envoy names them: HTTP/1.0, HTTP/1.1, HTTP/2.
        info.protocolName = request.version.major >= 2 ? "HTTP/\(request.version.major)" : "HTTP/\(request.version.major).\(request.version.minor)"
        info.downstreamTLS = connection.tls
        info.listenerName = listener.config.name
        info.routeName = route?.config.name ?? ""
        info.virtualHostName = route?.config.virtualHost?.name ?? ""
        if case .cluster(let target)? = route?.config.action { info.clusterName = target.cluster }
        info.listenerMetadata = listener.metadata
        info.routeMetadata = route?.metadata
        info.clusterMetadata = route?.cluster?.metadata
        let data = HTTPStreamData(info: info)
        var headers = request.headers
        stripHopByHop(&headers)
        var map = HeaderMap()
        map.entries.reserveCapacity(headers.count + 6)
        map.add(":authority", request.headers.first(name: "host") ?? "")
        map.add(":path", request.uri)
        map.add(":method", request.method.rawValue)
        map.add(":scheme", connection.scheme)
        for (name, value) in headers {
            let lowered = name.asciiLowercased
            if lowered != "host" { map.entries.append((lowered, value)) }
        }
        // Like Envoy's connection manager, the request id and x-forwarded-proto exist before
        // the filters run, so filters see (and may use) them.
        if map.first("x-forwarded-proto") == nil { map.add("x-forwarded-proto", connection.scheme) }
        if map.first("x-request-id") == nil { map.add("x-request-id", requestID) }
        data.requestHeaders = map
        return data
    }

    // MARK: request parts (from the connection)

    func receiveBody(_ buffer: ByteBuffer) {
        bytesReceived += buffer.readableBytes
        switch state {
        case .discardingRequest(let dropped):
            lastActivity = .now()
            let total = dropped + buffer.readableBytes
            if total > Self.discardLimit {
                state = .ended
                downstream.resetStream(self)
            } else {
                state = .discardingRequest(dropped: total)
            }
        case .receivingRequest, .respondingWhileReceiving:
            lastActivity = .now()
            filterData?.info.requestBodyBytes += buffer.readableBytes
            chain.requestData(buffer, endOfStream: false)
        case .awaitingResponse, .responding, .ended:
            break
        }
    }

    func receiveEnd(_ trailers: HTTPHeaders?) {
        switch state {
        case .receivingRequest: state = .awaitingResponse
        case .respondingWhileReceiving: state = .responding
        case .discardingRequest:
            state = .ended
            downstream.streamEnded(self)
            return
        case .awaitingResponse, .responding, .ended:
            return
        }
        if let trailers {
            chain.requestTrailers(trailers)
        } else if framing.hasBody {
            chain.requestData(allocator.buffer(capacity: 0), endOfStream: true)
        }
    }

    func requestReadsChanged() {
        downstream.requestReadsChanged()
    }

    // MARK: for the router

    /// The request as the filters left it: pseudo-headers become the request line, and the
    /// body's framing follows what they did to Content-Length.
    func requestForUpstream() -> UpstreamBoundRequest {
        guard let map = filterData?.requestHeaders else {
            return UpstreamBoundRequest(head: request, authority: authority, framing: framing)
        }
        var head = HTTPRequestHead(version: request.version, method: HTTPMethod(rawValue: map.first(":method") ?? request.method.rawValue),
                                   uri: map.first(":path") ?? request.uri)
        let authority = map.first(":authority") ?? ""
        head.headers = HTTPHeaders(map.regularHeaders(leading: ("host", authority)))
        // A valid Content-Length the filters kept (or set) stands; if they removed it (they
        // change the body) or set something unusable, the body goes chunked. A request
        // without a body stays without one.
        let upstreamFraming: BodyFraming
        if !framing.hasBody {
            upstreamFraming = .none
        } else if let length = map.first("content-length").flatMap(RequestValidation.parseContentLength) {
            upstreamFraming = .contentLength(length)
        } else {
            upstreamFraming = .chunked
        }
        // An upgrade request keeps its hop-by-hop Upgrade/Connection pair (filters never see
        // connection-level headers, as in Envoy).
        if request.headers.asksForUpgrade, let upgrade = request.headers.first(name: "upgrade") {
            head.headers.replaceOrAdd(name: "upgrade", value: upgrade)
            head.headers.replaceOrAdd(name: "connection", value: "upgrade")
        }
        return UpstreamBoundRequest(head: head, authority: authority, framing: upstreamFraming)
    }

    /// The stream's route, chosen again if a filter cleared the route cache (or edited the
    /// request headers, which clears it in Envoy too).
    func routeForUpstream(_ request: UpstreamBoundRequest) -> CompiledRoute? {
        guard let data = filterData, data.routeCacheCleared else { return route }
        data.routeCacheCleared = false
        route = listener.routes.route(method: request.head.method, authority: request.authority, path: request.head.uri, headers: request.head.headers)
        data.info.routeName = route?.config.name ?? ""
        data.info.virtualHostName = route?.config.virtualHost?.name ?? ""
        if case .cluster(let target)? = route?.config.action { data.info.clusterName = target.cluster }
        data.info.routeMetadata = route?.metadata
        data.info.clusterMetadata = route?.cluster?.metadata
        return route
    }

    func upstreamAttemptStarted(endpoint: Endpoint, attempts: Int) {
        upstreamAddress = endpoint.address.description
        if let info = filterData?.info {
            info.upstreamAddress = endpoint.address.host
            info.upstreamPort = endpoint.address.port
            info.upstreamHostMetadata = endpoint.metadata
            info.upstreamAttempts = attempts
        }
    }

    /// The client can take response bytes again: the upstream is read again unless a filter
    /// still holds too much.
    func downstreamBecameWritable() {
        if !chain.responseAboveWatermark { chain.router.resumeUpstreamReads() }
    }

    /// The upstream connection's TLS, for the `upstream.*` TLS properties (filters only).
    func upstreamConnected(tls: TLSDetails) {
        filterData?.info.upstreamTLS = tls
    }

    /// The upstream's response head enters the chain's response side.
    func receiveUpstreamHead(_ head: consuming HTTPResponseHead, endOfStream: Bool) {
        lastActivity = .now()
        stripHopByHop(&head.headers)
        status = Int(head.status.code)
        if let data = filterData {
            data.responseHeaders = HeaderMap(status: status, headers: head.headers)
            data.info.responseCode = status
            data.info.responseCodeDetails = "via_upstream"
        } else {
            responseHead = head
        }
        chain.responseHeaders(endOfStream: endOfStream)
    }

    func receiveUpstreamData(_ buffer: ByteBuffer) {
        lastActivity = .now()
        filterData?.info.responseBodyBytes += buffer.readableBytes
        chain.responseData(buffer, endOfStream: false)
    }

    func upstreamFailed(_ failure: UpstreamFailure) {
        if failure.flag == .upstreamResetAfterHeaders || responseStarted {
            reset(failure.flag)
        } else {
            sendLocalReply(status: failure.status, body: failure.body, flag: failure.flag)
        }
    }

    /// Sluice answers the stream itself, from the router's position: every filter's response
    /// callbacks see the answer, as in Envoy.
    func sendLocalReply(status: HTTPResponseStatus, body: String, flag: StreamFlag) {
        chain.localReply(status: Int(status.code), body: body, details: flag.codeDetails, flag: flag, startingAt: chain.routerPosition)
    }

    /// The head of a local reply, before it runs through the response filters.
    func prepareLocalReply(status: Int, headers: [(String, String)], bodyLength: Int, details: String, flag: StreamFlag) {
        self.flag = flag
        var fields = HTTPHeaders(headers)
        if bodyLength > 0 && !fields.contains(name: "content-type") { fields.add(name: "content-type", value: "text/plain") }
        fields.replaceOrAdd(name: "content-length", value: String(bodyLength))
        if let data = filterData {
            data.responseHeaders = HeaderMap(status: status, headers: fields)
            data.responseTrailers = nil
            data.info.responseCode = status
            data.info.responseCodeDetails = details
        } else {
            responseHead = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: status), headers: fields)
        }
    }

    // MARK: response (the chain's response end)

    func encodeHeaders(endOfStream: Bool) {
        switch state {
        case .receivingRequest: state = .respondingWhileReceiving
        case .awaitingResponse: state = .responding
        default: return
        }
        var head = responseHead.take() ?? HTTPResponseHead(version: .http1_1, status: .internalServerError)
        if let data = filterData, let map = data.responseHeaders {
            // The hostcalls accept only final statuses; a map that still holds something
            // else (it cannot, but this is where the value takes effect) is answered as 500.
            let code = map.first(":status").flatMap(PluginVM.validFinalStatus) ?? 500
            // Built in one go: HTTPHeaders.add would re-check each name the parser or the
            // hostcalls (validHeader) already checked.
            head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: code),
                                    headers: HTTPHeaders(map.regularHeaders()))
            stripHopByHop(&head.headers)
            data.info.responseCode = code
            data.info.finalResponseHeaders = map
        }
        status = Int(head.status.code)
        // A response that ends with its head, to a client that expects a body (a filter turned
        // the upstream request into a HEAD): the length it announces must be what it sends.
        if endOfStream && request.method != .HEAD && status >= 200 && status != 204 && status != 304,
           let length = head.headers.first(name: "content-length"), length != "0" {
            head.headers.replaceOrAdd(name: "content-length", value: "0")
        }
        downstream.writeResponseHead(head, for: self)
        if endOfStream { endResponse(nil) }
    }

    func encodeData(_ buffer: ByteBuffer, endOfStream: Bool) {
        guard responseInProgress else { return }
        if buffer.readableBytes > 0 {
            bytesSent += buffer.readableBytes
            listener.stats.bytesSent.increment(by: buffer.readableBytes)
            downstream.writeResponseBody(buffer)
        }
        // Not flushed here: the connection flushes when the upstream read that carried this
        // data completes (one writev per read, not per part), and a filter's resume flushes
        // when it is done.
        if endOfStream { endResponse(nil) }
    }

    func encodeTrailers(_ trailers: HTTPHeaders) {
        guard responseInProgress else { return }
        filterData?.info.finalResponseTrailers = HeaderMap(trailers.map { ($0.name.lowercased(), $0.value) })
        endResponse(trailers)
    }

    private var responseInProgress: Bool {
        state == .responding || state == .respondingWhileReceiving
    }

    private func endResponse(_ trailers: HTTPHeaders?) {
        downstream.writeResponseEnd(trailers)
        let requestDone = state == .responding
        finish()
        if requestDone || !downstream.shouldReadRestOfRequest(self) {
            state = .ended
            downstream.streamEnded(self)
        } else {
            state = .discardingRequest(dropped: 0)
            downstream.requestReadsChanged()  // reads may have been paused for the filters or the upstream
        }
    }

    // MARK: upgrades

    func upgradeAccepted(_ head: HTTPResponseHead) {
        status = 101
        flag = .upgrade
        state = .responding
        downstream.writeUpgradeResponse(head)
    }

    /// The 101 is complete: the HTTP stream ends here for the filters (on_log, on_done,
    /// on_delete); the tunnel that follows carries bytes they do not see.
    func tunnel(to upstream: UpstreamConnection, clusterStats: ClusterStats) {
        finish()
        state = .ended
        downstream.startTunnel(to: upstream, clusterStats: clusterStats)
    }

    // MARK: ending

    /// The stream cannot end cleanly: nothing more is sent, and the connection (HTTP/1.1)
    /// or the stream (HTTP/2) is reset.
    func reset(_ flag: StreamFlag) {
        if state == .ended { return }
        self.flag = flag
        finish()  // which lets go of the upstream side
        state = .ended
        downstream.resetStream(self)
    }

    /// The client went away.
    func downstreamClosed() {
        if state == .ended { return }
        if case .discardingRequest = state {
            state = .ended
            return
        }
        if status == 0 { flag = .downstreamReset }
        finish()
        state = .ended
    }

    /// A downstream deadline passed. Before any response byte: 408 while the request is still
    /// arriving, 504 while Sluice waits for the upstream; after: the stream is reset.
    func timedOut(_ reason: DownstreamRefusal) {
        if !responseStarted {
            sendLocalReply(status: requestComplete ? .gatewayTimeout : .requestTimeout, body: reason.message, flag: .refused(reason))
        } else {
            reset(.refused(reason))
        }
    }

    /// Logged and counted once, and the filters' on_log, on_done and on_delete.
    private func finish() {
        guard !logged else { return }
        logged = true
        chain?.router.abort()
        if let info = filterData?.info {
            if let flag { info.responseFlags |= Int(flag.envoyFlags.rawValue) }
            info.endTime = Date()
            info.finalRequestHeaders = filterData?.requestHeaders
            if status > 0 && info.responseCode == 0 { info.responseCode = status }
        }
        if status > 0 {
            listener.stats.responses.record(status: status)
            route?.stats.responses.record(status: status)
        }
        if worker.accessLog.enabled {
            worker.accessLog.record(AccessLogEntry(
                start: startDate, durationMs: Date().timeIntervalSince(startDate) * 1000, clientAddress: connection.clientAddress,
                method: request.method.rawValue, path: request.uri, version: "HTTP/\(request.version.major).\(request.version.minor)",
                authority: request.headers.first(name: "host") ?? "-", status: status, bytesReceived: bytesReceived, bytesSent: bytesSent,
                listener: listener.config.name, route: route?.config.name ?? "-", upstream: upstreamAddress, requestID: requestID,
                userAgent: request.headers.first(name: "user-agent") ?? "-", flags: flag.label, responseFlags: (flag?.envoyFlags ?? []).shortString))
        }
        chain?.finish()
    }
}

/// The request as it goes to the router after the filters.
struct UpstreamBoundRequest {
    let head: HTTPRequestHead
    let authority: String
    let framing: BodyFraming
}

extension HeaderMap {
    /// The headers that are not pseudo-headers, in order, optionally after one given first.
    func regularHeaders(leading: (String, String)? = nil) -> [(String, String)] {
        var out: [(String, String)] = []
        out.reserveCapacity(entries.count + 1)
        if let leading { out.append(leading) }
        for (name, value) in entries where name.utf8.first != UInt8(ascii: ":") { out.append((name, value)) }
        return out
    }

    /// A response head as filters see it: `:status`, then the fields.
    init(status: Int, headers: HTTPHeaders) {
        self.init([(":status", String(status))])
        entries.reserveCapacity(headers.count + 1)
        for (name, value) in headers { add(name, value) }
    }
}
