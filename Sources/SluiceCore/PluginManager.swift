import Foundation
import Logging
import NIOCore
import ProxyWasm
import SluiceConfig
import SluiceWasmKit
import Synchronization

/// A configured plugin, shared by all workers: its compiled module and identity. Each worker
/// runs its own VM of it (see PluginWorker), so requests never contend for a VM.
final class PluginRuntime: Sendable {
    let config: PluginConfig
    let identity: PluginIdentity
    let module: WasmModule
    let engineFuelPerMs: UInt64
    let stats: PluginStats
    /// A per-route variant has its own configuration (its own root context and VM).
    let variant: String?

    init(config: PluginConfig, module: WasmModule, fuelPerMs: UInt64, stats: PluginStats, configurationOverride: String? = nil) {
        self.config = config
        self.module = module
        self.engineFuelPerMs = fuelPerMs
        self.stats = stats
        self.variant = configurationOverride
        self.identity = PluginIdentity(
            name: config.name, rootID: config.rootID, vmID: config.vmID,
            vmConfiguration: Array(config.vmConfiguration.utf8),
            pluginConfiguration: Array((configurationOverride ?? config.configuration).utf8),
            environment: config.environment.sorted { $0.key < $1.key }.map { ($0.key, $0.value) },
            cpuBudgetMs: UInt64(max(1, config.cpuBudget.milliseconds.rounded())),
            allowAnyHTTPCallTarget: config.httpCallAnyHost)
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
    init(name: String) { self.name = name }
}

/// Loads every plugin of a configuration: reads and compiles each module once (cached by
/// content hash), then proves each plugin starts by running a canary VM through
/// _initialize, on_vm_start and on_configure, as Envoy does. Any failure is reported with
/// the plugin's name and the configuration is refused.
final class PluginManager: Sendable {
    let shared = PluginSharedState()
    let plugins: [String: PluginRuntime]
    /// Per-route variants, keyed by plugin name and configuration.
    let variants: [String: PluginRuntime]
    let stats: [String: PluginStats]

    struct LoadError: Error, CustomStringConvertible {
        var description: String
    }

    init(config: SluiceConfiguration, logger: Logger) throws {
        var modules: [String: WasmModule] = [:]
        var plugins: [String: PluginRuntime] = [:]
        var variants: [String: PluginRuntime] = [:]
        var stats: [String: PluginStats] = [:]
        let usedPlugins = Set(config.listeners.flatMap(\.httpFilters))
        for plugin in config.plugins where usedPlugins.contains(plugin.name) {
            let engine = WasmKitEngine(memoryLimitBytes: plugin.maxMemoryBytes)
            let module: WasmModule
            let cacheKey = "\(plugin.module)\u{0}\(plugin.maxMemoryBytes)"
            if let cached = modules[cacheKey] {
                module = cached
            } else {
                guard let bytes = FileManager.default.contents(atPath: plugin.module) else {
                    throw LoadError(description: "plugin '\(plugin.name)': cannot read module \(plugin.module)")
                }
                do {
                    module = try engine.compile(bytes: Array(bytes))
                } catch {
                    throw LoadError(description: "plugin '\(plugin.name)': \(plugin.module): \(error)")
                }
                modules[cacheKey] = module
            }
            let s = PluginStats(name: plugin.name)
            stats[plugin.name] = s
            let runtime = PluginRuntime(config: plugin, module: module, fuelPerMs: engine.fuelPerMillisecond, stats: s)
            try PluginManager.canary(runtime, shared: shared, logger: logger)
            plugins[plugin.name] = runtime
            for listener in config.listeners {
                for route in listener.routes {
                    guard let o = route.plugins[plugin.name], !o.disabled, let conf = o.configuration else { continue }
                    let key = PluginManager.variantKey(plugin.name, conf)
                    if variants[key] != nil { continue }
                    let variant = PluginRuntime(config: plugin, module: module, fuelPerMs: engine.fuelPerMillisecond, stats: s, configurationOverride: conf)
                    try PluginManager.canary(variant, shared: shared, logger: logger)
                    variants[key] = variant
                }
            }
            logger.info("plugin loaded", metadata: ["plugin": "\(plugin.name)", "module": "\(plugin.module)", "abi": "\(PluginManager.abi(of: module))"])
        }
        self.plugins = plugins
        self.variants = variants
        self.stats = stats
    }

    static func variantKey(_ name: String, _ configuration: String) -> String { name + "\u{0}" + configuration }

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
            throw LoadError(description: "plugin '\(runtime.config.name)' (\(runtime.config.module)): \(error)")
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
    func setTickPeriod(vm: PluginVM, milliseconds: UInt32) {}
    func execute(_ work: @escaping () -> Void) {}
    var executor: @Sendable (@escaping @Sendable () -> Void) -> Void { { _ in } }
    func vmFailed(_ vm: PluginVM, reason: String) {}
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
