// A test filter in Embedded Swift, written directly against the ABI (no SDK): it proves a
// Swift-built module loads and that configuration, headers and local responses work.
//   - on_configure keeps the plugin configuration
//   - request: adds `x-swift-filter: <configuration>`; `x-test: swift-deny` gets a 401
//   - response: adds `x-swift-response: yes`

@_extern(wasm, module: "env", name: "proxy_log") @_extern(c)
func proxy_log(_ level: UInt32, _ ptr: UnsafePointer<UInt8>?, _ len: Int) -> UInt32
@_extern(wasm, module: "env", name: "proxy_get_buffer_bytes") @_extern(c)
func proxy_get_buffer_bytes(_ type: UInt32, _ start: Int, _ max: Int, _ ptr: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>, _ len: UnsafeMutablePointer<Int>) -> UInt32
@_extern(wasm, module: "env", name: "proxy_get_header_map_value") @_extern(c)
func proxy_get_header_map_value(_ map: UInt32, _ key: UnsafePointer<UInt8>?, _ keyLen: Int, _ ptr: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>, _ len: UnsafeMutablePointer<Int>) -> UInt32
@_extern(wasm, module: "env", name: "proxy_add_header_map_value") @_extern(c)
func proxy_add_header_map_value(_ map: UInt32, _ key: UnsafePointer<UInt8>?, _ keyLen: Int, _ value: UnsafePointer<UInt8>?, _ valueLen: Int) -> UInt32
@_extern(wasm, module: "env", name: "proxy_send_local_response") @_extern(c)
func proxy_send_local_response(_ status: UInt32, _ details: UnsafePointer<UInt8>?, _ detailsLen: Int, _ body: UnsafePointer<UInt8>?, _ bodyLen: Int, _ headers: UnsafePointer<UInt8>?, _ headersLen: Int, _ grpc: Int32) -> UInt32

@_expose(wasm, "proxy_abi_version_0_2_1") @_cdecl("proxy_abi_version_0_2_1")
func abiVersion() {}

@_expose(wasm, "proxy_on_memory_allocate") @_cdecl("proxy_on_memory_allocate")
func allocate(_ size: Int) -> UnsafeMutableRawPointer? {
    UnsafeMutableRawPointer.allocate(byteCount: max(size, 1), alignment: 8)
}

nonisolated(unsafe) var configuration: [UInt8] = []

func bytes(_ s: StaticString) -> [UInt8] {
    Array(UnsafeBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
}

func addHeader(_ map: UInt32, _ name: [UInt8], _ value: [UInt8]) {
    name.withUnsafeBufferPointer { n in
        value.withUnsafeBufferPointer { v in
            _ = proxy_add_header_map_value(map, n.baseAddress, n.count, v.baseAddress, v.count)
        }
    }
}

func header(_ map: UInt32, _ name: [UInt8]) -> [UInt8]? {
    var ptr: UnsafeMutablePointer<UInt8>? = nil
    var len = 0
    let status = name.withUnsafeBufferPointer { proxy_get_header_map_value(map, $0.baseAddress, $0.count, &ptr, &len) }
    guard status == 0 else { return nil }
    defer { ptr?.deallocate() }
    return Array(UnsafeBufferPointer(start: ptr, count: len))
}

@_expose(wasm, "proxy_on_configure") @_cdecl("proxy_on_configure")
func onConfigure(_ root: UInt32, _ size: UInt32) -> UInt32 {
    var ptr: UnsafeMutablePointer<UInt8>? = nil
    var len = 0
    if proxy_get_buffer_bytes(7, 0, Int(size), &ptr, &len) == 0 {
        configuration = Array(UnsafeBufferPointer(start: ptr, count: len))
        ptr?.deallocate()
    }
    let msg = bytes("swift filter configured")
    _ = msg.withUnsafeBufferPointer { proxy_log(2, $0.baseAddress, $0.count) }
    return 1
}

@_expose(wasm, "proxy_on_request_headers") @_cdecl("proxy_on_request_headers")
func onRequestHeaders(_ context: UInt32, _ count: UInt32, _ endOfStream: UInt32) -> UInt32 {
    if let mode = header(0, bytes("x-test")), mode == bytes("swift-deny") {
        // Pairs with one header: count 1, sizes (14, 5), "www-authenticate\0Basic\0" ...
        let name = bytes("www-authenticate"), value = bytes("Basic")
        var pairs: [UInt8] = [1, 0, 0, 0, UInt8(name.count), 0, 0, 0, UInt8(value.count), 0, 0, 0]
        pairs += name + [0] + value + [0]
        let body = bytes("swift says no\n")
        _ = pairs.withUnsafeBufferPointer { p in
            body.withUnsafeBufferPointer { b in
                proxy_send_local_response(401, nil, 0, b.baseAddress, b.count, p.baseAddress, p.count, -1)
            }
        }
        return 1
    }
    addHeader(0, bytes("x-swift-filter"), configuration)
    return 0
}

@_expose(wasm, "proxy_on_response_headers") @_cdecl("proxy_on_response_headers")
func onResponseHeaders(_ context: UInt32, _ count: UInt32, _ endOfStream: UInt32) -> UInt32 {
    addHeader(2, bytes("x-swift-response"), bytes("yes"))
    return 0
}
