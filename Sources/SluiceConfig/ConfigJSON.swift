/// The effective configuration as JSON, for the admin `/config_dump`: every default filled in,
/// so an operator sees what actually runs rather than what was written.
extension SluiceConfiguration {
    public func jsonDump() -> String {
        let w = JSONWriter()
        w.object {
            w.key("admin") { w.object { w.field("address", admin.address.description) } }
            w.key("drain_timeout") { w.value(format(drainTimeout)) }
            w.key("access_log") { w.object { w.field("format", accessLog.format.rawValue); w.field("path", accessLog.path) } }
            w.key("listeners") { w.array(listeners) { l in
                w.object {
                    w.field("name", l.name)
                    w.field("address", l.address.description)
                    w.field("protocol", l.proto.rawValue)
                    if l.proto == .http {
                        w.key("http_filters") { w.array(l.httpFilters) { w.value($0) } }
                        w.field("max_request_headers_kb", l.maxRequestHeadersBytes / 1024)
                        w.field("request_headers_timeout", format(l.requestHeadersTimeout))
                        w.field("stream_idle_timeout", format(l.streamIdleTimeout))
                        w.field("request_timeout", format(l.requestTimeout))
                        w.field("max_connection_duration", format(l.maxConnectionDuration))
                        w.field("max_pipelined_requests", l.maxPipelinedRequests)
                        w.field("codec", l.codec.rawValue)
                        w.key("http2") { w.object {
                            w.field("max_concurrent_streams", l.http2.maxConcurrentStreams)
                            w.field("initial_stream_window_size", l.http2.initialStreamWindowSize)
                            w.field("initial_connection_window_size", l.http2.initialConnectionWindowSize)
                            w.field("max_frame_size", l.http2.maxFrameSize)
                        } }
                        w.key("routes") { w.array(l.routes) { r in dumpRoute(w, r) } }
                    } else {
                        w.field("cluster", l.tcpCluster ?? "")
                    }
                    w.key("network_filters") { w.array(l.networkFilters) { w.value($0) } }
                    w.field("idle_timeout", format(l.idleTimeout))
                    if let tls = l.tls {
                        w.key("tls") { w.object {
                            w.key("certificates") { w.array(tls.serverNames) { g in w.object {
                                w.key("server_names") { w.array(g.serverNames) { w.value($0) } }
                                w.key("certificate_chains") { w.array(g.certificates) { w.value($0.certificateChain) } }
                            } } }
                            w.field("min_version", tls.minimumVersion.rawValue)
                            w.field("max_version", tls.maximumVersion.rawValue)
                            w.key("alpn") { w.array(tls.alpn) { w.value($0) } }
                            if let ca = tls.clientCA { w.field("client_ca", ca) }
                            w.field("require_client_certificate", tls.requireClientCertificate)
                        } }
                    }
                }
            } }
            w.key("clusters") { w.array(clusters) { c in
                w.object {
                    w.field("name", c.name)
                    w.key("endpoints") { w.array(c.endpoints) { e in w.object { w.field("address", e.address.description); w.field("weight", e.weight) } } }
                    w.field("lb", c.lb.rawValue)
                    w.field("connect_timeout", format(c.connectTimeout))
                    w.field("idle_timeout", format(c.idleTimeout))
                    w.field("max_connections", c.maxConnections)
                    w.field("protocol", c.upstreamProtocol.rawValue)
                    if let tls = c.tls {
                        w.key("tls") { w.object {
                            if let name = tls.serverName { w.field("server_name", name) }
                            w.field("verify", tls.verify)
                            w.field("verify_name", tls.verifyName)
                            if let ca = tls.trustedCA { w.field("trusted_ca", ca) }
                            if let client = tls.clientCertificate { w.field("certificate_chain", client.certificateChain) }
                            w.field("min_version", tls.minimumVersion.rawValue)
                            w.field("max_version", tls.maximumVersion.rawValue)
                        } }
                    }
                    if let hc = c.healthCheck {
                        w.key("health_check") { w.object {
                            w.field("path", hc.path); w.field("interval", format(hc.interval)); w.field("timeout", format(hc.timeout))
                            w.field("healthy_threshold", hc.healthyThreshold); w.field("unhealthy_threshold", hc.unhealthyThreshold)
                            if let host = hc.host { w.field("host", host) }
                        } }
                    }
                    if let od = c.outlierDetection {
                        w.key("outlier_detection") { w.object {
                            w.field("consecutive_connect_failures", od.consecutiveConnectFailures)
                            w.field("consecutive_5xx", od.consecutive5xx)
                            w.field("base_ejection_time", format(od.baseEjectionTime))
                        } }
                    }
                }
            } }
            w.key("plugins") { w.array(plugins) { p in
                w.object {
                    w.field("name", p.name); w.field("module", p.module); w.field("root_id", p.rootID); w.field("vm_id", p.vmID)
                    w.field("configuration", p.configuration); w.field("failure_policy", p.failurePolicy.rawValue)
                    w.key("allow_on_headers_stop_iteration") { w.raw(p.allowOnHeadersStopIteration ? "true" : "false") }
                    if let runtime = p.runtime { w.key("runtime") { w.value(runtime.rawValue) } }
                    if let service = p.service { w.key("service") { w.value(service.rawValue) } }
                    w.key("environment") { w.object { for (k, v) in p.environment.sorted(by: { $0.key < $1.key }) { w.field(k, v) } } }
                }
            } }
        }
        return w.text
    }

    private func dumpRoute(_ w: JSONWriter, _ r: RouteConfig) {
        w.object {
            w.field("name", r.name)
            w.key("match") { w.object {
                if !r.match.hosts.isEmpty {
                    w.key("hosts") { w.array(r.match.hosts) { h in
                        switch h {
                        case .any: w.value("*")
                        case .exact(let n): w.value(n)
                        case .suffix(let s): w.value("*" + s)
                        }
                    } }
                }
                switch r.match.path {
                case .prefix(let p): w.field("prefix", p)
                case .exact(let p): w.field("path", p)
                case .regex(let p): w.field("regex", p)
                }
                if !r.match.methods.isEmpty { w.key("methods") { w.array(r.match.methods) { w.value($0) } } }
                if !r.match.headers.isEmpty {
                    w.key("headers") { w.array(r.match.headers) { h in w.object { w.field("name", h.name); if let v = h.value { w.field("value", v) } } } }
                }
            } }
            switch r.action {
            case .directResponse(let status, let body):
                w.key("direct_response") { w.object { w.field("status", status); w.field("body", body) } }
            case .cluster(let t):
                w.field("cluster", t.cluster)
                if let p = t.prefixRewrite { w.field("prefix_rewrite", p) }
                if let h = t.hostRewrite { w.field("host_rewrite", h) }
                w.field("timeout", format(t.timeout))
                if let retry = t.retry {
                    w.key("retry") { w.object {
                        w.field("attempts", retry.attempts)
                        w.key("on") { w.array(retry.on) { w.value($0.rawValue) } }
                        w.field("budget_percent", retry.budgetPercent)
                        w.field("min_retry_concurrency", retry.minRetryConcurrency)
                    } }
                }
            }
        }
    }
}

func format(_ d: Duration) -> String {
    let (s, atto) = d.components
    let ms = s * 1000 + atto / 1_000_000_000_000_000
    if ms % 1000 == 0 { return "\(ms / 1000)s" }
    return "\(ms)ms"
}

/// A minimal streaming JSON writer: enough for dumps, with correct string escaping.
public final class JSONWriter {
    public init() {}
    public private(set) var text = ""
    private var needsComma = [false]

    private func separator() {
        if needsComma[needsComma.count - 1] { text += "," }
        needsComma[needsComma.count - 1] = true
    }

    public func object(_ body: () -> Void) {
        separatorIfValue()
        text += "{"
        needsComma.append(false)
        body()
        needsComma.removeLast()
        text += "}"
    }

    public func array<T>(_ items: [T], _ each: (T) -> Void) {
        separatorIfValue()
        text += "["
        needsComma.append(false)
        for item in items { each(item) }
        needsComma.removeLast()
        text += "]"
    }

    private var pendingKey = false
    private func separatorIfValue() {
        if pendingKey { pendingKey = false } else { separator() }
    }

    public func key(_ name: String, _ body: () -> Void) {
        separator()
        text += JSONRendering.quote(name) + ":"
        pendingKey = true
        body()
    }

    public func value(_ s: String) { separatorIfValue(); text += JSONRendering.quote(s) }
    /// A literal JSON token (true, false, null, a number).
    public func raw(_ token: String) { separatorIfValue(); text += token }
    public func value(_ n: Int) { separatorIfValue(); text += String(n) }
    public func value(_ n: Double) { separatorIfValue(); text += String(n) }
    public func field(_ k: String, _ v: String) { key(k) { value(v) } }
    public func field(_ k: String, _ v: Int) { key(k) { value(v) } }
    public func field(_ k: String, _ v: Double) { key(k) { value(v) } }
    public func field(_ k: String, _ v: Bool) { key(k) { raw(v ? "true" : "false") } }
}
