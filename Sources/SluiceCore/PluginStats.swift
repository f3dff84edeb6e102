import ProxyWasm

/// Prometheus text for plugins: Sluice's own counters per plugin, then every metric the
/// plugins defined, named `<plugin>_<metric>` (sanitised), with Prometheus types.
func renderPluginMetrics(_ manager: PluginManager) -> String {
    var w = PrometheusWriter()
    let stats = manager.stats.values.sorted { $0.name < $1.name }
    func per(_ f: (PluginStats) -> Int) -> [(labels: [(String, String)], value: Int)] { stats.map { ([("plugin", $0.name)], f($0)) } }
    w.family("sluice_plugin_traps_total", "counter", "Plugin VMs that trapped (each VM is then never called again).", per { $0.traps.load })
    w.family("sluice_plugin_cpu_budget_exhausted_total", "counter", "Plugin callbacks stopped for exceeding the CPU budget.", per { $0.budgetExhausted.load })
    w.family("sluice_plugin_reloads_total", "counter", "Plugin VMs recreated after a failure (failure_policy: reload).", per { $0.reloads.load })
    w.family("sluice_plugin_reload_failures_total", "counter", "Plugin VMs that failed to start.", per { $0.reloadFailures.load })
    w.family("sluice_plugin_failed_closed_streams_total", "counter", "Streams answered 503 because their plugin failed.", per { $0.failedClosedStreams.load })
    w.family("sluice_plugin_failed_open_streams_total", "counter", "Streams that skipped a failed plugin (fail_open).", per { $0.failedOpenStreams.load })
    w.family("sluice_plugin_streams_total", "counter", "Streams per plugin module version (primary, or the gradual-rollout version).",
             stats.flatMap { s in [([("plugin", s.name), ("version", "primary")], s.primaryStreams.load), ([("plugin", s.name), ("version", "rollout")], s.rolloutStreams.load)] })
    for metric in manager.shared.metrics.all {
        let name = sanitize("\(metric.plugin)_\(metric.name)")
        switch metric.type {
        case .counter:
            w.family(name, "counter", "Plugin-defined counter \(metric.name).", [([], Int(metric.current))])
        case .gauge:
            w.family(name, "gauge", "Plugin-defined gauge \(metric.name).", [([], Int(metric.current))])
        case .histogram:
            let h = metric.histogram
            var samples: [(labels: [(String, String)], value: Int)] = []
            for (i, bound) in PluginMetricsRegistry.Metric.bucketBounds.enumerated() { samples.append(([("le", String(bound))], Int(h.buckets[i]))) }
            samples.append(([("le", "+Inf")], Int(h.count)))
            w.histogram(name, "Plugin-defined histogram \(metric.name).", buckets: samples, sum: Int(h.sum), count: Int(h.count))
        }
    }
    return w.text
}

/// Prometheus metric names: [a-zA-Z_:][a-zA-Z0-9_:]*; anything else becomes '_'.
func sanitize(_ name: String) -> String {
    var out = ""
    for (i, c) in name.unicodeScalars.enumerated() {
        let ok = (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || c == "_" || (i > 0 && c >= "0" && c <= "9")
        out.unicodeScalars.append(ok ? c : "_")
    }
    return out
}
