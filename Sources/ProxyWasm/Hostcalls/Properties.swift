import Foundation

/// Property values encoded as Envoy encodes attributes (ABI §4.4).
enum PropertyValue {
    case string(String)
    case bytes([UInt8])
    case int(Int64)
    case uint(UInt64)
    case bool(Bool)
    case timestamp(Date)
    case duration(Double)  // seconds
    case map([(String, String)])

    var encoded: [UInt8] {
        switch self {
        case .string(let s): return Array(s.utf8)
        case .bytes(let b): return b
        case .int(let v): return withUnsafeBytes(of: v.littleEndian) { Array($0) }
        case .uint(let v): return withUnsafeBytes(of: v.littleEndian) { Array($0) }
        case .bool(let v): return [v ? 1 : 0]
        case .timestamp(let d): return withUnsafeBytes(of: Int64(d.timeIntervalSince1970 * 1e9).littleEndian) { Array($0) }
        case .duration(let s): return withUnsafeBytes(of: Int64(s * 1e9).littleEndian) { Array($0) }
        case .map(let pairs): return Pairs.serialize(pairs)
        }
    }
}

extension PluginVM {
    func getProperty(_ pathPtr: UInt32, _ pathLen: UInt32, _ valuePtrOut: UInt32, _ valueLenOut: UInt32) -> WasmResult {
        guard let raw = bytes(pathPtr, pathLen) else { return .invalidMemoryAccess }
        let path = raw.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        guard let value = property(path, rawKey: String(decoding: raw, as: UTF8.self)) else { return .notFound }
        return copyOut(value.encoded, ptrOut: valuePtrOut, lenOut: valueLenOut)
    }

    func setProperty(_ pathPtr: UInt32, _ pathLen: UInt32, _ valuePtr: UInt32, _ valueLen: UInt32) -> WasmResult {
        guard let raw = bytes(pathPtr, pathLen), let value = bytes(valuePtr, valueLen) else { return .invalidMemoryAccess }
        guard let stream = effectiveStream else { return .notFound }
        let key = String(decoding: raw, as: UTF8.self)
        if PluginVM.builtInTopLevel.contains(key.split(separator: "\u{0}").first.map(String.init) ?? key) { return .badArgument }
        stream.filterState[key] = value
        return .ok
    }

    static let builtInTopLevel: Set<String> = [
        "request", "response", "source", "destination", "connection", "upstream", "xds",
        "plugin_name", "plugin_root_id", "plugin_vm_id", "connection_id", "sluice",
        "route_name", "cluster_name", "listener_direction",
    ]

    /// Resolves a property path. Names follow Envoy's attributes; `sluice.*` are Sluice's own.
    func property(_ path: [String], rawKey: String) -> PropertyValue? {
        guard let top = path.first else { return nil }
        let rest = Array(path.dropFirst())
        switch top {
        case "plugin_name": return rest.isEmpty ? .string(identity.name) : nil
        case "plugin_root_id": return rest.isEmpty ? .string(identity.rootID) : nil
        case "plugin_vm_id": return rest.isEmpty ? .string(identity.vmID) : nil
        case "xds" where rest.first == "node":
            return identity.node?.property(rest.dropFirst()).map { .bytes($0) }
        case "sluice":
            switch rest.first {
            case "version": return .string(PluginVM.hostVersion)
            case "abi_version": return .string(abi.rawValue)
            case "listener_name": return effectiveStream.map { .string($0.info.listenerName) }
            default: return nil
            }
        default: break
        }
        guard let stream = effectiveStream else { return nil }
        let info = stream.info
        // A TCP connection's context has no HTTP maps: request.* and response.* headers are
        // NotFound there, as in Envoy.
        let data = stream.http
        if rest.isEmpty, let state = stream.filterState[rawKey] { return .bytes(state) }
        let requestHeaders = data?.requestHeaders ?? info.finalRequestHeaders
        let responseHeaders = data?.responseHeaders ?? info.finalResponseHeaders
        func header(_ map: HeaderMap?, _ name: String) -> PropertyValue? {
            let values = map?.all(name) ?? []
            return values.isEmpty ? nil : .string(values.joined(separator: ","))
        }
        func headersProperty(_ map: HeaderMap?) -> PropertyValue? {
            guard let map else { return nil }
            if rest.count == 1 { return .map(map.pairs.filter { !$0.0.hasPrefix(":") }) }
            if rest.count == 2 { return header(map, rest[1]) }
            return nil
        }
        switch (top, rest.first ?? "") {
        case ("request", "path"): return header(requestHeaders, ":path")
        case ("request", "url_path"):
            return (requestHeaders?.first(":path")).map { .string(String($0.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0])) }
        case ("request", "host"): return header(requestHeaders, ":authority")
        case ("request", "scheme"): return header(requestHeaders, ":scheme")
        case ("request", "method"): return header(requestHeaders, ":method")
        case ("request", "headers"): return headersProperty(requestHeaders)
        case ("request", "referer"): return header(requestHeaders, "referer")
        case ("request", "useragent"): return header(requestHeaders, "user-agent")
        case ("request", "id"): return header(requestHeaders, "x-request-id")
        case ("request", "time"): return .timestamp(info.requestStart)
        case ("request", "protocol"): return info.protocolName.isEmpty ? nil : .string(info.protocolName)
        case ("request", "query"):
            guard let p = requestHeaders?.first(":path") else { return nil }
            let parts = p.split(separator: "?", maxSplits: 1)
            return .string(parts.count > 1 ? String(parts[1]) : "")
        case ("request", "duration"): return info.endTime.map { .duration($0.timeIntervalSince(info.requestStart)) }
        case ("request", "size"): return .int(Int64(info.requestBodyBytes))
        case ("request", "total_size"): return .int(Int64(info.requestBodyBytes + (requestHeaders?.byteSize ?? 0)))
        case ("request", "headers_bytes"): return .int(Int64(requestHeaders?.byteSize ?? 0))
        case ("response", "code"): return info.responseCode > 0 ? .int(Int64(info.responseCode)) : nil
        case ("response", "code_details"): return info.responseCode > 0 ? .string(info.responseCodeDetails) : nil
        case ("response", "flags"): return .int(Int64(info.responseFlags))
        case ("response", "headers"): return headersProperty(responseHeaders)
        case ("response", "trailers"): return headersProperty(data?.responseTrailers ?? info.finalResponseTrailers)
        case ("response", "grpc_status"):
            // From the trailers, or the headers of a trailers-only response, as Envoy reads it.
            let trailers = data?.responseTrailers ?? info.finalResponseTrailers
            guard let text = trailers?.first("grpc-status") ?? responseHeaders?.first("grpc-status"), let code = Int64(text) else { return nil }
            return .int(code)
        case ("response", "size"): return .int(Int64(info.responseBodyBytes))
        case ("response", "total_size"): return .int(Int64(info.responseBodyBytes + (responseHeaders?.byteSize ?? 0)))
        case ("response", "headers_bytes"): return .int(Int64(responseHeaders?.byteSize ?? 0))
        case ("source", "address"): return .string("\(info.sourceAddress):\(info.sourcePort)")
        case ("source", "port"): return .int(Int64(info.sourcePort))
        case ("destination", "address"): return .string("\(info.destinationAddress):\(info.destinationPort)")
        case ("destination", "port"): return .int(Int64(info.destinationPort))
        case ("connection", "id"): return .uint(info.connectionID)
        case ("connection", "mtls"): return .bool(info.downstreamTLS?.peerCertificatePresented ?? false)
        case ("connection", "requested_server_name"): return .string(info.downstreamTLS?.requestedServerName ?? "")
        case ("connection", _) where rest.count == 1: return info.downstreamTLS.flatMap { Self.tlsProperty(rest[0], $0) }
        case ("connection_id", _): return rest.isEmpty ? .uint(info.connectionID) : nil
        case ("upstream", "address"): return info.upstreamAddress.isEmpty ? nil : .string("\(info.upstreamAddress):\(info.upstreamPort)")
        case ("upstream", "port"): return info.upstreamAddress.isEmpty ? nil : .int(Int64(info.upstreamPort))
        case ("upstream", "request_attempt_count"): return .uint(UInt64(info.upstreamAttempts))
        case ("upstream", _) where rest.count == 1: return info.upstreamTLS.flatMap { Self.tlsProperty(rest[0], $0) }
        case ("xds", "route_name"): return info.routeName.isEmpty ? nil : .string(info.routeName)
        case ("xds", "cluster_name"): return info.clusterName.isEmpty ? nil : .string(info.clusterName)
        case ("xds", "virtual_host_name"): return info.virtualHostName.isEmpty ? nil : .string(info.virtualHostName)
        case ("xds", "listener_direction"): return .int(1)  // INBOUND: Sluice listeners face clients
        case ("xds", "route_metadata"): return info.routeMetadata?.property(rest.dropFirst()).map { .bytes($0) }
        case ("xds", "cluster_metadata"): return info.clusterMetadata?.property(rest.dropFirst()).map { .bytes($0) }
        case ("xds", "listener_metadata"): return info.listenerMetadata?.property(rest.dropFirst()).map { .bytes($0) }
        case ("xds", "upstream_host_metadata"): return info.upstreamHostMetadata?.property(rest.dropFirst()).map { .bytes($0) }
        // Names Envoy removed in 1.33, kept as aliases so filters written for older Envoy
        // (and the Go SDK's properties helpers) still work. See docs/HOST-DIFFERENCES.md.
        case ("route_name", _) where rest.isEmpty: return info.routeName.isEmpty ? nil : .string(info.routeName)
        case ("cluster_name", _) where rest.isEmpty: return info.clusterName.isEmpty ? nil : .string(info.clusterName)
        case ("listener_direction", _) where rest.isEmpty: return .int(1)
        default: return nil
        }
    }

    static let hostVersion = "sluice"

    /// A TLS connection's properties, encoded as Envoy's attributes are: the peer's subject is
    /// empty without a peer certificate, its digest and the SANs are not found.
    static func tlsProperty(_ name: String, _ tls: TLSDetails) -> PropertyValue? {
        func first(_ values: [String]) -> PropertyValue? { values.first.map { .string($0) } }
        switch name {
        case "tls_version": return .string(tls.version)
        case "subject_peer_certificate": return .string(tls.peerSubject)
        case "subject_local_certificate": return .string(tls.localSubject)
        case "uri_san_peer_certificate": return first(tls.peerURISANs)
        case "uri_san_local_certificate": return first(tls.localURISANs)
        case "dns_san_peer_certificate": return first(tls.peerDNSSANs)
        case "dns_san_local_certificate": return first(tls.localDNSSANs)
        case "sha256_peer_certificate_digest": return tls.peerSHA256Digest.isEmpty ? nil : .string(tls.peerSHA256Digest)
        default: return nil
        }
    }
}
