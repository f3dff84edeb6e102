// Sample network filter `tcp-guard`: guards a TCP service.
//   { "authz_cluster": "authz", "authz_service": "acme.Authz", "authz_method": "Check",
//     "block": "DROP TABLE", "counters": true }
// - Each new connection is held (proxy_on_new_connection pauses) while a gRPC call to the
//   authorization service is made with the client's address as the request; a reply of
//   "deny", an error status or no reply in time closes the connection, any other reply lets
//   it through (continueDownstream). Without `authz_cluster`, every connection is let in.
// - Client bytes containing `block` close the connection before they reach the upstream.
// - With `counters`, connections, bytes and refusals are counted in shared data
//   (`tcp_guard:connections`, `:bytes_in`, `:bytes_out`, `:refused`), which an HTTP filter of
//   the same vm_id can read.

final class TCPGuardRoot: RootContext {
    var cluster: String?
    var service = "acme.Authz"
    var method = "Check"
    var block: [UInt8] = []
    var counters = true
    var timeoutMs: UInt32 = 1000

    func onConfigure(configuration: [UInt8]) -> Bool {
        if configuration.isEmpty { return true }
        guard let json = JSON.parse(configuration) else {
            log(.error, "tcp-guard: configuration must be JSON")
            return false
        }
        cluster = json["authz_cluster"]?.string
        service = json["authz_service"]?.string ?? service
        method = json["authz_method"]?.string ?? method
        block = Array((json["block"]?.string ?? "").utf8)
        counters = json["counters"]?.bool ?? counters
        timeoutMs = UInt32(max(1, json["timeout_ms"]?.int ?? Int(timeoutMs)))
        return true
    }

    func createNetworkContext(id: UInt32) -> NetworkContext? { GuardedConnection(id: id, root: self) }

    /// Adds to a shared counter (compare-and-swap: other workers count too).
    func count(_ name: String, _ delta: Int) {
        guard counters, delta != 0 else { return }
        let key = "tcp_guard:" + name
        for _ in 0..<32 {
            let current = SharedData.get(key)
            let value = current.flatMap { Int(String(decoding: $0.value, as: UTF8.self)) } ?? 0
            if SharedData.set(key, Array(String(value + delta).utf8), cas: current?.cas ?? 0) { return }
        }
    }
}

final class GuardedConnection: NetworkContext {
    let id: UInt32
    let root: TCPGuardRoot
    /// Waiting for the authorization answer.
    var pending = false

    init(id: UInt32, root: TCPGuardRoot) {
        self.id = id
        self.root = root
    }

    func onNewConnection() -> Action {
        root.count("connections", 1)
        guard let cluster = root.cluster else { return .continue }
        let client = propertyString("source", "address") ?? ""
        let started = grpcCall(cluster: cluster, service: root.service, method: root.method, message: Array(client.utf8),
                               timeoutMilliseconds: root.timeoutMs) { [self] outcome in
            pending = false
            // The answer arrives on the root context: act on this connection.
            guard setEffectiveContext(id) else { return }
            switch outcome {
            case .message(let reply) where reply != Array("deny".utf8):
                continueDownstream()
            case .message:
                refuse("denied")
            case .closed(let status, let message):
                refuse("authorization failed (status \(status): \(message))")
            }
        }
        guard started != nil else {
            refuse("authorization service unreachable")
            return .pause
        }
        pending = true
        return .pause
    }

    func onDownstreamData(size: Int, endOfStream: Bool) -> Action {
        if pending { return .pause }
        if !root.block.isEmpty {
            let bytes = Body.downstreamData.bytes
            if contains(bytes, root.block) {
                refuse("blocked pattern")
                return .pause
            }
        }
        root.count("bytes_in", size)
        return .continue
    }

    func onUpstreamData(size: Int, endOfStream: Bool) -> Action {
        root.count("bytes_out", size)
        return .continue
    }

    func refuse(_ why: String) {
        log(.info, "tcp-guard: closing \(propertyString("source", "address") ?? "?"): \(why)")
        root.count("refused", 1)
        closeDownstream()
    }

    func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard needle.count <= haystack.count else { return false }
        for start in 0...(haystack.count - needle.count) where haystack[start] == needle[0] {
            if Array(haystack[start..<(start + needle.count)]) == needle { return true }
        }
        return false
    }
}

func makeRootContext() -> RootContext { TCPGuardRoot() }
