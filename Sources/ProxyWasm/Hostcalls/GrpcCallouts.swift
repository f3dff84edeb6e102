/// gRPC callouts (proxy_grpc_call / _stream / _send / _cancel / _close) and their callbacks.
/// As in cpp-host, a callout belongs to the root context of whatever context started it, and
/// its callbacks are delivered there.

/// Where a gRPC callout goes and what it asks for, as the host's client needs it.
public struct GrpcCalloutRequest: Sendable {
    /// The cluster (Envoy's `envoy_grpc.cluster_name`).
    public var cluster: String
    /// `:authority`; Envoy's default is the cluster name.
    public var authority: String
    public var service: String
    public var method: String
    public var initialMetadata: [(String, String)]
    /// A unary call's one request message; nil for a stream.
    public var message: [UInt8]?
    /// Zero: no deadline.
    public var timeoutMs: UInt32
}

/// One callout in flight, as the VM tracks it.
struct GrpcCallout {
    enum Kind { case call, stream }
    let kind: Kind
    let root: UInt32
    /// proxy_grpc_close on a stream: no more messages from us; replies still arrive.
    var localClosed = false
}

/// A callout's `service` argument: a serialized `envoy.config.core.v3.GrpcService` (the C++
/// SDK's form) or a bare cluster name (the Rust and Go SDKs' form), read as Envoy reads it.
enum GrpcServiceTarget {
    case cluster(String)
    case service(cluster: String, authority: String?)

    /// Envoy first tries the bytes as a GrpcService proto, then as a cluster name. A bare name
    /// is tried first here when it names a known cluster (a name can happen to parse as a
    /// proto; Envoy would then fail it), then the proto.
    static func parse(_ bytes: [UInt8], isCluster: (String) -> Bool) -> GrpcServiceTarget? {
        let text = String(decoding: bytes, as: UTF8.self)
        if isCluster(text) { return .cluster(text) }
        if let envoyGrpc = ProtoFields(bytes)?.message(1), let cluster = envoyGrpc.string(1), !cluster.isEmpty {
            return .service(cluster: cluster, authority: envoyGrpc.string(2).flatMap { $0.isEmpty ? nil : $0 })
        }
        return nil
    }
}

/// The length-delimited fields of a protobuf message, enough to read a GrpcService. Nil when
/// the bytes are not a well-formed message.
struct ProtoFields {
    private var fields: [UInt64: [UInt8]] = [:]

    init?(_ bytes: [UInt8]) {
        var i = 0
        func varint() -> UInt64? {
            var value: UInt64 = 0
            var shift: UInt64 = 0
            while i < bytes.count, shift < 64 {
                let b = bytes[i]
                i += 1
                value |= UInt64(b & 0x7f) << shift
                if b & 0x80 == 0 { return value }
                shift += 7
            }
            return nil
        }
        guard !bytes.isEmpty else { return nil }
        while i < bytes.count {
            guard let key = varint() else { return nil }
            let field = key >> 3
            guard field > 0 else { return nil }
            switch key & 7 {
            case 0: guard varint() != nil else { return nil }
            case 1: i += 8
            case 5: i += 4
            case 2:
                guard let length = varint(), length <= UInt64(bytes.count - i) else { return nil }
                fields[field] = Array(bytes[i..<i + Int(length)])
                i += Int(length)
            default: return nil
            }
            guard i <= bytes.count else { return nil }
        }
    }

    func message(_ field: UInt64) -> ProtoFields? { fields[field].flatMap { ProtoFields($0) } }
    func string(_ field: UInt64) -> String? { fields[field].map { String(decoding: $0, as: UTF8.self) } }
}

extension PluginVM {
    func grpcCall(service: (UInt32, UInt32), serviceName: (UInt32, UInt32), method: (UInt32, UInt32), metadata: (UInt32, UInt32),
                  message: (UInt32, UInt32), timeoutMs: UInt32, tokenOut: UInt32) -> WasmResult {
        guard let body = bytes(message.0, message.1) else { return .invalidMemoryAccess }
        return startGrpc(.call, service: service, serviceName: serviceName, method: method, metadata: metadata, message: body, timeoutMs: timeoutMs, tokenOut: tokenOut)
    }

    func grpcStream(service: (UInt32, UInt32), serviceName: (UInt32, UInt32), method: (UInt32, UInt32), metadata: (UInt32, UInt32), tokenOut: UInt32) -> WasmResult {
        startGrpc(.stream, service: service, serviceName: serviceName, method: method, metadata: metadata, message: nil, timeoutMs: 0, tokenOut: tokenOut)
    }

    private func startGrpc(_ kind: GrpcCallout.Kind, service: (UInt32, UInt32), serviceName: (UInt32, UInt32), method: (UInt32, UInt32),
                           metadata: (UInt32, UInt32), message: [UInt8]?, timeoutMs: UInt32, tokenOut: UInt32) -> WasmResult {
        guard let serviceBytes = bytes(service.0, service.1), let name = string(serviceName.0, serviceName.1),
              let methodName = string(method.0, method.1) else { return .invalidMemoryAccess }
        guard let parsed = memory.withBytes(metadata.0, metadata.1, { Pairs.parse($0) }) else { return .invalidMemoryAccess }
        guard let pairs = parsed, pairs.allSatisfy({ PluginVM.validHeader($0.0, $0.1) && !$0.0.hasPrefix(":") }) else { return .badArgument }
        guard memory.withBytes(tokenOut, 4, { _ in true }) != nil else { return .invalidMemoryAccess }
        guard let services = currentServices else { return .internalFailure }
        let request: GrpcCalloutRequest
        switch GrpcServiceTarget.parse(serviceBytes, isCluster: services.hasCluster) {
        case .cluster(let cluster):
            request = GrpcCalloutRequest(cluster: cluster, authority: cluster, service: name, method: methodName, initialMetadata: pairs, message: message, timeoutMs: timeoutMs)
        case .service(let cluster, let authority):
            // A GrpcService naming a cluster that does not exist: Envoy's client cannot
            // start the call.
            guard services.hasCluster(cluster) else { return .internalFailure }
            request = GrpcCalloutRequest(cluster: cluster, authority: authority ?? cluster, service: name, method: methodName, initialMetadata: pairs, message: message, timeoutMs: timeoutMs)
        case nil:
            // Neither a proto nor a known cluster: Envoy's ParseFailure.
            return .parseFailure
        }
        let token = registerCallout()
        forgetCalloutRoot(token)
        grpcCallouts[token] = GrpcCallout(kind: kind, root: currentRootID)
        let result = services.grpcStart(vm: self, token: token, request: request)
        guard result == .ok else {
            grpcCallouts[token] = nil
            forgetCallout(token)
            return result
        }
        memory.writeU32(tokenOut, token)
        return .ok
    }

    func grpcSend(_ token: UInt32, _ ptr: UInt32, _ len: UInt32, _ endStream: UInt32) -> WasmResult {
        guard let message = bytes(ptr, len) else { return .invalidMemoryAccess }
        guard let callout = grpcCallouts[token] else { return .notFound }
        guard callout.kind == .stream else { return .badArgument }
        guard let services = services(ofRoot: callout.root) else { return .internalFailure }
        if callout.localClosed { return .ok }
        if endStream != 0 { grpcCallouts[token]?.localClosed = true }
        services.grpcSend(token: token, message: message, endStream: endStream != 0)
        return .ok
    }

    /// Stops a callout; no callback follows.
    func grpcCancel(_ token: UInt32) -> WasmResult {
        guard let callout = grpcCallouts.removeValue(forKey: token) else { return .notFound }
        forgetCallout(token)
        services(ofRoot: callout.root)?.grpcCancel(token: token)
        return .ok
    }

    /// A call: the same as cancel. A stream: half-close (end of our messages); the reply and
    /// its close still arrive.
    func grpcClose(_ token: UInt32) -> WasmResult {
        guard let callout = grpcCallouts[token] else { return .notFound }
        if callout.kind == .call { return grpcCancel(token) }
        if !callout.localClosed {
            grpcCallouts[token]?.localClosed = true
            services(ofRoot: callout.root)?.grpcSend(token: token, message: nil, endStream: true)
        }
        return .ok
    }

    // MARK: deliveries from the host's client

    /// A stream's response headers (a call's are not delivered, as in Envoy).
    public func deliverGrpcInitialMetadata(token: UInt32, metadata: HeaderMap) {
        deliverMetadata(fns.onGrpcInitialMetadata, "proxy_on_grpc_receive_initial_metadata", token: token, metadata: metadata)
    }

    /// Metadata is for streams only, readable as the GrpcInitial/TrailingMetadata map inside
    /// its callback.
    private func deliverMetadata(_ fn: WasmFunction?, _ name: String, token: UInt32, metadata: HeaderMap) {
        guard let callout = grpcCallouts[token], callout.kind == .stream else { return }
        grpcMetadata = metadata
        defer { grpcMetadata = nil }
        call(fn, name, context: callout.root, GuestArgs(UInt64(callout.root), UInt64(token), UInt64(metadata.entries.count)))
    }

    /// A message. A call's only message ends it (status OK): no close callback follows.
    public func deliverGrpcMessage(token: UInt32, message: [UInt8]) {
        guard let callout = grpcCallouts[token] else { return }
        if callout.kind == .call {
            grpcCallouts[token] = nil
            forgetCallout(token)
        }
        grpcMessage = message
        defer { grpcMessage = nil }
        call(fns.onGrpcReceive, "proxy_on_grpc_receive", context: callout.root, GuestArgs(UInt64(callout.root), UInt64(token), UInt64(message.count)))
    }

    public func deliverGrpcTrailingMetadata(token: UInt32, metadata: HeaderMap) {
        deliverMetadata(fns.onGrpcTrailingMetadata, "proxy_on_grpc_receive_trailing_metadata", token: token, metadata: metadata)
    }

    /// The end of a callout with a status other than a call's success; proxy_get_status
    /// reads the code and message inside the callback.
    public func deliverGrpcClose(token: UInt32, status: UInt32, message: String) {
        guard let callout = grpcCallouts.removeValue(forKey: token) else { return }
        forgetCallout(token)
        let saved = lastStatus
        lastStatus = (status, message)
        defer { lastStatus = saved }
        call(fns.onGrpcClose, "proxy_on_grpc_close", context: callout.root, GuestArgs(UInt64(callout.root), UInt64(token), UInt64(status)))
    }

    /// Callouts still open (a retired VM waits for none of them; they are cancelled).
    public var openGrpcTokens: [UInt32] { Array(grpcCallouts.keys) }
}
