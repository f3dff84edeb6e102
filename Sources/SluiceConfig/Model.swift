// The effective configuration: what the proxy runs after YAML has been read and validated.
// Plain value types, Sendable, with no knowledge of sockets, so the same model can come from
// Sluice YAML, from an Envoy bootstrap translation, or from a test.

public struct SluiceConfiguration: Sendable, Equatable {
    public var admin: AdminConfig
    public var listeners: [ListenerConfig]
    public var clusters: [ClusterConfig]
    public var plugins: [PluginConfig]
    public var accessLog: AccessLogConfig
    /// How long in-flight requests may run after SIGTERM before connections are closed.
    public var drainTimeout: Duration
    /// Tags extracted from plugin metric names (Envoy's stats_config.stats_tags).
    public var statsTags: [StatsTag] = []
    /// Envoy's bootstrap node (the `xds.node` property).
    public var node: NodeConfig?

    public init(
        admin: AdminConfig = AdminConfig(),
        listeners: [ListenerConfig] = [],
        clusters: [ClusterConfig] = [],
        plugins: [PluginConfig] = [],
        accessLog: AccessLogConfig = AccessLogConfig(),
        drainTimeout: Duration = .seconds(15)
    ) {
        self.admin = admin
        self.listeners = listeners
        self.clusters = clusters
        self.plugins = plugins
        self.accessLog = accessLog
        self.drainTimeout = drainTimeout
    }

    public func cluster(named name: String) -> ClusterConfig? {
        clusters.first { $0.name == name }
    }
}

/// "host:port". The host may be an IPv4/IPv6 literal (IPv6 in brackets) or a DNS name.
public struct HostPort: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Loopback literals and `localhost`; used to decide where the admin API may be exposed.
    public var isLoopback: Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    /// Parses "host:port", "[v6]:port"; nil when malformed or the port is out of range.
    public static func parse(_ text: String) -> HostPort? {
        var host: Substring
        var portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") { return nil }  // bare IPv6 needs brackets
        }
        guard !host.isEmpty, let port = Int(portText), (0...65535).contains(port) else { return nil }
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:%")
        guard host.allSatisfy({ allowed.contains($0) }) else { return nil }
        return HostPort(host: String(host), port: port)
    }
}

public struct AdminConfig: Sendable, Equatable {
    public var address: HostPort
    public init(address: HostPort = HostPort(host: "127.0.0.1", port: 9901)) {
        self.address = address
    }
}

public enum ListenerProtocol: String, Sendable, Equatable, CaseIterable {
    case http, tcp
}

public struct ListenerConfig: Sendable, Equatable {
    public var name: String
    /// Envoy metadata (`xds.listener_metadata`).
    public var metadata: MetadataConfig = [:]
    /// The upgrades (`Upgrade:` tokens, lower case) this listener tunnels; nil: any. Envoy
    /// configs list theirs in `upgrade_configs` (none listed: none allowed, 403).
    public var upgradeTypes: [String]?
    public var address: HostPort
    public var proto: ListenerProtocol
    /// Plugin names, run in order on requests and in reverse order on responses.
    public var httpFilters: [String]
    /// Plugins run as network (TCP) filters on each connection, in order on the client's
    /// bytes and in reverse on the bytes back: before the TCP proxy on a tcp listener, before
    /// the HTTP codec (behind TLS) on an http listener (Envoy's network filters before
    /// tcp_proxy or the http_connection_manager).
    public var networkFilters: [String] = []
    public var routes: [RouteConfig]
    /// The upstream cluster of a TCP listener.
    public var tcpCluster: String?
    /// Total size of a request's header block before answering 431 (Envoy's max_request_headers_kb).
    public var maxRequestHeadersBytes: Int
    /// A downstream connection with no request in flight is closed after this long.
    public var idleTimeout: Duration
    /// From the first byte of a request until its whole header block has arrived; then 408
    /// and a close (slow-header clients). Zero disables it.
    public var requestHeadersTimeout: Duration = .seconds(10)
    /// A request with no bytes moving either way for this long ends: 408 while the request
    /// is still arriving, 504 while waiting for the upstream, a close once the response has
    /// started (Envoy's stream_idle_timeout). Zero disables it.
    public var streamIdleTimeout: Duration = .seconds(60)
    /// The whole request (head and body) must arrive within this; 408 otherwise (Envoy's
    /// request_timeout). Zero, the default, disables it.
    public var requestTimeout: Duration = .zero
    /// A connection older than this finishes its current request and closes (Envoy's
    /// max_connection_duration). Zero, the default, disables it.
    public var maxConnectionDuration: Duration = .zero
    /// Requests a client may have waiting behind the one being answered; the connection
    /// closes after answering that many, the rest are not read.
    public var maxPipelinedRequests: Int = 32
    /// TLS termination; nil: cleartext.
    public var tls: ListenerTLSConfig?
    /// Which HTTP versions the listener speaks (Envoy's codec_type).
    public var codec: HTTPCodec = .auto
    /// HTTP/2 limits (Envoy's http2_protocol_options).
    public var http2 = HTTP2Options()

    public init(
        name: String, address: HostPort, proto: ListenerProtocol = .http, httpFilters: [String] = [],
        routes: [RouteConfig] = [], tcpCluster: String? = nil, maxRequestHeadersBytes: Int = 60 * 1024,
        idleTimeout: Duration = .seconds(300)
    ) {
        self.name = name
        self.address = address
        self.proto = proto
        self.httpFilters = httpFilters
        self.routes = routes
        self.tcpCluster = tcpCluster
        self.maxRequestHeadersBytes = maxRequestHeadersBytes
        self.idleTimeout = idleTimeout
    }
}

/// The HTTP versions a listener accepts. `auto` (the default, as Envoy's AUTO): HTTP/2 when
/// ALPN chose `h2` or a cleartext connection opens with HTTP/2's preface (h2c by prior
/// knowledge), HTTP/1.1 otherwise.
public enum HTTPCodec: String, Sendable, Equatable, CaseIterable {
    case auto, http1, http2
}

/// A TLS protocol version, as configs name it.
public enum TLSProtocolVersion: String, Sendable, Equatable, Comparable, CaseIterable {
    case tls1_0 = "TLSv1_0", tls1_1 = "TLSv1_1", tls1_2 = "TLSv1_2", tls1_3 = "TLSv1_3"
    private var order: Int { Self.allCases.firstIndex(of: self)! }
    public static func < (a: Self, b: Self) -> Bool { a.order < b.order }
}

/// One certificate a TLS listener can present, with the private key that goes with it.
public struct TLSCertificateConfig: Sendable, Equatable {
    /// PEM files: the certificate chain (leaf first) and its key.
    public var certificateChain: String
    public var privateKey: String
    /// Where the certificate was configured (`listeners[0].tls.certificates[1]`), for errors.
    public var configPath: String
    public init(certificateChain: String, privateKey: String, configPath: String = "") {
        self.certificateChain = certificateChain
        self.privateKey = privateKey
        self.configPath = configPath
    }
}

/// The certificates offered for a set of server names (SNI). A listener has one or more; the
/// client's SNI picks one (exact name, then the longest `*.` wildcard, then the default).
public struct TLSServerNameConfig: Sendable, Equatable {
    /// Exact names or `*.suffix` wildcards, lower case; empty: the default for any name.
    public var serverNames: [String]
    /// One or more certificates (say an RSA and an ECDSA one); the first is presented.
    public var certificates: [TLSCertificateConfig]
    public init(serverNames: [String], certificates: [TLSCertificateConfig]) {
        self.serverNames = serverNames
        self.certificates = certificates
    }

    /// A DNS name (letters, digits, hyphens, dots), optionally behind one leading `*.`.
    public static func isValidPattern(_ name: String) -> Bool {
        let body = name.hasPrefix("*.") ? name.dropFirst(2) : Substring(name)
        return !body.isEmpty && body.count <= 253 && body.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            !label.isEmpty && label.count <= 63 && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }
        }
    }
}

/// TLS termination on a listener (Envoy's DownstreamTlsContext).
public struct ListenerTLSConfig: Sendable, Equatable {
    public var serverNames: [TLSServerNameConfig]
    public var minimumVersion: TLSProtocolVersion = .tls1_2
    public var maximumVersion: TLSProtocolVersion = .tls1_3
    /// ALPN protocols offered, in preference order; empty: none negotiated (HTTP/1.1).
    public var alpn: [String] = ["h2", "http/1.1"]
    /// TLS 1.2 cipher suites (OpenSSL names); empty: BoringSSL's defaults.
    public var cipherSuites: [String] = []
    /// A PEM bundle of CAs that client certificates are verified against (mTLS).
    public var clientCA: String?
    /// Without a certificate the handshake fails; otherwise a presented one is still verified.
    public var requireClientCertificate = false
    /// A client whose SNI no group claims is refused (an Envoy listener whose every filter
    /// chain names servers); natively the first certificate serves it, as nginx's default.
    public var refuseUnknownServerNames = false
    /// Whether the client's SNI is read at all: an Envoy listener without the TLS inspector
    /// neither matches server names nor reports `connection.requested_server_name`.
    public var inspectsServerName = true
    public init(serverNames: [TLSServerNameConfig]) { self.serverNames = serverNames }

    /// Every file the TLS configuration reads (watched for reloads).
    public var files: [String] {
        serverNames.flatMap { $0.certificates.flatMap { [$0.certificateChain, $0.privateKey] } } + (clientCA.map { [$0] } ?? [])
    }
}

/// HTTP/2 limits, defaulting to Envoy's edge best practice (100 streams, 64 KiB stream window,
/// 1 MiB connection window) rather than its permissive built-in defaults.
public struct HTTP2Options: Sendable, Equatable {
    public var maxConcurrentStreams = 100
    public var initialStreamWindowSize = 65_536
    public var initialConnectionWindowSize = 1_048_576
    public var maxFrameSize = 16_384
    public init() {}
}

public enum PathMatch: Sendable, Equatable {
    case prefix(String)
    case exact(String)
    case regex(String)
}

/// `example.com` matches exactly (case-insensitively, ignoring a port); `*.example.com` matches
/// any name ending in `.example.com`; `*` matches everything.
public enum HostMatch: Sendable, Equatable {
    case any
    case exact(String)
    case suffix(String)  // stored with its leading dot: ".example.com"

    public init(pattern: String) {
        let p = pattern.lowercased()
        if p == "*" {
            self = .any
        } else if p.hasPrefix("*.") {
            self = .suffix(String(p.dropFirst()))
        } else {
            self = .exact(p)
        }
    }

    public func matches(_ authority: String) -> Bool {
        var host = authority.lowercased()
        if host.hasPrefix("[") {
            if let close = host.firstIndex(of: "]") { host = String(host[...close]) }
        } else if let colon = host.lastIndex(of: ":") {
            host = String(host[..<colon])
        }
        switch self {
        case .any: return true
        case .exact(let name): return host == name
        case .suffix(let suffix): return host.hasSuffix(suffix) && host.count > suffix.count
        }
    }
}

public struct HeaderMatch: Sendable, Equatable {
    public var name: String
    /// nil: the header only has to be present.
    public var value: String?
    public init(name: String, value: String? = nil) {
        self.name = name
        self.value = value
    }
}

public struct RouteMatch: Sendable, Equatable {
    public var hosts: [HostMatch]
    public var path: PathMatch
    public var methods: [String]
    public var headers: [HeaderMatch]
    public init(hosts: [HostMatch] = [], path: PathMatch = .prefix("/"), methods: [String] = [], headers: [HeaderMatch] = []) {
        self.hosts = hosts
        self.path = path
        self.methods = methods
        self.headers = headers
    }
}

public enum RetryCondition: String, Sendable, Equatable, CaseIterable {
    case connectFailure = "connect_failure"
    case serverError = "5xx"
}

public struct RetryPolicy: Sendable, Equatable {
    /// Retries after the first attempt.
    public var attempts: Int
    public var on: [RetryCondition]
    /// Retries in flight may not exceed this percentage of the cluster's active requests
    /// (with a floor of `minRetryConcurrency`), so retries cannot amplify an outage.
    public var budgetPercent: Double
    public var minRetryConcurrency: Int
    public init(attempts: Int = 1, on: [RetryCondition] = [.connectFailure], budgetPercent: Double = 20, minRetryConcurrency: Int = 3) {
        self.attempts = attempts
        self.on = on
        self.budgetPercent = budgetPercent
        self.minRetryConcurrency = minRetryConcurrency
    }
}

public enum RouteAction: Sendable, Equatable {
    case cluster(ClusterRoute)
    case directResponse(status: Int, body: String)
}

public struct ClusterRoute: Sendable, Equatable {
    public var cluster: String
    public var prefixRewrite: String?
    public var hostRewrite: String?
    /// Time from the request's arrival until the whole response head must be received.
    public var timeout: Duration
    public var retry: RetryPolicy?
    public init(cluster: String, prefixRewrite: String? = nil, hostRewrite: String? = nil, timeout: Duration = .seconds(15), retry: RetryPolicy? = nil) {
        self.cluster = cluster
        self.prefixRewrite = prefixRewrite
        self.hostRewrite = hostRewrite
        self.timeout = timeout
        self.retry = retry
    }
}

/// A route's say over one plugin of its listener: switch it off, or give it another configuration.
public struct RoutePluginOverride: Sendable, Equatable {
    public var disabled: Bool
    public var configuration: String?
    public init(disabled: Bool = false, configuration: String? = nil) {
        self.disabled = disabled
        self.configuration = configuration
    }
}

public struct RouteConfig: Sendable, Equatable {
    public var name: String
    public var match: RouteMatch
    public var action: RouteAction
    /// Per-route plugin control, keyed by plugin name.
    public var plugins: [String: RoutePluginOverride]
    /// The Envoy virtual host this route belongs to (routes from an Envoy bootstrap). With
    /// virtual hosts the host is matched Envoy's way: the virtual host is chosen first by its
    /// domains, then the first matching route in it.
    public var virtualHost: VirtualHostRef?
    /// Envoy metadata (`xds.route_metadata`).
    public var metadata: MetadataConfig = [:]
    public init(name: String, match: RouteMatch, action: RouteAction, plugins: [String: RoutePluginOverride] = [:], virtualHost: VirtualHostRef? = nil) {
        self.name = name
        self.match = match
        self.action = action
        self.plugins = plugins
        self.virtualHost = virtualHost
    }
}

/// An Envoy virtual host: its position in the route config, name and domains (lower-cased).
public struct VirtualHostRef: Sendable, Equatable {
    public var index: Int
    public var name: String
    public var domains: [String]
    /// route_config.ignore_port_in_host_matching: the Host's port is dropped before matching.
    public var ignorePort: Bool
    public init(index: Int, name: String, domains: [String], ignorePort: Bool = false) {
        self.index = index
        self.name = name
        self.domains = domains
        self.ignorePort = ignorePort
    }
}

public enum LoadBalancerPolicy: String, Sendable, Equatable, CaseIterable {
    case roundRobin = "round_robin"
    case leastRequest = "least_request"
    case random
}

public struct EndpointConfig: Sendable, Equatable {
    public var address: HostPort
    public var weight: Int
    /// Envoy metadata (`xds.upstream_host_metadata`).
    public var metadata: MetadataConfig = [:]
    public init(address: HostPort, weight: Int = 1) {
        self.address = address
        self.weight = weight
    }
}

public struct HealthCheckConfig: Sendable, Equatable {
    public var path: String
    public var interval: Duration
    public var timeout: Duration
    public var healthyThreshold: Int
    public var unhealthyThreshold: Int
    /// Host header sent with checks; defaults to the cluster name.
    public var host: String?
    public init(path: String = "/healthz", interval: Duration = .seconds(5), timeout: Duration = .seconds(1), healthyThreshold: Int = 2, unhealthyThreshold: Int = 3, host: String? = nil) {
        self.path = path
        self.interval = interval
        self.timeout = timeout
        self.healthyThreshold = healthyThreshold
        self.unhealthyThreshold = unhealthyThreshold
        self.host = host
    }
}

/// Passive health: an endpoint is ejected after this many consecutive failures.
public struct OutlierDetectionConfig: Sendable, Equatable {
    public var consecutiveConnectFailures: Int
    public var consecutive5xx: Int
    public var baseEjectionTime: Duration
    public init(consecutiveConnectFailures: Int = 5, consecutive5xx: Int = 5, baseEjectionTime: Duration = .seconds(30)) {
        self.consecutiveConnectFailures = consecutiveConnectFailures
        self.consecutive5xx = consecutive5xx
        self.baseEjectionTime = baseEjectionTime
    }
}

public struct ClusterConfig: Sendable, Equatable {
    public var name: String
    /// Envoy metadata (`xds.cluster_metadata`).
    public var metadata: MetadataConfig = [:]
    public var endpoints: [EndpointConfig]
    public var lb: LoadBalancerPolicy
    public var connectTimeout: Duration
    /// An idle pooled upstream connection is closed after this long.
    public var idleTimeout: Duration
    /// Upper bound on upstream connections per worker (event loop).
    public var maxConnections: Int
    public var healthCheck: HealthCheckConfig?
    public var outlierDetection: OutlierDetectionConfig?
    /// The HTTP version spoken to the endpoints; HTTP/2 multiplexes requests on one
    /// connection per endpoint and worker (gRPC needs it).
    public var upstreamProtocol: UpstreamProtocol = .http1
    /// TLS to the endpoints; nil: cleartext.
    public var tls: UpstreamTLSConfig?

    public init(
        name: String, endpoints: [EndpointConfig], lb: LoadBalancerPolicy = .roundRobin,
        connectTimeout: Duration = .seconds(5), idleTimeout: Duration = .seconds(60), maxConnections: Int = 1024,
        healthCheck: HealthCheckConfig? = nil, outlierDetection: OutlierDetectionConfig? = nil
    ) {
        self.name = name
        self.endpoints = endpoints
        self.lb = lb
        self.connectTimeout = connectTimeout
        self.idleTimeout = idleTimeout
        self.maxConnections = maxConnections
        self.healthCheck = healthCheck
        self.outlierDetection = outlierDetection
    }
}

public enum UpstreamProtocol: String, Sendable, Equatable, CaseIterable {
    case http1, http2
}

/// TLS from Sluice to a cluster's endpoints (Envoy's UpstreamTlsContext).
public struct UpstreamTLSConfig: Sendable, Equatable {
    /// The SNI sent, and the name the certificate is verified against; nil: the endpoint's
    /// host when it is a name (an IP address sends no SNI).
    public var serverName: String?
    /// Verify the endpoint's certificate (against `trustedCA`, or the system's roots).
    public var verify = true
    /// A PEM bundle of CAs; nil: the system's trust store.
    public var trustedCA: String?
    /// Verify the certificate's name (`serverName`); off, only the chain is verified.
    public var verifyName = true
    /// A client certificate for endpoints that ask for one (mTLS to the upstream).
    public var clientCertificate: TLSCertificateConfig?
    public var minimumVersion: TLSProtocolVersion = .tls1_2
    public var maximumVersion: TLSProtocolVersion = .tls1_3
    public init() {}

    public var files: [String] {
        (trustedCA.map { [$0] } ?? []) + (clientCertificate.map { [$0.certificateChain, $0.privateKey] } ?? [])
    }
}

public enum FailurePolicy: String, Sendable, Equatable, CaseIterable {
    case failClosed = "fail_closed"
    case failOpen = "fail_open"
    case reload
}

public struct PluginConfig: Sendable, Equatable {
    public var name: String
    /// Absolute path of the .wasm module (relative paths are resolved against the config file).
    public var module: String
    public var rootID: String
    public var vmID: String
    /// Passed to on_configure: a YAML string as is, any other YAML value as JSON.
    public var configuration: String
    public var environment: [String: String]
    public var failurePolicy: FailurePolicy
    /// Guest work allowed per callback before the call is stopped as a failure.
    public var cpuBudget: Duration
    /// Whether proxy_http_call may name a plain host:port, not only a configured cluster.
    public var httpCallAnyHost: Bool
    /// Cap on the plugin's linear memory.
    public var maxMemoryBytes: Int
    /// Body bytes a filter may hold while paused before the request gets 413 (response: 500).
    public var bufferLimitBytes: Int
    /// Envoy's allow_on_headers_stop_iteration (default false, as in Envoy 1.35+): whether a
    /// filter that returns StopIteration from a headers callback still gets body callbacks.
    public var allowOnHeadersStopIteration = false
    /// The Wasm engine that runs the module; nil: the proxy's default (Wasmtime when its
    /// library is installed, else WasmKit; `sluice run --wasm-runtime` overrides).
    public var runtime: WasmRuntime?
    /// A Wasm service (Envoy's `envoy.bootstrap.wasm`) rather than an HTTP filter: only its
    /// root context runs (start-up, ticks, queues, callouts, shared data), on one worker
    /// (`singleton`) or on every worker (`per_worker`).
    public var service: PluginServiceMode?
    /// VM configuration (proxy_on_vm_start); same encoding rules as `configuration`.
    public var vmConfiguration: String
    /// Gradual rollout: a second module version taking `rolloutWeight` percent of streams.
    public var rolloutModule: String?
    public var rolloutWeight: Int = 0

    public init(name: String, module: String, rootID: String = "", vmID: String = "", configuration: String = "", environment: [String: String] = [:], failurePolicy: FailurePolicy = .failClosed,
                cpuBudget: Duration = .milliseconds(100), httpCallAnyHost: Bool = false, maxMemoryBytes: Int = 256 << 20, bufferLimitBytes: Int = 1 << 20, vmConfiguration: String = "") {
        self.name = name
        self.module = module
        self.rootID = rootID
        self.vmID = vmID
        self.configuration = configuration
        self.environment = environment
        self.failurePolicy = failurePolicy
        self.cpuBudget = cpuBudget
        self.httpCallAnyHost = httpCallAnyHost
        self.maxMemoryBytes = maxMemoryBytes
        self.bufferLimitBytes = bufferLimitBytes
        self.vmConfiguration = vmConfiguration
    }
}

public enum AccessLogFormat: String, Sendable, Equatable, CaseIterable {
    case `default`, json, off
}

public struct AccessLogConfig: Sendable, Equatable {
    public var format: AccessLogFormat
    /// "-" for standard output, otherwise a file appended to.
    public var path: String
    public init(format: AccessLogFormat = .default, path: String = "-") {
        self.format = format
        self.path = path
    }
}

/// Wasm engines Sluice can run a plugin on.
public enum WasmRuntime: String, Sendable, Equatable, CaseIterable {
    /// WasmKit, an interpreter in Swift (fuel-metered, software bounds checks).
    case wasmkit
    /// Wasmtime, a JIT compiler (native code, epoch deadlines, guard-page bounds checks).
    case wasmtime

    /// What an Envoy `vm_config.runtime` name asks for: the compiling engines (V8, Wasmtime,
    /// WAVM) map to Wasmtime, WAMR (an interpreter by default) to WasmKit, an empty name to
    /// the proxy's default; `null` (filters compiled into Envoy itself) and unknown names
    /// have no equivalent.
    public enum EnvoyChoice: Equatable, Sendable {
        case engine(WasmRuntime)
        case proxyDefault
        case nullRuntime
        case unknown
    }

    public static func fromEnvoy(_ name: String) -> EnvoyChoice {
        switch name {
        case "": return .proxyDefault
        case "envoy.wasm.runtime.v8", "envoy.wasm.runtime.wasmtime", "envoy.wasm.runtime.wavm": return .engine(.wasmtime)
        case "envoy.wasm.runtime.wamr": return .engine(.wasmkit)
        case "envoy.wasm.runtime.null": return .nullRuntime
        default: return .unknown
        }
    }
}

/// Where a Wasm service runs.
public enum PluginServiceMode: String, Sendable, Equatable, CaseIterable {
    /// One VM for the whole proxy (Envoy's `singleton: true`, its main thread).
    case singleton
    /// One VM per worker (Envoy's `singleton: false`).
    case perWorker = "per_worker"
}

/// Envoy's stats tag: a regex whose first capture group is cut out of a metric's name and
/// whose second group (or the first, if there is no second) becomes the value of label
/// `name`; or a fixed value every plugin metric carries.
public struct StatsTag: Sendable, Equatable {
    public var name: String
    public var regex: String?
    public var fixedValue: String?
    public init(name: String, regex: String? = nil, fixedValue: String? = nil) {
        self.name = name
        self.regex = regex
        self.fixedValue = fixedValue
    }
}

/// A `google.protobuf.Value` as written in a bootstrap.
public indirect enum MetadataValue: Sendable, Equatable {
    case null
    case number(Double)
    case string(String)
    case bool(Bool)
    case structure([String: MetadataValue])
    case list([MetadataValue])
}

/// Envoy's `filter_metadata`: namespace → fields.
public typealias MetadataConfig = [String: [String: MetadataValue]]

/// The bootstrap's `node`.
public struct NodeConfig: Sendable, Equatable {
    public var id: String
    public var cluster: String
    public var metadata: [String: MetadataValue]
    public init(id: String = "", cluster: String = "", metadata: [String: MetadataValue] = [:]) {
        self.id = id
        self.cluster = cluster
        self.metadata = metadata
    }
}

