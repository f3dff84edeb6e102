import Foundation
import Synchronization

/// Process-wide state that plugins share across workers: key-value data with CAS, queues,
/// and metrics. One instance per running proxy; partitioned by vm_id where the ABI says so.
public final class PluginSharedState: Sendable {
    public let data = SharedDataStore()
    public let queues = SharedQueueRegistry()
    public let metrics = PluginMetricsRegistry()
    public init() {}
}

/// Shared key-value data (proxy_get/set_shared_data), one namespace per vm_id. A mutex, not
/// a lock-free map: the values are small, calls are rare compared with requests, and CAS
/// semantics need the read-compare-write to be atomic anyway.
public final class SharedDataStore: Sendable {
    struct Entry {
        var value: [UInt8]
        var cas: UInt32
        /// Sluice extension: entries may expire (see `set(…ttl:)`).
        var expires: ContinuousClock.Instant?
    }
    private let state = Mutex<(entries: [String: [String: Entry]], nextCAS: UInt32)>(([:], 1))

    public init() {}

    public func get(vmID: String, key: String) -> (value: [UInt8], cas: UInt32)? {
        state.withLock { s in
            guard let e = s.entries[vmID]?[key] else { return nil }
            if let exp = e.expires, exp <= .now {
                s.entries[vmID]?[key] = nil
                return nil
            }
            return (e.value, e.cas)
        }
    }

    /// `cas == 0` writes unconditionally; otherwise the key must exist with that CAS (a
    /// non-zero CAS on a missing key succeeds, as in cpp-host).
    public func set(vmID: String, key: String, value: [UInt8], cas: UInt32, ttl: Duration? = nil) -> WasmResult {
        state.withLock { s in
            var table = s.entries[vmID] ?? [:]
            if cas != 0, let existing = table[key], existing.cas != cas,
               !(existing.expires.map { $0 <= .now } ?? false) {
                return .casMismatch
            }
            let newCAS = s.nextCAS
            s.nextCAS = s.nextCAS == UInt32.max ? 1 : s.nextCAS + 1
            table[key] = Entry(value: value, cas: newCAS, expires: ttl.map { ContinuousClock.now + $0 })
            s.entries[vmID] = table
            return .ok
        }
    }

    /// Sluice extension (foreign function `sluice_shared_data_delete`): removes a key,
    /// honouring CAS like `set`.
    public func delete(vmID: String, key: String, cas: UInt32) -> WasmResult {
        state.withLock { s in
            guard let existing = s.entries[vmID]?[key] else { return .notFound }
            if cas != 0 && existing.cas != cas { return .casMismatch }
            s.entries[vmID]?[key] = nil
            return .ok
        }
    }
}

/// Shared queues: registered by a root context (the owner, notified on its own thread),
/// fed from any VM with the same or another vm_id.
public final class SharedQueueRegistry: Sendable {
    public typealias Notify = @Sendable (UInt32) -> Void
    struct Queue {
        let vmID: String
        let name: String
        var items: [[UInt8]] = []
        var head = 0
        var owner: Notify?
        /// Identifies the registering VM, so a VM going away only unregisters its own queues.
        var ownerToken: UInt64 = 0
    }
    private let state = Mutex<(byID: [UInt32: Queue], byName: [String: UInt32], nextID: UInt32)>(([:], [:], 1))

    public init() {}

    /// Creates or re-opens `(vmID, name)`, making `owner` the target of notifications.
    public func register(vmID: String, name: String, ownerToken: UInt64, owner: @escaping Notify) -> UInt32 {
        state.withLock { s in
            let key = vmID + "\u{0}" + name
            if let id = s.byName[key] {
                s.byID[id]?.owner = owner
                s.byID[id]?.ownerToken = ownerToken
                return id
            }
            let id = s.nextID
            s.nextID += 1
            s.byName[key] = id
            s.byID[id] = Queue(vmID: vmID, name: name, owner: owner, ownerToken: ownerToken)
            return id
        }
    }

    public func resolve(vmID: String, name: String) -> UInt32? {
        state.withLock { $0.byName[vmID + "\u{0}" + name] }
    }

    public func enqueue(_ id: UInt32, _ value: [UInt8]) -> WasmResult {
        let notify: Notify? = state.withLock { s in
            guard s.byID[id] != nil else { return nil }
            s.byID[id]!.items.append(value)
            return s.byID[id]!.owner
        }
        guard let notify else { return state.withLock { $0.byID[id] == nil } ? .notFound : .ok }
        notify(id)
        return .ok
    }

    public func dequeue(_ id: UInt32) -> (WasmResult, [UInt8]) {
        state.withLock { s in
            guard var q = s.byID[id] else { return (.notFound, []) }
            guard q.head < q.items.count else { return (.empty, []) }
            let item = q.items[q.head]
            q.head += 1
            if q.head > 64 && q.head * 2 > q.items.count {
                q.items.removeFirst(q.head)
                q.head = 0
            }
            s.byID[id] = q
            return (.ok, item)
        }
    }

    /// Stops notifications to a VM that went away (its items stay for a successor).
    public func ownerGone(token: UInt64) {
        state.withLock { s in
            for (id, q) in s.byID where q.ownerToken == token { s.byID[id]?.owner = nil }
        }
    }
}

/// Metrics defined by plugins, exported on the admin /stats under the plugin's name.
public final class PluginMetricsRegistry: Sendable {
    public final class Metric: Sendable {
        public let plugin: String
        public let name: String
        public let type: MetricType
        let value = Atomic<Int64>(0)
        // Histogram: Prometheus-style cumulative buckets plus sum and count.
        public static let bucketBounds: [Int64] = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000]
        let buckets: [AtomicCell]
        let sum = Atomic<Int64>(0)
        let count = Atomic<Int64>(0)

        init(plugin: String, name: String, type: MetricType) {
            self.plugin = plugin
            self.name = name
            self.type = type
            self.buckets = type == .histogram ? Metric.bucketBounds.map { _ in AtomicCell() } : []
        }

        public var current: Int64 { value.load(ordering: .relaxed) }
        public var histogram: (buckets: [Int64], sum: Int64, count: Int64) {
            (buckets.map { $0.value.load(ordering: .relaxed) }, sum.load(ordering: .relaxed), count.load(ordering: .relaxed))
        }

        func record(_ v: Int64) {
            switch type {
            case .counter: value.add(v, ordering: .relaxed)
            case .gauge: value.store(v, ordering: .relaxed)
            case .histogram:
                for (i, bound) in Metric.bucketBounds.enumerated() where v <= bound { buckets[i].value.add(1, ordering: .relaxed) }
                sum.add(v, ordering: .relaxed)
                count.add(1, ordering: .relaxed)
            }
        }
    }

    private let state = Mutex<(byID: [UInt32: Metric], byKey: [String: UInt32], nextID: UInt32)>(([:], [:], 1))

    public init() {}

    /// Defining the same (plugin, name, type) again returns the same metric: every worker's VM
    /// defines its metrics, and they must add up in one series.
    public func define(plugin: String, name: String, type: MetricType) -> UInt32 {
        state.withLock { s in
            let key = "\(plugin)\u{0}\(name)\u{0}\(type.rawValue)"
            if let id = s.byKey[key] { return id }
            // The type sits in the low two bits, as in cpp-host.
            let id = (s.nextID << 2) | type.rawValue
            s.nextID += 1
            s.byKey[key] = id
            s.byID[id] = Metric(plugin: plugin, name: name, type: type)
            return id
        }
    }

    public func metric(_ id: UInt32) -> Metric? { state.withLock { $0.byID[id] } }

    public var all: [Metric] { state.withLock { Array($0.byID.values) }.sorted { ($0.plugin, $0.name) < ($1.plugin, $1.name) } }
}

final class AtomicCell: Sendable {
    let value = Atomic<Int64>(0)
}
