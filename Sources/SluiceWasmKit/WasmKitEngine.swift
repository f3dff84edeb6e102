import ProxyWasm
// The memory cap uses WasmKit's ResourceLimiter, which 0.4.2 exposes only as SPI. It is worth it:
// without a cap one filter can grow its memory to 4 GiB and take the proxy down.
@_spi(Fuzzing) import WasmKit

/// The embedded engine: WasmKit's interpreter. Modules are parsed once and shared; every
/// instance gets its own Store (so a trapped or replaced VM frees everything it had).
/// Host functions use WasmKit's raw API (no array per call), execution stacks are reused,
/// memory is accessed only through bounds-checked helpers, and fuel metering bounds the
/// work of each callback.
public final class WasmKitEngine: WasmEngine {
    let engine: Engine
    public let name = "wasmkit"
    /// Measured on the project's machine: WasmKit runs roughly 50-60 million simple wasm
    /// instructions per second, so 50,000 fuel units is about one millisecond of guest work.
    public let fuelPerMillisecond: UInt64 = 50_000
    let memoryLimitBytes: Int

    /// - Parameter memoryLimitBytes: cap on each instance's linear memory (growth past it fails
    ///   in the guest, as `memory.grow` returning -1).
    public init(memoryLimitBytes: Int = 512 << 20) {
        self.engine = Engine(configuration: EngineConfiguration(memoryBoundsChecking: .software, fuelMetering: true))
        self.memoryLimitBytes = memoryLimitBytes
    }

    public func compile(bytes: [UInt8], contentHash: String?) throws -> WasmModule {
        do {
            let module = try parseWasm(bytes: bytes)
            return WasmKitModule(engine: engine, module: module, memoryLimitBytes: memoryLimitBytes)
        } catch {
            throw WasmEngineError("invalid wasm module: \(error)")
        }
    }
}

final class WasmKitModule: WasmModule, @unchecked Sendable {
    // @unchecked: Engine and Module are immutable after construction and used read-only.
    let engine: Engine
    let module: Module
    let memoryLimitBytes: Int

    init(engine: Engine, module: Module, memoryLimitBytes: Int) {
        self.engine = engine
        self.module = module
        self.memoryLimitBytes = memoryLimitBytes
    }

    var exportNames: [String] { module.exports.map(\.name) }
    var imports: [(module: String, name: String)] { module.imports.map { ($0.module, $0.name) } }

    func instantiate(hostFunctions: [ProxyWasm.HostFunction]) throws -> WasmInstance {
        let store = Store(engine: engine)
        let cap = MemoryCap(limit: memoryLimitBytes)
        cap.store = store
        store.resourceLimiter = cap
        var table: [String: ProxyWasm.HostFunction] = [:]
        for f in hostFunctions { table[f.module + "\u{0}" + f.name] = f }
        var imports = Imports()
        var missing: [String] = []
        for imp in module.imports {
            guard case .function = imp.descriptor else {
                missing.append("\(imp.module).\(imp.name) (only function imports are provided)")
                continue
            }
            guard let host = table[imp.module + "\u{0}" + imp.name] else {
                missing.append("\(imp.module).\(imp.name)")
                continue
            }
            imports.define(module: imp.module, name: imp.name, makeFunction(store: store, host))
        }
        if !missing.isEmpty {
            throw WasmEngineError("the module imports functions this host does not provide: \(missing.joined(separator: ", "))")
        }
        do {
            let instance = try module.instantiate(store: store, imports: imports)
            return WasmKitInstance(store: store, instance: instance)
        } catch {
            throw WasmEngineError("cannot instantiate: \(error)")
        }
    }

    private func makeFunction(store: Store, _ host: ProxyWasm.HostFunction) -> Function {
        let body = host.body
        let resultType = host.type.results.first
        return Function(
            store: store,
            parameters: host.type.parameters.map { $0 == .i32 ? .i32 : .i64 },
            results: host.type.results.map { $0 == .i32 ? .i32 : .i64 },
            raw: { _, params, results in
                let args = HostArgs(count: params.count) { i in
                    switch params[i] {
                    case .i32(let v): return UInt64(v)
                    case .i64(let v): return v
                    default: return 0
                    }
                }
                let r = try body(args)
                if let resultType {
                    results[0] = resultType == .i32 ? .i32(UInt32(truncatingIfNeeded: r ?? 0)) : .i64(r ?? 0)
                }
            })
    }
}

/// The memory cap, and the price of growing: WasmKit copies the whole memory on
/// `memory.grow`, so each growth is charged to the callback's budget like a bulk copy of
/// the memory (one fuel unit per 64 bytes, WasmKit's rate for memory.copy). A filter growing
/// to its cap page by page then runs out of budget instead of stalling its worker.
final class MemoryCap: ResourceLimiter, @unchecked Sendable {
    let limit: Int
    weak var store: Store?
    init(limit: Int) { self.limit = limit }
    func limitMemoryGrowth(to desired: Int) throws -> Bool {
        guard desired <= limit else { return false }
        store?.chargeFuel(UInt64(desired / 64))
        return true
    }
    func limitTableGrowth(to desired: Int) throws -> Bool { desired <= 1_000_000 }
}

final class WasmKitInstance: WasmInstance {
    let store: Store
    let instance: Instance
    let memory: ProxyWasm.GuestMemory?
    private var functions: [String: WasmKitFunction] = [:]

    init(store: Store, instance: Instance) {
        self.store = store
        self.instance = instance
        self.memory = instance.exports[memory: "memory"].map { WasmKitMemory(memory: $0) }
    }

    var exportedFunctionNames: [String] {
        instance.exports.compactMap { name, value in
            if case .function = value { return name } else { return nil }
        }
    }

    func function(_ name: String) -> WasmFunction? {
        if let f = functions[name] { return f }
        guard let f = instance.exports[function: name] else { return nil }
        let wrapped = WasmKitFunction(function: f, owner: self)
        functions[name] = wrapped
        return wrapped
    }

    func setFuel(_ fuel: UInt64?) {
        store.fuel = fuel.map { Fuel(remaining: $0) }
    }

    func chargeFuel(_ units: UInt64) {
        store.chargeFuel(units)
    }

    /// The reusable execution stack (see WasmKitFunction.call).
    var spareStack: ExecutionStack?
}

final class WasmKitFunction: WasmFunction {
    let function: Function
    unowned let owner: WasmKitInstance
    let type: WasmFunctionType
    private let resultIsI64: Bool

    init(function: Function, owner: WasmKitInstance) {
        self.function = function
        self.owner = owner
        let t = function.type
        self.type = WasmFunctionType(t.parameters.map { $0 == .i64 ? .i64 : .i32 }, t.results.map { $0 == .i64 ? .i64 : .i32 })
        self.resultIsI64 = t.results.first == .i64
    }

    func call(_ args: GuestArgs) throws(WasmCallError) -> UInt64? {
        var values: [Value] = []
        values.reserveCapacity(args.count)
        for i in 0..<args.count {
            let a = args[i]
            values.append(i < type.parameters.count && type.parameters[i] == .i64 ? .i64(a) : .i32(UInt32(truncatingIfNeeded: a)))
        }
        let results: [Value]
        do {
            // Reuse the instance's execution stack; a nested call (the allocator, called from
            // inside a hostcall) finds it taken and gets a fresh one.
            var stack = owner.spareStack.take() ?? ExecutionStack(engine: owner.store.engine)
            let outcome = Result { try function.invoke(values, on: &stack) }
            owner.spareStack = consume stack
            results = try outcome.get()
        } catch let trap as Trap {
            // The one place a runtime's error text is read: WasmKit keeps a trap's reason
            // package-private, and a failed fuel charge leaves the remaining fuel as it was,
            // so its description is all that tells budget exhaustion from other traps. The
            // host above sees only the typed kind.
            if trap.description.contains("out of fuel") { throw .budgetExhausted }
            throw .trap(trap.description)
        } catch {
            throw WasmCallError(hostError: error)
        }
        guard let first = results.first else { return nil }
        switch first {
        case .i32(let v): return UInt64(v)
        case .i64(let v): return v
        default: return 0
        }
    }
}

final class WasmKitMemory: ProxyWasm.GuestMemory {
    let memory: Memory
    init(memory: Memory) { self.memory = memory }

    var byteCount: Int { memory.byteCount }

    @inline(__always) private func inBounds(_ offset: UInt32, _ count: UInt32) -> Bool {
        UInt64(offset) + UInt64(count) <= UInt64(memory.byteCount)
    }

    func read(_ offset: UInt32, _ count: UInt32) -> [UInt8]? {
        guard inBounds(offset, count) else { return nil }
        if count == 0 { return [] }
        return memory.withUnsafeBufferPointer(offset: UInt(offset), count: Int(count)) { Array($0) }
    }

    func withBytes<T>(_ offset: UInt32, _ count: UInt32, _ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T? {
        guard inBounds(offset, count) else { return nil }
        if count == 0 { return try body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        return try memory.withUnsafeBufferPointer(offset: UInt(offset), count: Int(count), body)
    }

    func write(_ offset: UInt32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        guard inBounds(offset, UInt32(clamping: bytes.count)), bytes.count <= UInt32.max else { return false }
        if bytes.isEmpty { return true }
        memory.withUnsafeMutableBufferPointer(offset: UInt(offset), count: bytes.count) { $0.copyMemory(from: bytes) }
        return true
    }
}

extension Store {
    /// Takes `units` of fuel, leaving zero (the guest traps at its next metered step) when
    /// fewer remain. No budget set: nothing to charge.
    func chargeFuel(_ units: UInt64) {
        guard let remaining = fuel?.remaining else { return }
        fuel = Fuel(remaining: remaining > units ? remaining - units : 0)
    }
}
