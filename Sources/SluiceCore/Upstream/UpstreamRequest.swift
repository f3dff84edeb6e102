import NIOCore
import NIOHTTP1
import SluiceConfig

/// Why an upstream request ended without a response Sluice can forward: the answer the
/// client gets (if no response byte went out yet) and the stream's flag.
struct UpstreamFailure {
    let status: HTTPResponseStatus
    let body: String
    let flag: StreamFlag

    static let noHealthyUpstream = UpstreamFailure(status: .serviceUnavailable, body: "no healthy upstream\n", flag: .noHealthyUpstream)
    static let overflow = UpstreamFailure(status: .serviceUnavailable, body: "upstream connection limit reached\n", flag: .upstreamOverflow)
    static let connectFailure = UpstreamFailure(status: .badGateway, body: "upstream connect error\n", flag: .upstreamConnectFailure)
    static let timeout = UpstreamFailure(status: .gatewayTimeout, body: "upstream request timeout\n", flag: .upstreamTimeout)
    static let protocolError = UpstreamFailure(status: .badGateway, body: "upstream protocol error\n", flag: .upstreamProtocolError)
    static let resetBeforeResponse = UpstreamFailure(status: .badGateway, body: "upstream connection reset before response\n", flag: .upstreamReset)
}

/// One request to a cluster on behalf of a stream's router: endpoint choice, the pool lease,
/// the request's bytes (kept while small so a failed attempt can be replayed), retries under
/// the route's policy and the cluster's budget, the route timeout, and the response parts
/// handed back to the router. Touched only on its event loop.
final class UpstreamRequest: UpstreamDelegate {
    enum State {
        /// Waiting for a connection from the chosen endpoint's pool.
        case connecting
        /// The head is written; the body follows as it passes the filters.
        case sendingRequest(UpstreamConnection)
        /// The whole request is written; the route timeout runs until the response head.
        case awaitingResponse(UpstreamConnection)
        /// The response head arrived (a response may start before the request is all sent).
        case receivingResponse(UpstreamConnection, requestSent: Bool)
        /// The upstream accepted an upgrade; the 101's end hands the connection to a tunnel.
        case upgrading(UpstreamConnection)
        /// Over: the connection went back to its pool, was closed, or became a tunnel.
        case finished
    }

    static let replayLimit = 64 * 1024

    private(set) var state = State.connecting
    private weak var router: RouterFilter?
    let head: HTTPRequestHead
    /// The client's method (HEAD bodies, idempotent replays).
    let method: HTTPMethod
    let target: ClusterRoute
    let cluster: ClusterRuntime
    let loop: ClusterLoopState
    let isUpgrade: Bool
    let eventLoop: EventLoop

    /// Body parts (and the end) received before a connection is attached, in order.
    private var pending: [ByteBuffer] = []
    private var pendingEnd: HTTPHeaders??
    /// A copy of the body while it is small, so the request can be replayed on a retry.
    private var replay: [ByteBuffer]? = []
    private var replayBytes = 0
    /// The request's trailers, replayed with its body.
    private var replayTrailers: HTTPHeaders?
    /// The router handed over the request's end.
    private(set) var requestComplete = false
    private var endpointIndex: Int?
    private(set) var attempts = 0
    private var isRetry = false
    private var timeout: Scheduled<Void>?
    private(set) var address = "-"

    init(router: RouterFilter, head: HTTPRequestHead, method: HTTPMethod, target: ClusterRoute, cluster: ClusterRuntime,
         loop: ClusterLoopState, isUpgrade: Bool, eventLoop: EventLoop) {
        self.router = router
        self.head = head
        self.method = method
        self.target = target
        self.cluster = cluster
        self.loop = loop
        self.isUpgrade = isUpgrade
        self.eventLoop = eventLoop
    }

    var connection: UpstreamConnection? {
        switch state {
        case .sendingRequest(let c), .awaitingResponse(let c), .receivingResponse(let c, _), .upgrading(let c): return c
        case .connecting, .finished: return nil
        }
    }

    var isFinished: Bool {
        if case .finished = state { return true }
        return false
    }

    /// Whether the request body can be written now (backpressure towards the client).
    var acceptsRequestData: Bool {
        switch state {
        case .sendingRequest(let c): return c.channel.isWritable
        case .receivingResponse(let c, requestSent: false): return c.channel.isWritable
        case .connecting: return false
        default: return true
        }
    }

    // MARK: from the router

    func start() {
        loop.totalActiveRequests += 1
        attempt()
    }

    func sendBody(_ buffer: ByteBuffer) {
        if replay != nil {
            replayBytes += buffer.readableBytes
            if replayBytes > Self.replayLimit { replay = nil } else { replay!.append(buffer) }
        }
        if let connection, !requestWritten {
            connection.channel.write(HTTPClientRequestPart.body(.byteBuffer(buffer)), promise: nil)
        } else if case .connecting = state {
            pending.append(buffer)
        }
    }

    func sendEnd(_ trailers: HTTPHeaders?) {
        guard !requestComplete else { return }
        requestComplete = true
        replayTrailers = trailers
        if let connection, !requestWritten {
            writeEnd(connection, trailers)
        } else if case .connecting = state {
            pendingEnd = .some(trailers)
        }
    }

    func flush() {
        connection?.channel.flush()
    }

    /// The stream no longer wants this request (local reply, reset, client gone): the
    /// connection, mid-exchange, is closed rather than pooled.
    func abort() {
        guard !isFinished else { return }
        end(reusable: false)
    }

    private var requestWritten: Bool {
        switch state {
        case .awaitingResponse, .receivingResponse(_, requestSent: true), .upgrading, .finished: return true
        default: return false
        }
    }

    // MARK: attempts

    private func attempt() {
        guard let index = loop.pick(avoid: endpointIndex) else {
            cluster.stats.noHealthyEndpoint.increment()
            fail(.noHealthyUpstream)
            return
        }
        attempts += 1
        let serial = attempts
        endpointIndex = index
        let endpoint = cluster.endpoints[index]
        address = endpoint.address.description
        router?.attemptStarted(self, endpoint: endpoint)
        loop.requestStarted(endpoint: index)
        cluster.stats.requests.increment()
        let pool = loop.pools[index]
        state = .connecting
        pool.acquire(endpointIndex: index, maxConnections: cluster.config.maxConnections, totalOpen: loop.connectionCount).whenComplete { result in
            guard self.attempts == serial, case .connecting = self.state else {
                // The request ended (client gone, local reply) while this attempt connected.
                if case .success(let connection) = result { pool.release(connection) }
                self.loop.requestFinished(endpoint: index)
                return
            }
            switch result {
            case .success(let connection):
                _ = endpoint.recordConnect(success: true, policy: self.cluster.config.outlierDetection, now: .now())
                self.attach(connection)
            case .failure(let error):
                self.loop.requestFinished(endpoint: index)
                if error is EndpointPool.AcquireError {
                    self.fail(.overflow)
                    return
                }
                self.cluster.stats.connectFailures.increment()
                if endpoint.recordConnect(success: false, policy: self.cluster.config.outlierDetection, now: .now()) {
                    self.cluster.stats.outlierEjections.increment()
                }
                if self.retry(on: .connectFailure) { return }
                self.fail(.connectFailure)
            }
        }
    }

    /// Starts another attempt if the route's policy and the cluster's retry budget allow it.
    private func retry(on condition: RetryCondition) -> Bool {
        guard let policy = target.retry, policy.on.contains(condition),
              attempts <= policy.attempts, replay != nil, loop.mayRetry(policy: policy) else { return false }
        cluster.stats.retries.increment()
        if !isRetry {
            isRetry = true
            loop.activeRetries += 1
        }
        replayFromCopy()
        attempt()
        return true
    }

    /// After a failed attempt the request is sent again from the copy of its body.
    private func replayFromCopy() {
        guard let replay else { return }
        pending = replay
        pendingEnd = requestComplete ? .some(replayTrailers) : nil
    }

    private func attach(_ connection: UpstreamConnection) {
        connection.handler.delegate = self
        state = .sendingRequest(connection)
        var head = self.head
        // An HTTP/1.0 request may come without Host; the upstream always gets one.
        if !head.headers.contains(name: "host") { head.headers.add(name: "host", value: address) }
        connection.channel.write(HTTPClientRequestPart.head(head), promise: nil)
        let body = pending
        pending = []
        for buffer in body { connection.channel.write(HTTPClientRequestPart.body(.byteBuffer(buffer)), promise: nil) }
        if let end = pendingEnd {
            pendingEnd = nil
            writeEnd(connection, end)
        } else {
            connection.channel.flush()
        }
        router?.upstreamWritable()
    }

    private func writeEnd(_ connection: UpstreamConnection, _ trailers: HTTPHeaders?) {
        connection.channel.writeAndFlush(HTTPClientRequestPart.end(trailers), promise: nil)
        switch state {
        case .sendingRequest: state = .awaitingResponse(connection)
        case .receivingResponse(let c, _): state = .receivingResponse(c, requestSent: true)
        default: break
        }
        // The route timeout runs from the moment the whole request is upstream until the
        // response head arrives (see docs/CONFIG.md).
        if case .awaitingResponse = state, timeout == nil, !isUpgrade {
            // It covers retries too: one deadline for the request, as Envoy's route timeout.
            timeout = eventLoop.scheduleTask(in: target.timeout.timeAmount) { [weak self] in
                guard let self else { return }
                switch self.state {
                case .receivingResponse, .upgrading, .finished: return
                case .connecting, .sendingRequest, .awaitingResponse: break
                }
                self.cluster.stats.timeouts.increment()
                self.fail(.timeout)
            }
        }
    }

    // MARK: UpstreamDelegate

    var downstreamWritable: Bool { router?.downstreamCanTakeMore ?? true }

    func upstreamRead(_ part: HTTPClientResponsePart) {
        guard let connection else { return }
        switch part {
        case .head(let head):
            receiveHead(head, connection)
        case .body(let buffer):
            guard case .receivingResponse = state else { return }
            router?.responseBody(buffer)
        case .end(let trailers):
            switch state {
            case .upgrading(let c):
                state = .finished
                loop.pools[c.endpointIndex].handOver(c)
                loop.requestFinished(endpoint: c.endpointIndex)
                finishAccounting()
                router?.upgradeComplete(c, clusterStats: cluster.stats)
            case .receivingResponse(_, let requestSent):
                // The upstream is done: its connection goes back to the pool now, even if a
                // filter still holds the response.
                end(reusable: requestSent)
                router?.responseEnd(trailers)
            default:
                break
            }
        }
    }

    private func receiveHead(_ head: HTTPResponseHead, _ connection: UpstreamConnection) {
        if let error = Self.responseProblem(head, isUpgrade: isUpgrade) {
            cluster.stats.record(error)
            fail(.protocolError)
            return
        }
        let status = Int(head.status.code)
        if cluster.endpoints[connection.endpointIndex].recordResponse(status: status, policy: cluster.config.outlierDetection, now: .now()) {
            cluster.stats.outlierEjections.increment()
        }
        cluster.stats.responses.record(status: status)
        if status >= 500 && requestComplete && retryableServerError() {
            detach(reusable: false)
            _ = retry(on: .serverError)
            return
        }
        timeout?.cancel()
        timeout = nil
        if isUpgrade && head.status == .switchingProtocols {
            state = .upgrading(connection)
            router?.upgradeAccepted(head)
            return
        }
        state = .receivingResponse(connection, requestSent: requestWritten)
        router?.responseHead(head)
    }

    private func retryableServerError() -> Bool {
        guard let policy = target.retry, policy.on.contains(.serverError) else { return false }
        return attempts <= policy.attempts && replay != nil && loop.mayRetry(policy: policy)
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

    func upstreamReadComplete() {
        router?.flushDownstream()
        // A request that started inside this read (a pipelined one, replayed when the
        // previous stream ended) may have written to this connection.
        connection?.channel.flush()
    }

    func upstreamClosed(_ closed: UpstreamConnection) {
        guard let connection, connection === closed else { return }
        let responseStarted: Bool
        switch state {
        case .receivingResponse, .upgrading: responseStarted = true
        default: responseStarted = false
        }
        detach(reusable: false)
        if responseStarted {
            // Mid-response reset: the router can only pass it on as a reset.
            end(reusable: false)
            router?.upstreamFailed(UpstreamFailure(status: .badGateway, body: "", flag: .upstreamResetAfterHeaders))
            return
        }
        if closed.reused && replay != nil && closed.handler.protocolError == nil && method.isIdempotent {
            // A pooled connection the upstream closed while idle: replay on a fresh one.
            replayFromCopy()
            attempts -= 1
            attempt()
            return
        }
        if closed.handler.protocolError != nil {
            fail(.protocolError)
            return
        }
        // The request went out and the connection closed without an answer: it may have been
        // processed, so only an idempotent request is tried again.
        if method.isIdempotent, retry(on: .connectFailure) { return }
        fail(.resetBeforeResponse)
    }

    func upstreamWritabilityChanged(writable: Bool) {
        if writable { router?.upstreamWritable() }
    }

    func resumeReading() {
        connection?.handler.resumeReading()
    }

    // MARK: ending

    /// Gives the connection back (to its pool if `reusable`, else closes it); the request
    /// stays open for another attempt.
    private func detach(reusable: Bool) {
        guard let connection else { return }
        state = .connecting
        loop.requestFinished(endpoint: connection.endpointIndex)
        let pool = loop.pools[connection.endpointIndex]
        if reusable && !isUpgrade { pool.release(connection) } else { pool.discard(connection) }
    }

    private func end(reusable: Bool) {
        guard !isFinished else { return }
        timeout?.cancel()
        timeout = nil
        detach(reusable: reusable)
        state = .finished
        finishAccounting()
        router?.upstreamWritable()  // request reads paused for this connection may go on
    }

    private func finishAccounting() {
        if isRetry { loop.activeRetries -= 1 }
        loop.totalActiveRequests -= 1
    }

    private func fail(_ failure: UpstreamFailure) {
        end(reusable: false)
        router?.upstreamFailed(failure)
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
