import ProxyWasm
import SluiceConfig
import SluiceWasmKit
import SluiceWasmtime

/// Which engine runs a plugin, and the engine itself. The default is Wasmtime when its
/// library loads: it compiles to native code, so a filter costs a few microseconds per
/// request instead of tens, and its deadline-based budget costs nothing per instruction.
/// Without the library (a machine where scripts/install-wasmtime.sh has not run) the
/// default falls back to WasmKit, an interpreter with no native dependency; a plugin that
/// names `wasmtime` explicitly is then refused rather than silently slowed down.
enum WasmEngines {
    /// The engine for plugins that name none: the server's choice (`--wasm-runtime`), else
    /// Wasmtime when available, else WasmKit.
    static func defaultRuntime(preferred: WasmRuntime?) -> WasmRuntime {
        if let preferred { return preferred }
        if case .success = WasmtimeEngine.availability { return .wasmtime }
        return .wasmkit
    }

    /// Why the default is not Wasmtime, when it is not (for a warning at start).
    static var wasmtimeUnavailableReason: String? {
        if case .failure(let error) = WasmtimeEngine.availability { return error.description }
        return nil
    }

    static func engine(_ runtime: WasmRuntime, memoryLimitBytes: Int) throws -> WasmEngine {
        switch runtime {
        case .wasmkit: return WasmKitEngine(memoryLimitBytes: memoryLimitBytes)
        case .wasmtime: return try WasmtimeEngine(memoryLimitBytes: memoryLimitBytes)
        }
    }
}
