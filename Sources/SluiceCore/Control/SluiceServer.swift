import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ProxyWasm
import SluiceConfig
import Synchronization

public enum SluiceVersion {
    public static let string = "0.2.0"
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

/// One loaded configuration: the proxy runtime, its plugins and health checkers.
final class Generation: @unchecked Sendable {
    // @unchecked: `healthCheckers` is set once while the generation is built.
    let number: Int
    let runtime: ProxyRuntime
    let plugins: PluginManager
    var healthCheckers: [HealthChecker] = []
    init(number: Int, runtime: ProxyRuntime, plugins: PluginManager) {
        self.number = number
        self.runtime = runtime
        self.plugins = plugins
    }
}

public struct ReloadOutcome: Sendable {
    public var ok: Bool
    public var errors: [String]
    public var generation: Int
}

/// The running proxy: listeners, admin, health checkers and plugins, on one event-loop group
/// with one worker per loop. Configuration and filters are hot-swappable: `reload` builds a
/// complete new generation off the request path (validated config, compiled and canaried
/// plugins, per-worker VMs) and only then swaps it in, loop by loop; requests in flight
/// finish on the generation they started on.
public final class SluiceServer: @unchecked Sendable {
    // @unchecked: mutable members are changed only under `reloadLock` (start, reload,
    // shutdown run one at a time); `current` is also read by the admin API through `state`.
    public let group: MultiThreadedEventLoopGroup
    private let ownsGroup: Bool
    private let logger: Logger
    private let loops: [EventLoop]
    private var slots: [ObjectIdentifier: LoopSlot] = [:]
    private var serverChannels: [String: (config: ListenerConfig, channel: Channel)] = [:]
    private var adminChannel: Channel?
    private let connections = ConnectionRegistry()
    private let draining = Atomic<Bool>(false)
    private let state: Mutex<Generation?> = Mutex(nil)
    private let reloadLock = AsyncLock()
    let moduleCache = ModuleCache()
    let sharedPluginState = PluginSharedState()
    /// Where `reload()` without arguments reads the configuration from.
    public var configPath: String?
    /// The Wasm engine for plugins that name none (nil: Wasmtime when available, else
    /// WasmKit); set before `start`.
    public var defaultWasmRuntime: WasmRuntime?
    private var initialConfig: SluiceConfiguration
    let reloadCount = Counter()
    let reloadFailures = Counter()
    private let lastReload = Mutex<(at: Date?, errors: [String])>((nil, []))
    private var watcher: ConfigWatcher?

    var current: Generation { state.withLock { $0! } }
    var runtime: ProxyRuntime { current.runtime }
    var pluginManager: PluginManager? { state.withLock { $0?.plugins } }
    public var config: SluiceConfiguration { state.withLock { $0?.runtime.config } ?? initialConfig }
    public var isDraining: Bool { draining.load(ordering: .relaxed) }

    /// Envoy bootstraps with fields Sluice does not implement are run anyway (on reload too).
    public var allowUnsupported = false

    public init(config: SluiceConfiguration, workers: Int = System.coreCount, group: MultiThreadedEventLoopGroup? = nil, logger: Logger = Logger(label: "sluice")) {
        self.group = group ?? MultiThreadedEventLoopGroup(numberOfThreads: max(1, workers))
        self.ownsGroup = group == nil
        self.logger = logger
        self.initialConfig = config
        var loops: [EventLoop] = []
        for loop in self.group.makeIterator() { loops.append(loop) }
        self.loops = loops
    }

    // MARK: start

    /// Loads every plugin, then binds every listener and the admin API. Throws (after
    /// closing what was bound) if a plugin fails to load or start, or a bind fails.
    public func start() async throws {
        try await reloadLock.run {
            let generation = try await self.buildGeneration(self.initialConfig, previous: nil)
            for loop in self.loops {
                let worker = generation.runtime.worker(for: loop)
                self.slots[ObjectIdentifier(loop)] = LoopSlot(eventLoop: loop, worker: worker, listeners: generation.runtime.listeners)
            }
            self.state.withLock { $0 = generation }
            do {
                try await self.applyListeners(generation.runtime.config)
                self.adminChannel = try await self.bindAdmin()
                self.logger.info("admin listening", metadata: ["address": "\(self.adminChannel!.localAddress.map(self.describe) ?? "?")"])
            } catch {
                for (_, c) in self.serverChannels { try? await c.channel.close() }
                try? await self.adminChannel?.close()
                throw error
            }
            self.startHealthChecks(generation)
        }
    }

    /// Builds a complete generation: runtime (stats carried over), plugins compiled (cached by
    /// hash) and canaried, one started VM per plugin per worker. Nothing is swapped in yet.
    private func buildGeneration(_ config: SluiceConfiguration, previous: Generation?) async throws -> Generation {
        let runtime = ProxyRuntime(config: config, eventLoops: loops, previous: previous?.runtime, tls: try ServerTLS.build(config),
                                   upstreamTLS: try UpstreamTLS.build(config))
        let plugins = try PluginManager(config: config, logger: logger, cache: moduleCache, shared: sharedPluginState, previousStats: previous?.plugins.stats ?? [:], defaultRuntime: defaultWasmRuntime)
        let logger = self.logger
        var failures: [String] = []
        for (index, worker) in runtime.allWorkers.enumerated() {
            let failed = try await worker.eventLoop.submit { () -> [String] in
                var all = plugins.plugins
                for (key, variant) in plugins.variants { all[key] = variant }
                var failed: [String] = []
                // Plugins with the same vm_id, module and VM configuration share one VM per
                // worker, each with its own root context (as Envoy via cpp-host), in config order.
                var sharedVMs: [String: PluginVM] = [:]
                let order = all.keys.sorted { (plugins.order[$0] ?? Int.max, $0) < (plugins.order[$1] ?? Int.max, $1) }
                // A singleton Wasm service runs on the first worker only.
                for key in order {
                    let plugin = all[key]!
                    if plugin.config.service == .singleton && index != 0 { continue }
                    let pw = PluginWorker(runtime: plugin, shared: plugins.shared, worker: worker, logger: logger)
                    let vmKey = plugin.sharedVMKey
                    pw.startVM(sharing: vmKey.flatMap { sharedVMs[$0] })
                    if let vmKey, sharedVMs[vmKey] == nil, let vm = pw.activeVM { sharedVMs[vmKey] = vm }
                    if pw.activeVM == nil { failed.append(plugin.config.name) }
                    worker.plugins[key] = pw
                    if plugin.version == "rollout" { worker.rollouts[plugin.config.name] = pw }
                }
                return failed
            }.get()
            failures += failed
        }
        if !failures.isEmpty {
            // The canary started, a worker's VM did not: treat as a failed load.
            await retire(Generation(number: 0, runtime: runtime, plugins: plugins))
            throw PluginManager.LoadError(plugin: failures[0], description: "plugin '\(failures[0])' failed to start on a worker")
        }
        let number = (previous?.number ?? 0) + 1
        return Generation(number: number, runtime: runtime, plugins: plugins)
    }

    private func startHealthChecks(_ generation: Generation) {
        let loop = group.next()
        for cluster in generation.runtime.config.clusters {
            guard let check = cluster.healthCheck else { continue }
            let checker = HealthChecker(cluster: generation.runtime.clusters[cluster.name]!, check: check, eventLoop: loop, logger: logger)
            checker.start()
            generation.healthCheckers.append(checker)
        }
    }

    // MARK: reload

    /// Re-reads `configPath` and swaps it in; on any error the running configuration stays.
    @discardableResult
    public func reload() async -> ReloadOutcome {
        guard let path = configPath else { return ReloadOutcome(ok: false, errors: ["no config file to reload"], generation: current.number) }
        do {
            let (config, unsupported) = try ConfigLoader.loadAny(file: path, allowUnsupported: allowUnsupported)
            for u in unsupported { logger.warning("\(u.description)") }
            return await reload(config: config)
        } catch {
            return recordFailure(error.diagnostics.map(\.description))
        }
    }

    /// Swaps in a new configuration: new and changed listeners bound, removed ones closed,
    /// routes, clusters and plugins replaced for new requests; in-flight requests and idle
    /// keep-alive connections are kept (the latter use the new configuration next time).
    @discardableResult
    public func reload(config: SluiceConfiguration) async -> ReloadOutcome {
        await reloadLock.run {
            let old = self.current
            let generation: Generation
            do {
                generation = try await self.buildGeneration(config, previous: old)
            } catch {
                return self.recordFailure(["\(error)"])
            }
            // Swap loop by loop; each loop picks up the new generation for its next request.
            for loop in self.loops {
                let slot = self.slots[ObjectIdentifier(loop)]!
                let worker = generation.runtime.worker(for: loop)
                try? await loop.submit {
                    slot.worker = worker
                    slot.listeners = generation.runtime.listeners
                }.get()
            }
            self.state.withLock { $0 = generation }
            do {
                try await self.applyListeners(config)
            } catch {
                self.logger.error("reload: listener change failed: \(error)")
            }
            self.startHealthChecks(generation)
            await self.retire(old)
            self.reloadCount.increment()
            self.lastReload.withLock { $0 = (Date(), []) }
            self.logger.notice("configuration reloaded", metadata: ["generation": "\(generation.number)"])
            return ReloadOutcome(ok: true, errors: [], generation: generation.number)
        }
    }

    private func recordFailure(_ errors: [String]) -> ReloadOutcome {
        reloadFailures.increment()
        lastReload.withLock { $0 = (Date(), errors) }
        logger.error("reload rejected; the running configuration keeps serving:\n\(errors.joined(separator: "\n"))")
        return ReloadOutcome(ok: false, errors: errors, generation: state.withLock { $0?.number ?? 0 })
    }

    /// Retires a replaced generation: its health checks stop, its plugin VMs are freed once
    /// their last stream ends, its idle upstream connections close.
    private func retire(_ generation: Generation) async {
        for checker in generation.healthCheckers { checker.stop() }
        for worker in generation.runtime.allWorkers {
            try? await worker.eventLoop.submit {
                for plugin in worker.plugins.values { plugin.retire() }
                for state in worker.clusters.values { state.retire() }
            }.get()
        }
    }

    /// Binds listeners that are new or whose address or protocol changed, and closes those
    /// removed or replaced (their open connections finish their requests).
    private func applyListeners(_ config: SluiceConfiguration) async throws {
        let wanted = Dictionary(uniqueKeysWithValues: config.listeners.map { ($0.name, $0) })
        for (name, existing) in serverChannels {
            let next = wanted[name]
            if next == nil || next!.address != existing.config.address || next!.proto != existing.config.proto {
                try? await existing.channel.close()
                serverChannels[name] = nil
                logger.info("listener closed", metadata: ["listener": "\(name)"])
            }
        }
        for listener in config.listeners where serverChannels[listener.name] == nil {
            let channel = try await bind(listener: listener)
            serverChannels[listener.name] = (listener, channel)
            logger.info("listening", metadata: ["listener": "\(listener.name)", "address": "\(channel.localAddress.map(describe) ?? "?")", "protocol": "\(listener.proto.rawValue)"])
        }
    }

    // MARK: file watching

    /// Reloads when the config file or any plugin module changes (polled every 250 ms,
    /// debounced until the files have stopped changing for 200 ms).
    public func watchFiles() {
        guard configPath != nil else { return }
        let watcher = ConfigWatcher(files: { [weak self] in
            guard let self, let path = self.configPath else { return [] }
            let config = self.config
            var files: [String] = [path]
            for plugin in config.plugins { files += [plugin.module] + (plugin.rolloutModule.map { [$0] } ?? []) }
            // Certificates, keys and CA bundles: a renewed certificate is picked up like a config change.
            for listener in config.listeners { files += listener.tls?.files ?? [] }
            for cluster in config.clusters { files += cluster.tls?.files ?? [] }
            return files
        }, onChange: { [weak self] in
            guard let self else { return }
            Task { await self.reload() }
        })
        watcher.start()
        self.watcher = watcher
    }

    // MARK: introspection

    /// The bound address of a listener (useful with port 0).
    public func address(ofListener name: String) -> SocketAddress? { serverChannels[name]?.channel.localAddress }
    public var adminAddress: SocketAddress? { adminChannel?.localAddress }
    public var generationNumber: Int { current.number }

    public func prometheusText() -> String {
        let generation = current
        var text = generation.runtime.stats.renderPrometheus(endpointHealth: generation.runtime.endpointHealth())
        text += renderPluginMetrics(generation.plugins, tags: generation.runtime.config.statsTags)
        var w = PrometheusWriter()
        w.family("sluice_config_reloads_total", "counter", "Configuration reloads applied.", [([], reloadCount.load)])
        w.family("sluice_config_reload_failures_total", "counter", "Reloads rejected (the old configuration kept serving).", [([], reloadFailures.load)])
        w.family("sluice_config_generation", "gauge", "The generation of configuration serving new requests.", [([], generation.number)])
        return text + w.text
    }

    /// The admin /plugins view: every plugin's module hash, load time, version count and last error.
    public func pluginsJSON() -> String {
        let info = moduleCache.plugins
        let formatter = ISO8601DateFormatter()
        let w = JSONWriter()
        w.object {
            w.field("generation", current.number)
            let last = lastReload.withLock { $0 }
            if let at = last.at { w.field("last_reload", formatter.string(from: at)) }
            w.key("last_reload_errors") { w.array(last.errors) { w.value($0) } }
            w.key("plugins") {
                w.array(info.keys.sorted()) { name in
                    let i = info[name]!
                    w.object {
                        w.field("name", name)
                        w.field("module", i.module)
                        w.field("sha256", i.sha256)
                        w.field("runtime", i.runtime)
                        w.field("loaded_at", formatter.string(from: i.loadedAt))
                        w.field("versions", i.versions)
                        if let e = i.lastError { w.field("last_error", e) }
                        if let at = i.lastErrorAt { w.field("last_error_at", formatter.string(from: at)) }
                        if let r = i.rollout {
                            w.key("rollout") { w.object { w.field("module", r.module); w.field("sha256", r.sha256); w.field("weight", r.weight) } }
                        }
                    }
                }
            }
        }
        return w.text
    }

    private func describe(_ a: SocketAddress) -> String {
        "\(a.ipAddress ?? "?"):\(a.port ?? 0)"
    }

    // MARK: binding

    private func bind(listener: ListenerConfig) async throws -> Channel {
        let slots = self.slots
        let connections = self.connections
        let proto = listener.proto
        let name = listener.name
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: proto == .tcp)
            .childChannelOption(.recvAllocator, value: proto == .tcp ? TCPProxyHandler.readSizes : AdaptiveRecvByteBufferAllocator())
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    connections.add(channel)
                    let slot = slots[ObjectIdentifier(channel.eventLoop)]!
                    guard let runtime = slot.listeners[name] else {
                        throw ChannelError.ioOnClosedChannel  // the listener is being removed
                    }
                    let sync = channel.pipeline.syncOperations
                    switch proto {
                    case .tcp:
                        let filters = try NetworkFilterHandler.install(on: channel, listener: runtime, worker: slot.worker)
                        try sync.addHandler(TCPProxyHandler(listener: runtime, worker: slot.worker, networkFilters: filters))
                    case .http:
                        try HTTPConnectionSetup(listener: runtime, slot: slot).configure(channel)
                    }
                }
            }
            .bind(host: listener.address.host, port: listener.address.port)
            .get()
    }

    private func bindAdmin() async throws -> Channel {
        let address = config.admin.address
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(server: self, allowMutations: address.isLoopback))
                }
            }
            .bind(host: address.host, port: address.port)
            .get()
    }

    // MARK: shutdown

    /// Graceful shutdown: stop accepting, let in-flight requests finish (idle connections close
    /// at once, busy ones after their current response), force-close what remains after
    /// `drainTimeout`, then stop.
    public func shutdown(drainTimeout: Duration? = nil) async {
        draining.store(true, ordering: .relaxed)
        watcher?.stop()
        for (_, c) in serverChannels { try? await c.channel.close() }
        guard let generation = state.withLock({ $0 }) else {
            if ownsGroup { try? await group.shutdownGracefully() }
            return
        }
        for checker in generation.healthCheckers { checker.stop() }
        for channel in connections.all {
            channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
        let deadline = ContinuousClock.now + (drainTimeout ?? generation.runtime.config.drainTimeout)
        while connections.count > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        for channel in connections.all { try? await channel.close() }
        for worker in generation.runtime.allWorkers {
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

/// Serialises async sections (start, reload) without blocking a thread.
actor AsyncLock {
    private var busy = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    func run<T: Sendable>(_ body: @Sendable () async throws -> T) async rethrows -> T {
        while busy { await withCheckedContinuation { waiters.append($0) } }
        busy = true
        defer {
            busy = false
            if !waiters.isEmpty { waiters.removeFirst().resume() }
        }
        return try await body()
    }
}

/// Polls files for changes (mtime and size) and calls back once they have settled.
final class ConfigWatcher: @unchecked Sendable {
    private let files: () -> [String]
    private let onChange: () -> Void
    private var timer: DispatchSourceTimer?
    private var last: [String: String] = [:]
    private var pendingSince: Date?
    private let queue = DispatchQueue(label: "sluice.config-watcher")

    init(files: @escaping () -> [String], onChange: @escaping () -> Void) {
        self.files = files
        self.onChange = onChange
    }

    private func snapshot() -> [String: String] {
        var out: [String: String] = [:]
        for f in files() {
            let attrs = try? FileManager.default.attributesOfItem(atPath: f)
            let m = (attrs?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
            out[f] = "\(m)/\(attrs?[.size] as? Int ?? -1)"
        }
        return out
    }

    func start() {
        queue.sync { last = snapshot() }
        let t = DispatchSource.makeTimerSource(queue: queue)
        t.schedule(deadline: .now() + .milliseconds(250), repeating: .milliseconds(100))
        t.setEventHandler { [weak self] in self?.tick() }
        t.resume()
        timer = t
    }

    func stop() { timer?.cancel() }

    private func tick() {
        let now = snapshot()
        if now != last {
            last = now
            pendingSince = Date()
            return
        }
        if let since = pendingSince, Date().timeIntervalSince(since) >= 0.2 {
            pendingSince = nil
            onChange()
        }
    }
}
