extension PluginVM {
    func getSharedData(_ keyPtr: UInt32, _ keyLen: UInt32, _ valuePtrOut: UInt32, _ valueLenOut: UInt32, _ casOut: UInt32) -> WasmResult {
        guard let key = string(keyPtr, keyLen) else { return .invalidMemoryAccess }
        guard let (value, cas) = shared.data.get(vmID: identity.vmID, key: key) else { return .notFound }
        guard memory.writeU32(casOut, cas) else { return .invalidMemoryAccess }
        return copyOut(value, ptrOut: valuePtrOut, lenOut: valueLenOut)
    }

    func setSharedData(_ keyPtr: UInt32, _ keyLen: UInt32, _ valuePtr: UInt32, _ valueLen: UInt32, _ cas: UInt32) -> WasmResult {
        guard let key = string(keyPtr, keyLen), let value = bytes(valuePtr, valueLen) else { return .invalidMemoryAccess }
        return shared.data.set(vmID: identity.vmID, key: key, value: value, cas: cas)
    }

    func registerSharedQueue(_ namePtr: UInt32, _ nameLen: UInt32, _ idOut: UInt32) -> WasmResult {
        guard let name = string(namePtr, nameLen) else { return .invalidMemoryAccess }
        guard memory.withBytes(idOut, 4, { _ in true }) != nil else { return .invalidMemoryAccess }
        guard let services else { return .internalFailure }
        // Notifications hop to this VM's thread; the VM may be gone by then.
        let executor = services.executor
        let target = WeakVM(self)
        let root = currentRootID  // notifications go to the root context that registered
        let id = shared.queues.register(vmID: identity.vmID, name: name, ownerToken: ownerToken) { queueID in
            executor { target.deliverQueueReady(queueID, root: root) }
        }
        memory.writeU32(idOut, id)
        return .ok
    }

    func resolveSharedQueue(_ vmPtr: UInt32, _ vmLen: UInt32, _ namePtr: UInt32, _ nameLen: UInt32, _ idOut: UInt32) -> WasmResult {
        guard let vmID = string(vmPtr, vmLen), let name = string(namePtr, nameLen) else { return .invalidMemoryAccess }
        guard let id = shared.queues.resolve(vmID: vmID.isEmpty ? identity.vmID : vmID, name: name) else { return .notFound }
        return memory.writeU32(idOut, id) ? .ok : .invalidMemoryAccess
    }

    func enqueueSharedQueue(_ id: UInt32, _ ptr: UInt32, _ len: UInt32) -> WasmResult {
        guard let value = bytes(ptr, len) else { return .invalidMemoryAccess }
        return shared.queues.enqueue(id, value)
    }

    func dequeueSharedQueue(_ id: UInt32, _ ptrOut: UInt32, _ lenOut: UInt32) -> WasmResult {
        let (status, value) = shared.queues.dequeue(id)
        guard status == .ok else { return status }
        return copyOut(value, ptrOut: ptrOut, lenOut: lenOut)
    }

    /// Identifies this VM to the queue registry.
    public var ownerToken: UInt64 { UInt64(UInt(bitPattern: ObjectIdentifier(self).hashValue)) }
}

/// A weak reference that may cross threads; it is only dereferenced on the VM's own thread
/// (the executor guarantees that).
final class WeakVM: @unchecked Sendable {
    weak var vm: PluginVM?
    init(_ vm: PluginVM) { self.vm = vm }
    func deliverQueueReady(_ id: UInt32, root: UInt32) { vm?.onQueueReady(id, root: root) }
}

extension PluginVM {
    func defineMetric(_ type: UInt32, _ namePtr: UInt32, _ nameLen: UInt32, _ idOut: UInt32) -> WasmResult {
        guard let type = MetricType(rawValue: type) else { return .badArgument }
        guard let name = string(namePtr, nameLen) else { return .invalidMemoryAccess }
        guard !name.isEmpty else { return .badArgument }
        let id = shared.metrics.define(plugin: identity.name, name: name, type: type)
        return memory.writeU32(idOut, id) ? .ok : .invalidMemoryAccess
    }

    func incrementMetric(_ id: UInt32, _ delta: Int64) -> WasmResult {
        guard let metric = shared.metrics.metric(id) else { return .notFound }
        switch metric.type {
        case .counter:
            guard delta > 0 else { return .badArgument }
            metric.value.add(delta, ordering: .relaxed)
        case .gauge:
            metric.value.add(delta, ordering: .relaxed)
        case .histogram:
            return .badArgument
        }
        return .ok
    }

    func recordMetric(_ id: UInt32, _ value: UInt64) -> WasmResult {
        guard let metric = shared.metrics.metric(id) else { return .notFound }
        metric.record(Int64(bitPattern: value))
        return .ok
    }

    func getMetric(_ id: UInt32, _ out: UInt32) -> WasmResult {
        guard let metric = shared.metrics.metric(id) else { return .notFound }
        guard metric.type != .histogram else { return .badArgument }
        return memory.writeU64(out, UInt64(bitPattern: metric.current)) ? .ok : .invalidMemoryAccess
    }
}
