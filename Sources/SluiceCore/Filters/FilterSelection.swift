import ProxyWasm
import SluiceConfig

/// Which of a listener's HTTP filters run on a stream.
enum FilterSelection {
    /// These filters, in order (possibly none).
    case chain([PluginWorker])
    /// A filter that must run is failed on this worker with fail_closed: the stream gets 503.
    case failedClosed
}

extension Worker {
    /// The listener's filters for a stream on `route`: a route may disable a filter or give it
    /// its own configuration; a gradual rollout sends a share of streams to the new module; a
    /// filter whose VM failed on this worker is skipped (fail_open) or fails the stream.
    func httpFilters(listener: ListenerConfig, route: CompiledRoute?) -> FilterSelection {
        if listener.httpFilters.isEmpty { return .chain([]) }
        return select(listener.httpFilters) { name in
            let override = route?.config.plugins[name]
            if override?.disabled == true { return .disabled }
            return override?.configuration.map { .variant(PluginManager.variantKey(name, $0)) } ?? .plugin
        }
    }

    /// The listener's network filters for a new connection (no per-route variants: the
    /// connection has no route yet).
    func networkFilters(listener: ListenerConfig) -> FilterSelection {
        if listener.networkFilters.isEmpty { return .chain([]) }
        return select(listener.networkFilters) { _ in .plugin }
    }

    /// What a route makes of one filter.
    private enum RouteChoice {
        /// The plugin as configured (or its rollout).
        case plugin
        /// The route's own configuration of it, under this key.
        case variant(String)
        /// The route turns it off.
        case disabled
    }

    private func select(_ names: [String], choice: (String) -> RouteChoice) -> FilterSelection {
        var plugins: [PluginWorker] = []
        for name in names {
            var key = name
            switch choice(name) {
            case .disabled: continue
            case .variant(let variantKey): key = variantKey
            case .plugin:
                if !rollouts.isEmpty, let rollout = rollouts[name], Int.random(in: 0..<100) < rollout.runtime.config.rolloutWeight {
                    key = PluginManager.rolloutKey(name)
                }
            }
            guard let plugin = self.plugins[key] else { continue }
            if plugin.runtime.version == "rollout" { plugin.runtime.stats.rolloutStreams.increment() } else { plugin.runtime.stats.primaryStreams.increment() }
            if plugin.activeVM == nil {
                switch plugin.failurePolicy {
                case .failOpen:
                    plugin.runtime.stats.failedOpenStreams.increment()
                    continue
                case .failClosed, .reload:
                    plugin.runtime.stats.failedClosedStreams.increment()
                    return .failedClosed
                }
            }
            plugins.append(plugin)
        }
        return .chain(plugins)
    }
}
