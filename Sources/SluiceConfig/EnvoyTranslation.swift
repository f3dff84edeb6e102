import Foundation
import Yams

/// Runs an Envoy v3 bootstrap (YAML or JSON) as Sluice configuration. Supported: admin;
/// static listeners with http_connection_manager (virtual hosts, routes, direct responses,
/// envoy.filters.http.wasm, router) or tcp_proxy; static clusters (STATIC, STRICT_DNS,
/// LOGICAL_DNS) with load_assignment, lb_policy, connect_timeout and HTTP health checks.
/// Every other field is reported by its path (never silently ignored); fields with no effect
/// on behaviour (stat prefixes, names, type URLs) are accepted quietly.
public enum EnvoyTranslation {
    public struct Result: Sendable {
        public var config: SluiceConfiguration
        /// Fields Sluice does not implement, by path, with file positions.
        public var unsupported: [ConfigDiagnostic]
    }

    /// True when the YAML looks like an Envoy bootstrap rather than Sluice's own format.
    public static func looksLikeEnvoy(yaml: String) -> Bool {
        guard let node = try? Yams.compose(yaml: yaml), case .mapping(let m) = node else { return false }
        return m.keys.contains { ["static_resources", "node", "dynamic_resources", "bootstrap_extensions"].contains($0.scalar?.string ?? "") }
    }

    public static func load(file path: String) throws(ConfigError) -> Result {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigError([ConfigDiagnostic(file: path, line: 1, column: 1, keyPath: "", message: "cannot read config file: \(error.localizedDescription)")])
        }
        return try translate(yaml: text, file: path, baseDirectory: URL(fileURLWithPath: path).deletingLastPathComponent().path)
    }

    public static func translate(yaml: String, file: String = "<envoy>", baseDirectory: String? = nil) throws(ConfigError) -> Result {
        let root: Node
        do {
            guard let n = try Yams.compose(yaml: yaml) else {
                throw ConfigError([ConfigDiagnostic(file: file, line: 1, column: 1, keyPath: "", message: "the config is empty")])
            }
            root = n
        } catch let e as ConfigError {
            throw e
        } catch {
            throw ConfigError([ConfigDiagnostic(file: file, line: 1, column: 1, keyPath: "", message: "YAML error: \(error)")])
        }
        let t = Translator(file: file, baseDirectory: baseDirectory)
        let config = t.bootstrap(root)
        if !t.errors.isEmpty { throw ConfigError(t.errors) }
        // The result must also be a valid Sluice configuration (names, references, ports).
        do {
            _ = try ConfigLoader.validate(config, file: file)
        } catch {
            throw error
        }
        return Result(config: config, unsupported: t.unsupported)
    }
}

extension ConfigLoader {
    /// Loads Sluice YAML or an Envoy bootstrap (detected from its top-level keys). Envoy fields
    /// Sluice does not implement come back as `unsupported`.
    public static func loadAny(file path: String, forceEnvoy: Bool = false) throws(ConfigError) -> (config: SluiceConfiguration, unsupported: [ConfigDiagnostic]) {
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        if forceEnvoy || EnvoyTranslation.looksLikeEnvoy(yaml: text) || path.hasSuffix(".json") {
            let r = try EnvoyTranslation.load(file: path)
            return (r.config, r.unsupported)
        }
        return (try load(file: path), [])
    }
}

/// Walks the Envoy tree. `errors` stop the translation (wrong types, missing required
/// fields); `unsupported` lists fields Sluice does not implement.
private final class Translator {
    let file: String
    let baseDirectory: String?
    var errors: [ConfigDiagnostic] = []
    var unsupported: [ConfigDiagnostic] = []
    var plugins: [PluginConfig] = []

    init(file: String, baseDirectory: String?) {
        self.file = file
        self.baseDirectory = baseDirectory
    }

    /// Fields with no behavioural effect in Sluice (naming, statistics, type tags).
    static let harmless: Set<String> = ["@type", "name", "stat_prefix", "cluster_name", "codec_type", "typed_config", "domains", "virtual_hosts", "route_config", "filter_chains", "filters", "http_filters", "static_resources", "listeners", "clusters", "admin", "address", "socket_address", "port_value", "load_assignment", "endpoints", "lb_endpoints", "endpoint", "match", "route", "config", "vm_config", "runtime", "code", "local", "filename", "inline_string", "configuration", "value", "root_id", "vm_id", "fail_open", "failure_policy", "type", "lb_policy", "connect_timeout", "health_checks", "http_health_check", "path", "interval", "timeout", "healthy_threshold", "unhealthy_threshold", "prefix", "safe_regex", "regex", "headers", "string_match", "exact", "exact_match", "present_match", "cluster", "prefix_rewrite", "host_rewrite_literal", "direct_response", "status", "body", "environment_variables", "key_values", "access_log_path", "protocol", "dns_lookup_family", "host", "google_re2"]

    func mark(_ node: Node?) -> (Int, Int) { (node?.mark?.line ?? 1, node?.mark?.column ?? 1) }

    func error(_ node: Node?, _ path: String, _ message: String) {
        let (l, c) = mark(node)
        errors.append(ConfigDiagnostic(file: file, line: l, column: c, keyPath: path, message: message))
    }

    /// Reports every key of `node` not in `known` as unsupported.
    func check(_ node: Node, _ path: String, known: Set<String>) {
        guard case .mapping(let m) = node else { return }
        for (k, v) in m {
            guard let key = k.scalar?.string else { continue }
            if !known.contains(key) && key != "@type" {
                let (l, c) = mark(k)
                let p = path.isEmpty ? key : "\(path).\(key)"
                unsupported.append(ConfigDiagnostic(file: file, line: l, column: c, keyPath: p, message: "not supported by Sluice (ignored): \(describe(v))"))
            }
        }
    }

    func describe(_ node: Node) -> String {
        switch node {
        case .scalar(let s): return "'\(s.string)'"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }

    func map(_ node: Node?, _ key: String) -> Node? { node?.mapping?[Node(key)] }
    func str(_ node: Node?, _ key: String) -> String? { map(node, key)?.scalar?.string }
    func list(_ node: Node?, _ key: String) -> [Node] {
        guard let n = map(node, key), case .sequence(let s) = n else { return [] }
        return Array(s)
    }

    /// Envoy durations: "5s", "0.25s", or {seconds, nanos}.
    func duration(_ node: Node?) -> Duration? {
        guard let node else { return nil }
        if let s = node.scalar?.string {
            let t = s.hasSuffix("s") ? String(s.dropLast()) : s
            guard let v = Double(t) else { return nil }
            return .nanoseconds(Int64(v * 1e9))
        }
        let secs = Double(str(node, "seconds") ?? "0") ?? 0, nanos = Double(str(node, "nanos") ?? "0") ?? 0
        return .nanoseconds(Int64(secs * 1e9 + nanos))
    }

    func socketAddress(_ node: Node?, _ path: String) -> HostPort? {
        guard let sa = map(node, "socket_address") else {
            error(node, path, "expected address.socket_address (pipes and other address kinds are not supported)")
            return nil
        }
        check(node!, path, known: ["socket_address"])
        check(sa, path + ".socket_address", known: ["address", "port_value", "protocol"])
        guard let host = str(sa, "address"), let port = Int(str(sa, "port_value") ?? "") else {
            error(sa, path + ".socket_address", "needs address and port_value")
            return nil
        }
        return HostPort(host: host == "0.0.0.0" || host.contains(":") || !host.isEmpty ? host : host, port: port)
    }

    func bootstrap(_ root: Node) -> SluiceConfiguration {
        var config = SluiceConfiguration()
        check(root, "", known: ["admin", "static_resources", "node", "layered_runtime", "stats_config", "overload_manager"])
        for benign in ["node", "layered_runtime", "stats_config", "overload_manager"] where map(root, benign) != nil {
            // Identity and runtime knobs without a Sluice equivalent: reported, not fatal.
            let (l, c) = mark(map(root, benign))
            unsupported.append(ConfigDiagnostic(file: file, line: l, column: c, keyPath: benign, message: "not supported by Sluice (ignored)"))
        }
        if let admin = map(root, "admin") {
            check(admin, "admin", known: ["address", "access_log_path", "access_log"])
            if let a = socketAddress(map(admin, "address"), "admin.address") { config.admin.address = a }
        }
        let resources = map(root, "static_resources")
        if let resources { check(resources, "static_resources", known: ["listeners", "clusters"]) }
        for (i, l) in list(resources, "listeners").enumerated() {
            if let listener = translateListener(l, "static_resources.listeners[\(i)]", index: i) { config.listeners.append(listener) }
        }
        for (i, c) in list(resources, "clusters").enumerated() {
            if let cluster = translateCluster(c, "static_resources.clusters[\(i)]") { config.clusters.append(cluster) }
        }
        config.plugins = plugins
        config.accessLog.format = .off
        return config
    }

    func translateListener(_ node: Node, _ path: String, index: Int) -> ListenerConfig? {
        check(node, path, known: ["name", "address", "filter_chains", "stat_prefix"])
        let name = str(node, "name") ?? "listener_\(index)"
        guard let address = socketAddress(map(node, "address"), path + ".address") else { return nil }
        let chains = list(node, "filter_chains")
        guard let chain = chains.first else {
            error(node, path, "a listener needs filter_chains")
            return nil
        }
        if chains.count > 1 {
            let (l, c) = mark(chains[1])
            unsupported.append(ConfigDiagnostic(file: file, line: l, column: c, keyPath: path + ".filter_chains[1]", message: "only the first filter chain is used (no filter_chain_match)"))
        }
        check(chain, path + ".filter_chains[0]", known: ["filters"])
        var listener = ListenerConfig(name: name, address: address)
        for (i, f) in list(chain, "filters").enumerated() {
            let fpath = path + ".filter_chains[0].filters[\(i)]"
            let typed = map(f, "typed_config")
            switch str(f, "name") {
            case "envoy.filters.network.http_connection_manager":
                listener.proto = .http
                if let typed { translateHCM(typed, fpath + ".typed_config", listener: &listener) }
            case "envoy.filters.network.tcp_proxy":
                listener.proto = .tcp
                if let typed {
                    check(typed, fpath + ".typed_config", known: ["stat_prefix", "cluster"])
                    listener.tcpCluster = str(typed, "cluster")
                }
            default:
                let (l, c) = mark(f)
                unsupported.append(ConfigDiagnostic(file: file, line: l, column: c, keyPath: fpath, message: "network filter '\(str(f, "name") ?? "?")' is not supported"))
            }
        }
        return listener
    }

    func translateHCM(_ hcm: Node, _ path: String, listener: inout ListenerConfig) {
        check(hcm, path, known: ["stat_prefix", "codec_type", "route_config", "http_filters", "stream_idle_timeout",
                                 "request_timeout", "request_headers_timeout", "common_http_protocol_options"])
        // Timeouts keep Envoy's meaning; where the bootstrap is silent, Sluice's (safer)
        // defaults stay (docs/HOST-DIFFERENCES.md).
        if let t = duration(map(hcm, "stream_idle_timeout")) { listener.streamIdleTimeout = t }
        if let t = duration(map(hcm, "request_timeout")) { listener.requestTimeout = t }
        if let t = duration(map(hcm, "request_headers_timeout")) { listener.requestHeadersTimeout = t }
        if let options = map(hcm, "common_http_protocol_options") {
            check(options, path + ".common_http_protocol_options", known: ["idle_timeout", "max_connection_duration"])
            if let t = duration(map(options, "idle_timeout")) { listener.idleTimeout = t == .zero ? .seconds(86400 * 365) : t }
            if let t = duration(map(options, "max_connection_duration")) { listener.maxConnectionDuration = t }
        }
        let rc = map(hcm, "route_config")
        if let rc { check(rc, path + ".route_config", known: ["name", "virtual_hosts"]) }
        for (v, vhost) in list(rc, "virtual_hosts").enumerated() {
            let vpath = path + ".route_config.virtual_hosts[\(v)]"
            check(vhost, vpath, known: ["name", "domains", "routes"])
            let domains = list(vhost, "domains").compactMap { $0.scalar?.string }
            let hosts = domains.contains("*") ? [] : domains.map { HostMatch(pattern: $0) }
            for (r, routeNode) in list(vhost, "routes").enumerated() {
                let rpath = vpath + ".routes[\(r)]"
                if let route = translateRoute(routeNode, rpath, hosts: hosts, index: listener.routes.count, listener: listener.name) {
                    listener.routes.append(route)
                }
            }
        }
        for (i, f) in list(hcm, "http_filters").enumerated() {
            let fpath = path + ".http_filters[\(i)]"
            switch str(f, "name") {
            case "envoy.filters.http.router": check(f, fpath, known: ["name", "typed_config"])
            case "envoy.filters.http.wasm":
                check(f, fpath, known: ["name", "typed_config"])
                if let plugin = translateWasm(map(map(f, "typed_config"), "config"), fpath + ".typed_config.config") {
                    plugins.append(plugin)
                    listener.httpFilters.append(plugin.name)
                }
            default:
                let (l, c) = mark(f)
                unsupported.append(ConfigDiagnostic(file: file, line: l, column: c, keyPath: fpath, message: "HTTP filter '\(str(f, "name") ?? "?")' is not supported"))
            }
        }
    }

    func translateRoute(_ node: Node, _ path: String, hosts: [HostMatch], index: Int, listener: String) -> RouteConfig? {
        check(node, path, known: ["name", "match", "route", "direct_response"])
        var match = RouteMatch(hosts: hosts)
        if let m = map(node, "match") {
            check(m, path + ".match", known: ["prefix", "path", "safe_regex", "headers"])
            if let p = str(m, "prefix") { match.path = .prefix(p) }
            else if let p = str(m, "path") { match.path = .exact(p) }
            else if let r = str(map(m, "safe_regex"), "regex") { match.path = .regex(r) }
            for (h, hn) in list(m, "headers").enumerated() {
                check(hn, path + ".match.headers[\(h)]", known: ["name", "exact_match", "present_match", "string_match"])
                guard let name = str(hn, "name") else { continue }
                let value = str(hn, "exact_match") ?? str(map(hn, "string_match"), "exact")
                match.headers.append(HeaderMatch(name: name.lowercased(), value: value))
            }
        }
        let name = str(node, "name") ?? "\(listener)/\(index)"
        if let dr = map(node, "direct_response") {
            check(dr, path + ".direct_response", known: ["status", "body"])
            let body = str(map(dr, "body"), "inline_string") ?? ""
            return RouteConfig(name: name, match: match, action: .directResponse(status: Int(str(dr, "status") ?? "") ?? 200, body: body))
        }
        guard let r = map(node, "route"), let cluster = str(r, "cluster") else {
            error(node, path, "a route needs route.cluster or direct_response")
            return nil
        }
        check(r, path + ".route", known: ["cluster", "prefix_rewrite", "host_rewrite_literal", "timeout"])
        var target = ClusterRoute(cluster: cluster)
        target.prefixRewrite = str(r, "prefix_rewrite")
        target.hostRewrite = str(r, "host_rewrite_literal")
        if let t = duration(map(r, "timeout")) { target.timeout = t == .zero ? .seconds(86400) : t }
        return RouteConfig(name: name, match: match, action: .cluster(target))
    }

    func translateWasm(_ config: Node?, _ path: String) -> PluginConfig? {
        guard let config else {
            error(nil, path, "envoy.filters.http.wasm needs typed_config.config")
            return nil
        }
        check(config, path, known: ["name", "root_id", "vm_config", "configuration", "fail_open", "failure_policy", "allow_on_headers_stop_iteration"])
        let name = str(config, "name") ?? "wasm_\(plugins.count)"
        let vm = map(config, "vm_config")
        if let vm { check(vm, path + ".vm_config", known: ["vm_id", "runtime", "code", "configuration", "environment_variables"]) }
        var module: String?
        if let local = map(map(vm, "code"), "local") {
            module = str(local, "filename")
            if module == nil {
                error(local, path + ".vm_config.code.local", "only code.local.filename is supported")
            }
        } else {
            error(vm, path + ".vm_config.code", "only code.local.filename is supported (remote code is not)")
        }
        guard var modulePath = module else { return nil }
        if !modulePath.hasPrefix("/"), let base = baseDirectory {
            modulePath = URL(fileURLWithPath: base).appendingPathComponent(modulePath).standardizedFileURL.path
        }
        var plugin = PluginConfig(name: name, module: modulePath, rootID: str(config, "root_id") ?? "", vmID: str(vm, "vm_id") ?? "")
        plugin.configuration = anyValue(map(config, "configuration"))
        plugin.vmConfiguration = anyValue(map(vm, "configuration"))
        if let env = map(map(vm, "environment_variables"), "key_values"), case .mapping(let m) = env {
            for (k, v) in m { if let key = k.scalar?.string { plugin.environment[key] = v.scalar?.string ?? "" } }
        }
        // Envoy's default is FAIL_CLOSED; fail_open: true (deprecated) means FAIL_OPEN.
        switch str(config, "failure_policy") {
        case "FAIL_OPEN": plugin.failurePolicy = .failOpen
        case "FAIL_RELOAD": plugin.failurePolicy = .reload
        default: plugin.failurePolicy = str(config, "fail_open") == "true" ? .failOpen : .failClosed
        }
        plugin.allowOnHeadersStopIteration = str(config, "allow_on_headers_stop_iteration") == "true"
        return plugin
    }

    /// google.protobuf.Any as Envoy hands it to the module: StringValue/BytesValue raw,
    /// Struct as JSON.
    func anyValue(_ node: Node?) -> String {
        guard let node else { return "" }
        let type = str(node, "@type") ?? ""
        if type.hasSuffix("StringValue") || type.hasSuffix("BytesValue") { return str(node, "value") ?? "" }
        if type.hasSuffix("Struct"), let v = map(node, "value") { return JSONRendering.render(v) }
        if case .scalar(let s) = node { return s.string }
        return JSONRendering.render(node)
    }

    func translateCluster(_ node: Node, _ path: String) -> ClusterConfig? {
        check(node, path, known: ["name", "type", "lb_policy", "connect_timeout", "load_assignment", "health_checks", "dns_lookup_family"])
        guard let name = str(node, "name") else {
            error(node, path, "a cluster needs a name")
            return nil
        }
        let type = str(node, "type") ?? "STATIC"
        if !["STATIC", "STRICT_DNS", "LOGICAL_DNS"].contains(type) {
            error(map(node, "type"), path + ".type", "cluster type \(type) is not supported (STATIC, STRICT_DNS, LOGICAL_DNS)")
        }
        var endpoints: [EndpointConfig] = []
        let la = map(node, "load_assignment")
        if let la { check(la, path + ".load_assignment", known: ["cluster_name", "endpoints"]) }
        for (i, group) in list(la, "endpoints").enumerated() {
            for (j, lb) in list(group, "lb_endpoints").enumerated() {
                let p = path + ".load_assignment.endpoints[\(i)].lb_endpoints[\(j)]"
                check(lb, p, known: ["endpoint", "load_balancing_weight"])
                if let a = socketAddress(map(map(lb, "endpoint"), "address"), p + ".endpoint.address") {
                    endpoints.append(EndpointConfig(address: a, weight: Int(str(lb, "load_balancing_weight") ?? "1") ?? 1))
                }
            }
        }
        var cluster = ClusterConfig(name: name, endpoints: endpoints)
        switch str(node, "lb_policy") ?? "ROUND_ROBIN" {
        case "ROUND_ROBIN": cluster.lb = .roundRobin
        case "LEAST_REQUEST": cluster.lb = .leastRequest
        case "RANDOM": cluster.lb = .random
        case let other: error(map(node, "lb_policy"), path + ".lb_policy", "lb_policy \(other) is not supported")
        }
        if let t = duration(map(node, "connect_timeout")) { cluster.connectTimeout = t }
        if let hc = list(node, "health_checks").first {
            check(hc, path + ".health_checks[0]", known: ["timeout", "interval", "healthy_threshold", "unhealthy_threshold", "http_health_check"])
            var check = HealthCheckConfig()
            check.path = str(map(hc, "http_health_check"), "path") ?? "/"
            check.host = str(map(hc, "http_health_check"), "host")
            if let t = duration(map(hc, "interval")) { check.interval = t }
            if let t = duration(map(hc, "timeout")) { check.timeout = t }
            check.healthyThreshold = Int(str(hc, "healthy_threshold") ?? "") ?? check.healthyThreshold
            check.unhealthyThreshold = Int(str(hc, "unhealthy_threshold") ?? "") ?? check.unhealthyThreshold
            cluster.healthCheck = check
        }
        return cluster
    }
}
