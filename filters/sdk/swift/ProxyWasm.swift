// Sluice Swift SDK for Proxy-Wasm filters (Embedded Swift, ABI 0.2.1).
//
// A filter defines `func makeRootContext() -> RootContext` and implements the protocols it
// needs; this file supplies the ABI exports, the context table and typed hostcalls.
// Build with filters/build.sh (the SDK is compiled together with the filter, -wmo).

// MARK: - Imports (module env)

@_extern(wasm, module: "env", name: "proxy_log") @_extern(c)
func _proxy_log(_ level: UInt32, _ ptr: UnsafePointer<UInt8>?, _ len: Int) -> UInt32
@_extern(wasm, module: "env", name: "proxy_get_buffer_bytes") @_extern(c)
func _proxy_get_buffer_bytes(_ type: UInt32, _ start: Int, _ max: Int, _ ptr: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>, _ len: UnsafeMutablePointer<Int>) -> UInt32
@_extern(wasm, module: "env", name: "proxy_set_buffer_bytes") @_extern(c)
func _proxy_set_buffer_bytes(_ type: UInt32, _ start: Int, _ size: Int, _ ptr: UnsafePointer<UInt8>?, _ len: Int) -> UInt32
@_extern(wasm, module: "env", name: "proxy_get_header_map_value") @_extern(c)
func _proxy_get_header_map_value(_ map: UInt32, _ key: UnsafePointer<UInt8>?, _ keyLen: Int, _ ptr: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>, _ len: UnsafeMutablePointer<Int>) -> UInt32
@_extern(wasm, module: "env", name: "proxy_get_header_map_pairs") @_extern(c)
func _proxy_get_header_map_pairs(_ map: UInt32, _ ptr: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>, _ len: UnsafeMutablePointer<Int>) -> UInt32
@_extern(wasm, module: "env", name: "proxy_add_header_map_value") @_extern(c)
func _proxy_add_header_map_value(_ map: UInt32, _ key: UnsafePointer<UInt8>?, _ keyLen: Int, _ value: UnsafePointer<UInt8>?, _ valueLen: Int) -> UInt32
@_extern(wasm, module: "env", name: "proxy_replace_header_map_value") @_extern(c)
func _proxy_replace_header_map_value(_ map: UInt32, _ key: UnsafePointer<UInt8>?, _ keyLen: Int, _ value: UnsafePointer<UInt8>?, _ valueLen: Int) -> UInt32
@_extern(wasm, module: "env", name: "proxy_remove_header_map_value") @_extern(c)
func _proxy_remove_header_map_value(_ map: UInt32, _ key: UnsafePointer<UInt8>?, _ keyLen: Int) -> UInt32
@_extern(wasm, module: "env", name: "proxy_get_property") @_extern(c)
func _proxy_get_property(_ path: UnsafePointer<UInt8>?, _ pathLen: Int, _ ptr: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>, _ len: UnsafeMutablePointer<Int>) -> UInt32
@_extern(wasm, module: "env", name: "proxy_send_local_response") @_extern(c)
func _proxy_send_local_response(_ status: UInt32, _ details: UnsafePointer<UInt8>?, _ detailsLen: Int, _ body: UnsafePointer<UInt8>?, _ bodyLen: Int, _ headers: UnsafePointer<UInt8>?, _ headersLen: Int, _ grpc: Int32) -> UInt32
@_extern(wasm, module: "env", name: "proxy_continue_stream") @_extern(c)
func _proxy_continue_stream(_ type: UInt32) -> UInt32
@_extern(wasm, module: "env", name: "proxy_set_tick_period_milliseconds") @_extern(c)
func _proxy_set_tick_period_milliseconds(_ ms: UInt32) -> UInt32
@_extern(wasm, module: "env", name: "proxy_get_shared_data") @_extern(c)
func _proxy_get_shared_data(_ key: UnsafePointer<UInt8>?, _ keyLen: Int, _ ptr: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>, _ len: UnsafeMutablePointer<Int>, _ cas: UnsafeMutablePointer<UInt32>) -> UInt32
@_extern(wasm, module: "env", name: "proxy_set_shared_data") @_extern(c)
func _proxy_set_shared_data(_ key: UnsafePointer<UInt8>?, _ keyLen: Int, _ value: UnsafePointer<UInt8>?, _ valueLen: Int, _ cas: UInt32) -> UInt32
@_extern(wasm, module: "env", name: "proxy_define_metric") @_extern(c)
func _proxy_define_metric(_ type: UInt32, _ name: UnsafePointer<UInt8>?, _ nameLen: Int, _ id: UnsafeMutablePointer<UInt32>) -> UInt32
@_extern(wasm, module: "env", name: "proxy_increment_metric") @_extern(c)
func _proxy_increment_metric(_ id: UInt32, _ delta: Int64) -> UInt32
@_extern(wasm, module: "env", name: "proxy_record_metric") @_extern(c)
func _proxy_record_metric(_ id: UInt32, _ value: UInt64) -> UInt32
@_extern(wasm, module: "env", name: "proxy_http_call") @_extern(c)
func _proxy_http_call(_ up: UnsafePointer<UInt8>?, _ upLen: Int, _ h: UnsafePointer<UInt8>?, _ hLen: Int, _ b: UnsafePointer<UInt8>?, _ bLen: Int, _ t: UnsafePointer<UInt8>?, _ tLen: Int, _ timeout: UInt32, _ token: UnsafeMutablePointer<UInt32>) -> UInt32
@_extern(wasm, module: "env", name: "proxy_set_effective_context") @_extern(c)
func _proxy_set_effective_context(_ id: UInt32) -> UInt32
@_extern(wasm, module: "env", name: "proxy_register_shared_queue") @_extern(c)
func _proxy_register_shared_queue(_ name: UnsafePointer<UInt8>?, _ len: Int, _ id: UnsafeMutablePointer<UInt32>) -> UInt32
@_extern(wasm, module: "env", name: "proxy_resolve_shared_queue") @_extern(c)
func _proxy_resolve_shared_queue(_ vm: UnsafePointer<UInt8>?, _ vmLen: Int, _ name: UnsafePointer<UInt8>?, _ len: Int, _ id: UnsafeMutablePointer<UInt32>) -> UInt32
@_extern(wasm, module: "env", name: "proxy_enqueue_shared_queue") @_extern(c)
func _proxy_enqueue_shared_queue(_ id: UInt32, _ value: UnsafePointer<UInt8>?, _ len: Int) -> UInt32
@_extern(wasm, module: "env", name: "proxy_dequeue_shared_queue") @_extern(c)
func _proxy_dequeue_shared_queue(_ id: UInt32, _ ptr: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>, _ len: UnsafeMutablePointer<Int>) -> UInt32
@_extern(wasm, module: "env", name: "proxy_close_stream") @_extern(c)
func _proxy_close_stream(_ type: UInt32) -> UInt32
@_extern(wasm, module: "env", name: "proxy_get_status") @_extern(c)
func _proxy_get_status(_ code: UnsafeMutablePointer<UInt32>, _ ptr: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>, _ len: UnsafeMutablePointer<Int>) -> UInt32
@_extern(wasm, module: "env", name: "proxy_grpc_call") @_extern(c)
func _proxy_grpc_call(_ svc: UnsafePointer<UInt8>?, _ svcLen: Int, _ name: UnsafePointer<UInt8>?, _ nameLen: Int, _ method: UnsafePointer<UInt8>?, _ methodLen: Int,
                      _ md: UnsafePointer<UInt8>?, _ mdLen: Int, _ msg: UnsafePointer<UInt8>?, _ msgLen: Int, _ timeout: UInt32, _ token: UnsafeMutablePointer<UInt32>) -> UInt32
@_extern(wasm, module: "env", name: "proxy_grpc_stream") @_extern(c)
func _proxy_grpc_stream(_ svc: UnsafePointer<UInt8>?, _ svcLen: Int, _ name: UnsafePointer<UInt8>?, _ nameLen: Int, _ method: UnsafePointer<UInt8>?, _ methodLen: Int,
                        _ md: UnsafePointer<UInt8>?, _ mdLen: Int, _ token: UnsafeMutablePointer<UInt32>) -> UInt32
@_extern(wasm, module: "env", name: "proxy_grpc_send") @_extern(c)
func _proxy_grpc_send(_ token: UInt32, _ msg: UnsafePointer<UInt8>?, _ len: Int, _ end: UInt32) -> UInt32
@_extern(wasm, module: "env", name: "proxy_grpc_cancel") @_extern(c)
func _proxy_grpc_cancel(_ token: UInt32) -> UInt32
@_extern(wasm, module: "env", name: "proxy_grpc_close") @_extern(c)
func _proxy_grpc_close(_ token: UInt32) -> UInt32
@_extern(wasm, module: "env", name: "proxy_get_current_time_nanoseconds") @_extern(c)
func _proxy_get_current_time_nanoseconds(_ out: UnsafeMutablePointer<UInt64>) -> UInt32

// MARK: - Public API

public enum Action { case `continue`, pause }

public enum LogLevel: UInt32 { case trace = 0, debug, info, warn, error, critical }

/// Logs through the host (Sluice: swift-log, tagged with the plugin name).
public func log(_ level: LogLevel, _ message: String) {
    var m = message
    m.withUTF8 { _ = _proxy_log(level.rawValue, $0.baseAddress, $0.count) }
}

/// Called for the root context at start-up: parse the configuration, return false to refuse it.
public protocol RootContext: AnyObject {
    func onConfigure(configuration: [UInt8]) -> Bool
    func onTick()
    func onQueueReady(queueID: UInt32)
    func createHTTPContext(id: UInt32) -> HTTPContext?
    /// A TCP connection's context, for a plugin used as a network filter.
    func createNetworkContext(id: UInt32) -> NetworkContext?
}

extension RootContext {
    public func createHTTPContext(id: UInt32) -> HTTPContext? { nil }
    public func createNetworkContext(id: UInt32) -> NetworkContext? { nil }
    public func onConfigure(configuration: [UInt8]) -> Bool { true }
    public func onTick() {}
    public func onQueueReady(queueID: UInt32) {}
}

/// One HTTP request/response. Every callback defaults to doing nothing and continuing.
public protocol HTTPContext: AnyObject {
    func onRequestHeaders(endOfStream: Bool) -> Action
    func onRequestBody(size: Int, endOfStream: Bool) -> Action
    func onResponseHeaders(endOfStream: Bool) -> Action
    func onResponseBody(size: Int, endOfStream: Bool) -> Action
    func onLog()
}

extension HTTPContext {
    public func onRequestHeaders(endOfStream: Bool) -> Action { .continue }
    public func onRequestBody(size: Int, endOfStream: Bool) -> Action { .continue }
    public func onResponseHeaders(endOfStream: Bool) -> Action { .continue }
    public func onResponseBody(size: Int, endOfStream: Bool) -> Action { .continue }
    public func onLog() {}
}

/// Who closed a connection.
public enum Peer: UInt32 { case unknown = 0, local, remote }

/// One TCP connection through a network filter. `.pause` holds the bytes (the next callback
/// in that direction sees them again with what came since); `continueDownstream()` resumes
/// the client's direction. The bytes are `Body.downstreamData` / `Body.upstreamData`.
public protocol NetworkContext: AnyObject {
    func onNewConnection() -> Action
    func onDownstreamData(size: Int, endOfStream: Bool) -> Action
    func onUpstreamData(size: Int, endOfStream: Bool) -> Action
    func onDownstreamClose(peer: Peer)
    func onUpstreamClose(peer: Peer)
    func onLog()
}

extension NetworkContext {
    public func onNewConnection() -> Action { .continue }
    public func onDownstreamData(size: Int, endOfStream: Bool) -> Action { .continue }
    public func onUpstreamData(size: Int, endOfStream: Bool) -> Action { .continue }
    public func onDownstreamClose(peer: Peer) {}
    public func onUpstreamClose(peer: Peer) {}
    public func onLog() {}
}

/// A header map of the current stream.
public struct Headers {
    let map: UInt32
    public static let request = Headers(map: 0)
    public static let requestTrailers = Headers(map: 1)
    public static let response = Headers(map: 2)
    public static let responseTrailers = Headers(map: 3)
    public static let httpCallResponse = Headers(map: 6)
    public static let grpcInitialMetadata = Headers(map: 4)
    public static let grpcTrailingMetadata = Headers(map: 5)

    public subscript(name: String) -> String? {
        var n = name
        var ptr: UnsafeMutablePointer<UInt8>? = nil
        var len = 0
        let status = n.withUTF8 { _proxy_get_header_map_value(map, $0.baseAddress, $0.count, &ptr, &len) }
        return status == 0 ? takeString(ptr, len) : nil
    }

    public func add(_ name: String, _ value: String) {
        var n = name, v = value
        n.withUTF8 { k in v.withUTF8 { _ = _proxy_add_header_map_value(map, k.baseAddress, k.count, $0.baseAddress, $0.count) } }
    }

    public func set(_ name: String, _ value: String) {
        var n = name, v = value
        n.withUTF8 { k in v.withUTF8 { _ = _proxy_replace_header_map_value(map, k.baseAddress, k.count, $0.baseAddress, $0.count) } }
    }

    public func remove(_ name: String) {
        var n = name
        n.withUTF8 { _ = _proxy_remove_header_map_value(map, $0.baseAddress, $0.count) }
    }

    /// All entries, pseudo-headers included.
    public var all: [(String, String)] {
        var ptr: UnsafeMutablePointer<UInt8>? = nil
        var len = 0
        guard _proxy_get_header_map_pairs(map, &ptr, &len) == 0, let ptr, len >= 4 else { return [] }
        defer { ptr.deallocate() }
        return decodePairs(UnsafeBufferPointer(start: ptr, count: len))
    }
}

/// The body of the current stream (whatever the current callback is about).
public struct Body {
    let type: UInt32
    public static let request = Body(type: 0)
    public static let response = Body(type: 1)
    public static let httpCallResponse = Body(type: 4)
    public static let downstreamData = Body(type: 2)
    public static let upstreamData = Body(type: 3)
    public static let grpcMessage = Body(type: 5)

    public var bytes: [UInt8] {
        var ptr: UnsafeMutablePointer<UInt8>? = nil
        var len = 0
        guard _proxy_get_buffer_bytes(type, 0, Int(Int32.max), &ptr, &len) == 0 else { return [] }
        return takeBytes(ptr, len)
    }

    /// Replaces the whole body.
    public func replace(with new: [UInt8]) {
        let current = bytes.count
        new.withUnsafeBufferPointer { _ = _proxy_set_buffer_bytes(type, 0, current, $0.baseAddress, $0.count) }
    }

    public func prepend(_ more: [UInt8]) {
        more.withUnsafeBufferPointer { _ = _proxy_set_buffer_bytes(type, 0, 0, $0.baseAddress, $0.count) }
    }

    public func append(_ more: [UInt8]) {
        more.withUnsafeBufferPointer { _ = _proxy_set_buffer_bytes(type, Int(Int32.max), 0, $0.baseAddress, $0.count) }
    }
}

/// A property by path segments, e.g. `property("request", "path")` (raw bytes, as the host
/// encodes them: integers are 8-byte little-endian).
public func property(_ segments: String...) -> [UInt8]? {
    rawProperty(segments).map { takeBytes($0.0, $0.1) }
}

/// A property as text, e.g. `propertyString("source", "address")`.
public func propertyString(_ segments: String...) -> String? {
    rawProperty(segments).map { takeString($0.0, $0.1) }
}

/// Path segments joined with NUL, as the ABI wants; the host-allocated value on success.
func rawProperty(_ segments: [String]) -> (UnsafeMutablePointer<UInt8>?, Int)? {
    var path: [UInt8] = []
    for (i, s) in segments.enumerated() {
        if i > 0 { path.append(0) }
        path.append(contentsOf: s.utf8)
    }
    var ptr: UnsafeMutablePointer<UInt8>? = nil
    var len = 0
    let status = path.withUnsafeBufferPointer { _proxy_get_property($0.baseAddress, $0.count, &ptr, &len) }
    return status == 0 ? (ptr, len) : nil
}

/// Answers the client now; the current callback's result becomes "pause".
public func sendLocalResponse(status: Int, body: String = "", headers: [(String, String)] = []) {
    let pairs = encodePairs(headers)
    var b = body
    pairs.withUnsafeBufferPointer { p in
        b.withUTF8 { _ = _proxy_send_local_response(UInt32(status), nil, 0, $0.baseAddress, $0.count, p.baseAddress, p.count, -1) }
    }
}

/// Wall-clock time in nanoseconds since the Unix epoch.
public func nowNanoseconds() -> UInt64 {
    var t: UInt64 = 0
    _ = _proxy_get_current_time_nanoseconds(&t)
    return t
}

public func continueRequest() { _ = _proxy_continue_stream(0) }
public func continueResponse() { _ = _proxy_continue_stream(1) }
/// Resumes the client's direction of the current connection (network filters).
public func continueDownstream() { _ = _proxy_continue_stream(2) }
/// Closes the current connection once what was written is flushed.
public func closeDownstream() { _ = _proxy_close_stream(2) }
public func closeUpstream() { _ = _proxy_close_stream(3) }
/// Makes `id` the context later calls act on (a connection or stream, from a root callback).
@discardableResult
public func setEffectiveContext(_ id: UInt32) -> Bool { _proxy_set_effective_context(id) == 0 }
public func setTickPeriod(milliseconds: UInt32) { _ = _proxy_set_tick_period_milliseconds(milliseconds) }

/// Shared key-value data (per vm_id, shared by all workers), with compare-and-swap.
public enum SharedData {
    public static func get(_ key: String) -> (value: [UInt8], cas: UInt32)? {
        var k = key
        var ptr: UnsafeMutablePointer<UInt8>? = nil
        var len = 0
        var cas: UInt32 = 0
        let status = k.withUTF8 { _proxy_get_shared_data($0.baseAddress, $0.count, &ptr, &len, &cas) }
        return status == 0 ? (takeBytes(ptr, len), cas) : nil
    }

    /// Returns false on a CAS mismatch (someone else wrote first: read again and retry).
    @discardableResult
    public static func set(_ key: String, _ value: [UInt8], cas: UInt32 = 0) -> Bool {
        var k = key
        return k.withUTF8 { kk in value.withUnsafeBufferPointer { _proxy_set_shared_data(kk.baseAddress, kk.count, $0.baseAddress, $0.count, cas) } } == 0
    }
}

/// Shared queues: register one (this root context is notified on its worker when items
/// arrive), or resolve one by name and enqueue to it from any worker.
public enum Queue {
    public static func register(_ name: String) -> UInt32? {
        var n = name
        var id: UInt32 = 0
        return n.withUTF8 { _proxy_register_shared_queue($0.baseAddress, $0.count, &id) } == 0 ? id : nil
    }

    public static func resolve(_ name: String, vmID: String = "") -> UInt32? {
        var n = name, v = vmID
        var id: UInt32 = 0
        let status = v.withUTF8 { vv in n.withUTF8 { _proxy_resolve_shared_queue(vv.baseAddress, vv.count, $0.baseAddress, $0.count, &id) } }
        return status == 0 ? id : nil
    }

    @discardableResult
    public static func enqueue(_ id: UInt32, _ value: [UInt8]) -> Bool {
        value.withUnsafeBufferPointer { _proxy_enqueue_shared_queue(id, $0.baseAddress, $0.count) } == 0
    }

    /// The next item, or nil when the queue is empty.
    public static func dequeue(_ id: UInt32) -> [UInt8]? {
        var ptr: UnsafeMutablePointer<UInt8>? = nil
        var len = 0
        return _proxy_dequeue_shared_queue(id, &ptr, &len) == 0 ? takeBytes(ptr, len) : nil
    }
}

/// A metric on the admin /stats, named `<plugin>_<name>`.
public struct Metric {
    public enum Kind: UInt32 { case counter = 0, gauge, histogram }
    let id: UInt32
    public init(_ kind: Kind, _ name: String) {
        var n = name
        var id: UInt32 = 0
        _ = n.withUTF8 { _proxy_define_metric(kind.rawValue, $0.baseAddress, $0.count, &id) }
        self.id = id
    }
    public func increment(_ delta: Int64 = 1) { _ = _proxy_increment_metric(id, delta) }
    public func record(_ value: UInt64) { _ = _proxy_record_metric(id, value) }
}

/// An HTTP callout to a cluster; `callback` runs with the response (nil: the call failed),
/// with the calling stream as the current context.
@discardableResult
public func httpCall(cluster: String, method: String = "GET", path: String, authority: String, headers: [(String, String)] = [],
                     body: [UInt8] = [], timeoutMilliseconds: UInt32 = 5000, callback: @escaping (HTTPCallResponse?) -> Void) -> Bool {
    let pairs = encodePairs([(":method", method), (":path", path), (":authority", authority)] + headers)
    var c = cluster
    var token: UInt32 = 0
    let status = c.withUTF8 { cc in
        pairs.withUnsafeBufferPointer { p in
            body.withUnsafeBufferPointer { b in
                _proxy_http_call(cc.baseAddress, cc.count, p.baseAddress, p.count, b.baseAddress, b.count, nil, 0, timeoutMilliseconds, &token)
            }
        }
    }
    guard status == 0 else { return false }
    Runtime.callouts[token] = (Runtime.currentContext, callback)
    return true
}

/// How a gRPC callout ended: a unary call's reply, or a status (with its message).
public enum GrpcOutcome {
    case message([UInt8])
    case closed(status: UInt32, message: String)
}

/// A unary gRPC call to a cluster (`service` and `method` as in `/service/method`); the
/// callback runs on the root context.
@discardableResult
public func grpcCall(cluster: String, service: String, method: String, metadata: [(String, String)] = [], message: [UInt8],
                     timeoutMilliseconds: UInt32 = 5000, callback: @escaping (GrpcOutcome) -> Void) -> UInt32? {
    let pairs = encodePairs(metadata)
    var c = cluster, s = service, m = method
    var token: UInt32 = 0
    let status = c.withUTF8 { cc in s.withUTF8 { ss in m.withUTF8 { mm in pairs.withUnsafeBufferPointer { p in message.withUnsafeBufferPointer { b in
        _proxy_grpc_call(cc.baseAddress, cc.count, ss.baseAddress, ss.count, mm.baseAddress, mm.count, p.baseAddress, p.count, b.baseAddress, b.count, timeoutMilliseconds, &token)
    } } } } }
    guard status == 0 else { return nil }
    Runtime.grpc[token] = GrpcHandlers(outcome: callback)
    return token
}

/// A gRPC stream to a cluster: send messages, then `close()` (half-close); events arrive on
/// the root context.
public final class GrpcStream {
    public let token: UInt32
    init(token: UInt32) { self.token = token }

    public static func open(cluster: String, service: String, method: String, metadata: [(String, String)] = [],
                            onInitialMetadata: @escaping ([(String, String)]) -> Void = { _ in },
                            onMessage: @escaping ([UInt8]) -> Void,
                            onTrailingMetadata: @escaping ([(String, String)]) -> Void = { _ in },
                            onClose: @escaping (UInt32, String) -> Void) -> GrpcStream? {
        let pairs = encodePairs(metadata)
        var c = cluster, s = service, m = method
        var token: UInt32 = 0
        let status = c.withUTF8 { cc in s.withUTF8 { ss in m.withUTF8 { mm in pairs.withUnsafeBufferPointer { p in
            _proxy_grpc_stream(cc.baseAddress, cc.count, ss.baseAddress, ss.count, mm.baseAddress, mm.count, p.baseAddress, p.count, &token)
        } } } }
        guard status == 0 else { return nil }
        Runtime.grpc[token] = GrpcHandlers(outcome: { outcome in
            if case .closed(let code, let message) = outcome { onClose(code, message) }
        }, initialMetadata: onInitialMetadata, message: onMessage, trailingMetadata: onTrailingMetadata)
        return GrpcStream(token: token)
    }

    public func send(_ message: [UInt8], endOfStream: Bool = false) {
        message.withUnsafeBufferPointer { _ = _proxy_grpc_send(token, $0.baseAddress, $0.count, endOfStream ? 1 : 0) }
    }
    public func close() { _ = _proxy_grpc_close(token) }
    /// No callback follows.
    public func cancel() {
        _ = _proxy_grpc_cancel(token)
        Runtime.grpc[token] = nil
    }
}

struct GrpcHandlers {
    var outcome: (GrpcOutcome) -> Void
    var initialMetadata: (([(String, String)]) -> Void)?
    var message: (([UInt8]) -> Void)?
    var trailingMetadata: (([(String, String)]) -> Void)?
}

public struct HTTPCallResponse {
    public var status: Int
    public var headers: [(String, String)]
    public var body: [UInt8]
}

// MARK: - Runtime: the ABI exports

enum Runtime {
    /// One root context per plugin: plugins with the same vm_id share the module's instance.
    nonisolated(unsafe) static var roots: [UInt32: RootContext] = [:]
    nonisolated(unsafe) static var streams: [UInt32: HTTPContext] = [:]
    nonisolated(unsafe) static var connections: [UInt32: NetworkContext] = [:]
    /// Contexts whose kind is not known yet, with their root: made at their first callback.
    nonisolated(unsafe) static var created: [UInt32: UInt32] = [:]
    nonisolated(unsafe) static var grpc: [UInt32: GrpcHandlers] = [:]
    nonisolated(unsafe) static var callouts: [UInt32: (UInt32, (HTTPCallResponse?) -> Void)] = [:]
    nonisolated(unsafe) static var currentContext: UInt32 = 0

    /// The HTTP context of `id`, made at its first HTTP callback.
    static func stream(_ id: UInt32) -> HTTPContext? {
        currentContext = id
        if let http = streams[id] { return http }
        guard let root = created.removeValue(forKey: id), let http = roots[root]?.createHTTPContext(id: id) else { return nil }
        streams[id] = http
        return http
    }

    /// The network context of `id`, made at its first TCP callback.
    static func connection(_ id: UInt32) -> NetworkContext? {
        currentContext = id
        if let network = connections[id] { return network }
        guard let root = created.removeValue(forKey: id), let network = roots[root]?.createNetworkContext(id: id) else { return nil }
        connections[id] = network
        return network
    }

    static func action(_ a: Action) -> UInt32 { a == .continue ? 0 : 1 }
}

@_expose(wasm, "proxy_abi_version_0_2_1") @_cdecl("proxy_abi_version_0_2_1")
func _abi() {}

@_expose(wasm, "proxy_on_memory_allocate") @_cdecl("proxy_on_memory_allocate")
func _allocate(_ size: Int) -> UnsafeMutableRawPointer? {
    UnsafeMutableRawPointer.allocate(byteCount: max(size, 1), alignment: 8)
}

@_expose(wasm, "proxy_on_context_create") @_cdecl("proxy_on_context_create")
func _onContextCreate(_ id: UInt32, _ parent: UInt32) {
    if parent == 0 {
        Runtime.roots[id] = makeRootContext()
    } else {
        // An HTTP stream or a TCP connection: its first callback tells which.
        Runtime.created[id] = parent
    }
}

@_expose(wasm, "proxy_on_configure") @_cdecl("proxy_on_configure")
func _onConfigure(_ root: UInt32, _ size: UInt32) -> UInt32 {
    var ptr: UnsafeMutablePointer<UInt8>? = nil
    var len = 0
    let configuration = _proxy_get_buffer_bytes(7, 0, Int(size), &ptr, &len) == 0 ? takeBytes(ptr, len) : []
    return (Runtime.roots[root]?.onConfigure(configuration: configuration) ?? true) ? 1 : 0
}

@_expose(wasm, "proxy_on_tick") @_cdecl("proxy_on_tick")
func _onTick(_ root: UInt32) { Runtime.roots[root]?.onTick() }

@_expose(wasm, "proxy_on_queue_ready") @_cdecl("proxy_on_queue_ready")
func _onQueueReady(_ root: UInt32, _ id: UInt32) { Runtime.roots[root]?.onQueueReady(queueID: id) }

@_expose(wasm, "proxy_on_request_headers") @_cdecl("proxy_on_request_headers")
func _onRequestHeaders(_ id: UInt32, _ n: UInt32, _ eos: UInt32) -> UInt32 {
    Runtime.action(Runtime.stream(id)?.onRequestHeaders(endOfStream: eos != 0) ?? .continue)
}

@_expose(wasm, "proxy_on_request_body") @_cdecl("proxy_on_request_body")
func _onRequestBody(_ id: UInt32, _ size: UInt32, _ eos: UInt32) -> UInt32 {
    Runtime.action(Runtime.stream(id)?.onRequestBody(size: Int(size), endOfStream: eos != 0) ?? .continue)
}

@_expose(wasm, "proxy_on_response_headers") @_cdecl("proxy_on_response_headers")
func _onResponseHeaders(_ id: UInt32, _ n: UInt32, _ eos: UInt32) -> UInt32 {
    Runtime.action(Runtime.stream(id)?.onResponseHeaders(endOfStream: eos != 0) ?? .continue)
}

@_expose(wasm, "proxy_on_response_body") @_cdecl("proxy_on_response_body")
func _onResponseBody(_ id: UInt32, _ size: UInt32, _ eos: UInt32) -> UInt32 {
    Runtime.action(Runtime.stream(id)?.onResponseBody(size: Int(size), endOfStream: eos != 0) ?? .continue)
}

@_expose(wasm, "proxy_on_http_call_response") @_cdecl("proxy_on_http_call_response")
func _onHTTPCallResponse(_ root: UInt32, _ token: UInt32, _ nHeaders: UInt32, _ bodySize: UInt32, _ nTrailers: UInt32) {
    guard let (stream, callback) = Runtime.callouts.removeValue(forKey: token) else { return }
    // The stream may have ended while the call was out.
    guard Runtime.streams[stream] != nil, _proxy_set_effective_context(stream) == 0 else { return }
    Runtime.currentContext = stream
    if nHeaders == 0 {
        callback(nil)
        return
    }
    let headers = Headers.httpCallResponse.all
    let status = Int(headers.first { $0.0 == ":status" }?.1 ?? "") ?? 0
    callback(HTTPCallResponse(status: status, headers: headers, body: Body.httpCallResponse.bytes))
}

@_expose(wasm, "proxy_on_new_connection") @_cdecl("proxy_on_new_connection")
func _onNewConnection(_ id: UInt32) -> UInt32 {
    Runtime.action(Runtime.connection(id)?.onNewConnection() ?? .continue)
}

@_expose(wasm, "proxy_on_downstream_data") @_cdecl("proxy_on_downstream_data")
func _onDownstreamData(_ id: UInt32, _ size: UInt32, _ eos: UInt32) -> UInt32 {
    Runtime.action(Runtime.connection(id)?.onDownstreamData(size: Int(size), endOfStream: eos != 0) ?? .continue)
}

@_expose(wasm, "proxy_on_upstream_data") @_cdecl("proxy_on_upstream_data")
func _onUpstreamData(_ id: UInt32, _ size: UInt32, _ eos: UInt32) -> UInt32 {
    Runtime.action(Runtime.connection(id)?.onUpstreamData(size: Int(size), endOfStream: eos != 0) ?? .continue)
}

@_expose(wasm, "proxy_on_downstream_connection_close") @_cdecl("proxy_on_downstream_connection_close")
func _onDownstreamClose(_ id: UInt32, _ peer: UInt32) {
    Runtime.connection(id)?.onDownstreamClose(peer: Peer(rawValue: peer) ?? .unknown)
}

@_expose(wasm, "proxy_on_upstream_connection_close") @_cdecl("proxy_on_upstream_connection_close")
func _onUpstreamClose(_ id: UInt32, _ peer: UInt32) {
    Runtime.connection(id)?.onUpstreamClose(peer: Peer(rawValue: peer) ?? .unknown)
}

@_expose(wasm, "proxy_on_grpc_receive_initial_metadata") @_cdecl("proxy_on_grpc_receive_initial_metadata")
func _onGrpcInitialMetadata(_ root: UInt32, _ token: UInt32, _ count: UInt32) {
    Runtime.grpc[token]?.initialMetadata?(Headers.grpcInitialMetadata.all)
}

@_expose(wasm, "proxy_on_grpc_receive") @_cdecl("proxy_on_grpc_receive")
func _onGrpcReceive(_ root: UInt32, _ token: UInt32, _ size: UInt32) {
    guard let handlers = Runtime.grpc[token] else { return }
    if let message = handlers.message {
        message(Body.grpcMessage.bytes)
    } else {
        // A unary call's reply ends it.
        Runtime.grpc[token] = nil
        handlers.outcome(.message(Body.grpcMessage.bytes))
    }
}

@_expose(wasm, "proxy_on_grpc_receive_trailing_metadata") @_cdecl("proxy_on_grpc_receive_trailing_metadata")
func _onGrpcTrailingMetadata(_ root: UInt32, _ token: UInt32, _ count: UInt32) {
    Runtime.grpc[token]?.trailingMetadata?(Headers.grpcTrailingMetadata.all)
}

@_expose(wasm, "proxy_on_grpc_close") @_cdecl("proxy_on_grpc_close")
func _onGrpcClose(_ root: UInt32, _ token: UInt32, _ status: UInt32) {
    guard let handlers = Runtime.grpc.removeValue(forKey: token) else { return }
    var code: UInt32 = 0
    var ptr: UnsafeMutablePointer<UInt8>? = nil
    var len = 0
    let message = _proxy_get_status(&code, &ptr, &len) == 0 ? takeString(ptr, len) : ""
    handlers.outcome(.closed(status: status, message: message))
}

@_expose(wasm, "proxy_on_log") @_cdecl("proxy_on_log")
func _onLog(_ id: UInt32) {
    if Runtime.connections[id] != nil { Runtime.connection(id)?.onLog() } else { Runtime.stream(id)?.onLog() }
}

@_expose(wasm, "proxy_on_done") @_cdecl("proxy_on_done")
func _onDone(_ id: UInt32) -> UInt32 { 1 }

@_expose(wasm, "proxy_on_delete") @_cdecl("proxy_on_delete")
func _onDelete(_ id: UInt32) {
    Runtime.streams[id] = nil
    Runtime.connections[id] = nil
    Runtime.created[id] = nil
}

// MARK: - Helpers

func takeBytes(_ ptr: UnsafeMutablePointer<UInt8>?, _ len: Int) -> [UInt8] {
    guard let ptr else { return [] }
    defer { ptr.deallocate() }
    return Array(UnsafeBufferPointer(start: ptr, count: len))
}

func takeString(_ ptr: UnsafeMutablePointer<UInt8>?, _ len: Int) -> String {
    guard let ptr else { return "" }
    defer { ptr.deallocate() }
    return String(decoding: UnsafeBufferPointer(start: ptr, count: len), as: UTF8.self)
}

func encodePairs(_ pairs: [(String, String)]) -> [UInt8] {
    guard !pairs.isEmpty else { return [] }
    var out: [UInt8] = []
    func u32(_ v: Int) { for i in 0..<4 { out.append(UInt8(truncatingIfNeeded: v >> (i * 8))) } }
    u32(pairs.count)
    for (k, v) in pairs { u32(k.utf8.count); u32(v.utf8.count) }
    for (k, v) in pairs {
        out.append(contentsOf: k.utf8); out.append(0)
        out.append(contentsOf: v.utf8); out.append(0)
    }
    return out
}

func decodePairs(_ b: UnsafeBufferPointer<UInt8>) -> [(String, String)] {
    func u32(_ at: Int) -> Int { Int(b[at]) | Int(b[at + 1]) << 8 | Int(b[at + 2]) << 16 | Int(b[at + 3]) << 24 }
    let n = u32(0)
    var offset = 4 + n * 8
    var out: [(String, String)] = []
    for i in 0..<n {
        let kl = u32(4 + i * 8), vl = u32(8 + i * 8)
        guard offset + kl + vl + 2 <= b.count else { break }
        let k = String(decoding: UnsafeBufferPointer(rebasing: b[offset..<(offset + kl)]), as: UTF8.self)
        offset += kl + 1
        let v = String(decoding: UnsafeBufferPointer(rebasing: b[offset..<(offset + vl)]), as: UTF8.self)
        offset += vl + 1
        out.append((k, v))
    }
    return out
}
