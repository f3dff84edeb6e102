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
        return m.keys.contains { ["static_resources", "node", "dynamic_resources", "bootstrap_extensions", "staticResources", "dynamicResources", "bootstrapExtensions"].contains($0.scalar?.string ?? "") }
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
        // Fatal problems and unsupported fields are reported together: fixing one layer
        // should not reveal the next.
        if !t.errors.isEmpty { throw ConfigError(t.errors + t.unsupported) }
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
    ///
    /// An Envoy bootstrap that uses something Sluice does not implement would run differently
    /// from how Envoy runs it, so it is refused (every such field listed) unless
    /// `allowUnsupported` (the operator's explicit `--allow-unsupported`).
    public static func loadAny(file path: String, forceEnvoy: Bool = false, allowUnsupported: Bool = false) throws(ConfigError) -> (config: SluiceConfiguration, unsupported: [ConfigDiagnostic]) {
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        if forceEnvoy || EnvoyTranslation.looksLikeEnvoy(yaml: text) || path.hasSuffix(".json") {
            let r = try EnvoyTranslation.load(file: path)
            if !r.unsupported.isEmpty && !allowUnsupported {
                throw ConfigError(r.unsupported + [ConfigDiagnostic(file: path, line: 1, column: 1, keyPath: "",
                    message: "\(r.unsupported.count) field(s) above are not supported by Sluice and would change how traffic is handled; refusing to run (pass --allow-unsupported to run anyway)")])
            }
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

    /// A field Sluice does not implement, at the node's position.
    func reportUnsupported(_ node: Node?, _ path: String, _ message: String) {
        let (l, c) = mark(node)
        unsupported.append(ConfigDiagnostic(file: file, line: l, column: c, keyPath: path, message: message, severity: .unsupported))
    }

    func error(_ node: Node?, _ path: String, _ message: String) {
        let (l, c) = mark(node)
        errors.append(ConfigDiagnostic(file: file, line: l, column: c, keyPath: path, message: message))
    }

    /// Reports every key of `node` not in `known` as unsupported. Keys are compared in their
    /// proto (snake_case) spelling, whichever spelling the file used.
    func check(_ node: Node, _ path: String, known: Set<String>) {
        guard case .mapping(let m) = node else { return }
        for (k, v) in m {
            guard let raw = k.scalar?.string else { continue }
            let key = EnvoyNames.snakeCase(raw)
            if !known.contains(key) && key != "@type" {
                reportUnsupported(k, path.isEmpty ? key : "\(path).\(key)", "not supported by Sluice: \(describe(v))")
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

    /// A field by its proto name, written either way protobuf's JSON mapping accepts:
    /// `stat_prefix` or `statPrefix`.
    func map(_ node: Node?, _ key: String) -> Node? {
        guard let m = node?.mapping else { return nil }
        if let v = m[Node(key)] { return v }
        let camel = EnvoyNames.lowerCamelCase(key)
        return camel == key ? nil : m[Node(camel)]
    }
    func str(_ node: Node?, _ key: String) -> String? { map(node, key)?.scalar?.string }
    /// An enum value: Envoy parses enum names case-insensitively (`strict_dns`, `STRICT_DNS`).
    func enumName(_ node: Node?, _ key: String) -> String? { str(node, key)?.uppercased() }
    /// A repeated field. Like Envoy's loader, a single value where a list is expected is a
    /// list of one.
    func list(_ node: Node?, _ key: String) -> [Node] {
        guard let n = map(node, key) else { return [] }
        if case .sequence(let s) = n { return Array(s) }
        if case .scalar(let s) = n, s.string == "null" || s.string == "~" { return [] }
        return [n]
    }

    /// Which extension a filter entry configures, and the message that configures it: chosen
    /// by `typed_config`'s `@type` (unwrapping udpa/xds TypedStruct), as Envoy does, so
    /// `name` is only a label; by name (canonical or deprecated) when there is no typed_config.
    func resolveExtension(_ filter: Node, _ path: String) -> (kind: EnvoyNames.Extension, config: Node?, configPath: String) {
        let name = str(filter, "name") ?? ""
        // Envoy 1.40 finds every extension by its type: a filter named without a typed_config
        // (even `envoy.filters.http.router`) is refused.
        guard let typed = map(filter, "typed_config"), var url = str(typed, "@type") else {
            error(map(filter, "typed_config") ?? filter, path, "'\(name)' needs a typed_config with an @type (Envoy picks the extension by its type, not its name)")
            return (EnvoyNames.resolve(named: name), nil, path)
        }
        var body: Node = typed
        var bodyPath = path + ".typed_config"
        if EnvoyNames.isTypedStruct(url) {
            check(typed, bodyPath, known: ["type_url", "value"])
            url = str(typed, "type_url") ?? ""
            body = map(typed, "value") ?? Node.mapping(Node.Mapping([]))
            bodyPath += ".value"
        }
        let kind = EnvoyNames.resolve(typeURL: url)
        if case .other = kind, !EnvoyNames.isKnownType(url) {
            error(typed, path + ".typed_config", "unknown extension type '\(url)'")
        }
        return (kind, body, bodyPath)
    }

    /// Envoy durations: "5s", "0.25s", or {seconds, nanos}.
    func duration(_ node: Node?) -> Duration? {
        guard let node else { return nil }
        if let s = node.scalar?.string {
            // protobuf's JSON form: decimal seconds with an "s" suffix ("5s", "0.25s").
            guard s.hasSuffix("s"), let v = Double(s.dropLast()), v.isFinite, v >= 0 else {
                error(node, "", "'\(s)' is not a duration (Envoy writes seconds with an s suffix: \"5s\", \"0.25s\")")
                return nil
            }
            return .nanoseconds(Int64(v * 1e9))
        }
        let secs = Double(str(node, "seconds") ?? "0") ?? 0, nanos = Double(str(node, "nanos") ?? "0") ?? 0
        return .nanoseconds(Int64(secs * 1e9 + nanos))
    }

    /// A YAML/JSON value as protobuf's Struct mapping reads it: plain `true`/`false` are
    /// booleans, plain numbers are numbers, `null` is null, anything quoted is a string.
    func structValue(_ node: Node) -> MetadataValue {
        switch node {
        case .scalar(let s):
            if s.style == .plain {
                switch s.string {
                case "true": return .bool(true)
                case "false": return .bool(false)
                case "null", "~", "": return .null
                default: if let d = Double(s.string) { return .number(d) }
                }
            }
            return .string(s.string)
        case .mapping(let m):
            var fields: [String: MetadataValue] = [:]
            for (k, v) in m { if let key = k.scalar?.string { fields[key] = structValue(v) } }
            return .structure(fields)
        case .sequence(let s):
            return .list(s.map(structValue))
        case .alias:
            return .null
        }
    }

    /// `metadata: { filter_metadata: { namespace: { ... } } }`.
    func metadata(_ owner: Node, _ path: String) -> MetadataConfig {
        guard let m = map(owner, "metadata") else { return [:] }
        check(m, path + ".metadata", known: ["filter_metadata", "typed_filter_metadata"])
        var out: MetadataConfig = [:]
        if let fm = map(m, "filter_metadata"), case .mapping(let namespaces) = fm {
            for (k, v) in namespaces {
                guard let ns = k.scalar?.string, case .structure(let fields) = structValue(v) else { continue }
                out[ns] = fields
            }
        }
        return out
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
        // `node` names this proxy and `stats_config` names statistics (tags are not applied to
        // Sluice's /stats yet); everything else Sluice does not implement is reported.
        check(root, "", known: ["admin", "static_resources", "node", "bootstrap_extensions", "stats_config"])
        if let node = map(root, "node") {
            // Identity fields Envoy fills or reports; only id, cluster and metadata reach filters.
            check(node, "node", known: ["id", "cluster", "metadata", "locality", "user_agent_name"])
            var n = NodeConfig(id: str(node, "id") ?? "", cluster: str(node, "cluster") ?? "")
            if let m = map(node, "metadata"), case .structure(let fields) = structValue(m) { n.metadata = fields }
            config.node = n
        }
        if let stats = map(root, "stats_config") {
            // Tags shape the names and labels of plugin metrics; the rest only selects or
            // buckets statistics and is accepted without effect.
            check(stats, "stats_config", known: ["stats_tags", "use_all_default_tags", "stats_matcher", "histogram_bucket_settings"])
            for (i, t) in list(stats, "stats_tags").enumerated() {
                let tpath = "stats_config.stats_tags[\(i)]"
                check(t, tpath, known: ["tag_name", "regex", "fixed_value"])
                guard let name = str(t, "tag_name") else {
                    error(t, tpath, "a stats tag needs a tag_name")
                    continue
                }
                let tag = StatsTag(name: name, regex: str(t, "regex"), fixedValue: str(t, "fixed_value"))
                if let regex = tag.regex, (try? Regex(regex)) == nil { error(map(t, "regex"), tpath + ".regex", "invalid regex '\(regex)'") }
                config.statsTags.append(tag)
            }
        }
        for (i, ext) in list(root, "bootstrap_extensions").enumerated() {
            let epath = "bootstrap_extensions[\(i)]"
            check(ext, epath, known: ["name", "typed_config"])
            let (kind, typed, typedPath) = resolveExtension(ext, epath)
            guard case .wasmService = kind, let typed else {
                reportUnsupported(ext, epath, "bootstrap extension '\(kind.label)' is not supported")
                continue
            }
            // envoy.bootstrap.wasm: a Wasm service, only a root context, on the main thread
            // (singleton) or on every worker.
            check(typed, typedPath, known: ["singleton", "config", "stat_prefix"])
            if var plugin = translateWasm(map(typed, "config"), typedPath + ".config") {
                plugin.service = str(typed, "singleton") == "true" ? .singleton : .perWorker
                plugins.append(plugin)
            }
        }
        if let admin = map(root, "admin") {
            check(admin, "admin", known: ["address", "access_log_path", "access_log"])
            if let a = socketAddress(map(admin, "address"), "admin.address") { config.admin.address = a }
        }
        let resources = map(root, "static_resources")
        if let resources { check(resources, "static_resources", known: ["listeners", "clusters"]) }
        for (i, l) in list(resources, "listeners").enumerated() {
            guard let listener = translateListener(l, "static_resources.listeners[\(i)]", index: i) else { continue }
            // As Envoy: a second listener with a name already used is dropped (the first binds).
            if config.listeners.contains(where: { $0.name == listener.name }) { continue }
            config.listeners.append(listener)
        }
        for (i, c) in list(resources, "clusters").enumerated() {
            guard let cluster = translateCluster(c, "static_resources.clusters[\(i)]") else { continue }
            if config.clusters.contains(where: { $0.name == cluster.name }) {
                error(map(c, "name"), "static_resources.clusters[\(i)].name", "cluster '\(cluster.name)' is defined twice")
                continue
            }
            config.clusters.append(cluster)
        }
        config.plugins = plugins
        config.accessLog.format = .off
        return config
    }

    func translateListener(_ node: Node, _ path: String, index: Int) -> ListenerConfig? {
        check(node, path, known: ["name", "address", "filter_chains", "stat_prefix", "metadata", "listener_filters"])
        let name = str(node, "name") ?? "listener_\(index)"
        guard let address = socketAddress(map(node, "address"), path + ".address") else { return nil }
        let chains = list(node, "filter_chains")
        guard let chain = chains.first else {
            error(node, path, "a listener needs filter_chains")
            return nil
        }
        // The TLS inspector is what reads a client's SNI for Envoy: without it server_names
        // cannot match and connection.requested_server_name stays empty.
        var inspectsServerName = false
        for (i, f) in list(node, "listener_filters").enumerated() {
            let fpath = path + ".listener_filters[\(i)]"
            check(f, fpath, known: ["name", "typed_config"])
            let (kind, typed, typedPath) = resolveExtension(f, fpath)
            if case .tlsInspector = kind {
                if let typed { check(typed, typedPath, known: []) }
                inspectsServerName = true
            } else {
                reportUnsupported(f, fpath, "listener filter '\(kind.label)' is not supported")
            }
        }
        let tls = translateFilterChainTLS(chains, path, inspectsServerName: inspectsServerName)
        check(chain, path + ".filter_chains[0]", known: ["filters", "filter_chain_match", "transport_socket", "name"])
        var listener = ListenerConfig(name: name, address: address)
        listener.metadata = metadata(node, path)
        listener.tls = tls
        let filters = list(chain, "filters")
        for (i, f) in filters.enumerated() {
            let fpath = path + ".filter_chains[0].filters[\(i)]"
            check(f, fpath, known: ["name", "typed_config"])
            let (kind, typed, typedPath) = resolveExtension(f, fpath)
            switch kind {
            case .networkWasm:
                // Network filters run before the terminal one (tcp_proxy or the HTTP
                // connection manager), which Envoy requires to be last.
                if i == filters.count - 1 { error(f, fpath, "envoy.filters.network.wasm is not a terminal filter: tcp_proxy or http_connection_manager must follow it") }
                if let typed { check(typed, typedPath, known: ["config"]) }
                if let plugin = translateWasm(map(typed, "config"), typedPath + ".config", filter: kind) {
                    plugins.append(plugin)
                    listener.networkFilters.append(plugin.name)
                }
            case .httpConnectionManager:
                listener.proto = .http
                if let typed { translateHCM(typed, typedPath, listener: &listener) }
            case .tcpProxy:
                listener.proto = .tcp
                if let typed {
                    check(typed, typedPath, known: ["stat_prefix", "cluster"])
                    if str(typed, "stat_prefix") == nil { error(typed, typedPath + ".stat_prefix", "tcp_proxy needs a stat_prefix") }
                    listener.tcpCluster = str(typed, "cluster")
                }
            default:
                reportUnsupported(f, fpath, "network filter '\(kind.label)' is not supported")
            }
        }
        return listener
    }

    /// Filter chains that differ only in their server_names and certificates become one
    /// listener with a certificate per server name (what Sluice runs natively); chains that
    /// differ in their filters, or that mix TLS and cleartext, are not supported.
    func translateFilterChainTLS(_ chains: [Node], _ path: String, inspectsServerName: Bool) -> ListenerTLSConfig? {
        let filters = chains.map { map($0, "filters").map(JSONRendering.render) ?? "" }
        var groups: [TLSServerNameConfig] = []
        var settings: ListenerTLSConfig?
        var settingsSource = ""
        var cleartextChains = 0
        var defaultChain = false
        for (i, chain) in chains.enumerated() {
            let cpath = path + ".filter_chains[\(i)]"
            if i > 0 {
                check(chain, cpath, known: ["filters", "filter_chain_match", "transport_socket", "name"])
                if filters[i] != filters[0] {
                    reportUnsupported(chain, cpath + ".filters", "filter chains with different filters are not supported (Sluice runs one set of filters per listener; chains may differ in server_names and certificates)")
                }
            }
            var serverNames: [String] = []
            if let match = map(chain, "filter_chain_match") {
                check(match, cpath + ".filter_chain_match", known: ["server_names"])
                serverNames = list(match, "server_names").compactMap { $0.scalar?.string.lowercased() }
                for n in serverNames where !TLSServerNameConfig.isValidPattern(n) {
                    error(map(match, "server_names"), cpath + ".filter_chain_match.server_names", "'\(n)' is not a server name (only '*.' wildcards are allowed, as in Envoy)")
                }
            }
            if serverNames.isEmpty { defaultChain = true }
            guard let socket = map(chain, "transport_socket") else {
                cleartextChains += 1
                continue
            }
            check(socket, cpath + ".transport_socket", known: ["name", "typed_config"])
            let (kind, typed, typedPath) = resolveExtension(socket, cpath + ".transport_socket")
            guard case .downstreamTLS = kind, let typed else {
                if case .downstreamTLS = kind {} else {
                    reportUnsupported(socket, cpath + ".transport_socket", "transport socket '\(kind.label)' is not supported")
                }
                continue
            }
            guard let context = translateDownstreamTLS(typed, typedPath, serverNames: serverNames) else { continue }
            groups += context.serverNames
            var comparable = context
            comparable.serverNames = []
            if let settings, settings != comparable {
                reportUnsupported(typed, typedPath, "TLS settings that differ between filter chains are not supported (they must match \(settingsSource); certificates may differ)")
            } else if settings == nil {
                settings = comparable
                settingsSource = typedPath
            }
        }
        guard var tls = settings else { return nil }
        if cleartextChains > 0 {
            reportUnsupported(chains[0], path + ".filter_chains", "a listener mixing TLS and cleartext filter chains is not supported")
        }
        tls.serverNames = groups
        tls.inspectsServerName = inspectsServerName
        // As Envoy: a client whose SNI no chain names finds no filter chain and is closed.
        tls.refuseUnknownServerNames = !defaultChain
        return tls
    }

    /// A DownstreamTlsContext, as Envoy applies it to a server: TLS 1.2 to 1.3 unless
    /// tls_params says otherwise, ALPN only if alpn_protocols lists it, client certificates
    /// verified only against a validation context's trusted_ca.
    func translateDownstreamTLS(_ node: Node, _ path: String, serverNames: [String]) -> ListenerTLSConfig? {
        check(node, path, known: ["common_tls_context", "require_client_certificate"])
        let common = map(node, "common_tls_context")
        let cpath = path + ".common_tls_context"
        if let common { check(common, cpath, known: ["tls_certificates", "tls_params", "alpn_protocols", "validation_context"]) }
        var certificates: [TLSCertificateConfig] = []
        for (i, cert) in list(common, "tls_certificates").enumerated() {
            let tpath = cpath + ".tls_certificates[\(i)]"
            check(cert, tpath, known: ["certificate_chain", "private_key"])
            guard let chain = dataSourceFile(map(cert, "certificate_chain"), tpath + ".certificate_chain"),
                  let key = dataSourceFile(map(cert, "private_key"), tpath + ".private_key") else { continue }
            certificates.append(TLSCertificateConfig(certificateChain: chain, privateKey: key, configPath: tpath))
        }
        if certificates.isEmpty {
            error(common ?? node, cpath + ".tls_certificates", "a DownstreamTlsContext needs tls_certificates")
            return nil
        }
        if certificates.count > 1 {
            reportUnsupported(map(common, "tls_certificates"), cpath + ".tls_certificates[1]", "more than one certificate per TLS context is not supported (use one filter chain per server name)")
        }
        var tls = ListenerTLSConfig(serverNames: [TLSServerNameConfig(serverNames: serverNames, certificates: certificates)])
        tls.alpn = list(common, "alpn_protocols").compactMap { $0.scalar?.string }
        if let params = map(common, "tls_params") {
            check(params, cpath + ".tls_params", known: ["tls_minimum_protocol_version", "tls_maximum_protocol_version", "cipher_suites"])
            func version(_ key: String, _ fallback: TLSProtocolVersion) -> TLSProtocolVersion {
                guard let name = enumName(params, key), name != "TLS_AUTO" else { return fallback }
                guard let v = TLSProtocolVersion.allCases.first(where: { $0.rawValue.uppercased() == name }) else {
                    error(map(params, key), cpath + ".tls_params." + key, "unknown TLS version '\(name)'")
                    return fallback
                }
                return v
            }
            tls.minimumVersion = version("tls_minimum_protocol_version", .tls1_2)
            tls.maximumVersion = version("tls_maximum_protocol_version", .tls1_3)
            tls.cipherSuites = list(params, "cipher_suites").compactMap { $0.scalar?.string }
        }
        if let validation = map(common, "validation_context") {
            check(validation, cpath + ".validation_context", known: ["trusted_ca"])
            if let ca = map(validation, "trusted_ca") {
                tls.clientCA = dataSourceFile(ca, cpath + ".validation_context.trusted_ca")
            }
        }
        // Envoy ignores require_client_certificate without a trusted CA (nothing to verify
        // against), and so does Sluice here; natively that combination is an error.
        tls.requireClientCertificate = tls.clientCA != nil && str(node, "require_client_certificate") == "true"
        return tls
    }

    /// A DataSource that names a file (`filename`), resolved as Sluice resolves module paths.
    func dataSourceFile(_ node: Node?, _ path: String) -> String? {
        guard let node else {
            error(nil, path, "missing")
            return nil
        }
        check(node, path, known: ["filename"])
        guard var name = str(node, "filename") else {
            if map(node, "inline_string") == nil && map(node, "inline_bytes") == nil { error(node, path, "needs a filename") }
            return nil
        }
        if !name.hasPrefix("/"), let base = baseDirectory {
            name = URL(fileURLWithPath: base).appendingPathComponent(name).standardizedFileURL.path
        }
        if !FileManager.default.isReadableFile(atPath: name) { error(map(node, "filename"), path + ".filename", "file not found or not readable: \(name)") }
        return name
    }

    func translateHCM(_ hcm: Node, _ path: String, listener: inout ListenerConfig) {
        if str(hcm, "stat_prefix") == nil { error(hcm, path + ".stat_prefix", "the http_connection_manager needs a stat_prefix") }
        check(hcm, path, known: ["stat_prefix", "codec_type", "route_config", "http_filters", "stream_idle_timeout",
                                 "request_timeout", "request_headers_timeout", "common_http_protocol_options", "http_protocol_options", "upgrade_configs",
                                 "http2_protocol_options"])
        switch enumName(hcm, "codec_type") {
        case "HTTP1": listener.codec = .http1
        case "HTTP2": listener.codec = .http2
        case nil, "AUTO": listener.codec = .auto
        case let other?: error(map(hcm, "codec_type"), path + ".codec_type", "codec_type '\(other)' is not one Sluice speaks (AUTO, HTTP1, HTTP2)")
        }
        if let h2 = map(hcm, "http2_protocol_options") {
            let hpath = path + ".http2_protocol_options"
            check(h2, hpath, known: ["max_concurrent_streams", "initial_stream_window_size", "initial_connection_window_size"])
            // Where the bootstrap is silent Sluice keeps its edge defaults (HOST-DIFFERENCES).
            func value(_ key: String, _ range: ClosedRange<Int>) -> Int? {
                guard let text = str(h2, key) else { return nil }
                guard let v = Int(text), range.contains(v) else {
                    error(map(h2, key), hpath + "." + key, "'\(text)' is out of range \(range.lowerBound)...\(range.upperBound)")
                    return nil
                }
                return v
            }
            if let v = value("max_concurrent_streams", 1...2_147_483_647) { listener.http2.maxConcurrentStreams = v }
            if let v = value("initial_stream_window_size", 65_535...2_147_483_647) { listener.http2.initialStreamWindowSize = v }
            if let v = value("initial_connection_window_size", 65_535...2_147_483_647) { listener.http2.initialConnectionWindowSize = v }
        }
        // Upgrades Envoy allows are the ones listed (none by default: 403).
        listener.upgradeTypes = list(hcm, "upgrade_configs").enumerated().compactMap { i, u in
            check(u, path + ".upgrade_configs[\(i)]", known: ["upgrade_type", "enabled"])
            if str(u, "enabled") == "false" { return nil }
            return str(u, "upgrade_type")?.lowercased()
        }
        // Sluice serves HTTP/1.0 whatever accept_http_10 says (docs/HOST-DIFFERENCES.md #27).
        if let options = map(hcm, "http_protocol_options") {
            check(options, path + ".http_protocol_options", known: ["accept_http_10"])
        }
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
        if let rc { check(rc, path + ".route_config", known: ["name", "virtual_hosts", "ignore_port_in_host_matching"]) }
        let ignorePort = str(rc, "ignore_port_in_host_matching") == "true"
        var seenDomains: [String: String] = [:]
        for (v, vhost) in list(rc, "virtual_hosts").enumerated() {
            let vpath = path + ".route_config.virtual_hosts[\(v)]"
            check(vhost, vpath, known: ["name", "domains", "routes", "metadata"])
            let vname = str(vhost, "name") ?? "vhost_\(v)"
            let domainNodes = list(vhost, "domains")
            if domainNodes.isEmpty { error(vhost, vpath + ".domains", "a virtual host needs at least one domain") }
            var domains: [String] = []
            for node in domainNodes {
                guard let d = node.scalar?.string.lowercased() else { continue }
                // As Envoy: a domain may appear in one virtual host only.
                if let other = seenDomains[d] {
                    error(node, vpath + ".domains", "domain '\(d)' is also in virtual host '\(other)' (Envoy allows each domain once per route config)")
                }
                seenDomains[d] = vname
                domains.append(d)
            }
            let ref = VirtualHostRef(index: v, name: vname, domains: domains, ignorePort: ignorePort)
            for (r, routeNode) in list(vhost, "routes").enumerated() {
                let rpath = vpath + ".routes[\(r)]"
                if var route = translateRoute(routeNode, rpath, hosts: [], index: listener.routes.count, listener: listener.name) {
                    route.virtualHost = ref
                    listener.routes.append(route)
                }
            }
        }
        let httpFilters = list(hcm, "http_filters")
        for (i, f) in httpFilters.enumerated() {
            let fpath = path + ".http_filters[\(i)]"
            check(f, fpath, known: ["name", "typed_config"])
            let (kind, typed, typedPath) = resolveExtension(f, fpath)
            switch kind {
            case .router:
                if let typed { check(typed, typedPath, known: []) }
                // As Envoy: the router is terminal, so it must come last.
                if i != httpFilters.count - 1 { error(f, fpath, "the router is a terminal filter and must be the last HTTP filter") }
            case .wasm:
                if let typed { check(typed, typedPath, known: ["config"]) }
                if let plugin = translateWasm(map(typed, "config"), typedPath + ".config") {
                    plugins.append(plugin)
                    listener.httpFilters.append(plugin.name)
                }
            default:
                reportUnsupported(f, fpath, "HTTP filter '\(kind.label)' is not supported")
            }
        }
    }

    func translateRoute(_ node: Node, _ path: String, hosts: [HostMatch], index: Int, listener: String) -> RouteConfig? {
        check(node, path, known: ["name", "match", "route", "direct_response", "metadata"])
        var match = RouteMatch(hosts: hosts)
        if let m = map(node, "match") {
            check(m, path + ".match", known: ["prefix", "path", "safe_regex", "headers"])
            if let p = str(m, "prefix") { match.path = .prefix(p) }
            else if let p = str(m, "path") { match.path = .exact(p) }
            else if let r = str(map(m, "safe_regex"), "regex") {
                if (try? Regex(r)) == nil { error(map(map(m, "safe_regex"), "regex"), path + ".match.safe_regex.regex", "invalid regex '\(r)'") }
                match.path = .regex(r)
            }
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
            var route = RouteConfig(name: name, match: match, action: .directResponse(status: Int(str(dr, "status") ?? "") ?? 200, body: body))
            route.metadata = metadata(node, path)
            return route
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
        var route = RouteConfig(name: name, match: match, action: .cluster(target))
        route.metadata = metadata(node, path)
        return route
    }

    func translateWasm(_ config: Node?, _ path: String, filter: EnvoyNames.Extension = .wasm) -> PluginConfig? {
        guard let config else {
            error(nil, path, "\(filter.label) needs typed_config.config")
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
        switch enumName(config, "failure_policy") {
        case "FAIL_OPEN": plugin.failurePolicy = .failOpen
        case "FAIL_RELOAD": plugin.failurePolicy = .reload
        default: plugin.failurePolicy = str(config, "fail_open") == "true" ? .failOpen : .failClosed
        }
        plugin.allowOnHeadersStopIteration = str(config, "allow_on_headers_stop_iteration") == "true"
        let runtimeName = str(vm, "runtime") ?? ""
        switch WasmRuntime.fromEnvoy(runtimeName) {
        case .engine(let runtime): plugin.runtime = runtime
        case .proxyDefault: plugin.runtime = nil
        case .nullRuntime:
            error(map(vm, "runtime"), path + ".vm_config.runtime", "the null runtime runs filters compiled into Envoy itself; Sluice runs .wasm modules (use envoy.wasm.runtime.v8 or wasmtime)")
        case .unknown:
            error(map(vm, "runtime"), path + ".vm_config.runtime", "unknown Wasm runtime '\(runtimeName)'")
        }
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

    /// A cluster's upstream TLS (`transport_socket` with an UpstreamTlsContext) and HTTP
    /// version (`http2_protocol_options`, or `typed_extension_protocol_options`'
    /// HttpProtocolOptions with `explicit_http_config`).
    func translateUpstreamHTTP(_ node: Node, _ path: String, cluster: inout ClusterConfig) {
        if let h2 = map(node, "http2_protocol_options") {
            check(h2, path + ".http2_protocol_options", known: [])
            cluster.upstreamProtocol = .http2
        }
        if let options = map(node, "typed_extension_protocol_options"), case .mapping(let m) = options {
            for (key, value) in m {
                let opath = path + ".typed_extension_protocol_options." + (key.scalar?.string ?? "?")
                guard let url = str(value, "@type"), case .httpProtocolOptions = EnvoyNames.resolve(typeURL: url) else {
                    reportUnsupported(value, opath, "protocol options other than HttpProtocolOptions are not supported")
                    continue
                }
                check(value, opath, known: ["explicit_http_config"])
                if let explicit = map(value, "explicit_http_config") {
                    check(explicit, opath + ".explicit_http_config", known: ["http_protocol_options", "http2_protocol_options"])
                    if let h2 = map(explicit, "http2_protocol_options") {
                        check(h2, opath + ".explicit_http_config.http2_protocol_options", known: [])
                        cluster.upstreamProtocol = .http2
                    }
                    if let h1 = map(explicit, "http_protocol_options") { check(h1, opath + ".explicit_http_config.http_protocol_options", known: []) }
                }
            }
        }
        guard let socket = map(node, "transport_socket") else { return }
        let spath = path + ".transport_socket"
        check(socket, spath, known: ["name", "typed_config"])
        let (kind, typed, typedPath) = resolveExtension(socket, spath)
        guard case .upstreamTLS = kind, let typed else {
            reportUnsupported(socket, spath, "transport socket '\(kind.label)' is not supported on a cluster")
            return
        }
        check(typed, typedPath, known: ["sni", "common_tls_context"])
        var tls = UpstreamTLSConfig()
        tls.serverName = str(typed, "sni")
        // Envoy verifies an upstream's certificate only against a validation context's
        // trusted_ca; without one it accepts any certificate (and so does Sluice here).
        tls.verify = false
        tls.verifyName = false
        // Envoy's client default is TLS 1.2 at most (its servers go to 1.3).
        tls.maximumVersion = .tls1_2
        let common = map(typed, "common_tls_context")
        let cpath = typedPath + ".common_tls_context"
        if let common { check(common, cpath, known: ["tls_certificates", "validation_context", "tls_params", "alpn_protocols"]) }
        if let validation = map(common, "validation_context") {
            check(validation, cpath + ".validation_context", known: ["trusted_ca"])
            if let ca = map(validation, "trusted_ca") {
                tls.trustedCA = dataSourceFile(ca, cpath + ".validation_context.trusted_ca")
                tls.verify = tls.trustedCA != nil
                // Envoy checks the name only with match_typed_subject_alt_names; the chain is verified.
            }
        }
        if let params = map(common, "tls_params") {
            check(params, cpath + ".tls_params", known: ["tls_minimum_protocol_version", "tls_maximum_protocol_version"])
            for (key, assign) in [("tls_minimum_protocol_version", { (v: TLSProtocolVersion) in tls.minimumVersion = v }), ("tls_maximum_protocol_version", { tls.maximumVersion = $0 })] {
                guard let name = enumName(params, key), name != "TLS_AUTO" else { continue }
                if let v = TLSProtocolVersion.allCases.first(where: { $0.rawValue.uppercased() == name }) { assign(v) } else {
                    error(map(params, key), cpath + ".tls_params." + key, "unknown TLS version '\(name)'")
                }
            }
        }
        let certificates = list(common, "tls_certificates")
        if let cert = certificates.first {
            let tpath = cpath + ".tls_certificates[0]"
            check(cert, tpath, known: ["certificate_chain", "private_key"])
            if let chain = dataSourceFile(map(cert, "certificate_chain"), tpath + ".certificate_chain"),
               let key = dataSourceFile(map(cert, "private_key"), tpath + ".private_key") {
                tls.clientCertificate = TLSCertificateConfig(certificateChain: chain, privateKey: key, configPath: tpath)
            }
        }
        cluster.tls = tls
    }

    func translateCluster(_ node: Node, _ path: String) -> ClusterConfig? {
        check(node, path, known: ["name", "type", "lb_policy", "connect_timeout", "load_assignment", "health_checks", "dns_lookup_family", "metadata",
                                  "transport_socket", "http2_protocol_options", "typed_extension_protocol_options"])
        guard let name = str(node, "name") else {
            error(node, path, "a cluster needs a name")
            return nil
        }
        let type = enumName(node, "type") ?? "STATIC"
        if !["STATIC", "STRICT_DNS", "LOGICAL_DNS"].contains(type) {
            error(map(node, "type"), path + ".type", "cluster type \(type) is not supported (STATIC, STRICT_DNS, LOGICAL_DNS)")
        }
        var endpoints: [EndpointConfig] = []
        let la = map(node, "load_assignment")
        if let la { check(la, path + ".load_assignment", known: ["cluster_name", "endpoints"]) }
        for (i, group) in list(la, "endpoints").enumerated() {
            for (j, lb) in list(group, "lb_endpoints").enumerated() {
                let p = path + ".load_assignment.endpoints[\(i)].lb_endpoints[\(j)]"
                check(lb, p, known: ["endpoint", "load_balancing_weight", "metadata"])
                if let a = socketAddress(map(map(lb, "endpoint"), "address"), p + ".endpoint.address") {
                    var endpoint = EndpointConfig(address: a, weight: Int(str(lb, "load_balancing_weight") ?? "1") ?? 1)
                    endpoint.metadata = metadata(lb, p)
                    endpoints.append(endpoint)
                }
            }
        }
        var cluster = ClusterConfig(name: name, endpoints: endpoints)
        cluster.metadata = metadata(node, path)
        translateUpstreamHTTP(node, path, cluster: &cluster)
        switch enumName(node, "lb_policy") ?? "ROUND_ROBIN" {
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
            if cluster.upstreamProtocol == .http2 {
                // Sluice's checker speaks HTTP/1.1; Envoy's uses the cluster's protocol.
                reportUnsupported(hc, path + ".health_checks[0]", "health checks on an HTTP/2 cluster are not supported")
            } else {
                cluster.healthCheck = check
            }
        }
        return cluster
    }
}
