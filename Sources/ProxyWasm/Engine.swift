// The small interface between the ABI host and a WebAssembly runtime. The host knows
// nothing of any runtime: WasmKit (SluiceWasmKit) is one implementation, a JIT engine can
// be another. Everything here is synchronous and confined to one thread per instance.

public enum WasmValueType: Sendable, Equatable { case i32, i64 }

public struct WasmFunctionType: Sendable, Equatable, CustomStringConvertible {
    public var parameters: [WasmValueType]
    public var results: [WasmValueType]
    public init(_ parameters: [WasmValueType], _ results: [WasmValueType]) {
        self.parameters = parameters
        self.results = results
    }
    public var description: String {
        "(\(parameters.map { $0 == .i32 ? "i32" : "i64" }.joined(separator: ", "))) -> (\(results.map { $0 == .i32 ? "i32" : "i64" }.joined(separator: ", ")))"
    }
}

/// Arguments of one host call, passed without heap allocation. Integers only: the
/// Proxy-Wasm and WASI imports use nothing else.
public struct HostArgs {
    @usableFromInline var storage: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)
    public let count: Int

    @inlinable public init(count: Int, _ fill: (Int) -> UInt64) {
        storage = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        self.count = min(count, 14)
        withUnsafeMutableBytes(of: &storage) { raw in
            let p = raw.bindMemory(to: UInt64.self)
            for i in 0..<self.count { p[i] = fill(i) }
        }
    }

    @inlinable public subscript(i: Int) -> UInt64 {
        withUnsafeBytes(of: storage) { $0.load(fromByteOffset: i * 8, as: UInt64.self) }
    }

    /// An i32 argument as the unsigned 32-bit value the ABI means (pointers, sizes, ids).
    @inlinable public func u32(_ i: Int) -> UInt32 { UInt32(truncatingIfNeeded: self[i]) }
    @inlinable public func int(_ i: Int) -> Int { Int(u32(i)) }
}

/// A host function: reads its arguments, returns its single result (or nil for none).
/// Throwing a `HostTrap` aborts the guest call as a trap.
public typealias HostFunctionBody = (HostArgs) throws -> UInt64?

public struct HostFunction {
    public let module: String
    public let name: String
    public let type: WasmFunctionType
    public let body: HostFunctionBody
    public init(module: String, name: String, type: WasmFunctionType, body: @escaping HostFunctionBody) {
        self.module = module
        self.name = name
        self.type = type
        self.body = body
    }
}

/// Raised by a host function to stop the guest.
public enum HostTrap: Error, CustomStringConvertible {
    /// WASI proc_exit: the guest asked to end with this code.
    case exit(UInt32)
    /// A hostcall the guest may not make now (before the VM is ready, or a restricted phase).
    case refused(String)

    public var description: String {
        switch self {
        case .exit(let code): return "proc_exit(\(code))"
        case .refused(let why): return why
        }
    }
}

/// Why a guest call did not complete normally, as a kind the host acts on (stats, policies)
/// without reading message text.
public enum WasmFailureKind: String, Sendable {
    /// The guest trapped (unreachable, out of bounds, stack exhausted, ...).
    case trap
    /// The per-callback CPU budget ran out: the guest looped or worked too long.
    case budgetExhausted = "cpu_budget_exhausted"
    /// The guest called proc_exit.
    case exit
    /// A host function refused the call and stopped the guest.
    case refusedHostcall = "refused_hostcall"
}

/// A guest call that did not complete normally.
public enum WasmCallError: Error, CustomStringConvertible {
    case trap(String)
    case budgetExhausted
    case exit(UInt32)
    case refusedHostcall(String)

    /// Engines map what their runtime threw through this: a host function's `HostTrap` keeps
    /// its kind; anything else is a trap with the runtime's text.
    public init(hostError error: Error) {
        switch error {
        case HostTrap.exit(let code): self = .exit(code)
        case HostTrap.refused(let why): self = .refusedHostcall(why)
        default: self = .trap(String(describing: error))
        }
    }

    public var kind: WasmFailureKind {
        switch self {
        case .trap: return .trap
        case .budgetExhausted: return .budgetExhausted
        case .exit: return .exit
        case .refusedHostcall: return .refusedHostcall
        }
    }

    public var description: String {
        switch self {
        case .trap(let m): return m
        case .budgetExhausted: return "CPU budget exhausted"
        case .exit(let code): return "proc_exit(\(code))"
        case .refusedHostcall(let why): return why
        }
    }
}

/// Linear memory of an instance. Every access is bounds-checked by the implementation and
/// answers nil/false rather than crashing: guest pointers are untrusted input.
public protocol GuestMemory: AnyObject {
    var byteCount: Int { get }
    func read(_ offset: UInt32, _ count: UInt32) -> [UInt8]?
    func withBytes<T>(_ offset: UInt32, _ count: UInt32, _ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T?
    @discardableResult func write(_ offset: UInt32, _ bytes: UnsafeRawBufferPointer) -> Bool
}

extension GuestMemory {
    @discardableResult public func write(_ offset: UInt32, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { write(offset, $0) }
    }
    @discardableResult public func writeU32(_ offset: UInt32, _ v: UInt32) -> Bool {
        withUnsafeBytes(of: v.littleEndian) { write(offset, $0) }
    }
    @discardableResult public func writeU64(_ offset: UInt32, _ v: UInt64) -> Bool {
        withUnsafeBytes(of: v.littleEndian) { write(offset, $0) }
    }
    public func readU32(_ offset: UInt32) -> UInt32? {
        withBytes(offset, 4) { $0.loadUnaligned(as: UInt32.self).littleEndian }
    }
    public func readString(_ offset: UInt32, _ count: UInt32) -> String? {
        withBytes(offset, count) { String(decoding: $0, as: UTF8.self) }
    }
}

/// The integer arguments of one guest call, held inline: every Proxy-Wasm callback takes
/// at most five, and an array (or an array literal, or variadic arguments) per call would
/// be a heap allocation per callback.
public struct GuestArgs {
    @usableFromInline let storage: (UInt64, UInt64, UInt64, UInt64, UInt64)
    public let count: Int

    @inlinable public init() { (storage, count) = ((0, 0, 0, 0, 0), 0) }
    @inlinable public init(_ a: UInt64) { (storage, count) = ((a, 0, 0, 0, 0), 1) }
    @inlinable public init(_ a: UInt64, _ b: UInt64) { (storage, count) = ((a, b, 0, 0, 0), 2) }
    @inlinable public init(_ a: UInt64, _ b: UInt64, _ c: UInt64) { (storage, count) = ((a, b, c, 0, 0), 3) }
    @inlinable public init(_ a: UInt64, _ b: UInt64, _ c: UInt64, _ d: UInt64) { (storage, count) = ((a, b, c, d, 0), 4) }
    @inlinable public init(_ a: UInt64, _ b: UInt64, _ c: UInt64, _ d: UInt64, _ e: UInt64) { (storage, count) = ((a, b, c, d, e), 5) }

    /// The i-th argument, 0 past the end.
    @inlinable public subscript(i: Int) -> UInt64 {
        switch i {
        case 0 where count > 0: return storage.0
        case 1 where count > 1: return storage.1
        case 2 where count > 2: return storage.2
        case 3 where count > 3: return storage.3
        case 4 where count > 4: return storage.4
        default: return 0
        }
    }
}

/// An exported function, resolved once.
public protocol WasmFunction: AnyObject {
    var type: WasmFunctionType { get }
    /// Calls the function. Arguments are integers of the function's parameter types.
    func call(_ args: GuestArgs) throws(WasmCallError) -> UInt64?
}

/// One instantiated module, with its own memory and globals.
public protocol WasmInstance: AnyObject {
    var memory: GuestMemory? { get }
    func function(_ name: String) -> WasmFunction?
    var exportedFunctionNames: [String] { get }
    /// Limits guest work until the next call to this (nil: unlimited). The unit is the
    /// engine's (WasmKit: roughly one per wasm instruction).
    func setFuel(_ fuel: UInt64?)
    /// Takes `units` from the current budget for work the host did on the guest's behalf;
    /// when they are not there, the budget is emptied and the guest stops at its next step.
    func chargeFuel(_ units: UInt64)
}

/// A parsed, validated module: immutable, shareable across threads, instantiated many times.
public protocol WasmModule: AnyObject, Sendable {
    var exportNames: [String] { get }
    var imports: [(module: String, name: String)] { get }
    /// Instantiates with the given host functions; an import none of them satisfies is an error.
    func instantiate(hostFunctions: [HostFunction]) throws -> WasmInstance
}

public protocol WasmEngine: Sendable {
    var name: String { get }
    /// Parses, validates and (for a compiling engine) compiles a module. `contentHash`, the
    /// module's SHA-256 in hex, lets an engine reuse code it compiled earlier.
    func compile(bytes: [UInt8], contentHash: String?) throws -> WasmModule
    /// Budget units that correspond to one millisecond of guest work (WasmKit: fuel, about
    /// one per instruction; Wasmtime: nanoseconds of a deadline).
    var fuelPerMillisecond: UInt64 { get }
}

extension WasmEngine {
    public func compile(bytes: [UInt8]) throws -> WasmModule { try compile(bytes: bytes, contentHash: nil) }
}

/// An engine could not be set up, or a module not compiled or instantiated.
public struct WasmEngineError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
