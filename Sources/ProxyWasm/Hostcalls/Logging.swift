import Foundation

extension PluginVM {
    func log(level: UInt32, ptr: UInt32, len: UInt32) -> WasmResult {
        guard let level = LogLevel(rawValue: level) else { return .badArgument }
        guard let message = string(ptr, len) else { return .invalidMemoryAccess }
        services?.log(level, message)
        return .ok
    }

    func getLogLevel(out: UInt32) -> WasmResult {
        memory.writeU32(out, (services?.logLevel ?? .info).rawValue) ? .ok : .invalidMemoryAccess
    }

    func getCurrentTime(out: UInt32) -> WasmResult {
        let nanos = UInt64(Date().timeIntervalSince1970 * 1e9)
        return memory.writeU64(out, nanos) ? .ok : .invalidMemoryAccess
    }
}
