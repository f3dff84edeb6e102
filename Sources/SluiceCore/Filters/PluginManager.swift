import Foundation
import Logging
import NIOCore
import ProxyWasm
import SluiceConfig
import Synchronization

/// A configured plugin, shared by all workers: its compiled module and identity. Each worker
/// runs its own VM of it (see PluginWorker), so requests never contend for a VM.
final class PluginRuntime: Sendable {
    /// Plugins with equal keys share a VM on each worker: a non-empty vm_id, the same module
    /// and VM configuration and engine, as cpp-host keys VMs. Per-route variants, rollout
    /// versions and Wasm services keep their own VMs.
    var sharedVMKey: String? {
        guard !config.vmID.isEmpty, variant == nil, version == "primary", config.service == nil else { return nil }
        return [config.vmID, sha256, config.vmConfiguration, config.runtime?.rawValue ?? ""].joined(separator: "\u{0}")
    }

    let config: PluginConfig
    let identity: PluginIdentity
    let module: WasmModule
    let engineFuelPerMs: UInt64
    let stats: PluginStats
    /// A per-route variant has its own configuration (its own root context and VM).
    let variant: String?
    /// The module's content hash, and which version of the plugin this is ("primary" or "rollout").
    let sha256: String
    let version: String

    init(config: PluginConfig, module: WasmModule, fuelPerMs: UInt64, stats: PluginStats, sha256: String, version: String = "primary", configurationOverride: String? = nil, node: NodeConfig? = nil) {
        self.config = config
        self.module = module
        self.engineFuelPerMs = fuelPerMs
        self.stats = stats
        self.sha256 = sha256
        self.version = version
        self.variant = configurationOverride
        var identity = PluginIdentity(
            name: config.name, rootID: config.rootID, vmID: config.vmID,
            vmConfiguration: Array(config.vmConfiguration.utf8),
            pluginConfiguration: Array((configurationOverride ?? config.configuration).utf8),
            environment: config.environment.sorted { $0.key < $1.key }.map { ($0.key, $0.value) },
            cpuBudgetMs: UInt64(max(1, config.cpuBudget.milliseconds.rounded())),
            allowAnyHTTPCallTarget: config.httpCallAnyHost,
            allowOnHeadersStopIteration: config.allowOnHeadersStopIteration)
        identity.node = node.map(NodeInfo.init)
        self.identity = identity
    }
}

public final class PluginStats: Sendable {
    public let name: String
    public let traps = Counter()
    public let budgetExhausted = Counter()
    public let reloads = Counter()
    public let reloadFailures = Counter()
    public let failedClosedStreams = Counter()
    public let failedOpenStreams = Counter()
    /// Streams per module version (primary / rollout), for gradual rollouts.
    public let primaryStreams = Counter()
    public let rolloutStreams = Counter()
    /// Linear memory of the plugin's VMs (the largest seen on any worker), sampled every 256 streams.
    public let memoryBytes = Gauge()
    init(name: String) { self.name = name }
}

/// Compiled modules by content hash, kept across reloads so an unchanged module is never
/// parsed again, and what /plugins reports about each plugin.
final class ModuleCache: Sendable {
    struct PluginInfo: Sendable {
        var module: String
        var sha256: String
        var loadedAt: Date
        /// Distinct module versions this plugin has run since start.
        var versions: Int
        var lastError: String?
        var lastErrorAt: Date?
        /// The engine it runs on.
        var runtime: String = ""
        var rollout: (module: String, sha256: String, weight: Int)?
    }
    private let modules = Mutex<[String: WasmModule]>([:])
    private let info = Mutex<[String: PluginInfo]>([:])

    func module(sha256: String, engine: String, memoryLimit: Int, compile: () throws -> WasmModule) rethrows -> WasmModule {
        let key = "\(sha256)\u{0}\(engine)\u{0}\(memoryLimit)"
        if let m = modules.withLock({ $0[key] }) { return m }
        let m = try compile()
        modules.withLock { $0[key] = m }
        return m
    }

    func recordLoaded(plugin: String, module: String, sha256: String, runtime: String, rollout: (String, String, Int)?) {
        info.withLock { all in
            var i = all[plugin] ?? PluginInfo(module: module, sha256: sha256, loadedAt: Date(), versions: 0)
            if i.sha256 != sha256 || i.versions == 0 {
                i.versions += 1
                i.loadedAt = Date()
            }
            i.module = module
            i.runtime = runtime
            i.sha256 = sha256
            i.rollout = rollout.map { (module: $0.0, sha256: $0.1, weight: $0.2) }
            all[plugin] = i
        }
    }

    func recordError(plugin: String, _ message: String) {
        info.withLock { all in
            var i = all[plugin] ?? PluginInfo(module: "", sha256: "", loadedAt: Date(), versions: 0)
            i.lastError = message
            i.lastErrorAt = Date()
            all[plugin] = i
        }
    }

    var plugins: [String: PluginInfo] { info.withLock { $0 } }
}

/// Loads every plugin of a configuration: reads each module, compiles it once per content
/// hash (ModuleCache), then proves each plugin starts by running a canary VM through
/// _initialize, on_vm_start and on_configure, as Envoy does. Any failure is reported with
/// the plugin's name and the configuration is refused (on reload: the old one keeps serving).
final class PluginManager: Sendable {
    let shared: PluginSharedState
    let plugins: [String: PluginRuntime]
    /// Per-route variants and rollout versions, keyed by `variantKey` / `rolloutKey`.
    let variants: [String: PluginRuntime]
    let stats: [String: PluginStats]
    /// Plugins' positions in the configuration (VMs are shared in this order).
    let order: [String: Int]

    struct LoadError: Error, CustomStringConvertible {
        var plugin: String
        var description: String
    }

    init(config: SluiceConfiguration, logger: Logger, cache: ModuleCache, shared: PluginSharedState, previousStats: [String: PluginStats] = [:], defaultRuntime: WasmRuntime? = nil) throws {
        self.shared = shared
        var plugins: [String: PluginRuntime] = [:]
        var variants: [String: PluginRuntime] = [:]
        var stats: [String: PluginStats] = [:]
        // Filters some listener uses, and every Wasm service.
        let usedPlugins = Set(config.listeners.flatMap { $0.httpFilters + $0.networkFilters })
        for configured in config.plugins where usedPlugins.contains(configured.name) || configured.service != nil {
            // The engine is settled here, so VM sharing and the admin API see the real one.
            var plugin = configured
            let engineRuntime = plugin.runtime ?? WasmEngines.defaultRuntime(preferred: defaultRuntime)
            if plugin.runtime == nil, defaultRuntime == nil, let why = WasmEngines.wasmtimeUnavailableReason {
                logger.warning("plugin runs on WasmKit, the interpreter: \(why)", metadata: ["plugin": "\(plugin.name)"])
            }
            plugin.runtime = engineRuntime
            let engine: WasmEngine
            do {
                engine = try WasmEngines.engine(engineRuntime, memoryLimitBytes: plugin.maxMemoryBytes)
            } catch {
                cache.recordError(plugin: plugin.name, "\(error)")
                throw LoadError(plugin: plugin.name, description: "plugin '\(plugin.name)': runtime \(engineRuntime.rawValue): \(error)")
            }
            func load(_ path: String) throws -> (WasmModule, String) {
                guard let bytes = FileManager.default.contents(atPath: path) else {
                    throw LoadError(plugin: plugin.name, description: "plugin '\(plugin.name)': cannot read module \(path)")
                }
                let digest = SHA256.hex(Array(bytes))
                do {
                    let module = try cache.module(sha256: digest, engine: engine.name, memoryLimit: plugin.maxMemoryBytes) { try engine.compile(bytes: Array(bytes), contentHash: digest) }
                    return (module, digest)
                } catch {
                    throw LoadError(plugin: plugin.name, description: "plugin '\(plugin.name)': \(path): \(error)")
                }
            }
            let s = previousStats[plugin.name] ?? PluginStats(name: plugin.name)
            stats[plugin.name] = s
            do {
                let (module, digest) = try load(plugin.module)
                let runtime = PluginRuntime(config: plugin, module: module, fuelPerMs: engine.fuelPerMillisecond, stats: s, sha256: digest, node: config.node)
                try PluginManager.canary(runtime, shared: shared, logger: logger)
                plugins[plugin.name] = runtime
                for listener in config.listeners {
                    for route in listener.routes {
                        guard let o = route.plugins[plugin.name], !o.disabled, let conf = o.configuration else { continue }
                        let key = PluginManager.variantKey(plugin.name, conf)
                        if variants[key] != nil { continue }
                        let variant = PluginRuntime(config: plugin, module: module, fuelPerMs: engine.fuelPerMillisecond, stats: s, sha256: digest, configurationOverride: conf, node: config.node)
                        try PluginManager.canary(variant, shared: shared, logger: logger)
                        variants[key] = variant
                    }
                }
                var rolloutInfo: (String, String, Int)?
                if let path = plugin.rolloutModule {
                    let (rolloutModule, rolloutDigest) = try load(path)
                    let rollout = PluginRuntime(config: plugin, module: rolloutModule, fuelPerMs: engine.fuelPerMillisecond, stats: s, sha256: rolloutDigest, version: "rollout", node: config.node)
                    try PluginManager.canary(rollout, shared: shared, logger: logger)
                    variants[PluginManager.rolloutKey(plugin.name)] = rollout
                    rolloutInfo = (path, rolloutDigest, plugin.rolloutWeight)
                }
                cache.recordLoaded(plugin: plugin.name, module: plugin.module, sha256: digest, runtime: engineRuntime.rawValue, rollout: rolloutInfo)
                logger.info("plugin loaded", metadata: ["plugin": "\(plugin.name)", "module": "\(plugin.module)", "sha256": "\(digest.prefix(12))", "abi": "\(PluginManager.abi(of: module))", "runtime": "\(engineRuntime.rawValue)"])
            } catch let error as LoadError {
                cache.recordError(plugin: plugin.name, error.description)
                throw error
            } catch {
                cache.recordError(plugin: plugin.name, "\(error)")
                throw LoadError(plugin: plugin.name, description: "plugin '\(plugin.name)': \(error)")
            }
        }
        self.plugins = plugins
        self.variants = variants
        self.stats = stats
        self.order = Dictionary(config.plugins.enumerated().map { ($0.element.name, $0.offset) }, uniquingKeysWith: { a, _ in a })
    }

    static func variantKey(_ name: String, _ configuration: String) -> String { name + "\u{0}" + configuration }
    static func rolloutKey(_ name: String) -> String { name + "\u{0}\u{0}rollout" }

    static func abi(of module: WasmModule) -> String {
        (try? PluginVM.detectABI(exports: module.exportNames).rawValue) ?? "?"
    }

    /// Starts the plugin once on a throwaway VM so a broken module or configuration is
    /// refused before any traffic, with the module's own words.
    static func canary(_ runtime: PluginRuntime, shared: PluginSharedState, logger: Logger) throws {
        let services = CanaryServices(logger: logger, plugin: runtime.config.name)
        do {
            let vm = try PluginVM(module: runtime.module, identity: runtime.identity, services: services, shared: shared)
            vm.fuelPerMs = runtime.engineFuelPerMs
            try vm.start()
        } catch {
            throw LoadError(plugin: runtime.config.name, description: "plugin '\(runtime.config.name)' (\(runtime.version == "rollout" ? runtime.config.rolloutModule ?? "" : runtime.config.module)): \(error)")
        }
    }
}

/// Services for the canary VM: logs, and refuses anything with effects outside the VM.
private final class CanaryServices: PluginServices {
    let logger: Logger
    let plugin: String
    init(logger: Logger, plugin: String) {
        self.logger = logger
        self.plugin = plugin
    }
    func log(_ level: LogLevel, _ message: String) {
        logger.log(level: level.swiftLogLevel, "\(message)", metadata: ["plugin": "\(plugin)", "vm": "canary"])
    }
    var logLevel: LogLevel { LogLevel(logger.logLevel) }
    func httpCall(vm: PluginVM, token: UInt32, upstream: String, headers: [(String, String)], body: [UInt8], trailers: [(String, String)], timeoutMs: UInt32) -> WasmResult { .internalFailure }
    func hasCluster(_ name: String) -> Bool { false }
    func grpcStart(vm: PluginVM, token: UInt32, request: GrpcCalloutRequest) -> WasmResult { .internalFailure }
    func grpcSend(token: UInt32, message: [UInt8]?, endStream: Bool) {}
    func grpcCancel(token: UInt32) {}
    func setTickPeriod(vm: PluginVM, milliseconds: UInt32) {}
    func execute(_ work: @escaping () -> Void) {}
    var executor: @Sendable (@escaping @Sendable () -> Void) -> Void { { _ in } }
    func vmFailed(_ vm: PluginVM, kind: WasmFailureKind, reason: String) {}
}

extension LogLevel {
    var swiftLogLevel: Logger.Level {
        switch self {
        case .trace: return .trace
        case .debug: return .debug
        case .info: return .info
        case .warn: return .warning
        case .error: return .error
        case .critical: return .critical
        }
    }

    init(_ level: Logger.Level) {
        switch level {
        case .trace: self = .trace
        case .debug: self = .debug
        case .info, .notice: self = .info
        case .warning: self = .warn
        case .error: self = .error
        case .critical: self = .critical
        }
    }
}
