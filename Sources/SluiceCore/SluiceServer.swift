import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import SluiceConfig
import Synchronization

public enum SluiceVersion {
    public static let string = "0.1.0"
}

/// Downstream connections of the server, kept so a drain can ask each to finish. Touched on
/// connect and close only, never per request, so one lock is cheap here.
final class ConnectionRegistry: Sendable {
    private let channels = Mutex<[ObjectIdentifier: Channel]>([:])
    func add(_ channel: Channel) {
        channels.withLock { $0[ObjectIdentifier(channel)] = channel }
        channel.closeFuture.whenComplete { _ in _ = self.channels.withLock { $0.removeValue(forKey: ObjectIdentifier(channel)) } }
    }
    var all: [Channel] { channels.withLock { Array($0.values) } }
    var count: Int { channels.withLock { $0.count } }
}

/// The running proxy: listeners, admin, health checkers, all on one event-loop group with one
/// worker per loop.
public final class SluiceServer: @unchecked Sendable {
    // @unchecked: the mutable members are set during start() and shutdown(), which callers serialise.
    let runtime: ProxyRuntime
    public let group: MultiThreadedEventLoopGroup
    private let ownsGroup: Bool
    private let logger: Logger
    private var serverChannels: [String: Channel] = [:]
    private var adminChannel: Channel?
    private var healthCheckers: [HealthChecker] = []
    private(set) var pluginManager: PluginManager?
    private let connections = ConnectionRegistry()
    private let draining = Atomic<Bool>(false)

    public var config: SluiceConfiguration { runtime.config }
    public var isDraining: Bool { draining.load(ordering: .relaxed) }

    public init(config: SluiceConfiguration, workers: Int = System.coreCount, group: MultiThreadedEventLoopGroup? = nil, logger: Logger = Logger(label: "sluice")) {
        self.group = group ?? MultiThreadedEventLoopGroup(numberOfThreads: max(1, workers))
        self.ownsGroup = group == nil
        self.logger = logger
        var loops: [EventLoop] = []
        for loop in self.group.makeIterator() { loops.append(loop) }
        self.runtime = ProxyRuntime(config: config, eventLoops: loops)
    }

    /// Binds every listener and the admin API, after loading every plugin. Throws (after
    /// closing what was bound) if a plugin fails to load or start, or a bind fails.
    public func start() async throws {
        let manager = try PluginManager(config: runtime.config, logger: logger)
        pluginManager = manager
        for worker in runtime.allWorkers {
            try await worker.eventLoop.submit { [logger] in
                var all = manager.plugins
                for (key, variant) in manager.variants { all[key] = variant }
                for (key, plugin) in all {
                    let pw = PluginWorker(runtime: plugin, shared: manager.shared, worker: worker, logger: logger)
                    pw.startVM()
                    worker.plugins[key] = pw
                }
            }.get()
        }
        do {
            for listener in runtime.config.listeners {
                let l = runtime.listeners[listener.name]!
                let channel = try await bind(listener: l)
                serverChannels[listener.name] = channel
                logger.info("listening", metadata: ["listener": "\(listener.name)", "address": "\(channel.localAddress.map(describe) ?? "?")", "protocol": "\(listener.proto.rawValue)"])
            }
            adminChannel = try await bindAdmin()
            logger.info("admin listening", metadata: ["address": "\(adminChannel!.localAddress.map(describe) ?? "?")"])
        } catch {
            for c in serverChannels.values { try? await c.close() }
            try? await adminChannel?.close()
            throw error
        }
        let loop = group.next()
        for cluster in runtime.config.clusters {
            guard let check = cluster.healthCheck else { continue }
            let checker = HealthChecker(cluster: runtime.clusters[cluster.name]!, check: check, eventLoop: loop, logger: logger)
            checker.start()
            healthCheckers.append(checker)
        }
    }

    /// The bound address of a listener (useful with port 0).
    public func address(ofListener name: String) -> SocketAddress? { serverChannels[name]?.localAddress }
    public var adminAddress: SocketAddress? { adminChannel?.localAddress }

    public func prometheusText() -> String {
        var text = runtime.stats.renderPrometheus(endpointHealth: runtime.endpointHealth())
        if let manager = pluginManager { text += renderPluginMetrics(manager) }
        return text
    }

    private func describe(_ a: SocketAddress) -> String {
        "\(a.ipAddress ?? "?"):\(a.port ?? 0)"
    }

    private func bind(listener: ListenerRuntime) async throws -> Channel {
        let runtime = self.runtime
        let connections = self.connections
        let proto = listener.config.proto
        let maxHeaders = listener.config.maxRequestHeadersBytes
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: proto == .tcp)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    connections.add(channel)
                    let worker = runtime.worker(for: channel.eventLoop)
                    let sync = channel.pipeline.syncOperations
                    switch proto {
                    case .tcp:
                        try sync.addHandler(TCPProxyHandler(listener: listener, worker: worker))
                    case .http:
                        var limits = NIOHTTPDecoderLimitConfiguration()
                        limits.maxHeaderListSize = maxHeaders
                        limits.maxHeaderFieldSize = maxHeaders
                        // An (empty) upgrade configuration makes the request decoder keep bytes
                        // that follow an upgrade request, which the tunnel then forwards.
                        let upgrade: NIOHTTPServerUpgradeConfiguration = (upgraders: [], completionHandler: { _ in })
                        try sync.configureHTTPServerPipeline(
                            withPipeliningAssistance: true, withServerUpgrade: upgrade, withErrorHandling: false,
                            withOutboundHeaderValidation: true, withEncoderConfiguration: .init(), withDecoderLimitConfiguration: limits)
                        try sync.addHandler(DownstreamErrorHandler(stats: listener.stats))
                        try sync.addHandler(HTTPProxyHandler(listener: listener, worker: worker))
                    }
                }
            }
            .bind(host: listener.config.address.host, port: listener.config.address.port)
            .get()
    }

    private func bindAdmin() async throws -> Channel {
        let address = runtime.config.admin.address
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(server: self))
                }
            }
            .bind(host: address.host, port: address.port)
            .get()
    }

    /// Graceful shutdown: stop accepting, let in-flight requests finish (idle connections close
    /// at once, busy ones after their current response), force-close what remains after
    /// `drainTimeout`, then stop.
    public func shutdown(drainTimeout: Duration? = nil) async {
        draining.store(true, ordering: .relaxed)
        for c in serverChannels.values { try? await c.close() }
        for checker in healthCheckers { checker.stop() }
        for channel in connections.all {
            channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
        let deadline = ContinuousClock.now + (drainTimeout ?? runtime.config.drainTimeout)
        while connections.count > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        for channel in connections.all { try? await channel.close() }
        for worker in runtime.allWorkers {
            try? await worker.eventLoop.submit {
                for plugin in worker.plugins.values { plugin.stop() }
                worker.plugins.removeAll()
                worker.accessLog.flush()
                for state in worker.clusters.values { state.closeAll() }
            }.get()
        }
        try? await adminChannel?.close()
        if ownsGroup { try? await group.shutdownGracefully() }
    }
}
