import Foundation
import Yams

/// Reads Sluice YAML into a `SluiceConfiguration`, reporting every problem at once.
public enum ConfigLoader {
    /// Loads and validates a config file. Relative plugin module paths resolve against the
    /// file's directory, so a config and its filters can move together.
    public static func load(file path: String) throws(ConfigError) -> SluiceConfiguration {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigError([ConfigDiagnostic(file: path, line: 1, column: 1, keyPath: "", message: "cannot read config file: \(error.localizedDescription)")])
        }
        let baseDirectory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        return try parse(yaml: text, file: path, baseDirectory: baseDirectory)
    }

    public static func parse(yaml: String, file: String = "<config>", baseDirectory: String? = nil) throws(ConfigError) -> SluiceConfiguration {
        let node: Node?
        do {
            node = try Yams.compose(yaml: yaml)
        } catch let error as YamlError {
            throw ConfigError([syntaxDiagnostic(error, file: file)])
        } catch {
            throw ConfigError([ConfigDiagnostic(file: file, line: 1, column: 1, keyPath: "", message: "YAML error: \(error)")])
        }
        guard let node else {
            throw ConfigError([ConfigDiagnostic(file: file, line: 1, column: 1, keyPath: "", message: "the config is empty")])
        }
        let reader = YAMLReader(file: file)
        let decoder = ConfigDecoder(reader: reader, baseDirectory: baseDirectory)
        let config = decoder.decodeRoot(node)
        if !reader.diagnostics.isEmpty {
            throw ConfigError(reader.diagnostics.sorted { ($0.line, $0.column) < ($1.line, $1.column) })
        }
        return config
    }

    /// Cross-checks a configuration built another way (an Envoy translation): unique names,
    /// references, ports. The model round-trips through the same rules as YAML input.
    public static func validate(_ config: SluiceConfiguration, file: String) throws(ConfigError) -> SluiceConfiguration {
        var problems: [ConfigDiagnostic] = []
        func report(_ path: String, _ message: String) {
            problems.append(ConfigDiagnostic(file: file, line: 1, column: 1, keyPath: path, message: message))
        }
        let clusters = Set(config.clusters.map(\.name)), plugins = Set(config.plugins.map(\.name))
        var ports: [Int: String] = [config.admin.address.port: "admin"]
        for (i, l) in config.listeners.enumerated() {
            if let other = ports[l.address.port], l.address.port != 0 { report("listeners[\(i)].address", "port \(l.address.port) is already used by \(other)") }
            ports[l.address.port] = l.name
            if let c = l.tcpCluster, !clusters.contains(c) { report("listeners[\(i)].cluster", "unknown cluster '\(c)'") }
            for (key, filters) in [("http_filters", l.httpFilters), ("network_filters", l.networkFilters)] {
                for f in filters where !plugins.contains(f) { report("listeners[\(i)].\(key)", "unknown plugin '\(f)'") }
                for f in filters where config.plugins.contains(where: { $0.name == f && $0.service != nil }) {
                    report("listeners[\(i)].\(key)", "'\(f)' is a Wasm service, not a filter")
                }
            }
            for (j, r) in l.routes.enumerated() {
                if case .cluster(let t) = r.action, !clusters.contains(t.cluster) { report("listeners[\(i)].routes[\(j)].cluster", "unknown cluster '\(t.cluster)'") }
            }
        }
        for (i, p) in config.plugins.enumerated() where !FileManager.default.fileExists(atPath: p.module) {
            report("plugins[\(i)].module", "module file not found: \(p.module)")
        }
        if !problems.isEmpty { throw ConfigError(problems) }
        return config
    }

    private static func syntaxDiagnostic(_ error: YamlError, file: String) -> ConfigDiagnostic {
        switch error {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _), .composer(_, let problem, let mark, _):
            return ConfigDiagnostic(file: file, line: mark.line, column: mark.column, keyPath: "", message: "YAML syntax: \(problem)")
        case .duplicatedKeysInMapping(let duplicates, let context):
            return ConfigDiagnostic(file: file, line: context.mark.line, column: context.mark.column, keyPath: "", message: "duplicate keys: \(duplicates.joined(separator: ", "))")
        default:
            return ConfigDiagnostic(file: file, line: 1, column: 1, keyPath: "", message: "YAML error: \(error)")
        }
    }
}

/// The schema, written as code. Each `decodeX` reads one kind of object; cross-references
/// (routes naming clusters, listeners naming plugins) are checked once everything is read.
struct ConfigDecoder {
    let reader: YAMLReader
    let baseDirectory: String?

    func decodeRoot(_ node: Node) -> SluiceConfiguration {
        var config = SluiceConfiguration()
        guard let root = reader.mapping(node, "", allowed: ["admin", "listeners", "clusters", "plugins", "access_log", "drain_timeout", "stats"]) else {
            return config
        }
        if let admin = root.node("admin"), let m = reader.mapping(admin, "admin", allowed: ["address"]) {
            if let address = m.hostPort("address") { config.admin.address = address }
        }
        if let log = root.node("access_log"), let m = reader.mapping(log, "access_log", allowed: ["format", "path"]) {
            config.accessLog.format = m.oneOf("format", default: .default)
            config.accessLog.path = m.string("path") ?? "-"
        }
        config.drainTimeout = root.duration("drain_timeout", default: config.drainTimeout)
        if let stats = root.node("stats"), let m = reader.mapping(stats, "stats", allowed: ["tags"]) {
            config.statsTags = m.list("tags") { node, path -> StatsTag? in
                guard let t = reader.mapping(node, path, allowed: ["name", "regex", "fixed_value"]) else { return nil }
                guard let name = t.string("name", required: true, what: "the label name") else { return nil }
                let tag = StatsTag(name: name, regex: t.string("regex"), fixedValue: t.string("fixed_value"))
                if (tag.regex == nil) == (tag.fixedValue == nil) {
                    reader.report(node, path, "a tag has either 'regex' or 'fixed_value'")
                } else if let regex = tag.regex, (try? Regex(regex)) == nil {
                    reader.report(t.node("regex"), t.keyPath("regex"), "invalid regex '\(regex)'")
                }
                return tag
            }
        }
        let clusterNodes = root.list("clusters") { node, path in decodeCluster(node, path).map { ($0, node, path) } }
        let pluginNodes = root.list("plugins") { node, path in decodePlugin(node, path).map { ($0, node, path) } }
        let listenerNodes = root.list("listeners") { node, path in decodeListener(node, path).map { ($0, node, path) } }
        config.clusters = clusterNodes.map(\.0)
        config.plugins = pluginNodes.map(\.0)
        config.listeners = listenerNodes.map(\.0)

        checkUniqueNames(clusterNodes.map { ($0.0.name, $0.1, $0.2) }, kind: "cluster")
        checkUniqueNames(pluginNodes.map { ($0.0.name, $0.1, $0.2) }, kind: "plugin")
        checkUniqueNames(listenerNodes.map { ($0.0.name, $0.1, $0.2) }, kind: "listener")

        let clusterNames = Set(config.clusters.map(\.name))
        let pluginNames = Set(config.plugins.map(\.name))
        var bound: [Int: String] = [config.admin.address.port: "admin"]
        for (listener, node, path) in listenerNodes {
            let m = node.mapping
            func at(_ key: String) -> Node? { m?[Node(key)] }
            if listener.address.port != 0 {
                if let other = bound[listener.address.port] {
                    reader.report(at("address"), "\(path).address", "port \(listener.address.port) is already used by \(other == "admin" ? "the admin listener" : "listener '\(other)'")")
                } else {
                    bound[listener.address.port] = listener.name
                }
            }
            if let cluster = listener.tcpCluster, !clusterNames.contains(cluster) {
                reader.report(at("cluster"), "\(path).cluster", "unknown cluster '\(cluster)'\(known(clusterNames))")
            }
            for (key, filters, kind) in [("http_filters", listener.httpFilters, "an HTTP"), ("network_filters", listener.networkFilters, "a network")] {
                let filterNodes = at(key).flatMap { n -> [Node]? in if case .sequence(let s) = n { return Array(s) } else { return nil } } ?? []
                for (i, filter) in filters.enumerated() where !pluginNames.contains(filter) {
                    reader.report(i < filterNodes.count ? filterNodes[i] : node, "\(path).\(key)[\(i)]", "unknown plugin '\(filter)'\(known(pluginNames))")
                }
                for (i, filter) in filters.enumerated() where config.plugins.contains(where: { $0.name == filter && $0.service != nil }) {
                    reader.report(i < filterNodes.count ? filterNodes[i] : node, "\(path).\(key)[\(i)]", "'\(filter)' is a Wasm service (service: set), not \(kind) filter")
                }
            }
            let routeNodesForPlugins = at("routes").flatMap { n -> [Node]? in if case .sequence(let s) = n { return Array(s) } else { return nil } } ?? []
            for (i, route) in listener.routes.enumerated() {
                for name in route.plugins.keys.sorted() where !listener.httpFilters.contains(name) {
                    let routeNode = i < routeNodesForPlugins.count ? routeNodesForPlugins[i] : node
                    let pluginsNode = routeNode.mapping?[Node("plugins")]
                    let keyNode = pluginsNode?.mapping?.first { $0.key.scalar?.string == name }?.key
                    reader.report(keyNode ?? routeNode, "\(path).routes[\(i)].plugins.\(name)", "'\(name)' is not in this listener's http_filters (\(listener.httpFilters.joined(separator: ", ")))")
                }
            }
            let routeNodes = at("routes").flatMap { n -> [Node]? in if case .sequence(let s) = n { return Array(s) } else { return nil } } ?? []
            for (i, route) in listener.routes.enumerated() {
                guard case .cluster(let target) = route.action, !clusterNames.contains(target.cluster) else { continue }
                let routeNode = i < routeNodes.count ? routeNodes[i] : node
                reader.report(routeNode.mapping?[Node("cluster")] ?? routeNode, "\(path).routes[\(i)].cluster", "unknown cluster '\(target.cluster)'\(known(clusterNames))")
            }
        }
        return config
    }

    private func known(_ names: Set<String>) -> String {
        names.isEmpty ? " (none are defined)" : " (defined: \(names.sorted().joined(separator: ", ")))"
    }

    private func checkUniqueNames(_ items: [(String, Node, String)], kind: String) {
        var seen: [String: String] = [:]
        for (name, node, path) in items {
            if let first = seen[name] {
                reader.report(node.mapping?[Node("name")] ?? node, "\(path).name", "duplicate \(kind) name '\(name)' (first defined at \(first))")
            } else {
                seen[name] = path
            }
        }
    }

    func decodeListener(_ node: Node, _ path: String) -> ListenerConfig? {
        guard let m = reader.mapping(node, path, allowed: ["name", "address", "protocol", "http_filters", "network_filters", "routes", "cluster", "max_request_headers_kb", "idle_timeout",
                                                         "request_headers_timeout", "stream_idle_timeout", "request_timeout",
                                                         "max_connection_duration", "max_pipelined_requests", "upgrades", "tls", "codec", "http2"]) else { return nil }
        let name = m.string("name", required: true, what: "the listener's name")
        let address = m.hostPort("address", required: true)
        let proto: ListenerProtocol = m.oneOf("protocol", default: .http)
        var listener = ListenerConfig(name: name ?? "", address: address ?? HostPort(host: "0.0.0.0", port: 0), proto: proto)
        listener.maxRequestHeadersBytes = m.int("max_request_headers_kb", range: 1...8192, default: 60) * 1024
        listener.idleTimeout = m.duration("idle_timeout", default: listener.idleTimeout)
        listener.requestHeadersTimeout = m.duration("request_headers_timeout", default: listener.requestHeadersTimeout)
        listener.streamIdleTimeout = m.duration("stream_idle_timeout", default: listener.streamIdleTimeout)
        listener.requestTimeout = m.duration("request_timeout", default: listener.requestTimeout)
        listener.maxConnectionDuration = m.duration("max_connection_duration", default: listener.maxConnectionDuration)
        listener.maxPipelinedRequests = m.int("max_pipelined_requests", range: 1...10_000, default: listener.maxPipelinedRequests)
        if let tls = m.node("tls") { listener.tls = decodeListenerTLS(tls, m.keyPath("tls")) }
        listener.codec = m.oneOf("codec", default: .auto)
        if let h2 = m.node("http2"), let h = reader.mapping(h2, m.keyPath("http2"), allowed: ["max_concurrent_streams", "initial_stream_window_size", "initial_connection_window_size", "max_frame_size"]) {
            // Ranges as HTTP/2 allows them (RFC 9113 §6.5.2), as Envoy checks them.
            listener.http2.maxConcurrentStreams = h.int("max_concurrent_streams", range: 1...2_147_483_647, default: listener.http2.maxConcurrentStreams)
            listener.http2.initialStreamWindowSize = h.int("initial_stream_window_size", range: 65_535...2_147_483_647, default: listener.http2.initialStreamWindowSize)
            listener.http2.initialConnectionWindowSize = h.int("initial_connection_window_size", range: 65_535...2_147_483_647, default: listener.http2.initialConnectionWindowSize)
            listener.http2.maxFrameSize = h.int("max_frame_size", range: 16_384...16_777_215, default: listener.http2.maxFrameSize)
        }
        listener.networkFilters = m.stringList("network_filters")
        if proto == .tcp {
            for key in ["codec", "http2"] {
                if let n = m.node(key) { reader.report(n, m.keyPath(key), "'\(key)' is for http listeners") }
            }
        }
        switch proto {
        case .http:
            listener.httpFilters = m.stringList("http_filters")
            if m.node("upgrades") != nil { listener.upgradeTypes = m.stringList("upgrades").map { $0.lowercased() } }
            listener.routes = m.list("routes") { decodeRoute($0, $1, listenerName: name ?? "") }
            if !m.has("routes") { m.missing("routes", "an http listener needs at least one route") }
            if let c = m.node("cluster") { reader.report(c, m.keyPath("cluster"), "'cluster' is for tcp listeners; http listeners route with 'routes'") }
        case .tcp:
            listener.tcpCluster = m.string("cluster", required: true, what: "the upstream cluster's name")
            for key in ["routes", "http_filters"] {
                if let n = m.node(key) { reader.report(n, m.keyPath(key), "'\(key)' is for http listeners; a tcp listener forwards to 'cluster'") }
            }
        }
        // Kept even with a bad address so its routes are still cross-checked; any diagnostic
        // already makes the whole config invalid.
        guard name != nil else { return nil }
        return listener
    }

    /// A path in the config, relative to the config file's folder, that must name a readable file.
    func file(_ m: MappingReader, _ key: String, what: String) -> String? {
        guard let name = m.string(key, required: true, what: what) else { return nil }
        var resolved = name
        if !name.hasPrefix("/"), let base = baseDirectory {
            resolved = URL(fileURLWithPath: base).appendingPathComponent(name).standardizedFileURL.path
        }
        if !FileManager.default.isReadableFile(atPath: resolved) {
            reader.report(m.node(key), m.keyPath(key), "file not found or not readable: \(resolved)")
        }
        return resolved
    }

    func decodeListenerTLS(_ node: Node, _ path: String) -> ListenerTLSConfig? {
        guard let m = reader.mapping(node, path, allowed: ["certificates", "min_version", "max_version", "alpn", "cipher_suites", "client_ca", "require_client_certificate"]) else { return nil }
        let groups: [TLSServerNameConfig] = m.list("certificates") { node, path in
            guard let c = reader.mapping(node, path, allowed: ["certificate_chain", "private_key", "server_names"]) else { return nil }
            let chain = file(c, "certificate_chain", what: "a PEM certificate chain file")
            let key = file(c, "private_key", what: "a PEM private key file")
            let names = c.stringList("server_names").map { $0.lowercased() }
            for (i, name) in names.enumerated() where !TLSServerNameConfig.isValidPattern(name) {
                reader.report(c.node("server_names"), "\(c.keyPath("server_names"))[\(i)]", "expected a host name or '*.suffix', found '\(name)'")
            }
            guard let chain, let key else { return nil }
            return TLSServerNameConfig(serverNames: names, certificates: [TLSCertificateConfig(certificateChain: chain, privateKey: key, configPath: path)])
        }
        if !m.has("certificates") { m.missing("certificates", "a TLS listener needs at least one certificate") }
        var tls = ListenerTLSConfig(serverNames: groups)
        tls.minimumVersion = m.oneOf("min_version", default: tls.minimumVersion)
        tls.maximumVersion = m.oneOf("max_version", default: tls.maximumVersion)
        if tls.minimumVersion > tls.maximumVersion {
            reader.report(m.node("min_version"), m.keyPath("min_version"), "min_version \(tls.minimumVersion.rawValue) is above max_version \(tls.maximumVersion.rawValue)")
        }
        if m.has("alpn") { tls.alpn = m.stringList("alpn") }
        tls.cipherSuites = m.stringList("cipher_suites")
        if m.has("client_ca") { tls.clientCA = file(m, "client_ca", what: "a PEM file of CA certificates") }
        tls.requireClientCertificate = m.bool("require_client_certificate", default: false)
        if tls.requireClientCertificate && tls.clientCA == nil {
            reader.report(m.node("require_client_certificate"), m.keyPath("require_client_certificate"), "require_client_certificate needs client_ca to verify against")
        }
        return tls
    }

    func decodeRoute(_ node: Node, _ path: String, listenerName: String) -> RouteConfig? {
        guard let m = reader.mapping(node, path, allowed: ["name", "match", "cluster", "prefix_rewrite", "host_rewrite", "timeout", "retry", "direct_response", "plugins"]) else { return nil }
        var overrides: [String: RoutePluginOverride] = [:]
        if let pluginsNode = m.node("plugins") {
            if case .mapping(let mapping) = pluginsNode {
                for (k, v) in mapping {
                    guard let pluginName = k.scalar?.string else { continue }
                    let p = m.keyPath("plugins") + "." + pluginName
                    guard let om = reader.mapping(v, p, allowed: ["disabled", "configuration"]) else { continue }
                    var o = RoutePluginOverride(disabled: om.bool("disabled", default: false))
                    if let conf = om.node("configuration") {
                        if case .scalar(let sc) = conf { o.configuration = sc.string } else { o.configuration = JSONRendering.render(conf) }
                    }
                    overrides[pluginName] = o
                }
            } else {
                reader.report(pluginsNode, m.keyPath("plugins"), "expected a mapping of plugin name to { disabled, configuration }")
            }
        }
        let index = path.split(separator: "[").last.map { String($0.dropLast()) } ?? "0"
        let name = m.string("name") ?? "\(listenerName)/\(index)"
        var match = RouteMatch()
        if let matchNode = m.node("match") {
            guard let mm = reader.mapping(matchNode, m.keyPath("match"), allowed: ["host", "hosts", "prefix", "path", "regex", "methods", "headers"]) else { return nil }
            var hosts = mm.stringList("hosts")
            if let host = mm.string("host") { hosts.append(host) }
            match.hosts = hosts.map(HostMatch.init(pattern:))
            let pathKeys = ["prefix", "path", "regex"].filter { mm.has($0) }
            if pathKeys.count > 1 {
                reader.report(mm.node(pathKeys[1]), mm.keyPath(pathKeys[1]), "only one of prefix, path and regex may be given")
            }
            if let prefix = mm.string("prefix") {
                if !prefix.hasPrefix("/") { reader.report(mm.node("prefix"), mm.keyPath("prefix"), "a path prefix must start with '/'") }
                match.path = .prefix(prefix)
            } else if let exact = mm.string("path") {
                if !exact.hasPrefix("/") { reader.report(mm.node("path"), mm.keyPath("path"), "a path must start with '/'") }
                match.path = .exact(exact)
            } else if let regex = mm.string("regex") {
                do {
                    _ = try Regex(regex)
                    match.path = .regex(regex)
                } catch {
                    reader.report(mm.node("regex"), mm.keyPath("regex"), "invalid regular expression: \(error)")
                }
            }
            match.methods = mm.stringList("methods").map { $0.uppercased() }
            match.headers = mm.list("headers") { node, path in
                guard let hm = reader.mapping(node, path, allowed: ["name", "value"]) else { return nil }
                guard let name = hm.string("name", required: true, what: "a header name") else { return nil }
                return HeaderMatch(name: name.lowercased(), value: hm.string("value"))
            }
        }
        let hasCluster = m.has("cluster"), hasDirect = m.has("direct_response")
        if hasCluster && hasDirect {
            reader.report(m.node("direct_response"), m.keyPath("direct_response"), "a route has either 'cluster' or 'direct_response', not both")
            return nil
        }
        if hasDirect {
            for key in ["prefix_rewrite", "host_rewrite", "timeout", "retry"] where m.has(key) {
                reader.report(m.node(key), m.keyPath(key), "'\(key)' applies only to routes with a 'cluster'")
            }
            guard let dm = reader.mapping(m.node("direct_response")!, m.keyPath("direct_response"), allowed: ["status", "body"]) else { return nil }
            let status = dm.int("status", range: 200...599, default: 200)
            if !dm.has("status") { dm.missing("status", "an HTTP status 200-599") }
            return RouteConfig(name: name, match: match, action: .directResponse(status: status, body: dm.string("body") ?? ""), plugins: overrides)
        }
        guard let cluster = m.string("cluster", required: true, what: "a cluster name, or give 'direct_response'") else { return nil }
        var target = ClusterRoute(cluster: cluster)
        if let rewrite = m.string("prefix_rewrite") {
            if case .prefix = match.path {} else {
                reader.report(m.node("prefix_rewrite"), m.keyPath("prefix_rewrite"), "prefix_rewrite needs a 'prefix' match")
            }
            target.prefixRewrite = rewrite
        }
        target.hostRewrite = m.string("host_rewrite")
        target.timeout = m.duration("timeout", default: target.timeout)
        if let retryNode = m.node("retry"), let rm = reader.mapping(retryNode, m.keyPath("retry"), allowed: ["attempts", "on", "budget_percent", "min_retry_concurrency"]) {
            var policy = RetryPolicy()
            policy.attempts = rm.int("attempts", range: 0...10, default: 1)
            if rm.has("on") {
                policy.on = rm.list("on") { node, path in
                    guard let text = node.scalar?.string, let c = RetryCondition(rawValue: text) else {
                        reader.report(node, path, "expected one of \(RetryCondition.allCases.map(\.rawValue).joined(separator: ", ")), found \(reader.describe(node))")
                        return nil
                    }
                    return c
                }
            }
            policy.budgetPercent = rm.double("budget_percent", range: 0...100, default: policy.budgetPercent)
            policy.minRetryConcurrency = rm.int("min_retry_concurrency", range: 0...10000, default: policy.minRetryConcurrency)
            target.retry = policy
        }
        return RouteConfig(name: name, match: match, action: .cluster(target), plugins: overrides)
    }

    func decodeCluster(_ node: Node, _ path: String) -> ClusterConfig? {
        guard let m = reader.mapping(node, path, allowed: ["name", "endpoints", "lb", "connect_timeout", "idle_timeout", "max_connections", "health_check", "outlier_detection", "protocol", "tls"]) else { return nil }
        let name = m.string("name", required: true, what: "the cluster's name")
        if !m.has("endpoints") { m.missing("endpoints", "a list of host:port") }
        let endpoints: [EndpointConfig] = m.list("endpoints") { node, path in
            if case .scalar(let s) = node {
                guard let hp = HostPort.parse(s.string), hp.port != 0 else {
                    reader.report(node, path, "expected an endpoint host:port with a port 1-65535, found '\(s.string)'")
                    return nil
                }
                return EndpointConfig(address: hp)
            }
            guard let em = reader.mapping(node, path, allowed: ["address", "weight"]) else { return nil }
            guard let hp = em.hostPort("address", required: true) else { return nil }
            if hp.port == 0 { reader.report(em.node("address"), em.keyPath("address"), "an endpoint needs a port 1-65535") }
            return EndpointConfig(address: hp, weight: em.int("weight", range: 1...1000, default: 1))
        }
        if m.has("endpoints") && endpoints.isEmpty, let n = m.node("endpoints"), case .sequence(let s) = n, s.isEmpty {
            reader.report(n, m.keyPath("endpoints"), "a cluster needs at least one endpoint")
        }
        var cluster = ClusterConfig(name: name ?? "", endpoints: endpoints)
        cluster.lb = m.oneOf("lb", default: .roundRobin)
        cluster.connectTimeout = m.duration("connect_timeout", default: cluster.connectTimeout)
        cluster.idleTimeout = m.duration("idle_timeout", default: cluster.idleTimeout)
        cluster.maxConnections = m.int("max_connections", range: 1...1_000_000, default: cluster.maxConnections)
        cluster.upstreamProtocol = m.oneOf("protocol", default: .http1)
        if let tls = m.node("tls"), let t = reader.mapping(tls, m.keyPath("tls"), allowed: ["server_name", "verify", "verify_name", "trusted_ca", "certificate_chain", "private_key", "min_version", "max_version"]) {
            var upstream = UpstreamTLSConfig()
            upstream.serverName = t.string("server_name")
            upstream.verify = t.bool("verify", default: true)
            upstream.verifyName = t.bool("verify_name", default: true)
            if t.has("trusted_ca") { upstream.trustedCA = file(t, "trusted_ca", what: "a PEM file of CA certificates") }
            if t.has("certificate_chain") || t.has("private_key") {
                let chain = file(t, "certificate_chain", what: "a PEM certificate chain file")
                let key = file(t, "private_key", what: "a PEM private key file")
                if let chain, let key { upstream.clientCertificate = TLSCertificateConfig(certificateChain: chain, privateKey: key, configPath: t.path) }
            }
            upstream.minimumVersion = t.oneOf("min_version", default: upstream.minimumVersion)
            upstream.maximumVersion = t.oneOf("max_version", default: upstream.maximumVersion)
            cluster.tls = upstream
        }
        if let hc = m.node("health_check"), let hm = reader.mapping(hc, m.keyPath("health_check"), allowed: ["path", "interval", "timeout", "healthy_threshold", "unhealthy_threshold", "host"]) {
            var check = HealthCheckConfig()
            check.path = hm.string("path") ?? check.path
            if !check.path.hasPrefix("/") { reader.report(hm.node("path"), hm.keyPath("path"), "a health-check path must start with '/'") }
            check.interval = hm.duration("interval", default: check.interval)
            check.timeout = hm.duration("timeout", default: check.timeout)
            check.healthyThreshold = hm.int("healthy_threshold", range: 1...100, default: check.healthyThreshold)
            check.unhealthyThreshold = hm.int("unhealthy_threshold", range: 1...100, default: check.unhealthyThreshold)
            check.host = hm.string("host")
            if check.interval < .milliseconds(10) { reader.report(hm.node("interval"), hm.keyPath("interval"), "interval must be at least 10ms") }
            cluster.healthCheck = check
        }
        if let od = m.node("outlier_detection"), let om = reader.mapping(od, m.keyPath("outlier_detection"), allowed: ["consecutive_connect_failures", "consecutive_5xx", "base_ejection_time"]) {
            var detection = OutlierDetectionConfig()
            detection.consecutiveConnectFailures = om.int("consecutive_connect_failures", range: 1...1000, default: detection.consecutiveConnectFailures)
            detection.consecutive5xx = om.int("consecutive_5xx", range: 1...1000, default: detection.consecutive5xx)
            detection.baseEjectionTime = om.duration("base_ejection_time", default: detection.baseEjectionTime)
            cluster.outlierDetection = detection
        }
        // The active check speaks HTTP/1.1 (over the cluster's TLS if it has one): against an
        // HTTP/2-only endpoint it would fail and take every endpoint out.
        if cluster.healthCheck != nil && cluster.upstreamProtocol == .http2 {
            reader.report(m.node("health_check"), m.keyPath("health_check"), "health checks are HTTP/1.1 and cannot check a cluster with protocol: http2; use outlier_detection")
        }
        guard name != nil else { return nil }
        return cluster
    }

    func decodePlugin(_ node: Node, _ path: String) -> PluginConfig? {
        guard let m = reader.mapping(node, path, allowed: ["name", "module", "root_id", "vm_id", "configuration", "vm_configuration", "environment", "failure_policy", "cpu_budget", "http_call_any_host", "max_memory_mb", "buffer_limit_kb", "rollout",
                                                         "allow_on_headers_stop_iteration", "runtime", "service"]) else { return nil }
        let name = m.string("name", required: true, what: "the plugin's name")
        let module = m.string("module", required: true, what: "the path of a .wasm module")
        var resolved = module ?? ""
        if let module, !module.hasPrefix("/"), let base = baseDirectory {
            resolved = URL(fileURLWithPath: base).appendingPathComponent(module).standardizedFileURL.path
        }
        if module != nil, !FileManager.default.fileExists(atPath: resolved) {
            reader.report(m.node("module"), m.keyPath("module"), "module file not found: \(resolved)")
        }
        var plugin = PluginConfig(name: name ?? "", module: resolved)
        plugin.rootID = m.string("root_id") ?? ""
        plugin.vmID = m.string("vm_id") ?? ""
        if let conf = m.node("configuration") {
            if case .scalar(let s) = conf {
                plugin.configuration = s.string
            } else {
                plugin.configuration = JSONRendering.render(conf)
            }
        }
        if let env = m.node("environment"), case .mapping(let mapping) = env {
            for (k, v) in mapping {
                guard let key = k.scalar?.string, let value = v.scalar?.string else {
                    reader.report(v, m.keyPath("environment"), "environment values must be strings")
                    continue
                }
                plugin.environment[key] = value
            }
        } else if let env = m.node("environment") {
            reader.report(env, m.keyPath("environment"), "expected a mapping of NAME: value, found \(reader.describe(env))")
        }
        if let conf = m.node("vm_configuration") {
            if case .scalar(let sc) = conf { plugin.vmConfiguration = sc.string } else { plugin.vmConfiguration = JSONRendering.render(conf) }
        }
        plugin.failurePolicy = m.oneOf("failure_policy", default: .failClosed)
        plugin.cpuBudget = m.duration("cpu_budget", default: plugin.cpuBudget)
        if plugin.cpuBudget < .milliseconds(1) { reader.report(m.node("cpu_budget"), m.keyPath("cpu_budget"), "cpu_budget must be at least 1ms") }
        plugin.httpCallAnyHost = m.bool("http_call_any_host", default: false)
        plugin.maxMemoryBytes = m.int("max_memory_mb", range: 1...4096, default: 256) << 20
        plugin.bufferLimitBytes = m.int("buffer_limit_kb", range: 1...1_048_576, default: 1024) << 10
        plugin.allowOnHeadersStopIteration = m.bool("allow_on_headers_stop_iteration", default: false)
        if let service = m.string("service") {
            if let mode = PluginServiceMode(rawValue: service) {
                plugin.service = mode
            } else {
                reader.report(m.node("service"), m.keyPath("service"), "unknown service mode '\(service)' (singleton or per_worker)")
            }
        }
        if let runtime = m.string("runtime") {
            if let known = WasmRuntime(rawValue: runtime) {
                plugin.runtime = known
            } else {
                reader.report(m.node("runtime"), m.keyPath("runtime"), "unknown runtime '\(runtime)' (one of: \(WasmRuntime.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
        }
        if let rollout = m.node("rollout"), let rm = reader.mapping(rollout, m.keyPath("rollout"), allowed: ["module", "weight"]) {
            if let path = rm.string("module", required: true, what: "the path of the new module version") {
                let resolvedRollout = path.hasPrefix("/") || baseDirectory == nil ? path : URL(fileURLWithPath: baseDirectory!).appendingPathComponent(path).standardizedFileURL.path
                if !FileManager.default.fileExists(atPath: resolvedRollout) {
                    reader.report(rm.node("module"), rm.keyPath("module"), "module file not found: \(resolvedRollout)")
                }
                plugin.rolloutModule = resolvedRollout
            }
            plugin.rolloutWeight = rm.int("weight", range: 0...100, default: 0)
            if !rm.has("weight") { rm.missing("weight", "the percentage of streams, 0-100, that use the new version") }
        }
        guard name != nil, module != nil else { return nil }
        return plugin
    }
}

/// Renders a YAML value as compact JSON, for plugin configurations given as structured YAML.
public enum JSONRendering {
    static func render(_ node: Node) -> String {
        switch node {
        case .scalar(let s):
            if s.style == .plain {
                if let _ = Int(s.string) { return s.string }
                if let d = Double(s.string), d.isFinite, s.string.lowercased() != "nan" { return s.string }
                switch s.string {
                case "true", "false": return s.string
                case "null", "~", "": return "null"
                default: break
                }
            }
            return quote(s.string)
        case .sequence(let seq):
            return "[" + seq.map(render).joined(separator: ",") + "]"
        case .mapping(let mapping):
            return "{" + mapping.map { quote($0.key.scalar?.string ?? "") + ":" + render($0.value) }.joined(separator: ",") + "}"
        case .alias:
            return "null"
        }
    }

    /// A JSON string literal for `s`, with the escapes JSON requires.
    public static func quote(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
