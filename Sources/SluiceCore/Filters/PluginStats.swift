import Foundation
import ProxyWasm
import SluiceConfig

/// Prometheus text for plugins: Sluice's own counters per plugin, then every metric the
/// plugins defined, named as Envoy names them (see `PluginMetricNaming`), with Prometheus types.
func renderPluginMetrics(_ manager: PluginManager, tags: [StatsTag] = []) -> String {
    var w = PrometheusWriter()
    let stats = manager.stats.values.sorted { $0.name < $1.name }
    func per(_ f: (PluginStats) -> Int) -> [(labels: [(String, String)], value: Int)] { stats.map { ([("plugin", $0.name)], f($0)) } }
    w.family("sluice_plugin_traps_total", "counter", "Plugin VMs that trapped (each VM is then never called again).", per { $0.traps.load })
    w.family("sluice_plugin_cpu_budget_exhausted_total", "counter", "Plugin callbacks stopped for exceeding the CPU budget.", per { $0.budgetExhausted.load })
    w.family("sluice_plugin_reloads_total", "counter", "Plugin VMs recreated after a failure (failure_policy: reload).", per { $0.reloads.load })
    w.family("sluice_plugin_reload_failures_total", "counter", "Plugin VMs that failed to start.", per { $0.reloadFailures.load })
    w.family("sluice_plugin_failed_closed_streams_total", "counter", "Streams answered 503 because their plugin failed.", per { $0.failedClosedStreams.load })
    w.family("sluice_plugin_failed_open_streams_total", "counter", "Streams that skipped a failed plugin (fail_open).", per { $0.failedOpenStreams.load })
    w.family("sluice_plugin_memory_bytes", "gauge", "Linear memory of the plugin's VM (largest worker, sampled every 256 streams).", per { $0.memoryBytes.load })
    w.family("sluice_plugin_streams_total", "counter", "Streams per plugin module version (primary, or the gradual-rollout version).",
             stats.flatMap { s in [([("plugin", s.name), ("version", "primary")], s.primaryStreams.load), ([("plugin", s.name), ("version", "rollout")], s.rolloutStreams.load)] })
    // Plugin metrics, grouped into families by their Envoy name and tags. Metrics of the same
    // name from different plugins are one series, as in Envoy (one stats scope).
    let naming = PluginMetricNaming(tags: tags)
    var families: [(name: String, type: MetricType, metrics: [(labels: [(String, String)], metric: PluginMetricsRegistry.Metric)])] = []
    var index: [String: Int] = [:]
    for metric in manager.shared.metrics.all {
        let (family, labels) = naming.name(metric.name)
        let key = "\(family)\u{0}\(metric.type.rawValue)"
        if index[key] == nil {
            index[key] = families.count
            families.append((family, metric.type, []))
        }
        families[index[key]!].metrics.append((labels, metric))
    }
    for family in families {
        switch family.type {
        case .counter, .gauge:
            // Same labels from several plugins: one series, their sum.
            var series: [(labels: [(String, String)], value: Int)] = []
            var seen: [String: Int] = [:]
            for (labels, metric) in family.metrics {
                let key = labels.map { "\($0.0)=\($0.1)" }.joined(separator: ",")
                if let at = seen[key] { series[at].value += Int(metric.current) } else { seen[key] = series.count; series.append((labels, Int(metric.current))) }
            }
            w.family(family.name, family.type == .counter ? "counter" : "gauge", "Plugin-defined \(family.type == .counter ? "counter" : "gauge").", series)
        case .histogram:
            var buckets: [(labels: [(String, String)], value: Int)] = []
            var sums: [(labels: [(String, String)], value: Int)] = []
            var counts: [(labels: [(String, String)], value: Int)] = []
            for (labels, metric) in family.metrics {
                let h = metric.histogram
                for (i, bound) in PluginMetricsRegistry.Metric.bucketBounds.enumerated() { buckets.append((labels + [("le", String(bound))], Int(h.buckets[i]))) }
                buckets.append((labels + [("le", "+Inf")], Int(h.count)))
                sums.append((labels, Int(h.sum)))
                counts.append((labels, Int(h.count)))
            }
            w.histogram(family.name, "Plugin-defined histogram.", buckets: buckets, sums: sums, counts: counts)
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

/// `name{a="1",b="2"}` → ("name", [("a","1"), ("b","2")]); a plain name has no labels.
func splitLabels(_ name: String) -> (String, [(String, String)]) {
    guard let open = name.firstIndex(of: "{"), name.hasSuffix("}") else { return (name, []) }
    let base = String(name[..<open])
    let body = name[name.index(after: open)..<name.index(before: name.endIndex)]
    var labels: [(String, String)] = []
    for part in body.split(separator: ",") {
        let kv = part.split(separator: "=", maxSplits: 1)
        guard kv.count == 2 else { continue }
        var value = String(kv[1]).trimmingCharacters(in: .whitespaces)
        if value.hasPrefix("\""), value.hasSuffix("\""), value.count >= 2 { value = String(value.dropFirst().dropLast()) }
        labels.append((sanitize(String(kv[0]).trimmingCharacters(in: .whitespaces)), value))
    }
    return (base, labels)
}

/// How Envoy names a metric a plugin defines: the stat is `wasmcustom.<name>`; each
/// stats tag's regex cuts its first capture group out of that name and makes its second
/// (or, without one, its first) the value of a label; fixed tags add a label to every
/// metric; the `wasmcustom.` namespace does not appear in Prometheus output, and what is
/// left is sanitised. Sluice's own `name{label="v"}` extension is applied first.
struct PluginMetricNaming {
    private let tags: [(name: String, regex: Regex<AnyRegexOutput>?, fixed: String?)]

    init(tags: [StatsTag]) {
        self.tags = tags.compactMap { tag in
            if let fixed = tag.fixedValue { return (tag.name, nil, fixed) }
            guard let pattern = tag.regex, let regex = try? Regex(pattern) else { return nil }
            return (tag.name, regex, nil)
        }
    }

    func name(_ defined: String) -> (family: String, labels: [(String, String)]) {
        var (base, labels) = splitLabels(defined)
        var stat = "wasmcustom." + base
        for tag in tags {
            if let fixed = tag.fixed {
                labels.append((tag.name, fixed))
                continue
            }
            guard let regex = tag.regex, let match = try? regex.firstMatch(in: stat), match.output.count > 1,
                  let cut = match.output[1].range else { continue }
            let value = match.output.count > 2 ? match.output[2].substring : match.output[1].substring
            labels.append((tag.name, value.map(String.init) ?? ""))
            stat.removeSubrange(cut)
        }
        if stat.hasPrefix("wasmcustom.") { base = String(stat.dropFirst("wasmcustom.".count)) } else { base = stat }
        return (sanitize(base), labels)
    }
}
