import ProxyWasm
import NIOCore
import SluiceConfig

/// A listener's immutable, shared part: config, stats and compiled routes.
final class ListenerRuntime: Sendable {
    let config: ListenerConfig
    let stats: ListenerStats
    let routes: RouteTable
    let tcpCluster: ClusterRuntime?
    /// `xds.listener_metadata`.
    let metadata: Metadata
    /// Certificates and TLS settings, built with the generation; nil: cleartext.
    let tls: ServerTLS?

    init(config: ListenerConfig, stats: StatsRegistry, clusters: [String: ClusterRuntime], tls: ServerTLS? = nil) {
        self.config = config
        self.tls = tls
        self.stats = stats.listeners[config.name]!
        self.routes = RouteTable(routes: config.routes.map { route in
            var cluster: ClusterRuntime?
            if case .cluster(let target) = route.action { cluster = clusters[target.cluster] }
            return CompiledRoute(config: route, stats: stats.route(listener: config.name, route: route.name)!, cluster: cluster)
        })
        self.tcpCluster = config.tcpCluster.flatMap { clusters[$0] }
        self.metadata = Metadata(config.metadata)
    }
}

/// Per event loop: the generation of configuration that new requests on this loop use.
/// Swapped on the loop itself at reload, so requests read it without a lock; a request that
/// started on the previous generation keeps its references and finishes on it.
final class LoopSlot: @unchecked Sendable {
    let eventLoop: EventLoop
    var worker: Worker
    var listeners: [String: ListenerRuntime]
    init(eventLoop: EventLoop, worker: Worker, listeners: [String: ListenerRuntime]) {
        self.eventLoop = eventLoop
        self.worker = worker
        self.listeners = listeners
    }
}

/// Per-event-loop state: each worker owns its load-balancer state, keep-alive pools and
/// access-log buffer, so the request path never takes a lock.
final class Worker: @unchecked Sendable {
    // @unchecked: every mutable member is confined to `eventLoop`.
    let eventLoop: EventLoop
    let clusters: [String: ClusterLoopState]
    let accessLog: AccessLogBuffer
    let requestIDs = RequestIDSource()
    /// This worker's VM of each plugin (and per-route variant), keyed like PluginManager's.
    var plugins: [String: PluginWorker] = [:]
    /// The rollout version of a plugin, by plugin name (also in `plugins`, under its rollout
    /// key): found per stream without building that key.
    var rollouts: [String: PluginWorker] = [:]

    init(eventLoop: EventLoop, clusters: [String: ClusterRuntime], accessLog: AccessLogSink) {
        self.eventLoop = eventLoop
        self.clusters = clusters.mapValues { ClusterLoopState(runtime: $0, eventLoop: eventLoop) }
        self.accessLog = AccessLogBuffer(sink: accessLog, eventLoop: eventLoop)
    }

    func state(for cluster: ClusterRuntime) -> ClusterLoopState { clusters[cluster.config.name]! }
}

/// Everything one configuration needs at run time, shared by all workers.
final class ProxyRuntime: Sendable {
    let config: SluiceConfiguration
    let stats: StatsRegistry
    let clusters: [String: ClusterRuntime]
    let listeners: [String: ListenerRuntime]
    private let workers: [ObjectIdentifier: Worker]

    /// - Parameter previous: the runtime this one replaces on reload; its counters carry over
    ///   for every listener, route and cluster that keeps its name.
    /// - Parameter tls: each TLS listener's contexts (built by `ServerTLS.build`, which can fail).
    init(config: SluiceConfiguration, eventLoops: [EventLoop], previous: ProxyRuntime? = nil, tls: [String: ServerTLS] = [:],
         upstreamTLS: [String: UpstreamTLS] = [:]) {
        self.config = config
        let stats = StatsRegistry(
            listeners: config.listeners.map(\.name),
            routes: config.listeners.flatMap { l in l.routes.map { (l.name, $0.name) } },
            clusters: config.clusters.map(\.name),
            previous: previous?.stats
        )
        self.stats = stats
        var clusters: [String: ClusterRuntime] = [:]
        for c in config.clusters { clusters[c.name] = ClusterRuntime(config: c, stats: stats.clusters[c.name]!, tls: upstreamTLS[c.name]) }
        self.clusters = clusters
        var listeners: [String: ListenerRuntime] = [:]
        for l in config.listeners { listeners[l.name] = ListenerRuntime(config: l, stats: stats, clusters: clusters, tls: tls[l.name]) }
        self.listeners = listeners
        let sink = AccessLogSink(config: config.accessLog)
        var workers: [ObjectIdentifier: Worker] = [:]
        for loop in eventLoops { workers[ObjectIdentifier(loop)] = Worker(eventLoop: loop, clusters: clusters, accessLog: sink) }
        self.workers = workers
    }

    func worker(for loop: EventLoop) -> Worker { workers[ObjectIdentifier(loop)]! }

    var allWorkers: [Worker] { Array(workers.values) }

    func endpointHealth() -> [(cluster: String, endpoint: String, healthy: Bool, ejected: Bool)] {
        let now = NIODeadline.now()
        return config.clusters.flatMap { c in
            clusters[c.name]!.endpoints.map { (c.name, $0.address.description, $0.isHealthy, $0.isEjected(now: now)) }
        }
    }
}
