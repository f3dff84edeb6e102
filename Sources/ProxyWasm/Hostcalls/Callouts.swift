extension PluginVM {
    /// proxy_http_call: the callout is owned by the root context, whatever stream made it, and
    /// its response arrives in proxy_on_http_call_response.
    func httpCall(upstream: (UInt32, UInt32), headers: (UInt32, UInt32), body: (UInt32, UInt32), trailers: (UInt32, UInt32), timeoutMs: UInt32, tokenOut: UInt32) -> WasmResult {
        guard let target = string(upstream.0, upstream.1), let bodyBytes = bytes(body.0, body.1) else { return .invalidMemoryAccess }
        guard let h = memory.withBytes(headers.0, headers.1, { Pairs.parse($0) }), let t = memory.withBytes(trailers.0, trailers.1, { Pairs.parse($0) }) else {
            return .invalidMemoryAccess
        }
        guard let headerPairs = h, let trailerPairs = t else { return .badArgument }
        let names = Set(headerPairs.map { $0.0.lowercased() })
        guard names.contains(":method"), names.contains(":path"), names.contains(":authority") else { return .badArgument }
        guard headerPairs.allSatisfy({ PluginVM.validHeader($0.0, $0.1) }) else { return .badArgument }
        guard memory.withBytes(tokenOut, 4, { _ in true }) != nil else { return .invalidMemoryAccess }
        guard let services = currentServices else { return .internalFailure }
        let token = registerCallout()
        let result = services.httpCall(vm: self, token: token, upstream: target, headers: headerPairs, body: bodyBytes, trailers: trailerPairs, timeoutMs: timeoutMs)
        guard result == .ok else {
            forgetCallout(token)
            return result
        }
        memory.writeU32(tokenOut, token)
        return .ok
    }

    func setTickPeriod(_ ms: UInt32) -> WasmResult {
        currentServices?.setTickPeriod(vm: self, milliseconds: ms)
        return .ok
    }
}
