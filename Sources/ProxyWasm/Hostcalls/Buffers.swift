extension PluginVM {
    /// The bytes of a buffer, or nil when it is not available now.
    private func bufferBytes(_ type: BufferType) -> [UInt8]? {
        switch type {
        case .requestBody: return effectiveStream?.data.requestBody ?? []
        case .responseBody: return effectiveStream?.data.responseBody ?? []
        case .vmConfiguration: return identity.vmConfiguration
        case .pluginConfiguration: return configurationReadable ? identity.pluginConfiguration : nil
        case .httpCallResponseBody: return httpCallResponse?.body
        case .downstreamData, .upstreamData, .grpcMessage, .foreignFunctionArguments: return nil
        }
    }

    func getBufferBytes(_ type: UInt32, _ start: UInt32, _ maxSize: UInt32, _ ptrOut: UInt32, _ lenOut: UInt32) -> WasmResult {
        guard let type = BufferType(rawValue: type) else { return .badArgument }
        guard let data = bufferBytes(type) else { return .notFound }
        // Clamp, as cpp-host does: (0, 0xFFFFFFFF) reads everything, a start past the end reads nothing.
        let from = min(Int(start), data.count)
        let to = min(from + Int(maxSize), data.count)
        return copyOut(Array(data[from..<to]), ptrOut: ptrOut, lenOut: lenOut)
    }

    func getBufferStatus(_ type: UInt32, _ lengthOut: UInt32, _ flagsOut: UInt32) -> WasmResult {
        guard let type = BufferType(rawValue: type) else { return .badArgument }
        guard let data = bufferBytes(type) else { return .notFound }
        guard memory.writeU32(lengthOut, UInt32(data.count)), memory.writeU32(flagsOut, 0) else { return .invalidMemoryAccess }
        return .ok
    }

    /// Envoy's semantics, which SDKs rely on: start 0 drains `size` bytes from the front and
    /// prepends the data (so (0, len) replaces, (0, 0) prepends); start >= length appends;
    /// anything else is refused. Configuration and call-result buffers are read-only.
    func setBufferBytes(_ type: UInt32, _ start: UInt32, _ size: UInt32, _ ptr: UInt32, _ len: UInt32) -> WasmResult {
        guard let type = BufferType(rawValue: type) else { return .badArgument }
        guard let new = bytes(ptr, len) else { return .invalidMemoryAccess }
        guard type == .requestBody || type == .responseBody else { return .badArgument }
        guard let data = effectiveStream?.data else { return .notFound }
        func edit(_ buffer: inout [UInt8]) -> WasmResult {
            if start == 0 {
                buffer.removeFirst(min(Int(size), buffer.count))
                buffer.insert(contentsOf: new, at: 0)
            } else if Int(start) >= buffer.count {
                buffer.append(contentsOf: new)
            } else {
                return .badArgument
            }
            return .ok
        }
        return type == .requestBody ? edit(&data.requestBody) : edit(&data.responseBody)
    }

    /// ABI 0.1.0: the plugin configuration during on_configure, the VM configuration otherwise.
    func getConfiguration(_ ptrOut: UInt32, _ lenOut: UInt32) -> WasmResult {
        copyOut(configurationReadable ? identity.pluginConfiguration : identity.vmConfiguration, ptrOut: ptrOut, lenOut: lenOut)
    }
}
