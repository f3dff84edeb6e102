import Foundation
import Logging
import SluiceConfig
import SluiceCore
import XCTest

/// The binary as operators run it: graceful drain on SIGTERM, refusal to start on bad config,
/// and the admin API.
final class LifecycleTests: XCTestCase {
    func testGracefulDrainFinishesTheRequestInFlight() async throws {
        let upstream = try await TestUpstream.start(name: "u", group: testGroup)
        let port = SluiceProcess.freePort(), admin = SluiceProcess.freePort()
        let sluice = try SluiceProcess(config: """
            admin: { address: "127.0.0.1:\(admin)" }
            drain_timeout: 10s
            listeners:
              - { name: main, address: "127.0.0.1:\(port)", routes: [{ match: { prefix: / }, cluster: u }] }
            clusters:
              - { name: u, endpoints: ["127.0.0.1:\(upstream.port)"] }
            """)
        try sluice.waitReady(adminPort: admin)
        // An idle keep-alive connection, and one with a slow request in flight.
        let idle = try RawHTTPClient(port: port)
        XCTAssertEqual(try idle.request("GET", "/warm").status, 200)
        let inFlight = try RawHTTPClient(port: port, timeout: 10)
        try inFlight.send("GET /slow/800 HTTP/1.1\r\nHost: a\r\n\r\n")
        XCTAssertTrue(eventually { upstream.requests.load(ordering: .relaxed) == 2 }, "the slow request reached the upstream")

        sluice.terminate(signal: SIGTERM)
        // New connections are refused once the listener is closed.
        XCTAssertTrue(eventually { (try? RawHTTPClient(port: port, timeout: 1)) == nil }, "the listener stops accepting")
        XCTAssertTrue(idle.isClosedByPeer(), "idle keep-alive connections are closed at once")

        let response = try await blocking { try inFlight.readResponse().0 }
        XCTAssertEqual(response.status, 200, "the request in flight completes during the drain")
        XCTAssertTrue(response.text.hasPrefix("slow 800"))
        XCTAssertEqual(response.header("connection"), "close", "and is told the connection ends")
        XCTAssertEqual(sluice.waitExit(), 0, "sluice exits cleanly after draining")
        await upstream.stop()
    }

    func testSIGHUPReloadsTheConfiguration() async throws {
        let port = SluiceProcess.freePort(), admin = SluiceProcess.freePort()
        func config(_ body: String) -> String {
            """
            admin: { address: "127.0.0.1:\(admin)" }
            listeners:
              - { name: main, address: "127.0.0.1:\(port)", routes: [{ match: { prefix: / }, direct_response: { status: 200, body: "\(body)" } }] }
            """
        }
        let sluice = try SluiceProcess(config: config("before"), arguments: ["--no-watch"])
        try sluice.waitReady(adminPort: admin)
        XCTAssertEqual(try httpGet(port, "/").text, "before")
        try config("after").write(toFile: sluice.configPath, atomically: true, encoding: .utf8)
        usleep(300_000)
        XCTAssertEqual(try httpGet(port, "/").text, "before", "--no-watch: file changes alone do nothing")
        sluice.terminate(signal: SIGHUP)
        XCTAssertTrue(eventually { (try? httpGet(port, "/").text) == "after" }, "SIGHUP reloads")
        sluice.terminate()
        XCTAssertEqual(sluice.waitExit(), 0)
    }

    func testRunRefusesAnInvalidConfigWithItsPosition() throws {
        let sluice = try SluiceProcess(config: """
            listeners:
              - name: main
                address: 127.0.0.1:1
                routes: [{ match: { prefix: / }, cluster: missing }]
            """)
        XCTAssertEqual(sluice.waitExit(), 1)
        let err = String(decoding: sluice.stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertTrue(err.contains(":4:") && err.contains("listeners[0].routes[0].cluster") && err.contains("unknown cluster 'missing'"), err)
    }

    /// The engine choice an operator sees: Wasmtime by default when its library is there;
    /// without it plugins that name no engine fall back to WasmKit (with a warning) and
    /// serve, while one that asks for Wasmtime is refused at start with the reason.
    func testWasmEngineDefaultAndFallback() async throws {
        let module = try TestFilters.path("c-conformance")
        func config(_ port: Int, _ admin: Int, runtime: String) -> String {
            """
            admin: { address: "127.0.0.1:\(admin)" }
            listeners:
              - name: main
                address: 127.0.0.1:\(port)
                http_filters: [c]
                routes: [{ match: { prefix: / }, direct_response: { status: 200, body: ok } }]
            plugins:
              - { name: c, module: "\(module)"\(runtime) }
            """
        }
        for (environment, expected) in [([String: String](), "wasmtime"), (["SLUICE_WASMTIME_LIBRARY": "/nonexistent/libwasmtime.so"], "wasmkit")] {
            let port = SluiceProcess.freePort(), admin = SluiceProcess.freePort()
            let sluice = try SluiceProcess(config: config(port, admin, runtime: ""), arguments: ["--no-watch"], environment: environment)
            try sluice.waitReady(adminPort: admin)
            let r = try httpGet(port, "/", headers: [("x-test", "none")])
            XCTAssertEqual(r.status, 200)
            XCTAssertEqual(r.header("x-c-response"), "seen", "the filter ran")
            let plugins = try httpGet(admin, "/plugins").text
            XCTAssertTrue(plugins.contains("\"runtime\":\"\(expected)\""), plugins)
            sluice.terminate()
            _ = sluice.waitExit()
            if expected == "wasmkit" {
                let err = String(decoding: sluice.stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                XCTAssertTrue(err.contains("plugin runs on WasmKit") && err.contains("/nonexistent/libwasmtime.so"), err)
            }
        }
        let refused = try SluiceProcess(config: config(SluiceProcess.freePort(), SluiceProcess.freePort(), runtime: ", runtime: wasmtime"),
                                        environment: ["SLUICE_WASMTIME_LIBRARY": "/nonexistent/libwasmtime.so"])
        XCTAssertEqual(refused.waitExit(), 1)
        let err = String(decoding: refused.stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertTrue(err.contains("plugin 'c'") && err.contains("runtime wasmtime") && err.contains("Wasmtime is not available"), err)
    }

    /// Wasmtime's compiled code is kept on disk and reused; a damaged cache file is not
    /// trusted (the module is compiled again and serves), and a directory others may write
    /// to is not used at all.
    func testWasmtimeCodeCache() async throws {
        let module = try TestFilters.path("c-conformance")
        let cache = NSTemporaryDirectory() + "sluice-code-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: cache) }
        func serve() throws {
            let port = SluiceProcess.freePort(), admin = SluiceProcess.freePort()
            let sluice = try SluiceProcess(config: """
                admin: { address: "127.0.0.1:\(admin)" }
                listeners:
                  - { name: main, address: "127.0.0.1:\(port)", http_filters: [c], routes: [{ match: { prefix: / }, direct_response: { status: 200, body: ok } }] }
                plugins:
                  - { name: c, module: "\(module)", runtime: wasmtime }
                """, arguments: ["--no-watch"], environment: ["SLUICE_WASM_CODE_CACHE": cache])
            defer { sluice.terminate(); _ = sluice.waitExit() }
            try sluice.waitReady(adminPort: admin)
            XCTAssertEqual(try httpGet(port, "/", headers: [("x-test", "none")]).header("x-c-response"), "seen")
        }
        try serve()
        let files = try FileManager.default.contentsOfDirectory(atPath: cache).filter { $0.hasSuffix(".cwasm") }
        XCTAssertEqual(files.count, 1, "the compiled module was kept")
        try Data(repeating: 0x41, count: 4096).write(to: URL(fileURLWithPath: cache + "/" + files[0]))
        try serve()  // the damaged file is refused by Wasmtime's checks; compiled afresh
        XCTAssertNotEqual(try Data(contentsOf: URL(fileURLWithPath: cache + "/" + files[0])).first, 0x41, "and replaced")

        try FileManager.default.removeItem(atPath: cache)
        try FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o777])
        chmod(cache, 0o777)
        try serve()
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: cache), [], "a world-writable directory is not a cache")
    }

    func runValidate(_ path: String) throws -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try sluiceBinary())
        p.arguments = ["validate", path]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = Pipe()
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return (p.terminationStatus, text)
    }

    func testValidateCommand() throws {
        let bad = NSTemporaryDirectory() + "bad-\(UUID().uuidString).yaml"
        try """
            listeners:
              - name: web
                address: 127.0.0.1:8080
                routes: [{ match: { prefix: / }, cluster: ghost }]
            clusters:
              - { name: real, endpoints: ["127.0.0.1:1"], lb: fastest }
            """.write(toFile: bad, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: bad) }
        let (status, output) = try runValidate(bad)
        XCTAssertEqual(status, 1)
        let lines = output.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 2, output)
        XCTAssertTrue(lines[0].hasPrefix("\(bad):4:47: error: listeners[0].routes[0].cluster: unknown cluster 'ghost'"), lines[0])
        XCTAssertTrue(lines[1].hasPrefix("\(bad):6:51: error: clusters[0].lb: expected one of round_robin"), lines[1])
    }

    func testValidateListsUnsupportedEnvoyFields() throws {
        let file = NSTemporaryDirectory() + "envoy-\(UUID().uuidString).yaml"
        try """
            static_resources:
              listeners:
              - name: l
                address: { socket_address: { address: 127.0.0.1, port_value: 10000 } }
                per_connection_buffer_limit_bytes: 1024
                filter_chains:
                - filters:
                  - name: envoy.filters.network.tcp_proxy
                    typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: t, cluster: c }
              clusters:
              - name: c
                load_assignment: { cluster_name: c, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 1 } } } }] }] }
            """.write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try sluiceBinary())
        p.arguments = ["validate", "--envoy-config", file]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 2, "unsupported fields: exit 2")
        XCTAssertTrue(text.contains("\(file):5:5: unsupported: static_resources.listeners[0].per_connection_buffer_limit_bytes"), text)
    }

    func testEveryExampleConfigValidates() throws {
        _ = try TestFilters.path("swift-headers")  // examples load the demo filter
        let examples = packageRoot.appendingPathComponent("examples")
        let files = try FileManager.default.contentsOfDirectory(atPath: examples.path).filter { $0.hasSuffix(".yaml") }
        XCTAssertFalse(files.isEmpty)
        for file in files {
            let (status, output) = try runValidate(examples.appendingPathComponent(file).path)
            XCTAssertEqual(status, 0, "\(file): \(output)")
        }
    }

    /// Every example config starts (with its filters) and answers requests, on free ports and
    /// with a test upstream in place of the demo one.
    func testEveryExampleStartsAndServes() async throws {
        _ = try TestFilters.path("swift-headers")
        let upstream = try await TestUpstream.start(name: "origin", group: testGroup)
        let examples = packageRoot.appendingPathComponent("examples")
        for file in try FileManager.default.contentsOfDirectory(atPath: examples.path).filter({ $0.hasSuffix(".yaml") }).sorted() {
            var config = try ConfigLoader.load(file: examples.appendingPathComponent(file).path)
            config.admin.address = HostPort(host: "127.0.0.1", port: 0)
            config.accessLog.format = .off
            for i in config.listeners.indices { config.listeners[i].address.port = 0 }
            for i in config.clusters.indices {
                config.clusters[i].endpoints = [EndpointConfig(address: HostPort(host: "127.0.0.1", port: upstream.port))]
                config.clusters[i].healthCheck = nil
            }
            var logger = Logger(label: "example")
            logger.logLevel = .critical
            let server = SluiceServer(config: config, workers: 1, logger: logger)
            try await server.start()
            for listener in config.listeners where listener.proto == .http {
                let r = try httpGet(server.address(ofListener: listener.name)!.port!, "/api/x")
                XCTAssertLessThan(r.status, 500, "\(file): \(r.status) \(r.text)")
            }
            await server.shutdown(drainTimeout: .seconds(1))
        }
        await upstream.stop()
    }

    func testAdminEndpoints() async throws {
        let upstream = try await TestUpstream.start(name: "u", group: testGroup)
        let proxy = try await ProxyUnderTest.start("""
            listeners:
              - { name: main, address: "127.0.0.1:0", routes: [{ name: all, match: { prefix: / }, cluster: u }] }
            clusters:
              - { name: u, endpoints: ["127.0.0.1:{{u}}"] }
            """, ports: ["u": upstream.port])
        let port = proxy.port(), admin = proxy.adminPort
        try await blocking {
            XCTAssertEqual(try httpGet(admin, "/ready").text, "LIVE\n")
            for path in ["/a", "/b", "/status/500"] { _ = try httpGet(port, path) }
            let stats = try httpGet(admin, "/stats")
            XCTAssertEqual(stats.header("content-type"), "text/plain; version=0.0.4")
            for line in [
                "sluice_listener_requests_total{listener=\"main\"} 3",
                "sluice_listener_responses_total{listener=\"main\",class=\"2xx\"} 2",
                "sluice_listener_responses_total{listener=\"main\",class=\"5xx\"} 1",
                "sluice_route_requests_total{listener=\"main\",route=\"all\"} 3",
                "sluice_cluster_requests_total{cluster=\"u\"} 3",
                "sluice_cluster_upstream_connections_active{cluster=\"u\"} ",
                "# TYPE sluice_listener_connections_active gauge",
            ] {
                XCTAssertTrue(stats.text.contains(line), "missing \(line)")
            }
            let dump = try httpGet(admin, "/config_dump")
            XCTAssertEqual(dump.header("content-type"), "application/json")
            let json = try JSONSerialization.jsonObject(with: Data(dump.body)) as! [String: Any]
            let clusters = json["clusters"] as! [[String: Any]]
            XCTAssertEqual(clusters.first?["name"] as? String, "u")
            XCTAssertEqual(clusters.first?["lb"] as? String, "round_robin", "defaults are filled in")
            XCTAssertEqual(try httpGet(admin, "/nope").status, 404)
        }
        await proxy.stop()
        await upstream.stop()
    }
}
