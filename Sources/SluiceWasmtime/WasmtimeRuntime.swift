import CWasmtime
import Foundation
import ProxyWasm

/// Wasmtime, once per process: its shared library (found at run time, so Sluice builds and
/// runs without it), one `wasm_engine_t` that compiles every module, and the epoch ticker
/// that gives guest calls their CPU deadline.
///
/// The budget is a deadline, not fuel: compiled code checks an epoch counter at function
/// entries and loop back-edges (cheap, no per-instruction counting), and a ticker thread
/// advances it every `tickNanoseconds`. A call runs at most its budget plus one tick.
public final class WasmtimeRuntime: @unchecked Sendable {
    // @unchecked: after init only `engine` is used, and wasm_engine_t is thread-safe.
    let engine: OpaquePointer
    /// Identifies the compiler that produced cached code: the library's size and mtime plus
    /// this file's settings. Wasmtime also refuses code from another version on its own.
    let codeIdentity: String
    /// 10 ms: budgets are tens to hundreds of milliseconds, and each tick wakes a thread
    /// (at 1 ms the ticker alone took 1.7 % of a core on an idle proxy, and preempted the
    /// workers under load).
    static let tickNanoseconds: UInt64 = 10_000_000

    /// The process's Wasmtime, or why there is none (library missing or incompatible).
    public static let shared: Result<WasmtimeRuntime, WasmEngineError> = {
        do { return .success(try WasmtimeRuntime()) } catch let error as WasmEngineError { return .failure(error) } catch { return .failure(WasmEngineError("\(error)")) }
    }()

    /// Where the library is looked for, in order: `SLUICE_WASMTIME_LIBRARY`, the places
    /// scripts/install-wasmtime.sh links it to, then the dynamic linker's own search.
    static var candidatePaths: [String] {
        var paths: [String] = []
        if let explicit = ProcessInfo.processInfo.environment["SLUICE_WASMTIME_LIBRARY"], !explicit.isEmpty {
            return [explicit]
        }
        paths.append("/usr/local/lib/sluice/libwasmtime.so")
        if let home = ProcessInfo.processInfo.environment["HOME"] {
            paths.append(home + "/.local/lib/sluice/libwasmtime.so")
        }
        paths.append("libwasmtime.so")
        return paths
    }

    private init() throws(WasmEngineError) {
        var reasons: [String] = []
        var found: String?
        for path in Self.candidatePaths {
            if path.hasPrefix("/"), !FileManager.default.fileExists(atPath: path) {
                reasons.append("\(path): not found")
                continue
            }
            var error = [CChar](repeating: 0, count: 512)
            if sluice_wasmtime_load(path, &error, error.count) == 0 {
                found = path
                break
            }
            reasons.append(error.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
        }
        guard let path = found else {
            throw WasmEngineError("Wasmtime is not available (run scripts/install-wasmtime.sh, or set SLUICE_WASMTIME_LIBRARY): \(reasons.joined(separator: "; "))")
        }
        let attributes = try? FileManager.default.attributesOfItem(atPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) ?? path)
        let size = (attributes?[.size] as? NSNumber)?.intValue ?? 0
        let mtime = (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
        codeIdentity = "wasmtime-\(size)-\(Int(mtime))-epoch-speed"

        let config = sw_wasm_config_new()
        sw_wasmtime_config_epoch_interruption_set(config, true)
        sw_wasmtime_config_cranelift_opt_level_set(config, 1)  // WASMTIME_OPT_LEVEL_SPEED
        // Guest calls run on the worker's own stack (8 MiB); 1 MiB of it for Wasm frames.
        sw_wasmtime_config_max_wasm_stack_set(config, 1 << 20)
        guard let engine = sw_wasm_engine_new_with_config(config) else {
            throw WasmEngineError("Wasmtime could not create its engine")
        }
        self.engine = engine
        let ticker = Thread { [self] in
            while true {
                usleep(useconds_t(WasmtimeRuntime.tickNanoseconds / 1000))
                sw_wasmtime_engine_increment_epoch(self.engine)
            }
        }
        ticker.name = "wasmtime-epoch"
        ticker.start()
    }

    /// The bytes of a vector as text (names, error and trap messages; a C string's final NUL
    /// dropped).
    static func text(_ vec: wasm_byte_vec_t) -> String {
        var count = vec.size
        if count > 0, vec.data[count - 1] == 0 { count -= 1 }
        return String(decoding: UnsafeRawBufferPointer(start: vec.data, count: count), as: UTF8.self)
    }

    /// The text of an error, which it frees.
    static func consume(_ error: OpaquePointer) -> String {
        var message = wasm_byte_vec_t()
        sw_wasmtime_error_message(error, &message)
        defer {
            sw_wasm_byte_vec_delete(&message)
            sw_wasmtime_error_delete(error)
        }
        return text(message)
    }

    static func name(_ vec: UnsafePointer<wasm_byte_vec_t>?) -> String {
        vec.map { text($0.pointee) } ?? ""
    }

    static func functionType(_ type: OpaquePointer?) -> WasmFunctionType? {
        guard let type else { return nil }
        func kinds(_ vec: UnsafePointer<wasm_valtype_vec_t>?) -> [WasmValueType]? {
            guard let v = vec?.pointee else { return [] }
            var out: [WasmValueType] = []
            for i in 0..<v.size {
                switch Int(sw_wasm_valtype_kind(v.data[i])) {
                case Int(SLUICE_WASM_I32): out.append(.i32)
                case Int(SLUICE_WASM_I64): out.append(.i64)
                default: return nil  // floats and references: no Proxy-Wasm or WASI import uses them
                }
            }
            return out
        }
        guard let params = kinds(sw_wasm_functype_params(type)), let results = kinds(sw_wasm_functype_results(type)) else { return nil }
        return WasmFunctionType(params, results)
    }
}
