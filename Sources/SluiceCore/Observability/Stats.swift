import Foundation
import Synchronization

/// A monotonically increasing count shared by all workers. Atomics, not locks: every worker
/// bumps these on the hot path and a relaxed atomic add is the cheapest correct choice.
public final class Counter: Sendable {
    private let value = Atomic<Int>(0)
    public init() {}
    @inline(__always) public func increment(by n: Int = 1) { value.add(n, ordering: .relaxed) }
    public var load: Int { value.load(ordering: .relaxed) }
}

/// A value that goes up and down (active connections, endpoint health).
public final class Gauge: Sendable {
    private let value = Atomic<Int>(0)
    public init() {}
    @inline(__always) public func increment() { value.add(1, ordering: .relaxed) }
    @inline(__always) public func decrement() { value.subtract(1, ordering: .relaxed) }
    public func set(_ n: Int) { value.store(n, ordering: .relaxed) }
    public var load: Int { value.load(ordering: .relaxed) }
}

/// Responses counted by status class (1xx..5xx), the way operators alert on them.
public final class StatusClassCounters: Sendable {
    private let counters = (0..<5).map { _ in Counter() }
    public init() {}
    @inline(__always) public func record(status: Int) {
        let index = min(max(status / 100, 1), 5) - 1
        counters[index].increment()
    }
    public func count(forClass c: Int) -> Int { counters[c - 1].load }
}

public final class ListenerStats: Sendable {
    public let name: String
    public let connectionsTotal = Counter()
    public let connectionsActive = Gauge()
    public let requests = Counter()
    public let responses = StatusClassCounters()
    public let bytesReceived = Counter()
    public let bytesSent = Counter()
    /// Requests refused before routing: malformed (400), oversized headers (431), smuggling.
    public let protocolErrors = Counter()
    /// The same refusals (and timeouts that cut a request), by reason.
    let refusals = DownstreamRefusal.allCases.map { _ in Counter() }
    public let tlsHandshakes = Counter()
    /// TLS connections that never carried a request, by why.
    let tlsFailures = TLSFailure.allCases.map { _ in Counter() }
    public let http2Connections = Counter()
    public let http2Streams = Counter()
    /// HTTP/2 streams reset, by either side.
    public let http2Resets = Counter()
    /// GOAWAY frames Sluice sent to end a connection gracefully (drain, idle, age).
    public let http2GoAways = Counter()
    /// Stream and connection errors NIOHTTP2 found (malformed requests, floods).
    public let http2ProtocolErrors = Counter()
    init(name: String) { self.name = name }

    func record(_ failure: TLSFailure) { tlsFailures[failure.rawValue].increment() }

    func record(_ refusal: DownstreamRefusal) {
        protocolErrors.increment()
        refusals[refusal.rawValue].increment()
    }
}

public final class RouteStats: Sendable {
    public let listener: String
    public let route: String
    public let requests = Counter()
    public let responses = StatusClassCounters()
    init(listener: String, route: String) {
        self.listener = listener
        self.route = route
    }
}

public final class ClusterStats: Sendable {
    public let name: String
    public let requests = Counter()
    public let responses = StatusClassCounters()
    public let connectionsTotal = Counter()
    public let connectionsActive = Gauge()
    public let connectFailures = Counter()
    public let retries = Counter()
    public let timeouts = Counter()
    public let noHealthyEndpoint = Counter()
    public let bytesSent = Counter()
    public let bytesReceived = Counter()
    public let healthChecksPassed = Counter()
    public let healthChecksFailed = Counter()
    public let outlierEjections = Counter()
    /// Upstream responses refused (502 or a cut) and connections not reused, by reason.
    let protocolErrors = UpstreamProtocolError.allCases.map { _ in Counter() }
    init(name: String) { self.name = name }

    func record(_ error: UpstreamProtocolError) { protocolErrors[error.rawValue].increment() }
}

/// All stats of one running configuration, rendered in Prometheus text format at /stats.
public final class StatsRegistry: Sendable {
    public let listeners: [String: ListenerStats]
    public let routes: [String: RouteStats]  // key: "listener\0route"
    public let clusters: [String: ClusterStats]
    let listenerOrder: [String]
    let routeOrder: [String]
    let clusterOrder: [String]

    init(listeners: [String], routes: [(String, String)], clusters: [String], previous: StatsRegistry? = nil) {
        var l: [String: ListenerStats] = [:]
        for name in listeners { l[name] = previous?.listeners[name] ?? ListenerStats(name: name) }
        var r: [String: RouteStats] = [:]
        for (listener, route) in routes {
            let key = "\(listener)\u{0}\(route)"
            r[key] = previous?.routes[key] ?? RouteStats(listener: listener, route: route)
        }
        var c: [String: ClusterStats] = [:]
        for name in clusters { c[name] = previous?.clusters[name] ?? ClusterStats(name: name) }
        self.listeners = l
        self.routes = r
        self.clusters = c
        self.listenerOrder = listeners
        self.routeOrder = routes.map { "\($0.0)\u{0}\($0.1)" }
        self.clusterOrder = clusters
    }

    public func route(listener: String, route: String) -> RouteStats? { routes["\(listener)\u{0}\(route)"] }
}

/// Prometheus text exposition (version 0.0.4): one HELP/TYPE block per family.
struct PrometheusWriter {
    private(set) var text = ""

    mutating func family(_ name: String, _ type: String, _ help: String, _ samples: [(labels: [(String, String)], value: Int)]) {
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        for sample in samples {
            text += name
            if !sample.labels.isEmpty {
                text += "{" + sample.labels.map { "\($0.0)=\"\(escape($0.1))\"" }.joined(separator: ",") + "}"
            }
            text += " \(sample.value)\n"
        }
    }

    mutating func histogram(_ name: String, _ help: String, buckets: [(labels: [(String, String)], value: Int)],
                            sums: [(labels: [(String, String)], value: Int)], counts: [(labels: [(String, String)], value: Int)]) {
        text += "# HELP \(name) \(help)\n# TYPE \(name) histogram\n"
        func line(_ suffix: String, _ s: (labels: [(String, String)], value: Int)) {
            text += name + suffix
            if !s.labels.isEmpty { text += "{" + s.labels.map { "\($0.0)=\"\(escape($0.1))\"" }.joined(separator: ",") + "}" }
            text += " \(s.value)\n"
        }
        for b in buckets { line("_bucket", b) }
        for s in sums { line("_sum", s) }
        for c in counts { line("_count", c) }
    }

    private func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }
}

extension StatsRegistry {
    func renderPrometheus(endpointHealth: [(cluster: String, endpoint: String, healthy: Bool, ejected: Bool)]) -> String {
        var w = PrometheusWriter()
        let ls = listenerOrder.compactMap { listeners[$0] }
        func byListener(_ f: (ListenerStats) -> Int) -> [(labels: [(String, String)], value: Int)] {
            ls.map { ([("listener", $0.name)], f($0)) }
        }
        func classes<T>(_ items: [T], _ labels: (T) -> [(String, String)], _ counters: (T) -> StatusClassCounters) -> [(labels: [(String, String)], value: Int)] {
            items.flatMap { item in (1...5).map { c in (labels(item) + [("class", "\(c)xx")], counters(item).count(forClass: c)) } }
        }
        w.family("sluice_listener_connections_total", "counter", "Downstream connections accepted.", byListener { $0.connectionsTotal.load })
        w.family("sluice_listener_connections_active", "gauge", "Downstream connections open now.", byListener { $0.connectionsActive.load })
        w.family("sluice_listener_requests_total", "counter", "Downstream requests received.", byListener { $0.requests.load })
        w.family("sluice_listener_responses_total", "counter", "Downstream responses by status class.", classes(ls, { [("listener", $0.name)] }, { $0.responses }))
        w.family("sluice_listener_protocol_errors_total", "counter", "Requests refused as malformed, oversized or ambiguous.", byListener { $0.protocolErrors.load })
        w.family("sluice_listener_refused_total", "counter", "Requests refused or cut by Sluice, by reason.",
                 ls.flatMap { l in DownstreamRefusal.allCases.map { ([("listener", l.name), ("reason", $0.label)], l.refusals[$0.rawValue].load) } })
        w.family("sluice_listener_tls_handshakes_total", "counter", "TLS handshakes completed.", byListener { $0.tlsHandshakes.load })
        w.family("sluice_listener_tls_failures_total", "counter", "TLS connections that failed before a request, by reason.",
                 ls.flatMap { l in TLSFailure.allCases.map { ([("listener", l.name), ("reason", $0.label)], l.tlsFailures[$0.rawValue].load) } })
        w.family("sluice_listener_http2_connections_total", "counter", "Downstream connections that spoke HTTP/2.", byListener { $0.http2Connections.load })
        w.family("sluice_listener_http2_streams_total", "counter", "HTTP/2 streams opened by clients.", byListener { $0.http2Streams.load })
        w.family("sluice_listener_http2_resets_total", "counter", "HTTP/2 streams reset by either side.", byListener { $0.http2Resets.load })
        w.family("sluice_listener_http2_goaways_total", "counter", "Graceful GOAWAY frames sent (drain, idle, max connection duration).", byListener { $0.http2GoAways.load })
        w.family("sluice_listener_http2_protocol_errors_total", "counter", "HTTP/2 stream and connection errors (malformed frames or requests, floods).", byListener { $0.http2ProtocolErrors.load })
        w.family("sluice_listener_bytes_received_total", "counter", "Bytes received from downstream.", byListener { $0.bytesReceived.load })
        w.family("sluice_listener_bytes_sent_total", "counter", "Bytes sent to downstream.", byListener { $0.bytesSent.load })

        let rs = routeOrder.compactMap { routes[$0] }
        w.family("sluice_route_requests_total", "counter", "Requests matched to a route.", rs.map { ([("listener", $0.listener), ("route", $0.route)], $0.requests.load) })
        w.family("sluice_route_responses_total", "counter", "Responses by route and status class.", classes(rs, { [("listener", $0.listener), ("route", $0.route)] }, { $0.responses }))

        let cs = clusterOrder.compactMap { clusters[$0] }
        func byCluster(_ f: (ClusterStats) -> Int) -> [(labels: [(String, String)], value: Int)] {
            cs.map { ([("cluster", $0.name)], f($0)) }
        }
        w.family("sluice_cluster_requests_total", "counter", "Requests sent upstream (each attempt).", byCluster { $0.requests.load })
        w.family("sluice_cluster_responses_total", "counter", "Upstream responses by status class.", classes(cs, { [("cluster", $0.name)] }, { $0.responses }))
        w.family("sluice_cluster_upstream_connections_total", "counter", "Upstream connections opened.", byCluster { $0.connectionsTotal.load })
        w.family("sluice_cluster_upstream_connections_active", "gauge", "Upstream connections open now.", byCluster { $0.connectionsActive.load })
        w.family("sluice_cluster_connect_failures_total", "counter", "Upstream connection attempts that failed.", byCluster { $0.connectFailures.load })
        w.family("sluice_cluster_retries_total", "counter", "Request retries.", byCluster { $0.retries.load })
        w.family("sluice_cluster_timeouts_total", "counter", "Requests that timed out waiting for the upstream.", byCluster { $0.timeouts.load })
        w.family("sluice_cluster_no_healthy_endpoint_total", "counter", "Requests refused with 503 for want of a healthy endpoint.", byCluster { $0.noHealthyEndpoint.load })
        w.family("sluice_cluster_bytes_sent_total", "counter", "Bytes sent upstream.", byCluster { $0.bytesSent.load })
        w.family("sluice_cluster_bytes_received_total", "counter", "Bytes received from upstream.", byCluster { $0.bytesReceived.load })
        w.family("sluice_cluster_health_checks_passed_total", "counter", "Active health checks that passed.", byCluster { $0.healthChecksPassed.load })
        w.family("sluice_cluster_health_checks_failed_total", "counter", "Active health checks that failed.", byCluster { $0.healthChecksFailed.load })
        w.family("sluice_cluster_outlier_ejections_total", "counter", "Endpoints ejected by passive outlier detection.", byCluster { $0.outlierEjections.load })
        w.family("sluice_cluster_protocol_errors_total", "counter", "Upstream responses refused and connections not reused, by reason.",
                 cs.flatMap { c in UpstreamProtocolError.allCases.map { ([("cluster", c.name), ("reason", $0.label)], c.protocolErrors[$0.rawValue].load) } })
        w.family("sluice_cluster_endpoint_healthy", "gauge", "1 when the endpoint receives traffic (healthy and not ejected).",
                 endpointHealth.map { ([("cluster", $0.cluster), ("endpoint", $0.endpoint)], ($0.healthy && !$0.ejected) ? 1 : 0) })
        return w.text
    }
}
