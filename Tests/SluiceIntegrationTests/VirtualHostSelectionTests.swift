import NIOEmbedded
import NIOHTTP1
import SluiceConfig
import XCTest

@testable import SluiceCore

/// Envoy's virtual-host selection on routes translated from a bootstrap: exact domains first,
/// then suffix wildcards longest first, then prefix wildcards longest first, then `*`; the
/// Host's port takes part unless ignore_port_in_host_matching.
final class VirtualHostSelectionTests: XCTestCase {
    private func table(ignorePort: Bool = false) throws -> RouteTable {
        let hosts = [("catch-all", #"["*"]"#), ("suffix", #"["*.example.com"]"#), ("canary", #"["*-canary.example.com"]"#),
                     ("prefix", #"["api.*"]"#), ("longer-prefix", #"["api.example.*"]"#), ("exact", #"["www.example.com", "www.example.com:8080"]"#)]
            .map { #"{ name: \#($0.0), domains: \#($0.1), routes: [{ match: { prefix: "/" }, direct_response: { status: 200 } }] }"# }
            .joined(separator: ", ")
        let yaml = """
            static_resources:
              listeners:
              - name: l
                address: { socket_address: { address: 127.0.0.1, port_value: 10000 } }
                filter_chains:
                - filters:
                  - name: hcm
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                      stat_prefix: s
                      route_config:
                        ignore_port_in_host_matching: \(ignorePort)
                        virtual_hosts: [\(hosts)]
                      http_filters: [{ name: r, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } }]
            """
        let config = try EnvoyTranslation.translate(yaml: yaml, file: "envoy.yaml").config
        return ProxyRuntime(config: config, eventLoops: [EmbeddedEventLoop()]).listeners["l"]!.routes
    }

    private func host(_ table: RouteTable, _ authority: String) -> String? {
        table.route(method: .GET, authority: authority, path: "/", headers: HTTPHeaders())?.config.virtualHost?.name
    }

    func testEnvoysOrderOfPrecedence() throws {
        let t = try table()
        XCTAssertEqual(host(t, "www.example.com"), "exact", "an exact domain beats every wildcard")
        XCTAssertEqual(host(t, "WWW.Example.COM"), "exact", "case-insensitive")
        XCTAssertEqual(host(t, "a-canary.example.com"), "canary", "the longer suffix wins")
        XCTAssertEqual(host(t, "shop.example.com"), "suffix")
        XCTAssertEqual(host(t, ".example.com"), "catch-all", "a wildcard stands for at least one character")
        XCTAssertEqual(host(t, "api.other.org"), "prefix")
        XCTAssertEqual(host(t, "api.example.com"), "suffix", "suffix wildcards are tried before prefix wildcards")
        XCTAssertEqual(host(t, "api.example.net"), "longer-prefix", "the longer prefix wins")
        XCTAssertEqual(host(t, "other.org"), "catch-all")
    }

    func testThePortTakesPartUnlessIgnored() throws {
        let t = try table()
        XCTAssertEqual(host(t, "www.example.com:8080"), "exact")
        XCTAssertEqual(host(t, "www.example.com:9090"), "catch-all", "Envoy matches host:port as written")
        XCTAssertEqual(host(t, "api.other.org:10000"), "prefix")
        let ignoring = try table(ignorePort: true)
        XCTAssertEqual(host(ignoring, "www.example.com:9090"), "exact")
        XCTAssertEqual(host(ignoring, "shop.example.com:10000"), "suffix")
    }
}
