import Foundation
import NIOCore
import NIOHTTP1
import ProxyWasm
import SluiceConfig

/// The HTTP handler's side of the Proxy-Wasm filter chain: building the chain for a request,
/// and receiving what passed the filters (FilterChainSink).
extension HTTPProxyHandler: FilterChainSink {
    /// Starts the listener's filters on a new request. Returns false when no filter applies
    /// (all disabled for the route, or failed open), so the request proceeds unfiltered.
    func startFilters(head: HTTPRequestHead, route: CompiledRoute?) -> Bool {
        var plugins: [PluginWorker] = []
        for name in listener.config.httpFilters {
            let override = route?.config.plugins[name]
            if override?.disabled == true { continue }
            var key = override?.configuration.map { PluginManager.variantKey(name, $0) } ?? name
            // Gradual rollout: this stream uses the new module version with the configured weight.
            if override?.configuration == nil, let rollout = worker.plugins[PluginManager.rolloutKey(name)],
               Int.random(in: 0..<100) < rollout.runtime.config.rolloutWeight {
                key = PluginManager.rolloutKey(name)
            }
            guard let plugin = worker.plugins[key] else { continue }
            if plugin.runtime.version == "rollout" { plugin.runtime.stats.rolloutStreams.increment() } else { plugin.runtime.stats.primaryStreams.increment() }
            if plugin.activeVM == nil {
                // The plugin is failed on this worker (trapped earlier, or reloading).
                switch plugin.failurePolicy {
                case .failOpen:
                    plugin.runtime.stats.failedOpenStreams.increment()
                    continue
                case .failClosed, .reload:
                    plugin.runtime.stats.failedClosedStreams.increment()
                    route?.stats.requests.increment()
                    respondLocally(head: head, route: route, status: .serviceUnavailable, body: "", flag: .filter("wasm_fail_stream"))
                    return true
                }
            }
            plugins.append(plugin)
        }
        if plugins.isEmpty { return false }
        route?.stats.requests.increment()

        let info = StreamInfo()
        let remote = context.channel.remoteAddress, local = context.channel.localAddress
        info.connectionID = connectionID
        info.sourceAddress = remote?.ipAddress ?? ""
        info.sourcePort = remote?.port ?? 0
        info.destinationAddress = local?.ipAddress ?? ""
        info.destinationPort = local?.port ?? 0
        info.protocolName = "HTTP/\(head.version.major).\(head.version.minor)"
        info.listenerName = listener.config.name
        info.routeName = route?.config.name ?? ""
        if case .cluster(let target)? = route?.config.action { info.clusterName = target.cluster }
        let data = HTTPStreamData(info: info)

        var headers = head.headers
        stripHopByHop(&headers)
        var map = HeaderMap()
        map.add(":authority", head.headers.first(name: "host") ?? "")
        map.add(":path", head.uri)
        map.add(":method", head.method.rawValue)
        map.add(":scheme", "http")
        for (name, value) in headers where name.lowercased() != "host" { map.add(name, value) }
        // Like Envoy's connection manager, the request id and x-forwarded-proto exist before
        // the filters run, so filters see (and may use) them.
        if map.first("x-forwarded-proto") == nil { map.add("x-forwarded-proto", "http") }
        if map.first("x-request-id") == nil { map.add("x-request-id", RequestID.make()) }
        data.requestHeaders = map
        streamData = data
        chainHead = head
        chainRoute = route
        let chain = FilterChain(plugins: plugins, data: data, sink: self, eventLoop: context.eventLoop)
        self.chain = chain
        chain.requestHeaders(endOfStream: requestHeadersHadNoBody)
        return true
    }

    var responseStarted: Bool { responseHeadWritten }

    // MARK: request side

    func chainRequestHeaders(endOfStream: Bool) {
        guard let data = streamData, let original = chainHead, let map = data.requestHeaders else { return }
        // Rebuild the request from what the filters left: pseudo-headers become the request line.
        var head = HTTPRequestHead(version: original.version, method: HTTPMethod(rawValue: map.first(":method") ?? original.method.rawValue), uri: map.first(":path") ?? original.uri)
        let authority = map.first(":authority") ?? ""
        head.headers.add(name: "host", value: authority)
        for (name, value) in map.entries where !name.hasPrefix(":") { head.headers.add(name: name, value: value) }
        // Framing: a valid Content-Length the filters kept (or set) stands; if they removed it
        // (they change the body) or set something unusable, the body goes chunked. A request
        // without a body stays without one. startProxying writes the framing headers.
        if requestHeadersHadNoBody {
            upstreamFraming = BodyFraming.none
        } else if let length = map.first("content-length").flatMap(RequestValidation.parseContentLength) {
            upstreamFraming = .contentLength(length)
        } else {
            upstreamFraming = .chunked
        }
        // An upgrade request keeps its hop-by-hop Upgrade/Connection pair (filters never see
        // connection-level headers, as in Envoy).
        if let upgrade = original.headers.first(name: "upgrade"),
           original.headers[canonicalForm: "connection"].contains(where: { $0.lowercased() == "upgrade" }) {
            head.headers.replaceOrAdd(name: "upgrade", value: upgrade)
            head.headers.replaceOrAdd(name: "connection", value: "upgrade")
        }
        // Route again: filters may have changed the path, host or headers (and
        // clear_route_cache asks for exactly this); routing is cheap next to a Wasm call.
        let route = listener.router.route(method: head.method, authority: authority, path: head.uri, headers: head.headers)
        data.info.routeName = route?.config.name ?? ""
        if case .cluster(let target)? = route?.config.action { data.info.clusterName = target.cluster }
        chainHead = head
        routeAndProxy(head: head, route: route, authority: authority)
        if endOfStream, exchange != nil { forwardRequestEnd(nil) }
    }

    func chainRequestData(_ bytes: [UInt8], endOfStream: Bool) {
        if !bytes.isEmpty { forwardRequestBody(context.channel.allocator.buffer(bytes: bytes)) }
        if endOfStream { forwardRequestEnd(nil) }
    }

    func chainRequestTrailers(_ trailers: HeaderMap) {
        forwardRequestEnd(HTTPHeaders(trailers.pairs))
    }

    // MARK: response side

    func chainResponseHeaders(endOfStream: Bool) {
        guard let data = streamData, let map = data.responseHeaders, let request = chainHead else { return }
        // The hostcalls accept only final statuses; a map that still holds something else
        // (it cannot, but this is where the value takes effect) is answered as 500.
        let status = map.first(":status").flatMap(PluginVM.validFinalStatus) ?? 500
        var head = HTTPResponseHead(version: request.version, status: HTTPResponseStatus(statusCode: status))
        for (name, value) in map.entries where !name.hasPrefix(":") { head.headers.add(name: name, value: value) }
        stripHopByHop(&head.headers)
        frameDownstreamResponse(&head, method: request.method)
        // Whether the client has sent its whole request (not whether it went upstream: a
        // filter may hold or drop it), which decides between keeping the connection and
        // reading the rest of the body away.
        let requestDone = requestEndReceived
        if closeAfterResponse || !requestDone { head.headers.replaceOrAdd(name: "connection", value: "close") }
        data.info.responseCode = status
        data.info.finalResponseHeaders = map
        responseHeadWritten = true
        exchange?.responseStatus = status
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if endOfStream { completeResponse(trailers: nil) }
    }

    func chainResponseData(_ bytes: [UInt8], endOfStream: Bool) {
        guard responseHeadWritten else { return }
        if !bytes.isEmpty {
            exchange?.bytesSent += bytes.count
            listener.stats.bytesSent.increment(by: bytes.count)
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: bytes)))), promise: nil)
        }
        if endOfStream { completeResponse(trailers: nil) } else { context.flush() }
    }

    func chainResponseTrailers(_ trailers: HeaderMap) {
        guard responseHeadWritten else { return }
        streamData?.info.finalResponseTrailers = trailers
        completeResponse(trailers: HTTPHeaders(trailers.pairs))
    }

    /// The response (proxied or local) has fully passed the filters.
    private func completeResponse(trailers: HTTPHeaders?) {
        lastResponseEnd = context.writeAndFlush(wrapOutboundOut(.end(trailers)))
        let requestDone = requestEndReceived
        if !requestDone { discardRestOfRequest() }
        if let exchange {
            finish(exchange, reusable: exchange.requestSent)
        } else {
            // A filter answered before any upstream was involved.
            logChainLocalReply()
            endFilters()
            if context.channel.isActive { afterExchange() }
        }
    }

    func chainAbortUpstream() {
        guard let exchange else { return }
        exchange.timeout?.cancel()
        exchange.timeout = nil
        if exchange.flag == nil { exchange.flag = .filter("wasm_local_reply") }
        detachUpstream(exchange, reusable: false)
        // The upstream response, if one arrives now, is not ours to forward.
        exchange.responseHeadSent = true
    }

    func chainResetStream(reason: String) {
        exchange?.flag = .filter(reason)
        context.close(promise: nil)
    }

    // MARK: end of stream

    /// on_log, on_done and on_delete for every filter, with the response facts filled in.
    func endFilters() {
        guard let chain else { return }
        self.chain = nil
        if let info = streamData?.info {
            info.endTime = Date()
            info.finalRequestHeaders = streamData?.requestHeaders
            if let status = exchange?.responseStatus, status > 0, info.responseCode == 0 { info.responseCode = status }
        }
        chain.finish()
        streamData = nil
    }

    private func logChainLocalReply() {
        guard let info = streamData?.info, let head = chainHead else { return }
        logStream(head: head, route: chainRoute, status: info.responseCode, start: info.requestStart, bytesReceived: info.requestBodyBytes,
                  bytesSent: info.responseBodyBytes, upstream: "-", requestID: head.headers.first(name: "x-request-id") ?? "-",
                  flags: info.responseCodeDetails.isEmpty ? "wasm_local_reply" : info.responseCodeDetails,
                  responseFlags: ResponseFlags(rawValue: UInt64(info.responseFlags)))
    }
}
