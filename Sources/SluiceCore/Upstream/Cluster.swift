import ProxyWasm
import Foundation
import NIOCore
import NIOPosix
import SluiceConfig
import Synchronization

/// One upstream endpoint, shared by all workers. Health (active checks) and ejection
/// (passive outlier detection) are atomics: the health checker writes, every worker reads.
public final class Endpoint: Sendable {
    public let address: HostPort
    public let weight: Int
    /// `xds.upstream_host_metadata`.
    let metadata: Metadata
    /// Resolved once when the host is an IP literal; DNS names are resolved per connect.
    let socketAddress: SocketAddress?
    private let healthy = Atomic<Bool>(true)
    private let ejectedUntil = Atomic<UInt64>(0)  // NIODeadline uptime nanoseconds
    private let consecutiveConnectFailures = Atomic<Int>(0)
    private let consecutive5xx = Atomic<Int>(0)
    private let ejections = Atomic<Int>(0)

    init(config: EndpointConfig) {
        self.address = config.address
        self.metadata = Metadata(config.metadata)
        self.weight = config.weight
        self.socketAddress = try? SocketAddress(ipAddress: config.address.host, port: config.address.port)
    }

    public var isHealthy: Bool { healthy.load(ordering: .relaxed) }
    func setHealthy(_ value: Bool) { healthy.store(value, ordering: .relaxed) }

    func isEjected(now: NIODeadline) -> Bool {
        ejectedUntil.load(ordering: .relaxed) > now.uptimeNanoseconds
    }

    @inline(__always) func isAvailable(now: NIODeadline) -> Bool { isHealthy && !isEjected(now: now) }

    /// Records the outcome of a connect attempt; returns true when this failure ejected the endpoint.
    func recordConnect(success: Bool, policy: OutlierDetectionConfig?, now: NIODeadline) -> Bool {
        if success {
            consecutiveConnectFailures.store(0, ordering: .relaxed)
            return false
        }
        guard let policy else { return false }
        let n = consecutiveConnectFailures.add(1, ordering: .relaxed).newValue
        if n >= policy.consecutiveConnectFailures {
            consecutiveConnectFailures.store(0, ordering: .relaxed)
            eject(policy: policy, now: now)
            return true
        }
        return false
    }

    func recordResponse(status: Int, policy: OutlierDetectionConfig?, now: NIODeadline) -> Bool {
        guard let policy else { return false }
        if status < 500 {
            consecutive5xx.store(0, ordering: .relaxed)
            return false
        }
        let n = consecutive5xx.add(1, ordering: .relaxed).newValue
        if n >= policy.consecutive5xx {
            consecutive5xx.store(0, ordering: .relaxed)
            eject(policy: policy, now: now)
            return true
        }
        return false
    }

    /// Ejection time grows with each ejection, as in Envoy (base × number of ejections, capped at 10×).
    private func eject(policy: OutlierDetectionConfig, now: NIODeadline) {
        let count = min(ejections.add(1, ordering: .relaxed).newValue, 10)
        let nanos = UInt64(max(0, policy.baseEjectionTime.nanoseconds)) * UInt64(count)
        ejectedUntil.store(now.uptimeNanoseconds + nanos, ordering: .relaxed)
    }
}

extension Duration {
    var nanoseconds: Int64 {
        let (s, attos) = components
        return s * 1_000_000_000 + attos / 1_000_000_000
    }
    var timeAmount: TimeAmount { .nanoseconds(nanoseconds) }
    var milliseconds: Double { Double(nanoseconds) / 1e6 }
}

/// A cluster's shared, immutable description plus its shared endpoint state.
public final class ClusterRuntime: Sendable {
    public let config: ClusterConfig
    public let endpoints: [Endpoint]
    public let stats: ClusterStats
    /// `xds.cluster_metadata`.
    let metadata: Metadata
    /// TLS to the endpoints, built with the generation; nil: cleartext.
    let tls: UpstreamTLS?

    init(config: ClusterConfig, stats: ClusterStats, tls: UpstreamTLS? = nil) {
        self.config = config
        self.tls = tls
        self.metadata = Metadata(config.metadata)
        self.endpoints = config.endpoints.map(Endpoint.init(config:))
        self.stats = stats
    }
}

/// A cluster as one worker sees it: load-balancer state, per-endpoint request counts and the
/// keep-alive pools. Touched only on its worker's event loop, hence no locks.
final class ClusterLoopState {
    let runtime: ClusterRuntime
    let eventLoop: EventLoop
    private var currentWeights: [Int]
    private(set) var activeRequests: [Int]
    var totalActiveRequests = 0
    var activeRetries = 0
    let pools: [EndpointPool]
    private var rng = SystemRandomNumberGenerator()

    init(runtime: ClusterRuntime, eventLoop: EventLoop) {
        self.runtime = runtime
        self.eventLoop = eventLoop
        self.currentWeights = Array(repeating: 0, count: runtime.endpoints.count)
        self.activeRequests = Array(repeating: 0, count: runtime.endpoints.count)
        self.pools = runtime.endpoints.map { EndpointPool(endpoint: $0, cluster: runtime, eventLoop: eventLoop) }
    }

    /// Picks an available endpoint, avoiding `avoid` (the one that just failed) when another exists.
    func pick(avoid: Int? = nil) -> Int? {
        let now = NIODeadline.now()
        var candidates: [Int] = []
        candidates.reserveCapacity(runtime.endpoints.count)
        for (i, e) in runtime.endpoints.enumerated() where e.isAvailable(now: now) { candidates.append(i) }
        if candidates.count > 1, let avoid, let at = candidates.firstIndex(of: avoid) { candidates.remove(at: at) }
        guard !candidates.isEmpty else { return nil }
        if candidates.count == 1 { return candidates[0] }
        switch runtime.config.lb {
        case .roundRobin:
            // Smooth weighted round robin (nginx's): even spread, weights honoured.
            var total = 0
            var best = candidates[0]
            for i in candidates {
                currentWeights[i] += runtime.endpoints[i].weight
                total += runtime.endpoints[i].weight
                if currentWeights[i] > currentWeights[best] { best = i }
            }
            currentWeights[best] -= total
            return best
        case .random:
            return weightedRandom(candidates)
        case .leastRequest:
            // Power of two choices, as Envoy's default least_request: near-optimal and O(1).
            let a = weightedRandom(candidates), b = weightedRandom(candidates)
            let scoreA = Double(activeRequests[a] + 1) / Double(runtime.endpoints[a].weight)
            let scoreB = Double(activeRequests[b] + 1) / Double(runtime.endpoints[b].weight)
            return scoreA <= scoreB ? a : b
        }
    }

    private func weightedRandom(_ candidates: [Int]) -> Int {
        let total = candidates.reduce(0) { $0 + runtime.endpoints[$1].weight }
        var r = Int.random(in: 0..<total, using: &rng)
        for i in candidates {
            r -= runtime.endpoints[i].weight
            if r < 0 { return i }
        }
        return candidates[candidates.count - 1]
    }

    func requestStarted(endpoint: Int) {
        activeRequests[endpoint] += 1
    }

    func requestFinished(endpoint: Int) {
        activeRequests[endpoint] -= 1
    }

    /// Retry budget: retries in flight stay under a share of active requests.
    func mayRetry(policy: RetryPolicy) -> Bool {
        let allowed = max(policy.minRetryConcurrency, Int(Double(totalActiveRequests) * policy.budgetPercent / 100))
        return activeRetries < allowed
    }

    var connectionCount: Int { pools.reduce(0) { $0 + $1.openConnections } }

    func closeAll() {
        for pool in pools { pool.closeIdle() }
    }

    /// A replaced configuration's pools: idle connections close now, busy ones when their
    /// exchange ends instead of going back to the pool.
    func retire() {
        for pool in pools { pool.retired = true }
        closeAll()
    }
}
