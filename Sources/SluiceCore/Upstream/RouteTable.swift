import NIOHTTP1
import SluiceConfig

/// A route compiled for matching: regexes are built once, names and stats resolved once.
/// Immutable and Sendable, so all workers share one router per configuration.
final class CompiledRoute: @unchecked Sendable {
    // @unchecked: `Regex` is not Sendable, but it is only read after construction.
    let config: RouteConfig
    let stats: RouteStats
    let cluster: ClusterRuntime?
    private let regex: Regex<AnyRegexOutput>?

    init(config: RouteConfig, stats: RouteStats, cluster: ClusterRuntime?) {
        self.config = config
        self.stats = stats
        self.cluster = cluster
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

    /// First match wins, in config order, as in Envoy's route tables.
    func route(method: HTTPMethod, authority: String, path: String, headers: HTTPHeaders) -> CompiledRoute? {
        routes.first { $0.matches(method: method, authority: authority, path: path, headers: headers) }
    }
}
