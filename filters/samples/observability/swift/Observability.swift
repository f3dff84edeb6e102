// Sample filter `observability`: per-route request counters by status class and a latency
// histogram (labelled metrics on the admin /stats), a log line per request with its
// request id, and a `server-timing` response header with the time spent.
//   { "log": true, "server_timing": true }

final class ObservabilityRoot: RootContext {
    var logRequests = true
    var serverTiming = true
    private var metrics: [String: Metric] = [:]

    func onConfigure(configuration: [UInt8]) -> Bool {
        if configuration.isEmpty { return true }
        guard let json = JSON.parse(configuration) else {
            log(.error, "observability: configuration must be JSON")
            return false
        }
        logRequests = json["log"]?.bool ?? true
        serverTiming = json["server_timing"]?.bool ?? true
        return true
    }

    /// One metric per label set, defined on first use (Sluice turns `name{k="v"}` into labels).
    func metric(_ kind: Metric.Kind, _ name: String) -> Metric {
        if let m = metrics[name] { return m }
        let m = Metric(kind, name)
        metrics[name] = m
        return m
    }

    func createHTTPContext(id: UInt32) -> HTTPContext? { ObservabilityStream(root: self) }
}

final class ObservabilityStream: HTTPContext {
    let root: ObservabilityRoot
    var start: UInt64 = 0
    var requestID = ""
    var method = ""
    var path = ""
    var status = 0

    init(root: ObservabilityRoot) { self.root = root }

    func onRequestHeaders(endOfStream: Bool) -> Action {
        start = nowNanoseconds()
        requestID = Headers.request["x-request-id"] ?? "-"
        method = Headers.request[":method"] ?? "-"
        path = Headers.request[":path"] ?? "-"
        return .continue
    }

    func onResponseHeaders(endOfStream: Bool) -> Action {
        status = Int(Headers.response[":status"] ?? "") ?? 0
        if root.serverTiming {
            let micros = (nowNanoseconds() - start) / 1000
            Headers.response.add("server-timing", "sluice;dur=" + String(micros / 1000) + "." + String((micros % 1000) / 100))
        }
        return .continue
    }

    func onLog() {
        let route = propertyString("xds", "route_name") ?? "none"
        let millis = (nowNanoseconds() - start) / 1_000_000
        let statusClass = status == 0 ? "none" : String(status / 100) + "xx"
        root.metric(.counter, "requests_total{route=\"" + route + "\",class=\"" + statusClass + "\"}").increment()
        root.metric(.histogram, "request_duration_ms{route=\"" + route + "\"}").record(millis)
        if root.logRequests {
            log(.info, "request " + requestID + " " + method + " " + path + " -> " + String(status) + " in " + String(millis) + " ms (route " + route + ")")
        }
    }
}

func makeRootContext() -> RootContext { ObservabilityRoot() }
