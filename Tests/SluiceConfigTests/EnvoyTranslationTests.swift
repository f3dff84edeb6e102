import SluiceConfig
import XCTest

/// Envoy bootstraps become Sluice configuration; what Sluice cannot do is named by path.
final class EnvoyTranslationTests: XCTestCase {
    let bootstrap = """
        admin:
          address: { socket_address: { address: 127.0.0.1, port_value: 9901 } }
        static_resources:
          listeners:
          - name: edge
            address: { socket_address: { address: 0.0.0.0, port_value: 10000 } }
            filter_chains:
            - filters:
              - name: envoy.filters.network.http_connection_manager
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                  stat_prefix: ingress
                  use_remote_address: true
                  route_config:
                    virtual_hosts:
                    - name: api
                      domains: ["api.example.com", "*.api.example.com"]
                      routes:
                      - match: { prefix: "/v1/", headers: [{ name: x-canary, string_match: { exact: "1" } }] }
                        route: { cluster: api, prefix_rewrite: "/", timeout: 2.5s, host_rewrite_literal: api.internal }
                      - match: { safe_regex: { regex: "^/items/[0-9]+$" } }
                        direct_response: { status: 418, body: { inline_string: "teapot" } }
                  http_filters:
                  - name: envoy.filters.http.router
                    typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
          - name: raw
            address: { socket_address: { address: 127.0.0.1, port_value: 10001 } }
            filter_chains:
            - filters:
              - name: envoy.filters.network.tcp_proxy
                typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: tcp, cluster: api }
          clusters:
          - name: api
            type: STRICT_DNS
            lb_policy: LEAST_REQUEST
            connect_timeout: 0.25s
            circuit_breakers: { thresholds: [{ max_connections: 10 }] }
            load_assignment:
              cluster_name: api
              endpoints:
              - lb_endpoints:
                - endpoint: { address: { socket_address: { address: backend.local, port_value: 8080 } } }
                  load_balancing_weight: 3
            health_checks:
            - timeout: 1s
              interval: 5s
              unhealthy_threshold: 2
              healthy_threshold: 1
              http_health_check: { path: /healthz }
        """

    func testTranslatesListenersRoutesAndClusters() throws {
        let result = try EnvoyTranslation.translate(yaml: bootstrap, file: "envoy.yaml")
        let c = result.config
        XCTAssertEqual(c.admin.address, HostPort(host: "127.0.0.1", port: 9901))
        XCTAssertEqual(c.listeners.map(\.name), ["edge", "raw"])
        let edge = c.listeners[0]
        XCTAssertEqual(edge.address.port, 10000)
        XCTAssertEqual(edge.routes.count, 2)
        XCTAssertEqual(edge.routes[0].virtualHost, VirtualHostRef(index: 0, name: "api", domains: ["api.example.com", "*.api.example.com"]),
                       "routes keep their virtual host, whose domains are matched Envoy's way")
        XCTAssertEqual(edge.routes[0].match.path, .prefix("/v1/"))
        XCTAssertEqual(edge.routes[0].match.headers, [HeaderMatch(name: "x-canary", value: "1")])
        guard case .cluster(let target) = edge.routes[0].action else { return XCTFail() }
        XCTAssertEqual(target.cluster, "api")
        XCTAssertEqual(target.prefixRewrite, "/")
        XCTAssertEqual(target.hostRewrite, "api.internal")
        XCTAssertEqual(target.timeout, .milliseconds(2500))
        XCTAssertEqual(edge.routes[1].action, .directResponse(status: 418, body: "teapot"))
        XCTAssertEqual(edge.routes[1].match.path, .regex("^/items/[0-9]+$"))
        XCTAssertEqual(c.listeners[1].proto, .tcp)
        XCTAssertEqual(c.listeners[1].tcpCluster, "api")
        let api = c.clusters[0]
        XCTAssertEqual(api.lb, .leastRequest)
        XCTAssertEqual(api.connectTimeout, .milliseconds(250))
        XCTAssertEqual(api.endpoints, [EndpointConfig(address: HostPort(host: "backend.local", port: 8080), weight: 3)])
        XCTAssertEqual(api.healthCheck?.path, "/healthz")
        XCTAssertEqual(api.healthCheck?.unhealthyThreshold, 2)
    }

    func testConnectionManagerTimeoutsKeepEnvoysMeaning() throws {
        let indent = "\n" + String(repeating: " ", count: 10)
        let yaml = bootstrap.replacingOccurrences(of: "stat_prefix: ingress", with: ["stat_prefix: ingress", "stream_idle_timeout: 30s",
            "request_timeout: 20s", "request_headers_timeout: 5s",
            "common_http_protocol_options: { idle_timeout: 120s, max_connection_duration: 600s }"].joined(separator: indent))
        let result = try EnvoyTranslation.translate(yaml: yaml, file: "envoy.yaml")
        let edge = result.config.listeners[0]
        XCTAssertEqual(edge.streamIdleTimeout, .seconds(30))
        XCTAssertEqual(edge.requestTimeout, .seconds(20))
        XCTAssertEqual(edge.requestHeadersTimeout, .seconds(5))
        XCTAssertEqual(edge.idleTimeout, .seconds(120))
        XCTAssertEqual(edge.maxConnectionDuration, .seconds(600))
        XCTAssertFalse(result.unsupported.map(\.keyPath).contains { $0.contains("timeout") || $0.contains("common_http") })
        // Silent on them: Sluice's safer defaults stay.
        let plain = try EnvoyTranslation.translate(yaml: bootstrap, file: "envoy.yaml").config.listeners[0]
        XCTAssertEqual(plain.requestHeadersTimeout, .seconds(10))
        XCTAssertEqual(plain.streamIdleTimeout, .seconds(60))
    }

    func testUnsupportedFieldsAreReportedByPathAndLine() throws {
        let result = try EnvoyTranslation.translate(yaml: bootstrap, file: "envoy.yaml")
        let paths = result.unsupported.map(\.keyPath)
        XCTAssertEqual(paths, [
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.use_remote_address",
            "static_resources.clusters[0].circuit_breakers",
        ])
        XCTAssertEqual(result.unsupported[0].line, 13)
        XCTAssertEqual(result.unsupported[1].line, 37)
        XCTAssertTrue(result.unsupported[1].message.contains("not supported"))
    }

    func testWasmFilterBecomesAPlugin() throws {
        let module = NSTemporaryDirectory() + "compat-\(UUID().uuidString).wasm"
        FileManager.default.createFile(atPath: module, contents: Data([0]))
        defer { try? FileManager.default.removeItem(atPath: module) }
        let yaml = bootstrap.replacingOccurrences(of: """
                  - name: envoy.filters.http.router
        """, with: """
                  - name: envoy.filters.http.wasm
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
                      config:
                        name: auth
                        root_id: auth_root
                        fail_open: true
                        configuration: { "@type": type.googleapis.com/google.protobuf.StringValue, value: '{"k": 1}' }
                        vm_config:
                          vm_id: shared
                          runtime: envoy.wasm.runtime.v8
                          code: { local: { filename: \(module) } }
                          environment_variables: { key_values: { MODE: prod } }
                  - name: envoy.filters.http.router
        """)
        let c = try EnvoyTranslation.translate(yaml: yaml, file: "envoy.yaml").config
        XCTAssertEqual(c.listeners[0].httpFilters, ["auth"])
        let p = c.plugins[0]
        XCTAssertEqual(p.rootID, "auth_root")
        XCTAssertEqual(p.vmID, "shared")
        XCTAssertEqual(p.configuration, #"{"k": 1}"#, "StringValue configuration is passed raw")
        XCTAssertEqual(p.environment, ["MODE": "prod"])
        XCTAssertEqual(p.failurePolicy, .failOpen, "fail_open: true means FAIL_OPEN; the default is FAIL_CLOSED")
    }

    func testDetectsEnvoyFormat() {
        XCTAssertTrue(EnvoyTranslation.looksLikeEnvoy(yaml: bootstrap))
        XCTAssertFalse(EnvoyTranslation.looksLikeEnvoy(yaml: "listeners: []\nclusters: []\n"))
    }

    func testBrokenReferencesAreErrors() {
        let broken = bootstrap.replacingOccurrences(of: "route: { cluster: api,", with: "route: { cluster: nowhere,")
        XCTAssertThrowsError(try EnvoyTranslation.translate(yaml: broken, file: "envoy.yaml")) { error in
            XCTAssertTrue("\(error)".contains("unknown cluster 'nowhere'"), "\(error)")
        }
    }
    // MARK: Envoy's loading rules

    /// The same bootstrap as users write it: lowerCamelCase names, lower-case enums, a single
    /// mapping for a list, TypedStruct-wrapped filter configs, deprecated extension names and
    /// names that are only labels.
    func testEnvoySpellingsLoadTheSameConfiguration() throws {
        let yaml = """
            staticResources:
              listeners:
                name: edge
                address: { socketAddress: { address: 127.0.0.1, portValue: 10000 } }
                filterChains:
                - filters:
                  - name: envoy.http_connection_manager
                    typedConfig:
                      "@type": type.googleapis.com/udpa.type.v1.TypedStruct
                      type_url: type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                      value:
                        statPrefix: ingress
                        codecType: auto
                        routeConfig:
                          virtualHosts:
                            name: all
                            domains: "*"
                            routes: { match: { prefix: "/" }, route: { cluster: api } }
                        httpFilters:
                          name: my-router
                          typedConfig: { "@type": type.googleapis.com/xds.type.v3.TypedStruct, type_url: type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
              clusters:
              - name: api
                type: strict_dns
                lbPolicy: least_request
                connectTimeout: 0.25s
                loadAssignment:
                  clusterName: api
                  endpoints: { lbEndpoints: { endpoint: { address: { socketAddress: { address: localhost, portValue: 8080 } } } } }
            """
        let result = try EnvoyTranslation.translate(yaml: yaml, file: "envoy.yaml")
        XCTAssertEqual(result.unsupported.map(\.description), [])
        let c = result.config
        XCTAssertEqual(c.listeners.map(\.name), ["edge"])
        XCTAssertEqual(c.listeners[0].proto, .http)
        XCTAssertEqual(c.listeners[0].routes.count, 1)
        XCTAssertEqual(c.listeners[0].routes[0].virtualHost?.domains, ["*"])
        XCTAssertEqual(c.clusters[0].lb, .leastRequest)
        XCTAssertEqual(c.clusters[0].connectTimeout, .milliseconds(250))
        XCTAssertEqual(c.clusters[0].endpoints.map(\.address.port), [8080])
    }

    func testWhatEnvoyRefusesIsRefusedWithItsPosition() {
        let cases: [(String, String, String)] = [
            ("connect_timeout: 0.25s", "connect_timeout: 5", "is not a duration"),
            ("lb_policy: LEAST_REQUEST", "lb_policy: ROUNDROBIN", "lb_policy ROUNDROBIN is not supported"),
            ("\"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router", "\"@type\": type.googleapis.com/no.such.Thing", "unknown extension type"),
        ]
        for (from, to, expected) in cases {
            let yaml = bootstrap.replacingOccurrences(of: from, with: to)
            XCTAssertNotEqual(yaml, bootstrap, from)
            XCTAssertThrowsError(try EnvoyTranslation.translate(yaml: yaml, file: "envoy.yaml")) { error in
                let text = "\(error)"
                XCTAssertTrue(text.contains(expected), text)
                XCTAssertTrue(text.contains("envoy.yaml:"), "positions kept: \(text)")
                XCTAssertTrue(text.contains("unsupported: static_resources.clusters[0].circuit_breakers"), "unsupported fields listed with the errors: \(text)")
            }
        }
    }

    func testTheNullRuntimeIsRefusedAndEnvoyRuntimesMapToAnEngine() throws {
        let module = NSTemporaryDirectory() + "rt-\(UUID().uuidString).wasm"
        FileManager.default.createFile(atPath: module, contents: Data([0]))
        defer { try? FileManager.default.removeItem(atPath: module) }
        func withRuntime(_ runtime: String) -> String {
            bootstrap.replacingOccurrences(of: """
                      - name: envoy.filters.http.router
            """, with: """
                      - name: envoy.filters.http.wasm
                        typed_config:
                          "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
                          config: { name: f, vm_config: { runtime: \(runtime), code: { local: { filename: \(module) } } } }
                      - name: envoy.filters.http.router
            """)
        }
        // The compiling engines map to Wasmtime, WAMR (an interpreter) to WasmKit.
        for (runtime, engine) in [("envoy.wasm.runtime.v8", WasmRuntime.wasmtime), ("envoy.wasm.runtime.wasmtime", .wasmtime),
                                  ("envoy.wasm.runtime.wavm", .wasmtime), ("envoy.wasm.runtime.wamr", .wasmkit)] {
            XCTAssertEqual(try EnvoyTranslation.translate(yaml: withRuntime(runtime), file: "envoy.yaml").config.plugins[0].runtime, engine, runtime)
        }
        XCTAssertNil(try EnvoyTranslation.translate(yaml: withRuntime("\"\""), file: "envoy.yaml").config.plugins[0].runtime, "no runtime: Sluice's default")
        XCTAssertThrowsError(try EnvoyTranslation.translate(yaml: withRuntime("envoy.wasm.runtime.null"), file: "envoy.yaml")) { error in
            XCTAssertTrue("\(error)".contains("null runtime"), "\(error)")
        }
    }

    func testDuplicateDomainsAreRefused() {
        let yaml = bootstrap.replacingOccurrences(of: #""*.api.example.com"]"#, with: #""*.api.example.com", "API.example.com"]"#)
        XCTAssertNotEqual(yaml, bootstrap)
        XCTAssertThrowsError(try EnvoyTranslation.translate(yaml: yaml, file: "envoy.yaml")) { error in
            XCTAssertTrue("\(error)".contains("domain 'api.example.com' is also in virtual host 'api'"), "\(error)")
        }
    }
    func testUpgradeConfigsListTheUpgradesAListenerTunnels() throws {
        let none = try EnvoyTranslation.translate(yaml: bootstrap, file: "envoy.yaml").config.listeners[0]
        XCTAssertEqual(none.upgradeTypes, [], "no upgrade_configs: no upgrades, as in Envoy")
        let yaml = bootstrap.replacingOccurrences(of: "use_remote_address: true", with: "upgrade_configs: [{ upgrade_type: WebSocket }, { upgrade_type: h2c, enabled: false }]")
        let listener = try EnvoyTranslation.translate(yaml: yaml, file: "envoy.yaml").config.listeners[0]
        XCTAssertEqual(listener.upgradeTypes, ["websocket"])
    }

    /// A PEM-looking file (translation checks files exist; it does not parse them).
    func placeholder(_ name: String) throws -> String {
        let path = NSTemporaryDirectory() + "sluice-translation-\(name)"
        try "placeholder".write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func tlsChain(_ names: String, cert: String, key: String, extra: String = "", filters: String = "stat_prefix: t") -> String {
        """
            - filter_chain_match: { server_names: [\(names)] }
              filters:
              - name: tcp
                typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, \(filters), cluster: c }
              transport_socket:
                name: envoy.transport_sockets.tls
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
                  \(extra)
                  common_tls_context:
                    tls_certificates: [{ certificate_chain: { filename: \(cert) }, private_key: { filename: \(key) } }]
        """
    }

    func tlsBootstrap(_ chains: String, inspector: Bool = true) -> String {
        """
        static_resources:
          listeners:
          - name: edge
            address: { socket_address: { address: 127.0.0.1, port_value: 10443 } }
        \(inspector ? "    listener_filters: [{ name: tls, typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector } }]" : "")
            filter_chains:
        \(chains)
          clusters:
          - name: c
            load_assignment: { cluster_name: c, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 1 } } } }] }] }
        """
    }

    /// Filter chains that differ only in server names and certificates become one listener
    /// with a certificate per name, keeping Envoy's server defaults (no ALPN unless listed,
    /// TLS 1.2 to 1.3, unknown names refused, require_client_certificate ignored without a CA).
    func testServerNameFilterChainsBecomeCertificatesPerName() throws {
        let a = try placeholder("a.pem"), ak = try placeholder("a.key"), b = try placeholder("b.pem"), bk = try placeholder("b.key")
        let yaml = tlsBootstrap(tlsChain("a.test, \"*.a.test\"", cert: a, key: ak, extra: "require_client_certificate: true") + "\n" + tlsChain("B.test", cert: b, key: bk))
        let result = try EnvoyTranslation.translate(yaml: yaml, file: "envoy.yaml")
        XCTAssertFalse(result.unsupported.contains { $0.keyPath.contains("listeners[1]") }, "\(result.unsupported)")
        let tls = try XCTUnwrap(result.config.listeners[0].tls)
        XCTAssertEqual(tls.serverNames.map(\.serverNames), [["a.test", "*.a.test"], ["b.test"]])
        XCTAssertEqual(tls.serverNames.map { $0.certificates[0].certificateChain }, [a, b])
        XCTAssertEqual(tls.alpn, [])
        XCTAssertEqual(tls.minimumVersion, .tls1_2)
        XCTAssertEqual(tls.maximumVersion, .tls1_3)
        XCTAssertTrue(tls.refuseUnknownServerNames)
        XCTAssertTrue(tls.inspectsServerName)
        XCTAssertFalse(tls.requireClientCertificate, "ignored without a trusted CA, as Envoy does")
        // Without the TLS inspector the SNI is neither matched nor reported.
        XCTAssertFalse(try EnvoyTranslation.translate(yaml: tlsBootstrap(tlsChain("a.test", cert: a, key: ak), inspector: false)).config.listeners[0].tls!.inspectsServerName)
    }

    /// What one listener cannot express is named: chains whose filters differ, inline
    /// certificates, a TLS chain beside a cleartext one.
    func testTLSChainsSluiceCannotMergeAreUnsupported() throws {
        let a = try placeholder("a.pem"), ak = try placeholder("a.key")
        let differing = tlsBootstrap(tlsChain("a.test", cert: a, key: ak) + "\n" + tlsChain("b.test", cert: a, key: ak, filters: "stat_prefix: other"))
        XCTAssertTrue(try EnvoyTranslation.translate(yaml: differing).unsupported.contains { $0.keyPath.hasSuffix("filter_chains[1].filters") })
        let inline = tlsBootstrap(tlsChain("a.test", cert: a, key: ak).replacingOccurrences(of: "certificate_chain: { filename: \(a) }", with: "certificate_chain: { inline_string: x }"))
        XCTAssertThrowsError(try EnvoyTranslation.translate(yaml: inline)) { error in
            XCTAssertTrue("\(error)".contains("inline_string"), "\(error)")
        }
    }

    /// A cluster's UpstreamTlsContext and HTTP/2 options, with Envoy's client defaults: no
    /// verification without a validation context, TLS 1.2 at most.
    func testUpstreamTLSAndHTTP2Options() throws {
        let ca = try placeholder("ca.pem")
        let yaml = bootstrap.replacingOccurrences(of: "    circuit_breakers: { thresholds: [{ max_connections: 10 }] }\n", with: """
                typed_extension_protocol_options:
                  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
                    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
                    explicit_http_config: { http2_protocol_options: {} }
                transport_socket:
                  name: envoy.transport_sockets.tls
                  typed_config:
                    "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
                    sni: api.example.com

            """).replacingOccurrences(of: """
                health_checks:
                - timeout: 1s
                  interval: 5s
                  unhealthy_threshold: 2
                  healthy_threshold: 1
                  http_health_check: { path: /healthz }
            """, with: "")
        let cluster = try EnvoyTranslation.translate(yaml: yaml).config.clusters[0]
        XCTAssertEqual(cluster.upstreamProtocol, .http2)
        let tls = try XCTUnwrap(cluster.tls)
        XCTAssertEqual(tls.serverName, "api.example.com")
        XCTAssertFalse(tls.verify)
        XCTAssertEqual(tls.maximumVersion, .tls1_2)
        let verified = yaml.replacingOccurrences(of: "sni: api.example.com", with: "sni: api.example.com\n        common_tls_context: { validation_context: { trusted_ca: { filename: \(ca) } } }")
        let checked = try XCTUnwrap(try EnvoyTranslation.translate(yaml: verified).config.clusters[0].tls)
        XCTAssertTrue(checked.verify)
        XCTAssertFalse(checked.verifyName, "Envoy checks no name without SAN matchers")
        XCTAssertEqual(checked.trustedCA, ca)
    }

    /// envoy.filters.network.wasm before tcp_proxy (or the HTTP connection manager) becomes a
    /// network filter; alone, it is refused as Envoy refuses a chain without a terminal filter.
    func testNetworkWasmFilters() throws {
        let module = try placeholder("guard.wasm")
        let wasmFilter = """
              - name: envoy.filters.network.wasm
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm
                  config:
                    name: guard
                    root_id: guard
                    fail_open: true
                    configuration: { "@type": type.googleapis.com/google.protobuf.StringValue, value: "count" }
                    vm_config: { vm_id: net, runtime: envoy.wasm.runtime.v8, code: { local: { filename: \(module) } } }

        """
        let tcpProxy = "      - name: envoy.filters.network.tcp_proxy\n"
        XCTAssertTrue(bootstrap.contains(tcpProxy))
        let yaml = bootstrap.replacingOccurrences(of: tcpProxy, with: wasmFilter + tcpProxy)
        let result = try EnvoyTranslation.translate(yaml: yaml, file: "envoy.yaml")
        let raw = result.config.listeners[1]
        XCTAssertEqual(raw.proto, .tcp)
        XCTAssertEqual(raw.networkFilters, ["guard"])
        let plugin = try XCTUnwrap(result.config.plugins.first { $0.name == "guard" })
        XCTAssertEqual(plugin.module, module)
        XCTAssertEqual(plugin.vmID, "net")
        XCTAssertEqual(plugin.configuration, "count")
        XCTAssertEqual(plugin.failurePolicy, .failOpen)
        XCTAssertFalse(result.unsupported.contains { $0.keyPath.contains("listeners[1]") }, "\(result.unsupported)")

        let tcpProxyConfig = "        typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: tcp, cluster: api }\n"
        XCTAssertTrue(bootstrap.contains(tcpProxy + tcpProxyConfig))
        let alone = bootstrap.replacingOccurrences(of: tcpProxy + tcpProxyConfig, with: wasmFilter)
        XCTAssertThrowsError(try EnvoyTranslation.translate(yaml: alone, file: "envoy.yaml")) { error in
            XCTAssertTrue("\(error)".contains("not a terminal filter"), "\(error)")
        }
    }
}
