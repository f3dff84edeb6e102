import Foundation
import SluiceConfig
import XCTest

/// Each broken config must be refused with the exact line, column and key path of the mistake.
final class ValidationTests: XCTestCase {
    func diagnostics(_ yaml: String) -> [ConfigDiagnostic] {
        do {
            _ = try ConfigLoader.parse(yaml: yaml, file: "bad.yaml")
            XCTFail("config was accepted:\n\(yaml)")
            return []
        } catch {
            return error.diagnostics
        }
    }

    func assertOne(_ yaml: String, line: Int, column: Int, path: String, contains text: String, file: StaticString = #filePath, at: UInt = #line) {
        let found = diagnostics(yaml)
        XCTAssertEqual(found.count, 1, "expected one diagnostic, got:\n\(found.map(\.description).joined(separator: "\n"))", file: file, line: at)
        guard let d = found.first else { return }
        XCTAssertEqual(d.file, "bad.yaml", file: file, line: at)
        XCTAssertEqual(d.line, line, "line of \(d)", file: file, line: at)
        XCTAssertEqual(d.column, column, "column of \(d)", file: file, line: at)
        XCTAssertEqual(d.keyPath, path, file: file, line: at)
        XCTAssertTrue(d.message.contains(text), "'\(d.message)' should mention '\(text)'", file: file, line: at)
    }

    static let cluster = """
        clusters:
          - name: backend
            endpoints: ["127.0.0.1:9000"]
        """

    func testListenerTimeoutsAndLimits() throws {
        let config = try ConfigLoader.parse(yaml: """
            listeners:
              - name: web
                address: 127.0.0.1:8080
                request_headers_timeout: 2s
                stream_idle_timeout: 15s
                request_timeout: 30s
                max_connection_duration: 1h
                max_pipelined_requests: 8
                routes: [{ match: { prefix: / }, cluster: backend }]
            clusters: [{ name: backend, endpoints: ["127.0.0.1:9000"] }]
            """, file: "ok.yaml")
        let l = config.listeners[0]
        XCTAssertEqual(l.requestHeadersTimeout, .seconds(2))
        XCTAssertEqual(l.streamIdleTimeout, .seconds(15))
        XCTAssertEqual(l.requestTimeout, .seconds(30))
        XCTAssertEqual(l.maxConnectionDuration, .seconds(3600))
        XCTAssertEqual(l.maxPipelinedRequests, 8)
        assertOne("""
            listeners:
              - name: web
                address: 127.0.0.1:8080
                max_pipelined_requests: 0
                routes: [{ match: { prefix: / }, cluster: backend }]
            clusters: [{ name: backend, endpoints: ["127.0.0.1:9000"] }]
            """, line: 4, column: 29, path: "listeners[0].max_pipelined_requests", contains: "1")
    }

    func test01_unknownTopLevelKeyWithSuggestion() {
        assertOne("""
            listener:
              - name: x
            """, line: 1, column: 1, path: "listener", contains: "did you mean 'listeners'")
    }

    func test02_routeNamesMissingCluster() {
        assertOne("""
            listeners:
              - name: web
                address: 127.0.0.1:8080
                routes:
                  - match: { prefix: / }
                    cluster: nope
            \(Self.cluster)
            """, line: 6, column: 18, path: "listeners[0].routes[0].cluster", contains: "unknown cluster 'nope' (defined: backend)")
    }

    func test03_listenerNamesMissingPlugin() {
        assertOne("""
            listeners:
              - name: web
                address: 127.0.0.1:8080
                http_filters: [auth]
                routes: [{ match: { prefix: / }, cluster: backend }]
            \(Self.cluster)
            """, line: 4, column: 20, path: "listeners[0].http_filters[0]", contains: "unknown plugin 'auth'")
    }

    func test03b_networkFilterNamesMissingPlugin() throws {
        assertOne("""
            listeners:
              - name: db
                address: 127.0.0.1:5433
                protocol: tcp
                cluster: backend
                network_filters: [guard]
            \(Self.cluster)
            """, line: 6, column: 23, path: "listeners[0].network_filters[0]", contains: "unknown plugin 'guard'")
        let config = try ConfigLoader.parse(yaml: """
            listeners:
              - { name: db, address: 127.0.0.1:5433, protocol: tcp, cluster: backend, network_filters: [guard] }
              - { name: web, address: 127.0.0.1:8080, network_filters: [guard], routes: [{ match: { prefix: / }, cluster: backend }] }
            \(Self.cluster)
            plugins: [{ name: guard, module: /dev/null }]
            """, file: "ok.yaml")
        XCTAssertEqual(config.listeners.map(\.networkFilters), [["guard"], ["guard"]], "network filters on tcp and http listeners")
    }

    func test04_badAddress() {
        assertOne("""
            listeners:
              - name: web
                address: "localhost:99999"
                routes: [{ match: { prefix: / }, cluster: backend }]
            \(Self.cluster)
            """, line: 3, column: 14, path: "listeners[0].address", contains: "port 0-65535")
    }

    func test05_duplicateClusterName() {
        assertOne("""
            clusters:
              - name: backend
                endpoints: ["127.0.0.1:9000"]
              - name: backend
                endpoints: ["127.0.0.1:9001"]
            """, line: 4, column: 11, path: "clusters[1].name", contains: "duplicate cluster name 'backend'")
    }

    func test06_portClash() {
        assertOne("""
            listeners:
              - { name: a, address: "127.0.0.1:8080", routes: [{ match: { prefix: / }, cluster: backend }] }
              - { name: b, address: "0.0.0.0:8080", protocol: tcp, cluster: backend }
            \(Self.cluster)
            """, line: 3, column: 25, path: "listeners[1].address", contains: "port 8080 is already used by listener 'a'")
    }

    func test07_wrongTypeForInteger() {
        assertOne("""
            clusters:
              - name: backend
                endpoints: ["127.0.0.1:9000"]
                max_connections: lots
            """, line: 4, column: 22, path: "clusters[0].max_connections", contains: "expected an integer")
    }

    func test08_badDuration() {
        assertOne("""
            clusters:
              - name: backend
                endpoints: ["127.0.0.1:9000"]
                connect_timeout: soon
            """, line: 4, column: 22, path: "clusters[0].connect_timeout", contains: "expected a duration")
    }

    func test09_unknownLoadBalancer() {
        assertOne("""
            clusters:
              - name: backend
                lb: fastest
                endpoints: ["127.0.0.1:9000"]
            """, line: 3, column: 9, path: "clusters[0].lb", contains: "round_robin, least_request, random")
    }

    func test10_invalidRegex() {
        assertOne("""
            listeners:
              - name: web
                address: 127.0.0.1:8080
                routes:
                  - match: { regex: "^/(unclosed" }
                    cluster: backend
            \(Self.cluster)
            """, line: 5, column: 25, path: "listeners[0].routes[0].match.regex", contains: "invalid regular expression")
    }

    func test11_missingEndpoints() {
        assertOne("""
            clusters:
              - name: backend
                lb: random
            """, line: 2, column: 5, path: "clusters[0].endpoints", contains: "missing required key 'endpoints'")
    }

    func test12_clusterAndDirectResponseTogether() {
        assertOne("""
            listeners:
              - name: web
                address: 127.0.0.1:8080
                routes:
                  - match: { prefix: / }
                    cluster: backend
                    direct_response: { status: 200 }
            \(Self.cluster)
            """, line: 7, column: 26, path: "listeners[0].routes[0].direct_response", contains: "either 'cluster' or 'direct_response'")
    }

    func test13_unknownNestedKeyInHealthCheck() {
        assertOne("""
            clusters:
              - name: backend
                endpoints: ["127.0.0.1:9000"]
                health_check: { path: /h, intervall: 5s }
            """, line: 4, column: 31, path: "clusters[0].health_check.intervall", contains: "did you mean 'interval'")
    }

    func test14_tcpListenerWithRoutes() {
        assertOne("""
            listeners:
              - name: raw
                address: 127.0.0.1:9000
                protocol: tcp
                cluster: backend
                routes: []
            \(Self.cluster)
            """, line: 6, column: 13, path: "listeners[0].routes", contains: "for http listeners")
    }

    func test15_yamlSyntaxError() {
        assertOne("""
            listeners:
              - name: web
                address: [unclosed
            """, line: 4, column: 1, path: "", contains: "YAML syntax")
    }

    func test16_missingPluginModuleFile() {
        assertOne("""
            plugins:
              - name: auth
                module: /nonexistent/auth.wasm
            """, line: 3, column: 13, path: "plugins[0].module", contains: "module file not found")
    }

    func test17_retryConditionUnknown() {
        assertOne("""
            listeners:
              - name: web
                address: 127.0.0.1:8080
                routes:
                  - match: { prefix: / }
                    cluster: backend
                    retry: { attempts: 2, on: [timeout] }
            \(Self.cluster)
            """, line: 7, column: 36, path: "listeners[0].routes[0].retry.on[0]", contains: "connect_failure, 5xx")
    }

    func testEveryProblemIsReportedAtOnce() {
        let found = diagnostics("""
            listeners:
              - name: web
                adress: 127.0.0.1:8080
                routes:
                  - match: { prefix: / }
                    cluster: nope
            clusters:
              - name: backend
                endpoints: ["nohost"]
            """)
        XCTAssertEqual(found.map(\.keyPath), ["listeners[0].address", "listeners[0].adress", "listeners[0].routes[0].cluster", "clusters[0].endpoints[0]"],
                       "all four problems, in file order:\n\(found.map(\.description).joined(separator: "\n"))")
        XCTAssertEqual(found.map(\.line), [2, 3, 6, 9])
    }

    func testValidConfigParsesWithDefaults() throws {
        let config = try ConfigLoader.parse(yaml: """
            listeners:
              - name: web
                address: "[::1]:8080"
                routes:
                  - { match: { host: "*.example.com", prefix: /api }, cluster: backend, timeout: 250ms, prefix_rewrite: / }
            \(Self.cluster)
            plugins: []
            """)
        XCTAssertEqual(config.admin.address.description, "127.0.0.1:9901")
        XCTAssertEqual(config.listeners[0].address, HostPort(host: "::1", port: 8080))
        XCTAssertEqual(config.listeners[0].routes[0].name, "web/0")
        guard case .cluster(let target) = config.listeners[0].routes[0].action else { return XCTFail() }
        XCTAssertEqual(target.timeout, .milliseconds(250))
        XCTAssertEqual(config.clusters[0].lb, .roundRobin)
        XCTAssertEqual(config.listeners[0].maxRequestHeadersBytes, 60 * 1024)
    }

    func testStructuredPluginConfigurationBecomesJSON() throws {
        let dir = NSTemporaryDirectory()
        let module = dir + "/p-\(UUID().uuidString).wasm"
        FileManager.default.createFile(atPath: module, contents: Data([0, 0x61, 0x73, 0x6d]))
        defer { try? FileManager.default.removeItem(atPath: module) }
        let config = try ConfigLoader.parse(yaml: """
            plugins:
              - name: p
                module: \(module)
                configuration: { keys: [a, "b c"], limit: 10, on: true, nested: { x: null } }
            """)
        XCTAssertEqual(config.plugins[0].configuration, #"{"keys":["a","b c"],"limit":10,"on":true,"nested":{"x":null}}"#)
    }

    func testHostMatching() {
        XCTAssertTrue(HostMatch(pattern: "*.example.com").matches("a.b.example.com:443"))
        XCTAssertFalse(HostMatch(pattern: "*.example.com").matches("example.com"))
        XCTAssertTrue(HostMatch(pattern: "Example.com").matches("EXAMPLE.COM"))
        XCTAssertTrue(HostMatch(pattern: "*").matches("anything"))
        XCTAssertTrue(HostMatch(pattern: "::1").matches("[::1]:8080") == false)
        XCTAssertTrue(HostMatch(pattern: "[::1]").matches("[::1]:8080"))
    }
}
