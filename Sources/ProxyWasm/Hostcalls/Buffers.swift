extension PluginVM {
    /// Reads a buffer in place (bodies are not copied out of the proxy's buffers); nil when
    /// it is not available now.
    private func withBuffer<R>(_ type: BufferType, _ body: (UnsafeRawBufferPointer) -> R) -> R? {
        func bytes(_ array: [UInt8]) -> R { array.withUnsafeBytes(body) }
        switch type {
        case .requestBody, .responseBody:
            guard let data = effectiveStream?.http else { return body(UnsafeRawBufferPointer(start: nil, count: 0)) }
            return (type == .requestBody ? data.requestBody : data.responseBody).withBytes(body)
        case .downstreamData, .upstreamData:
            guard let data = effectiveStream?.network else { return nil }
            // Not held now: empty, as Envoy answers.
            return (type == .downstreamData ? data.downstreamData : data.upstreamData)?.withBytes(body) ?? body(UnsafeRawBufferPointer(start: nil, count: 0))
        case .vmConfiguration: return bytes(identity.vmConfiguration)
        case .pluginConfiguration: return configurationReadable ? bytes(identity.pluginConfiguration) : nil
        case .httpCallResponseBody: return httpCallResponse.map { bytes($0.body) }
        case .grpcMessage: return grpcMessage.map { bytes($0) }
        case .foreignFunctionArguments: return nil
        }
    }

    func getBufferBytes(_ type: UInt32, _ start: UInt32, _ maxSize: UInt32, _ ptrOut: UInt32, _ lenOut: UInt32) -> WasmResult {
        guard let type = BufferType(rawValue: type) else { return .badArgument }
        // Clamp, as cpp-host does: (0, 0xFFFFFFFF) reads everything, a start past the end reads nothing.
        let result = withBuffer(type) { data -> WasmResult in
            let from = min(Int(start), data.count)
            let to = min(from + Int(maxSize), data.count)
            return copyOut(UnsafeRawBufferPointer(rebasing: data[from..<to]), ptrOut: ptrOut, lenOut: lenOut)
        }
        return result ?? .notFound
    }

    func getBufferStatus(_ type: UInt32, _ lengthOut: UInt32, _ flagsOut: UInt32) -> WasmResult {
        guard let type = BufferType(rawValue: type) else { return .badArgument }
        guard let count = withBuffer(type, { $0.count }) else { return .notFound }
        guard memory.writeU32(lengthOut, UInt32(count)), memory.writeU32(flagsOut, 0) else { return .invalidMemoryAccess }
        return .ok
    }

    /// Envoy's semantics, which SDKs rely on: start 0 drains `size` bytes from the front and
    /// prepends the data (so (0, len) replaces, (0, 0) prepends); start >= length appends;
    /// anything else is refused. Configuration and call-result buffers are read-only. The
    /// same rules hold for a TCP connection's DownstreamData and UpstreamData.
    func setBufferBytes(_ type: UInt32, _ start: UInt32, _ size: UInt32, _ ptr: UInt32, _ len: UInt32) -> WasmResult {
        guard let type = BufferType(rawValue: type) else { return .badArgument }
        guard let new = bytes(ptr, len) else { return .invalidMemoryAccess }
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
        switch type {
        case .requestBody, .responseBody:
            guard let data = effectiveStream?.http else { return .notFound }
            return type == .requestBody ? data.requestBody.edit(edit) : data.responseBody.edit(edit)
        case .downstreamData, .upstreamData:
            guard let data = effectiveStream?.network else { return .notFound }
            if type == .downstreamData {
                guard data.downstreamData != nil else { return .badArgument }
                return data.downstreamData!.edit(edit)
            }
            guard data.upstreamData != nil else { return .badArgument }
            return data.upstreamData!.edit(edit)
        default:
            return .badArgument
        }
    }

    /// ABI 0.1.0: the plugin configuration during on_configure, the VM configuration otherwise.
    func getConfiguration(_ ptrOut: UInt32, _ lenOut: UInt32) -> WasmResult {
        copyOut(configurationReadable ? identity.pluginConfiguration : identity.vmConfiguration, ptrOut: ptrOut, lenOut: lenOut)
    }
}
