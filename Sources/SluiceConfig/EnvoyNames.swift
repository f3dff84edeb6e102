/// How Envoy names things in a bootstrap: protobuf's JSON field-name mapping, and the
/// extensions Sluice implements with the type URLs and names (current and deprecated) that
/// select them.
enum EnvoyNames {
    /// `statPrefix` → `stat_prefix` (protobuf's JSON name back to the proto field name).
    static func snakeCase(_ key: String) -> String {
        guard key.utf8.contains(where: { $0 >= 65 && $0 <= 90 }), !key.hasPrefix("@") else { return key }
        var out = ""
        out.reserveCapacity(key.utf8.count + 4)
        for ch in key {
            if ch.isUppercase {
                out.append("_")
                out.append(contentsOf: ch.lowercased())
            } else {
                out.append(ch)
            }
        }
        return out
    }

    /// `stat_prefix` → `statPrefix`.
    static func lowerCamelCase(_ key: String) -> String {
        guard key.contains("_") else { return key }
        var out = ""
        var upper = false
        for ch in key {
            if ch == "_" {
                upper = true
            } else if upper {
                out.append(contentsOf: ch.uppercased())
                upper = false
            } else {
                out.append(ch)
            }
        }
        return out
    }

    /// The extensions Sluice implements.
    enum Extension: Equatable {
        case httpConnectionManager, tcpProxy, router, wasm, networkWasm, wasmService
        case downstreamTLS, upstreamTLS, tlsInspector, httpProtocolOptions
        case other(String)

        var label: String {
            switch self {
            case .httpConnectionManager: return "envoy.filters.network.http_connection_manager"
            case .tcpProxy: return "envoy.filters.network.tcp_proxy"
            case .router: return "envoy.filters.http.router"
            case .wasm: return "envoy.filters.http.wasm"
            case .networkWasm: return "envoy.filters.network.wasm"
            case .wasmService: return "envoy.bootstrap.wasm"
            case .downstreamTLS, .upstreamTLS: return "envoy.transport_sockets.tls"
            case .httpProtocolOptions: return "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
            case .tlsInspector: return "envoy.filters.listener.tls_inspector"
            case .other(let name): return name.isEmpty ? "?" : name
            }
        }
    }

    private static let byType: [String: Extension] = [
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager": .httpConnectionManager,
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy": .tcpProxy,
        "envoy.extensions.filters.http.router.v3.Router": .router,
        "envoy.extensions.filters.http.wasm.v3.Wasm": .wasm,
        "envoy.extensions.filters.network.wasm.v3.Wasm": .networkWasm,
        "envoy.extensions.wasm.v3.WasmService": .wasmService,
        "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext": .downstreamTLS,
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext": .upstreamTLS,
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": .httpProtocolOptions,
        "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector": .tlsInspector,
    ]

    /// Canonical names, and the deprecated ones Envoy still maps to them.
    private static let byName: [String: Extension] = [
        "envoy.filters.network.http_connection_manager": .httpConnectionManager,
        "envoy.http_connection_manager": .httpConnectionManager,
        "envoy.filters.network.tcp_proxy": .tcpProxy,
        "envoy.tcp_proxy": .tcpProxy,
        "envoy.filters.http.router": .router,
        "envoy.router": .router,
        "envoy.filters.http.wasm": .wasm,
        "envoy.filters.network.wasm": .networkWasm,
        "envoy.bootstrap.wasm": .wasmService,
    ]

    /// By `@type` (`type.googleapis.com/<message>`; the host part is not checked, as in Envoy).
    static func resolve(typeURL: String) -> Extension {
        let message = typeURL.split(separator: "/").last.map(String.init) ?? typeURL
        return byType[message] ?? .other(message)
    }

    static func resolve(named name: String) -> Extension {
        byName[name] ?? .other(name)
    }

    static func isTypedStruct(_ typeURL: String) -> Bool {
        typeURL.hasSuffix("/udpa.type.v1.TypedStruct") || typeURL.hasSuffix("/xds.type.v3.TypedStruct")
            || typeURL == "udpa.type.v1.TypedStruct" || typeURL == "xds.type.v3.TypedStruct"
    }

    /// A type URL that names an Envoy API message (supported or not), as opposed to a typo or
    /// something that is no extension at all.
    static func isKnownType(_ typeURL: String) -> Bool {
        let message = typeURL.split(separator: "/").last.map(String.init) ?? typeURL
        return ["envoy.", "udpa.", "xds.", "google."].contains { message.hasPrefix($0) } && message.contains(".v")
    }
}
