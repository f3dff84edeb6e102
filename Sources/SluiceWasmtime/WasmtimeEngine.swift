import CWasmtime
import Foundation
import ProxyWasm

/// Wasmtime behind ProxyWasm's engine protocol: modules compiled to native code once per
/// content hash (and cached on disk), pre-linked once, instantiated per worker from the
/// pre-linked form; host functions and guest calls go through Wasmtime's unchecked calling
/// convention (a flat array of raw values, no boxing).
public struct WasmtimeEngine: WasmEngine {
    public let name = "wasmtime"
    /// The budget unit is the nanosecond: the deadline is wall time on the worker's thread.
    public let fuelPerMillisecond: UInt64 = 1_000_000
    let runtime: WasmtimeRuntime
    let memoryLimitBytes: Int
    let codeCache: WasmtimeCodeCache?

    /// - Parameters:
    ///   - memoryLimitBytes: cap on each instance's linear memory (growth past it fails in
    ///     the guest, as `memory.grow` returning -1).
    ///   - codeCacheDirectory: where compiled code is kept between runs (nil: no cache).
    /// - Throws: when the Wasmtime library is not available.
    public init(memoryLimitBytes: Int = 512 << 20, codeCacheDirectory: String? = WasmtimeCodeCache.defaultDirectory) throws {
        let runtime = try WasmtimeRuntime.shared.get()
        self.runtime = runtime
        self.memoryLimitBytes = memoryLimitBytes
        self.codeCache = codeCacheDirectory.map { WasmtimeCodeCache(directory: $0, identity: runtime.codeIdentity) }
    }

    /// Whether the library loads here, and if not, why.
    public static var availability: Result<Void, WasmEngineError> { WasmtimeRuntime.shared.map { _ in () } }

    public func compile(bytes: [UInt8], contentHash: String?) throws -> WasmModule {
        var module: OpaquePointer?
        if let contentHash, let cached = codeCache?.load(contentHash) {
            let error = cached.withUnsafeBufferPointer { sw_wasmtime_module_deserialize(runtime.engine, $0.baseAddress, $0.count, &module) }
            if let error {
                _ = WasmtimeRuntime.consume(error)  // stale or foreign code: compile afresh
                module = nil
            }
        }
        if module == nil {
            let error = bytes.withUnsafeBufferPointer { sw_wasmtime_module_new(runtime.engine, $0.baseAddress, $0.count, &module) }
            if let error { throw WasmEngineError("invalid wasm module: \(WasmtimeRuntime.consume(error))") }
            if let contentHash, let module { codeCache?.store(contentHash, module) }
        }
        guard let module else { throw WasmEngineError("invalid wasm module") }
        do {
            return try WasmtimeModule(runtime: runtime, module: module, memoryLimitBytes: memoryLimitBytes)
        } catch {
            sw_wasmtime_module_delete(module)
            throw error
        }
    }
}

/// Compiled code on disk, one file per module hash, named for the compiler that made it.
/// The directory must be the operator's own: Wasmtime trusts the code it deserializes.
public struct WasmtimeCodeCache: Sendable {
    let directory: String
    let identity: String

    /// `SLUICE_WASM_CODE_CACHE` (`off` disables it), else `$XDG_CACHE_HOME/sluice/wasmtime`,
    /// else `~/.cache/sluice/wasmtime`.
    public static var defaultDirectory: String? {
        let env = ProcessInfo.processInfo.environment
        if let explicit = env["SLUICE_WASM_CODE_CACHE"], !explicit.isEmpty { return explicit == "off" ? nil : explicit }
        if let xdg = env["XDG_CACHE_HOME"], !xdg.isEmpty { return xdg + "/sluice/wasmtime" }
        if let home = env["HOME"], !home.isEmpty { return home + "/.cache/sluice/wasmtime" }
        return nil
    }

    func path(_ hash: String) -> String { "\(directory)/\(hash)-\(identity).cwasm" }

    /// Wasmtime runs deserialized code as it is, so code is read only from a directory this
    /// process's user owns and nobody else may write to; anything else is not a cache.
    var isTrusted: Bool {
        var info = stat()
        guard lstat(directory, &info) == 0 else { return false }
        return (info.st_mode & S_IFMT) == S_IFDIR && info.st_uid == geteuid() && (info.st_mode & 0o022) == 0
    }

    func load(_ hash: String) -> [UInt8]? {
        guard isTrusted else { return nil }
        return FileManager.default.contents(atPath: path(hash)).map { Array($0) }
    }

    /// Best effort: a cache that cannot be written only costs the next start its compile.
    func store(_ hash: String, _ module: OpaquePointer) {
        var bytes = wasm_byte_vec_t()
        guard sw_wasmtime_module_serialize(module, &bytes) == nil else { return }
        defer { sw_wasm_byte_vec_delete(&bytes) }
        let data = Data(bytes: bytes.data, count: bytes.size)
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        guard isTrusted else { return }
        let temporary = path(hash) + ".\(getpid()).tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: data, attributes: [.posixPermissions: 0o600]) else { return }
        if rename(temporary, path(hash)) != 0 { unlink(temporary) }
    }
}

/// A compiled module and its pre-linked form. Every import is bound to one trampoline whose
/// environment is the import's index; the instance (the store's data) supplies the host
/// function for that index, so one pre-link serves every instance.
final class WasmtimeModule: WasmModule, @unchecked Sendable {
    // @unchecked: the module, linker and pre-linked instance are immutable and thread-safe.
    let runtime: WasmtimeRuntime
    let module: OpaquePointer
    let linker: OpaquePointer
    let prelinked: OpaquePointer
    let memoryLimitBytes: Int
    let imports: [(module: String, name: String)]
    let importTypes: [WasmFunctionType]
    let exportNames: [String]

    init(runtime: WasmtimeRuntime, module: OpaquePointer, memoryLimitBytes: Int) throws {
        self.runtime = runtime
        self.module = module
        self.memoryLimitBytes = memoryLimitBytes

        var importVec = wasm_importtype_vec_t()
        sw_wasmtime_module_imports(module, &importVec)
        defer { sw_wasm_importtype_vec_delete(&importVec) }
        guard let linker = sw_wasmtime_linker_new(runtime.engine) else { throw WasmEngineError("Wasmtime could not create a linker") }
        self.linker = linker
        var imports: [(module: String, name: String)] = []
        var types: [WasmFunctionType] = []
        var unsupported: [String] = []
        for i in 0..<importVec.size {
            let imp = importVec.data[i]
            let moduleName = WasmtimeRuntime.name(sw_wasm_importtype_module(imp))
            let name = WasmtimeRuntime.name(sw_wasm_importtype_name(imp))
            let externType = sw_wasm_importtype_type(imp)
            guard Int(sw_wasm_externtype_kind(externType)) == Int(SLUICE_WASM_EXTERN_FUNC),
                  let functype = sw_wasm_externtype_as_functype_const(externType),
                  let type = WasmtimeRuntime.functionType(functype) else {
                unsupported.append("\(moduleName).\(name) (only integer function imports are provided)")
                continue
            }
            let error = moduleName.withCString { m in
                name.withCString { n in
                    sw_wasmtime_linker_define_func_unchecked(linker, m, strlen(m), n, strlen(n), functype, hostTrampoline,
                                                             UnsafeMutableRawPointer(bitPattern: imports.count + 1), nil)
                }
            }
            if let error { unsupported.append("\(moduleName).\(name): \(WasmtimeRuntime.consume(error))") }
            imports.append((moduleName, name))
            types.append(type)
        }
        if !unsupported.isEmpty {
            sw_wasmtime_linker_delete(linker)
            throw WasmEngineError("the module imports what this host does not provide: \(unsupported.joined(separator: ", "))")
        }
        var prelinked: OpaquePointer?
        if let error = sw_wasmtime_linker_instantiate_pre(linker, module, &prelinked) {
            sw_wasmtime_linker_delete(linker)
            throw WasmEngineError("cannot link: \(WasmtimeRuntime.consume(error))")
        }
        self.prelinked = prelinked!
        self.imports = imports
        self.importTypes = types

        var exportVec = wasm_exporttype_vec_t()
        sw_wasmtime_module_exports(module, &exportVec)
        defer { sw_wasm_exporttype_vec_delete(&exportVec) }
        self.exportNames = (0..<exportVec.size).map { WasmtimeRuntime.name(sw_wasm_exporttype_name(exportVec.data[$0])) }
    }

    deinit {
        sw_wasmtime_instance_pre_delete(prelinked)
        sw_wasmtime_linker_delete(linker)
        sw_wasmtime_module_delete(module)
    }

    func instantiate(hostFunctions: [HostFunction]) throws -> WasmInstance {
        var table: [String: HostFunction] = [:]
        for f in hostFunctions { table[f.module + "\u{0}" + f.name] = f }
        var bodies: [WasmtimeInstance.Binding] = []
        var missing: [String] = []
        for (i, imp) in imports.enumerated() {
            guard let host = table[imp.module + "\u{0}" + imp.name] else {
                missing.append("\(imp.module).\(imp.name)")
                continue
            }
            guard host.type == importTypes[i] else {
                missing.append("\(imp.module).\(imp.name) (imported as \(importTypes[i]), provided as \(host.type))")
                continue
            }
            bodies.append(.init(body: host.body, parameters: host.type.parameters, result: host.type.results.first))
        }
        if !missing.isEmpty {
            throw WasmEngineError("the module imports functions this host does not provide: \(missing.joined(separator: ", "))")
        }
        return try WasmtimeInstance(module: self, bindings: bodies)
    }
}

/// The one host-function entry point: finds the instance from the store's data and the
/// import from the environment, converts the raw values, and turns a thrown error into a
/// trap (the error itself is kept on the instance, so its kind survives the trip).
private let hostTrampoline: wasmtime_func_unchecked_callback_t = { env, caller, values, count in
    let context = sw_wasmtime_caller_context(caller)
    let instance = Unmanaged<WasmtimeInstance>.fromOpaque(sw_wasmtime_context_get_data(context)!).takeUnretainedValue()
    return instance.dispatch(Int(bitPattern: env) - 1, values!)
}

final class WasmtimeInstance: WasmInstance {
    struct Binding {
        let body: HostFunctionBody
        let parameters: [WasmValueType]
        let result: WasmValueType?
    }

    let module: WasmtimeModule
    let bindings: [Binding]
    private(set) var store: OpaquePointer!
    private(set) var context: OpaquePointer!
    private(set) var memory: GuestMemory?
    private var handle = wasmtime_instance_t()
    private var functions: [String: WasmtimeFunction] = [:]
    /// What a host function threw during the current guest call.
    var pendingHostError: Error?
    /// The current call's budget in nanoseconds, and the host work charged against it.
    private var budget: UInt64?
    private var charged: UInt64 = 0

    init(module: WasmtimeModule, bindings: [Binding]) throws {
        self.module = module
        self.bindings = bindings
        store = sw_wasmtime_store_new(module.runtime.engine, Unmanaged.passUnretained(self).toOpaque(), nil)
        context = sw_wasmtime_store_context(store)
        sw_wasmtime_store_limiter(store, Int64(module.memoryLimitBytes), 1_000_000, -1, -1, -1)
        // Start functions run under the start-up budget PluginVM sets next; until then none.
        sw_wasmtime_context_set_epoch_deadline(context, UInt64.max / 2)
        // Every stored property is set by now, so a throw below runs deinit, which deletes
        // the store: deleting it here as well would free it twice.
        var trap: OpaquePointer?
        if let error = sw_wasmtime_instance_pre_instantiate(module.prelinked, context, &handle, &trap) {
            throw WasmEngineError("cannot instantiate: \(WasmtimeRuntime.consume(error))")
        }
        if let trap {
            defer { sw_wasm_trap_delete(trap) }
            throw WasmEngineError("cannot instantiate: \(WasmtimeInstance.message(of: trap))")
        }
        var export = wasmtime_extern_t()
        if "memory".withCString({ sw_wasmtime_instance_export_get(context, &handle, $0, 6, &export) }),
           Int(export.kind) == Int(SLUICE_WASMTIME_EXTERN_MEMORY) {
            memory = WasmtimeMemory(context: context, memory: export.of.memory)
        }
    }

    deinit {
        functions.removeAll()
        sw_wasmtime_store_delete(store)
    }

    var exportedFunctionNames: [String] {
        var names: [String] = []
        var index = 0
        while true {
            var namePointer: UnsafeMutablePointer<CChar>?
            var length = 0
            var export = wasmtime_extern_t()
            guard sw_wasmtime_instance_export_nth(context, &handle, index, &namePointer, &length, &export) else { break }
            if Int(export.kind) == Int(SLUICE_WASMTIME_EXTERN_FUNC), let namePointer {
                names.append(String(decoding: UnsafeRawBufferPointer(start: namePointer, count: length), as: UTF8.self))
            }
            index += 1
        }
        return names
    }

    func function(_ name: String) -> WasmFunction? {
        if let f = functions[name] { return f }
        var export = wasmtime_extern_t()
        let found = name.withCString { sw_wasmtime_instance_export_get(context, &handle, $0, strlen($0), &export) }
        guard found, Int(export.kind) == Int(SLUICE_WASMTIME_EXTERN_FUNC) else { return nil }
        let functype = sw_wasmtime_func_type(context, &export.of.func)
        defer { sw_wasm_functype_delete(functype) }
        guard let type = WasmtimeRuntime.functionType(functype) else { return nil }
        let f = WasmtimeFunction(handle: export.of.func, type: type, owner: self)
        functions[name] = f
        return f
    }

    func setFuel(_ fuel: UInt64?) {
        budget = fuel
        charged = 0
        // One tick more than the budget: the current tick may be about to end.
        let ticks = fuel.map { $0 / WasmtimeRuntime.tickNanoseconds + 1 } ?? UInt64.max / 2
        sw_wasmtime_context_set_epoch_deadline(context, ticks)
    }

    func chargeFuel(_ units: UInt64) {
        guard let budget else { return }
        charged &+= units
        // Out of budget: a deadline of zero ticks interrupts the guest at its next check.
        if charged >= budget { sw_wasmtime_context_set_epoch_deadline(context, 0) }
    }

    @inline(__always)
    func dispatch(_ index: Int, _ values: UnsafeMutablePointer<wasmtime_val_raw_t>) -> OpaquePointer? {
        // Borrowed in place: copying the binding out would retain its closure and arrays on
        // every hostcall.
        bindings.withUnsafeBufferPointer { dispatch($0.baseAddress! + index, values) }
    }

    @inline(__always)
    private func dispatch(_ binding: UnsafePointer<Binding>, _ values: UnsafeMutablePointer<wasmtime_val_raw_t>) -> OpaquePointer? {
        let args = binding.pointee.parameters.withUnsafeBufferPointer { parameters in
            HostArgs(count: parameters.count) { i in
                parameters[i] == .i64 ? UInt64(bitPattern: values[i].i64) : UInt64(UInt32(bitPattern: values[i].i32))
            }
        }
        do {
            let result = try binding.pointee.body(args)
            if let type = binding.pointee.result {
                // An i32 result is the low half of the slot; the whole slot is written so the
                // upper half is zero.
                values[0].i64 = type == .i64 ? Int64(bitPattern: result ?? 0) : Int64(UInt32(truncatingIfNeeded: result ?? 0))
            }
            return nil
        } catch {
            pendingHostError = error
            return "host function failed".withCString { sw_wasmtime_trap_new($0, strlen($0)) }
        }
    }

    static func message(of trap: OpaquePointer) -> String {
        var message = wasm_byte_vec_t()
        sw_wasm_trap_message(trap, &message)
        defer { sw_wasm_byte_vec_delete(&message) }
        return WasmtimeRuntime.text(message)
    }

    /// The outcome of a guest call that did not return normally, as a typed failure.
    func failure(trap: OpaquePointer?, error: OpaquePointer?) -> WasmCallError {
        defer {
            if let trap { sw_wasm_trap_delete(trap) }
        }
        if let hostError = pendingHostError {
            pendingHostError = nil
            if let error { sw_wasmtime_error_delete(error) }
            return WasmCallError(hostError: hostError)
        }
        if let error { return .trap(WasmtimeRuntime.consume(error)) }
        guard let trap else { return .trap("unknown failure") }
        var code: UInt8 = 0
        guard sw_wasmtime_trap_code(trap, &code) else { return .trap(WasmtimeInstance.message(of: trap)) }
        switch Int(code) {
        case Int(SLUICE_WASMTIME_TRAP_INTERRUPT), Int(SLUICE_WASMTIME_TRAP_OUT_OF_FUEL): return .budgetExhausted
        case WasmtimeInstance.trapReasons.indices: return .trap("wasm trap: " + WasmtimeInstance.trapReasons[Int(code)])
        default: return .trap(WasmtimeInstance.message(of: trap))
        }
    }

    /// Wasmtime's trap codes 0-9 (its message adds a multi-line backtrace; logs want one line).
    static let trapReasons = [
        "call stack exhausted", "out of bounds memory access", "misaligned memory access",
        "undefined element: out of bounds table access", "uninitialized element", "indirect call type mismatch",
        "integer overflow", "integer divide by zero", "invalid conversion to integer", "unreachable",
    ]
}

final class WasmtimeFunction: WasmFunction {
    var handle: wasmtime_func_t
    let type: WasmFunctionType
    unowned let owner: WasmtimeInstance
    private let slots: Int

    init(handle: wasmtime_func_t, type: WasmFunctionType, owner: WasmtimeInstance) {
        self.handle = handle
        self.type = type
        self.owner = owner
        self.slots = max(type.parameters.count, type.results.count, 1)
    }

    func call(_ args: GuestArgs) throws(WasmCallError) -> UInt64? {
        let parameters = type.parameters
        let returnsValue = !type.results.isEmpty
        let resultIsI64 = type.results.first == .i64
        let context = owner.context
        let outcome: Result<UInt64?, WasmCallError> = withUnsafeTemporaryAllocation(of: wasmtime_val_raw_t.self, capacity: slots) { values in
            let base = values.baseAddress!
            for i in 0..<parameters.count {
                let a = args[i]
                base[i].i64 = parameters[i] == .i64 ? Int64(bitPattern: a) : Int64(UInt32(truncatingIfNeeded: a))
            }
            var trap: OpaquePointer?
            let error = sw_wasmtime_func_call_unchecked(context, &handle, base, slots, &trap)
            if error != nil || trap != nil { return .failure(owner.failure(trap: trap, error: error)) }
            guard returnsValue else { return .success(nil) }
            return .success(resultIsI64 ? UInt64(bitPattern: base[0].i64) : UInt64(UInt32(bitPattern: base[0].i32)))
        }
        return try outcome.get()
    }
}

/// Linear memory, read through the store on every access: growth may move it.
final class WasmtimeMemory: GuestMemory {
    let context: OpaquePointer
    var memory: wasmtime_memory_t

    init(context: OpaquePointer, memory: wasmtime_memory_t) {
        self.context = context
        self.memory = memory
    }

    var byteCount: Int { sw_wasmtime_memory_data_size(context, &memory) }

    @inline(__always) private func region(_ offset: UInt32, _ count: UInt32) -> UnsafeMutableRawPointer? {
        let size = sw_wasmtime_memory_data_size(context, &memory)
        guard UInt64(offset) + UInt64(count) <= UInt64(size), let base = sw_wasmtime_memory_data(context, &memory) else { return nil }
        return UnsafeMutableRawPointer(base + Int(offset))
    }

    func read(_ offset: UInt32, _ count: UInt32) -> [UInt8]? {
        if count == 0 { return UInt64(offset) <= UInt64(byteCount) ? [] : nil }
        guard let p = region(offset, count) else { return nil }
        return Array(UnsafeRawBufferPointer(start: p, count: Int(count)))
    }

    func withBytes<T>(_ offset: UInt32, _ count: UInt32, _ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T? {
        if count == 0 { return UInt64(offset) <= UInt64(byteCount) ? try body(UnsafeRawBufferPointer(start: nil, count: 0)) : nil }
        guard let p = region(offset, count) else { return nil }
        return try body(UnsafeRawBufferPointer(start: p, count: Int(count)))
    }

    func write(_ offset: UInt32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count <= UInt32.max else { return false }
        if bytes.isEmpty { return UInt64(offset) <= UInt64(byteCount) }
        guard let p = region(offset, UInt32(bytes.count)) else { return false }
        p.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        return true
    }
}
