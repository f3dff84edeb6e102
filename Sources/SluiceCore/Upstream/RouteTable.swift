import NIOHTTP1
import ProxyWasm
import SluiceConfig

/// A route compiled for matching: regexes are built once, names and stats resolved once.
/// Immutable and Sendable, so all workers share one router per configuration.
final class CompiledRoute: @unchecked Sendable {
    // @unchecked: `Regex` is not Sendable, but it is only read after construction.
    let config: RouteConfig
    let stats: RouteStats
    let cluster: ClusterRuntime?
    /// The route's metadata as filters read it (`xds.route_metadata`).
    let metadata: Metadata
    private let regex: Regex<AnyRegexOutput>?

    init(config: RouteConfig, stats: RouteStats, cluster: ClusterRuntime?) {
        self.config = config
        self.stats = stats
        self.cluster = cluster
        self.metadata = Metadata(config.metadata)
        if case .regex(let pattern) = config.match.path {
            self.regex = try? Regex(pattern)
        } else {
            self.regex = nil
        }
    }

    func matches(method: HTTPMethod, authority: String, path: String, headers: HTTPHeaders) -> Bool {
        let match = config.match
        if !match.hosts.isEmpty && !match.hosts.contains(where: { $0.matches(authority) }) { return false }
        // Routes match on the path without its query string, as Envoy's prefix/path do.
        let pathOnly = path.firstIndex(of: "?").map { path[..<$0] } ?? Substring(path)
        switch match.path {
        case .prefix(let prefix):
            if !pathOnly.hasPrefix(prefix) { return false }
        case .exact(let exact):
            if pathOnly != exact { return false }
        case .regex:
            guard let regex, (try? regex.wholeMatch(in: pathOnly)) != nil else { return false }
        }
        if !match.methods.isEmpty && !match.methods.contains(method.rawValue) { return false }
        for header in match.headers {
            let values = headers[header.name]
            if values.isEmpty { return false }
            if let expected = header.value, !values.contains(expected) { return false }
        }
        return true
    }

    /// The path sent upstream: a matched prefix swapped for `prefix_rewrite`.
    func rewrite(path: String) -> String {
        guard case .cluster(let target) = config.action, let replacement = target.prefixRewrite,
              case .prefix(let prefix) = config.match.path, path.hasPrefix(prefix) else { return path }
        return replacement + path.dropFirst(prefix.count)
    }
}

struct RouteTable: Sendable {
    let routes: [CompiledRoute]
    /// Present when the routes come from Envoy virtual hosts.
    let virtualHosts: VirtualHostTable?

    init(routes: [CompiledRoute]) {
        self.routes = routes
        self.virtualHosts = VirtualHostTable(routes: routes)
    }

    /// With virtual hosts: Envoy's virtual-host selection, then the first matching route in
    /// it. Without: the first matching route, in config order.
    func route(method: HTTPMethod, authority: String, path: String, headers: HTTPHeaders) -> CompiledRoute? {
        if let virtualHosts {
            guard let host = virtualHosts.select(authority) else { return nil }
            return host.routes.first { $0.matches(method: method, authority: authority, path: path, headers: headers) }
        }
        return routes.first { $0.matches(method: method, authority: authority, path: path, headers: headers) }
    }
}

/// Envoy's virtual-host selection (RouteMatcher::findVirtualHost): the lower-cased Host
/// (with its port, unless ignore_port_in_host_matching) is looked up as an exact domain, then
/// against suffix wildcards (`*.example.com`, `*-canary.example.com`) longest first, then
/// prefix wildcards (`foo.*`) longest first, then `*`. A wildcard stands for at least one
/// character. Then the first matching route of that virtual host answers; no other virtual
/// host is tried.
struct VirtualHostTable: Sendable {
    struct Host: Sendable {
        let name: String
        let routes: [CompiledRoute]
    }

    private let hosts: [Host]
    private var exact: [String: Int] = [:]
    /// By wildcard length, longest first: (length, [suffix or prefix: host]).
    private var suffixes: [(Int, [String: Int])] = []
    private var prefixes: [(Int, [String: Int])] = []
    private var any: Int?
    private let ignorePort: Bool

    init?(routes: [CompiledRoute]) {
        var order: [Int] = []
        var byIndex: [Int: (VirtualHostRef, [CompiledRoute])] = [:]
        for route in routes {
            guard let ref = route.config.virtualHost else { return nil }
            if byIndex[ref.index] == nil { order.append(ref.index); byIndex[ref.index] = (ref, []) }
            byIndex[ref.index]!.1.append(route)
        }
        guard !order.isEmpty else { return nil }
        var hosts: [Host] = []
        var suffixMap: [Int: [String: Int]] = [:], prefixMap: [Int: [String: Int]] = [:]
        var ignorePort = false
        for index in order {
            let (ref, routes) = byIndex[index]!
            let position = hosts.count
            hosts.append(Host(name: ref.name, routes: routes))
            ignorePort = ref.ignorePort
            for domain in ref.domains {
                if domain == "*" {
                    if any == nil { any = position }
                } else if domain.hasPrefix("*") {
                    let suffix = String(domain.dropFirst())
                    suffixMap[suffix.utf8.count, default: [:]][suffix] = suffixMap[suffix.utf8.count]?[suffix] ?? position
                } else if domain.hasSuffix("*") {
                    let prefix = String(domain.dropLast())
                    prefixMap[prefix.utf8.count, default: [:]][prefix] = prefixMap[prefix.utf8.count]?[prefix] ?? position
                } else if exact[domain] == nil {
                    exact[domain] = position
                }
            }
        }
        self.hosts = hosts
        self.ignorePort = ignorePort
        suffixes = suffixMap.sorted { $0.key > $1.key }.map { ($0.key, $0.value) }
        prefixes = prefixMap.sorted { $0.key > $1.key }.map { ($0.key, $0.value) }
    }

    func select(_ authority: String) -> Host? {
        var host = authority.lowercased()
        if ignorePort { host = Self.withoutPort(host) }
        if let i = exact[host] { return hosts[i] }
        let utf8 = host.utf8
        for (length, map) in suffixes where length < utf8.count {
            if let i = map[String(Substring(utf8.suffix(length)))] { return hosts[i] }
        }
        for (length, map) in prefixes where length < utf8.count {
            if let i = map[String(Substring(utf8.prefix(length)))] { return hosts[i] }
        }
        return any.map { hosts[$0] }
    }

    private static func withoutPort(_ host: String) -> String {
        if host.hasPrefix("[") {
            if let close = host.firstIndex(of: "]") { return String(host[...close]) }
            return host
        }
        if let colon = host.lastIndex(of: ":") { return String(host[..<colon]) }
        return host
    }
}
