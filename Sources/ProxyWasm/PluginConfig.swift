/// A plugin as the ABI host needs it: identity, configuration bytes, environment.
public struct PluginIdentity: Sendable {
    public var name: String
    public var rootID: String
    public var vmID: String
    public var vmConfiguration: [UInt8]
    public var pluginConfiguration: [UInt8]
    public var environment: [(String, String)]
    /// Callback CPU budget in milliseconds (converted to engine fuel).
    public var cpuBudgetMs: UInt64
    /// Whether http_call may target any `host:port`, not only configured clusters.
    public var allowAnyHTTPCallTarget: Bool
    /// Envoy's `allow_on_headers_stop_iteration`: when false (Envoy's default), StopIteration
    /// from a headers callback holds the whole stream at this filter (no body callbacks
    /// until it resumes), which is what filters that pause for an authorization answer rely
    /// on; when true, body callbacks keep arriving while the headers are held.
    public var allowOnHeadersStopIteration: Bool
    /// The bootstrap's node (the `xds.node` property).
    public var node: NodeInfo?

    public init(name: String, rootID: String = "", vmID: String = "", vmConfiguration: [UInt8] = [], pluginConfiguration: [UInt8] = [], environment: [(String, String)] = [], cpuBudgetMs: UInt64 = 100, allowAnyHTTPCallTarget: Bool = false, allowOnHeadersStopIteration: Bool = false) {
        self.allowOnHeadersStopIteration = allowOnHeadersStopIteration
        self.name = name
        self.rootID = rootID
        self.vmID = vmID
        self.vmConfiguration = vmConfiguration
        self.pluginConfiguration = pluginConfiguration
        self.environment = environment
        self.cpuBudgetMs = cpuBudgetMs
        self.allowAnyHTTPCallTarget = allowAnyHTTPCallTarget
    }
}

/// Services of the embedding proxy that outlive a single stream, one small interface per
/// capability (as cpp-host splits its context interface): the proxy implements each once per
/// (plugin, worker), and HTTP streams and TCP connections of the plugin use the same ones.
public typealias PluginServices = PluginLogging & HTTPCallouts & GrpcCallouts & PluginTimers & PluginScheduling & PluginFailures

public protocol PluginLogging: AnyObject {
    func log(_ level: LogLevel, _ message: String)
    var logLevel: LogLevel { get }
}

public protocol HTTPCallouts: AnyObject {
    /// Starts an HTTP callout; the response is delivered later with `PluginVM.deliverHTTPCallResponse`.
    func httpCall(vm: PluginVM, token: UInt32, upstream: String, headers: [(String, String)], body: [UInt8], trailers: [(String, String)], timeoutMs: UInt32) -> WasmResult
}

public protocol GrpcCallouts: AnyObject {
    /// Whether `name` is a cluster callouts can reach.
    func hasCluster(_ name: String) -> Bool
    /// Starts a gRPC callout; its events arrive through `PluginVM.deliverGrpc…`.
    func grpcStart(vm: PluginVM, token: UInt32, request: GrpcCalloutRequest) -> WasmResult
    /// Sends a message on a gRPC stream (nil: only the end of the stream).
    func grpcSend(token: UInt32, message: [UInt8]?, endStream: Bool)
    /// Resets a gRPC callout; nothing more is delivered for it.
    func grpcCancel(token: UInt32)
}

public protocol PluginTimers: AnyObject {
    /// Sets (0 disables) the tick period of the VM's root context.
    func setTickPeriod(vm: PluginVM, milliseconds: UInt32)
}

public protocol PluginScheduling: AnyObject {
    /// Runs `work` on this VM's thread soon, outside any guest call.
    func execute(_ work: @escaping () -> Void)
    /// A closure other threads can use to run work on this VM's thread (shared queues).
    var executor: @Sendable (@escaping @Sendable () -> Void) -> Void { get }
}

public protocol PluginFailures: AnyObject {
    /// The VM trapped or ran out of budget; it is already marked failed.
    func vmFailed(_ vm: PluginVM, kind: WasmFailureKind, reason: String)
}
