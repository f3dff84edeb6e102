extension PluginVM {
    /// The map a hostcall names, for reading. nil: not available in this phase.
    private func readableMap(_ type: UInt32) -> HeaderMap?? {
        guard let map = MapType(rawValue: type) else { return .none }
        switch map {
        case .httpCallResponseHeaders: return .some(httpCallResponse?.headers)
        case .httpCallResponseTrailers: return .some(httpCallResponse?.trailers)
        case .grpcInitialMetadata, .grpcTrailingMetadata: return .some(grpcMetadata)
        default:
            guard let data = effectiveStream?.http else { return .some(nil) }
            switch map {
            case .requestHeaders: return .some(data.requestHeaders)
            case .requestTrailers: return .some(data.requestTrailers)
            case .responseHeaders: return .some(data.responseHeaders)
            case .responseTrailers: return .some(data.responseTrailers)
            default: return .some(nil)
            }
        }
    }

    /// Applies `edit` to a writable stream map. Trailers may be added when absent only where
    /// the driver has made them available (an empty map at the last body chunk).
    /// Applies `edit` to a writable stream map (request/response headers and trailers; call
    /// results and gRPC metadata are read-only). Unavailable in this phase: BadArgument.
    ///
    /// The map is edited in place (a copy per call made adding n headers cost O(n²)), and the
    /// work is charged to the callback's CPU budget: one unit per header the edit may touch
    /// (`scansMap`), or one for an append.
    private func editMap(_ type: UInt32, scansMap: Bool = true, _ edit: (inout HeaderMap) -> Void) -> WasmResult {
        guard let data = effectiveStream?.http else { return .badArgument }
        func apply(_ map: inout HeaderMap?) -> WasmResult {
            guard map != nil else { return .badArgument }
            chargeHostWork(scansMap ? UInt64(map!.entries.count) + 1 : 1)
            edit(&map!)
            return .ok
        }
        switch MapType(rawValue: type) {
        case .requestHeaders:
            data.routeCacheCleared = true
            return apply(&data.requestHeaders)
        case .requestTrailers: return apply(&data.requestTrailers)
        case .responseHeaders: return apply(&data.responseHeaders)
        case .responseTrailers: return apply(&data.responseTrailers)
        default: return .badArgument
        }
    }

    func getHeaderMapValue(_ type: UInt32, _ keyPtr: UInt32, _ keyLen: UInt32, _ valuePtrOut: UInt32, _ valueLenOut: UInt32) -> WasmResult {
        guard let key = string(keyPtr, keyLen) else { return .invalidMemoryAccess }
        guard let lookup = readableMap(type) else { return .badArgument }
        guard let map = lookup else { return .badArgument }
        chargeHostWork(UInt64(map.entries.count) + 1)
        guard let value = map.first(key) else {
            // ABI 0.1.0 answered a missing key with OK and an empty value.
            return abi == .v0_1_0 ? copyOut([], ptrOut: valuePtrOut, lenOut: valueLenOut) : .notFound
        }
        return copyOut(Array(value.utf8), ptrOut: valuePtrOut, lenOut: valueLenOut)
    }

    func getHeaderMapPairs(_ type: UInt32, _ ptrOut: UInt32, _ lenOut: UInt32) -> WasmResult {
        guard let lookup = readableMap(type) else { return .badArgument }
        chargeHostWork(UInt64(lookup?.entries.count ?? 0) + 1)
        return copyOut(Pairs.serialize(lookup?.pairs ?? []), ptrOut: ptrOut, lenOut: lenOut)
    }

    func getHeaderMapSize(_ type: UInt32, _ sizeOut: UInt32) -> WasmResult {
        guard let lookup = readableMap(type), let map = lookup else { return .badArgument }
        return memory.writeU32(sizeOut, UInt32(map.byteSize)) ? .ok : .invalidMemoryAccess
    }

    func setHeaderMapPairs(_ type: UInt32, _ ptr: UInt32, _ len: UInt32) -> WasmResult {
        guard let parsed = memory.withBytes(ptr, len, { Pairs.parse($0) }) else { return .invalidMemoryAccess }
        // A malformed buffer is refused rather than read as "empty" (which would clear the map).
        guard let pairs = parsed, pairs.allSatisfy({ PluginVM.validHeader($0.0, $0.1) }) else { return .badArgument }
        return editMap(type) { $0 = HeaderMap(pairs.map { ($0.0.lowercased(), $0.1) }) }
    }

    func addHeaderMapValue(_ type: UInt32, _ keyPtr: UInt32, _ keyLen: UInt32, _ valuePtr: UInt32, _ valueLen: UInt32) -> WasmResult {
        guard let key = string(keyPtr, keyLen), let value = string(valuePtr, valueLen) else { return .invalidMemoryAccess }
        guard PluginVM.validHeader(key, value) else { return .badArgument }
        // An append touches one entry, whatever the map's size.
        return editMap(type, scansMap: false) { $0.add(key, value) }
    }

    func replaceHeaderMapValue(_ type: UInt32, _ keyPtr: UInt32, _ keyLen: UInt32, _ valuePtr: UInt32, _ valueLen: UInt32) -> WasmResult {
        guard let key = string(keyPtr, keyLen), let value = string(valuePtr, valueLen) else { return .invalidMemoryAccess }
        guard PluginVM.validHeader(key, value) else { return .badArgument }
        return editMap(type) { $0.replace(key, value) }
    }

    func removeHeaderMapValue(_ type: UInt32, _ keyPtr: UInt32, _ keyLen: UInt32) -> WasmResult {
        guard let key = string(keyPtr, keyLen) else { return .invalidMemoryAccess }
        // Required pseudo-headers cannot be removed (doing so crashed Envoy, issue #15487).
        if [":method", ":path", ":authority", ":scheme", ":status"].contains(key.lowercased()) { return .badArgument }
        return editMap(type) { $0.remove(key) }
    }

    /// Names must be tokens (or known pseudo-headers) and values free of CR, LF and NUL, so
    /// a filter can never split a response or inject a header on the wire. `:status` must be
    /// a final status of three digits, 200–599: a 1xx or 101 would leave the client waiting
    /// for a response that never comes, and anything else is not a status at all.
    static func validHeader(_ name: String, _ value: String) -> Bool {
        guard !name.isEmpty else { return false }
        if name.utf8.first == UInt8(ascii: ":") {
            let lower = name.lowercased()
            guard [":method", ":path", ":authority", ":scheme", ":status"].contains(lower) else { return false }
            if lower == ":status" { return validFinalStatus(value) != nil }
        } else {
            guard name.utf8.allSatisfy({ tokenByte[Int($0)] }) else { return false }
        }
        return !value.utf8.contains { $0 == 0 || $0 == 10 || $0 == 13 }
    }

    /// The status a `:status` value names, if it is a final status Sluice can send.
    public static func validFinalStatus(_ value: String) -> Int? {
        guard value.utf8.count == 3, value.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), let status = Int(value),
              (200...599).contains(status) else { return nil }
        return status
    }

    /// RFC 9110 token characters, as a lookup table (this runs on every header a filter sets).
    static let tokenByte: [Bool] = {
        var table = [Bool](repeating: false, count: 256)
        for b in "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8 { table[Int(b)] = true }
        return table
    }()
}
