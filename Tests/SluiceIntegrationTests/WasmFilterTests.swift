import Foundation
import SluiceConfig
import XCTest

/// The Proxy-Wasm host through the real proxy: filters built from C, Embedded Swift and Go,
/// every hostcall family, pause/resume, local responses, callouts, timers, queues, shared
/// data across workers, metrics, and what happens when a filter misbehaves.
final class WasmFilterTests: EngineMatrixTestCase {
    var upstream: TestUpstream!

    override func setUp() async throws {
        upstream = try await TestUpstream.start(name: "origin", group: testGroup)
    }

    override func tearDown() async throws {
        await upstream.stop()
    }

    /// A proxy whose listener `main` runs `filters` (each `name: yaml-object`), routes `/` to
    /// the test upstream and has a cluster `authz` (the same upstream unless given).
    func proxy(filters: [(String, String)], routes: String? = nil, authzPort: Int? = nil, workers: Int = 1, extraClusters: String = "", listenerFields: String = "") async throws -> ProxyUnderTest {
        var plugins = ""
        for (name, extra) in filters {
            let module = try TestFilters.path(name.hasPrefix("swift") ? "swift-headers" : name.hasPrefix("go") ? "go-minimal" : "c-conformance")
            plugins += "  - { name: \(name), module: \"\(module)\"\(extra.isEmpty ? "" : ", " + extra) }\n"
        }
        return try await ProxyUnderTest.start("""
            listeners:
              - name: main
                address: 127.0.0.1:0
            \(listenerFields)
                http_filters: [\(filters.map(\.0).joined(separator: ", "))]
                routes:
            \(routes ?? "      - { match: { prefix: / }, cluster: origin }")
            clusters:
              - { name: origin, endpoints: ["127.0.0.1:{{origin}}"] }
              - { name: authz, endpoints: ["127.0.0.1:{{authz}}"] }
            \(extraClusters)
            plugins:
            \(plugins)
            """, ports: ["origin": upstream.port, "authz": authzPort ?? upstream.port], workers: workers)
    }

    /// One request on a new connection (blocking: the proxy runs on its own threads).
    func get(_ port: Int, _ mode: String, path: String = "/t", headers: [(String, String)] = []) throws -> RawHTTPClient.Response {
        try httpGet(port, path, headers: [("x-test", mode)] + headers)
    }

    func upstreamHeaders(_ r: RawHTTPClient.Response) throws -> [String: String] { try echoedHeaders(r) }
}

/// The headers the test upstream received, from the JSON it echoes.
func echoedHeaders(_ r: RawHTTPClient.Response) throws -> [String: String] {
    do {
        let json = try JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any]
        return json?["headers"] as? [String: String] ?? [:]
    }
}

extension WasmFilterTests {

    func testFiltersInCSwiftAndGoRunInOrder() async throws {
        let p = try await proxy(filters: [("c", "configuration: from-yaml"), ("swift", "configuration: { greeting: hi }"), ("go", "")])
        let port = p.port()
        let r = try get(port, "none")
        XCTAssertEqual(r.status, 200)
        let seen = try upstreamHeaders(r)
        XCTAssertEqual(seen["x-c-filter"], "seen")
        XCTAssertEqual(seen["x-c-config"], "from-yaml")
        XCTAssertEqual(seen["x-swift-filter"], "{\"greeting\":\"hi\"}", "structured YAML configuration arrives as JSON")
        XCTAssertEqual(seen["x-go-filter"], "go", "the Go module read the plugin_name property")
        // Responses pass the filters in reverse order: go, swift, then c (which sees them all).
        let names = r.headers.map(\.0)
        XCTAssertLessThan(names.firstIndex(of: "x-go-response")!, names.firstIndex(of: "x-swift-response")!)
        XCTAssertLessThan(names.firstIndex(of: "x-swift-response")!, names.firstIndex(of: "x-c-response")!)

        let swiftDeny = try get(port, "swift-deny")
        XCTAssertEqual(swiftDeny.status, 401)
        XCTAssertEqual(swiftDeny.header("www-authenticate"), "Basic")
        XCTAssertEqual(swiftDeny.text, "swift says no\n")
        XCTAssertEqual(swiftDeny.header("x-c-saw-status"), "401", "an earlier filter's response callback sees the local answer")
        XCTAssertNil(swiftDeny.header("x-go-response"), "a later filter that never saw the request does not see its answer")

        let goDeny = try get(port, "go-deny")
        XCTAssertEqual(goDeny.status, 418)
        XCTAssertEqual(goDeny.text, "go says no\n")
        XCTAssertEqual(upstream.requests.load(ordering: .relaxed), 1, "local answers never reach the upstream")
        await p.stop()
    }

    func testHeaderMapsPropertiesAndRouting() async throws {
        let p = try await proxy(filters: [("c", "")], routes: """
                  - { name: rewritten, match: { prefix: /rewritten }, direct_response: { status: 200, body: "rewritten route" } }
                  - { name: everything, match: { prefix: / }, cluster: origin }
            """)
        let port = p.port()
        var r = try get(port, "headers", headers: [("x-remove-me", "1"), ("user-agent", "curl")])
        var seen = try upstreamHeaders(r)
        XCTAssertEqual(seen["user-agent"], "conformance", "replace")
        XCTAssertNil(seen["x-remove-me"], "remove")
        XCTAssertEqual(seen["x-absent-is-null"], "yes", "a missing header is NotFound")
        XCTAssertEqual(seen["x-pair-count"], "10", "4 pseudo-headers, x-test, user-agent, x-forwarded-proto and x-request-id (added before filters, as Envoy) and the two the filter added")

        r = try get(port, "property", path: "/t?q=1")
        seen = try upstreamHeaders(r)
        XCTAssertEqual(seen["x-prop-path"], "/t?q=1")
        XCTAssertEqual(seen["x-prop-method"], "GET")
        XCTAssertEqual(seen["x-prop-plugin"], "c")
        XCTAssertEqual(seen["x-prop-source"], "127.0.0.1", "source.address (the filter strips the port)")
        XCTAssertEqual(seen["x-prop-route"], "everything")
        XCTAssertEqual(seen["x-prop-legacy-route"], "everything", "route_name (removed in Envoy 1.33) is accepted as an alias")
        XCTAssertEqual(seen["x-prop-header"], "property")
        XCTAssertEqual(seen["x-prop-port-encoding"], "int64", "integers are 8-byte little-endian")
        XCTAssertEqual(seen["x-prop-state"], "from-c", "proxy_set_property is readable back")
        XCTAssertEqual(seen["x-prop-missing"], "1", "unknown properties are NotFound")

        r = try get(port, "rewrite-path")
        XCTAssertEqual(r.text, "rewritten route", "a filter changing :path re-routes the request")
        XCTAssertEqual(r.header("x-c-saw-status"), "200")
        await p.stop()
    }

    /// Statuses a filter sets are validated where they take effect: `:status` and local
    /// replies take a final status (200-599) or get BadArgument; nothing crashes or wedges.
    func testStatusValuesFromAFilterAreValidated() async throws {
        let p = try await proxy(filters: [("c", "")])
        let port = p.port()
        for value in ["-1", "0", "99", "100", "101", "600", "4294967295", "abc", "20", "2000", " 200"] {
            let r = try get(port, "set-status=\(value)")
            XCTAssertEqual(r.status, 200, ":status \(value) is refused; the upstream's status stands")
            XCTAssertEqual(r.header("x-set-status-result"), "2", ":status \(value): BadArgument")
        }
        let changed = try get(port, "set-status=503")
        XCTAssertEqual(changed.status, 503)
        XCTAssertEqual(changed.header("x-set-status-result"), "0")
        for value in ["-1", "0", "99", "100", "101", "600", "4294967295"] {
            let r = try get(port, "local-status=\(value)")
            XCTAssertEqual(r.status, 200, "local reply \(value) refused; the request went on")
            XCTAssertEqual(try upstreamHeaders(r)["x-local-result"], "2", "local reply \(value): BadArgument")
        }
        XCTAssertEqual(try get(port, "local-status=418").status, 418)
        XCTAssertEqual(try get(port, "none").status, 200, "the host still serves")
        await p.stop()
    }

    /// Sends up to 100 MB of request body until the proxy answers or stops reading; returns
    /// the status (0: none) and the bytes the client managed to send.
    private static func pushHugeBody(_ port: Int, mode: String) throws -> (Int, Int) {
        let client = try RawHTTPClient(port: port, timeout: 10)
        let total = 100 << 20
        try client.send("POST /echo HTTP/1.1\r\nHost: t\r\nx-test: \(mode)\r\nContent-Length: \(total)\r\n\r\n")
        let chunk = [UInt8](repeating: UInt8(ascii: "a"), count: 64 << 10)
        var sent = 0
        while sent < total, !client.hasDataToRead() {
            guard (try? client.send(chunk)) != nil else { break }
            sent += chunk.count
        }
        return ((try? client.readResponse().0.status) ?? 0, sent)
    }

    /// StopAllIterationAndBuffer and a 100 MB body: 413 once the held body passes the buffer
    /// limit, not 100 MB buffered.
    func testStopAllAndBufferIsBoundedByTheBufferLimit() async throws {
        let p = try await proxy(filters: [("c", "buffer_limit_kb: 64")])
        let port = p.port()
        let rssBefore = residentBytes()
        let (status, sent) = try await blocking { try Self.pushHugeBody(port, mode: "stop-all-buffer") }
        XCTAssertEqual(status, 413)
        XCTAssertLessThan(sent, 100 << 20, "the connection was cut, not read to the end")
        let growth = residentBytes() - rssBefore
        XCTAssertLessThan(growth, (64 << 10) + (8 << 20), "RSS grew by \(growth) bytes")
        await p.stop()
    }

    /// StopIteration on headers (Envoy's default: StopAllIterationAndWatermark) and a 100 MB
    /// body the filter never releases: past the buffer limit Sluice stops reading the client
    /// (memory stays bounded), and the stream idle timeout ends the stream with 408.
    func testAWatermarkHoldStopsReadingTheClient() async throws {
        let p = try await proxy(filters: [("c", "buffer_limit_kb: 64")], listenerFields: "    stream_idle_timeout: 1s")
        let port = p.port()
        let rssBefore = residentBytes()
        let (status, sent) = try await blocking { try Self.pushHugeBody(port, mode: "upper-body") }
        XCTAssertEqual(status, 408, "the held stream went idle and was answered")
        XCTAssertLessThan(sent, 32 << 20, "reading stopped: the client could not push the body")
        let growth = residentBytes() - rssBefore
        XCTAssertLessThan(growth, (64 << 10) + (8 << 20), "RSS grew by \(growth) bytes")
        await p.stop()
    }

    /// A filter pausing the response headers while it makes ten callouts (the public SDK
    /// example): the response waits until all ten have answered and the filter resumes.
    func testAResponsePausedForTenCalloutsWaitsForAllOfThem() async throws {
        let p = try await proxy(filters: [("c", "")])
        let port = p.port()
        let started = ContinuousClock.now
        let r = try get(port, "ten-callouts")
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.header("x-callouts"), "all answered", "the response left before the filter resumed it")
        XCTAssertGreaterThanOrEqual(ContinuousClock.now - started, .milliseconds(100), "held for at least one callout's 100 ms")
        await p.stop()
    }

    /// A singleton Wasm service (no HTTP filter, only its root context) ticks and feeds a
    /// shared queue that the HTTP filter's VMs registered; what arrives is visible to requests.
    func testASingletonServiceFeedsAQueueTheFiltersRead() async throws {
        let module = try TestFilters.path("c-conformance")
        let p = try await ProxyUnderTest.start("""
            listeners:
              - name: main
                address: 127.0.0.1:0
                http_filters: [c]
                routes:
                  - { match: { prefix: / }, cluster: origin }
            clusters:
              - { name: origin, endpoints: ["127.0.0.1:{{origin}}"] }
            plugins:
              - { name: c, module: "\(module)", vm_id: shared }
              - { name: feeder, module: "\(module)", vm_id: shared, service: singleton, configuration: "service-feed tick" }
            """, ports: ["origin": upstream.port], workers: 2)
        let port = p.port()
        var seen: String?
        for _ in 0..<50 where seen == nil {
            try await Task.sleep(for: .milliseconds(50))
            seen = try upstreamHeaders(try get(port, "queue-read"))["x-last-event"]
        }
        XCTAssertEqual(seen, "from-service")
        await p.stop()
    }

    /// A filter holding the response (StopAllIterationAndWatermark) while the upstream sends
    /// 100 MB: past the buffer limit Sluice stops reading the upstream, memory stays bounded,
    /// and the stream idle timeout answers the client (504: the request was whole).
    func testAWatermarkHoldOnTheResponseStopsReadingTheUpstream() async throws {
        let p = try await proxy(filters: [("c", "buffer_limit_kb: 64")], listenerFields: "    stream_idle_timeout: 1s")
        let port = p.port()
        let rssBefore = residentBytes()
        let status = try await blocking { () -> Int in
            let client = try RawHTTPClient(port: port, timeout: 10)
            try client.send("GET /bytes/\(100 << 20) HTTP/1.1\r\nHost: t\r\nx-test: hold-response\r\n\r\n")
            return (try? client.readResponse().0.status) ?? 0
        }
        XCTAssertEqual(status, 504, "the held stream went idle and was answered")
        let growth = residentBytes() - rssBefore
        XCTAssertLessThan(growth, (64 << 10) + (8 << 20), "RSS grew by \(growth) bytes: the upstream was read past the limit")
        await p.stop()
    }

    /// Plugins with the same vm_id and module share one VM per worker, each with its own root
    /// context (as Envoy): a global the module sets in on_configure is the last plugin's; with
    /// different vm_ids each plugin keeps its own.
    func testPluginsWithTheSameVMIDShareOneVM() async throws {
        let module = try TestFilters.path("c-conformance")
        for (vmB, expected) in [("shared", "two"), ("other", "one")] {
            let p = try await ProxyUnderTest.start("""
                listeners:
                  - name: main
                    address: 127.0.0.1:0
                    http_filters: [a]
                    routes:
                      - { match: { prefix: / }, cluster: origin }
                  - name: other
                    address: 127.0.0.1:0
                    http_filters: [b]
                    routes:
                      - { match: { prefix: / }, cluster: origin }
                clusters:
                  - { name: origin, endpoints: ["127.0.0.1:{{origin}}"] }
                plugins:
                  - { name: a, module: "\(module)", vm_id: shared, configuration: one }
                  - { name: b, module: "\(module)", vm_id: \(vmB), configuration: two }
                """, ports: ["origin": upstream.port], workers: 1)
            let seen = try upstreamHeaders(try get(p.port(), "none"))["x-c-config"]
            XCTAssertEqual(seen, expected, "vm_id of b: \(vmB)")
            await p.stop()
        }
    }

    /// A local answer from a body callback on a routed stream, then the next request on the
    /// same connection: answered, not swallowed.
    func testALocalReplyFromABodyCallbackLeavesTheConnectionUsable() async throws {
        let p = try await proxy(filters: [("c", "")])
        let port = p.port()
        let (first, second) = try await blocking { () -> (RawHTTPClient.Response, RawHTTPClient.Response) in
            let client = try RawHTTPClient(port: port, timeout: 5)
            let first = try client.request("POST", "/echo", headers: [("x-test", "body-local")], body: "abc")
            let second = try client.request("GET", "/next")
            return (first, second)
        }
        XCTAssertEqual(first.text, "saw 3 body bytes\n")
        XCTAssertNil(first.header("connection"), "the whole request was read: the connection stays open")
        XCTAssertEqual(second.status, 200)
        XCTAssertTrue(second.text.contains("\"path\":\"/next\""), second.text)
        await p.stop()
    }

    /// `response.flags` carries Envoy's response-flag bits in on_log: NR for no route, UF for
    /// an upstream connect failure.
    func testResponseFlagsPropertyHasEnvoysBits() async throws {
        let dead = SluiceProcess.freePort()
        let p = try await proxy(filters: [("c", "")], routes: """
                  - { match: { prefix: /routed }, cluster: origin }
                  - { match: { prefix: /down }, cluster: down }
            """, extraClusters: "  - { name: down, endpoints: [\"127.0.0.1:\(dead)\"], connect_timeout: 1s }")
        let port = p.port()
        XCTAssertEqual(try get(port, "none", path: "/nowhere").status, 404)
        XCTAssertEqual(try get(port, "none", path: "/down").status, 502)
        let flags = eventually {
            let h = (try? upstreamHeaders(try get(port, "shared-read", path: "/routed"))) ?? [:]
            return Int(h["x-flags-nr"] ?? "") ?? 0 >= 1 && Int(h["x-flags-uf"] ?? "") ?? 0 >= 1
        }
        XCTAssertTrue(flags, "on_log saw response.flags 256 (NR) and 32 (UF)")
        await p.stop()
    }

    /// With allow_on_headers_stop_iteration: a filter holding the headers reads the body.
    func testBodiesPauseBufferAndRewrite() async throws {
        let p = try await proxy(filters: [("c", "buffer_limit_kb: 4, allow_on_headers_stop_iteration: true")])
        let port = p.port()
        let up = try await blocking { try RawHTTPClient(port: port).request("POST", "/echo", headers: [("x-test", "upper-body")], body: "hello body, all of it") }
        XCTAssertEqual(up.status, 200)
        XCTAssertTrue(up.text.contains("\"body\":\"HELLO BODY, ALL OF IT\""), "the filter held the headers, read the whole body and rewrote it: \(up.text)")
        XCTAssertTrue(up.text.contains("\"transfer-encoding\":\"chunked\""), "content-length removed by the filter: sent chunked")

        // Chunked upload in several pieces, buffered until the end.
        let chunked = try await blocking { () -> String in
            let c = try RawHTTPClient(port: port)
            try c.send("POST /echo HTTP/1.1\r\nHost: a\r\nx-test: upper-body\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
            usleep(50_000)
            try c.send("3\r\ndef\r\n0\r\n\r\n")
            return try c.readResponse().0.text
        }
        XCTAssertTrue(chunked.contains("\"body\":\"ABCDEF\""), chunked)

        let appended = try get(port, "append-response", path: "/bytes/10")
        XCTAssertEqual(appended.text, "xxxxxxxxxx [appended by c]")
        XCTAssertNil(appended.header("content-length"))

        let sized = try await blocking { try RawHTTPClient(port: port).request("POST", "/echo", headers: [("x-test", "body-local")], body: String(repeating: "z", count: 3000)) }
        XCTAssertEqual(sized.text, "saw 3000 body bytes\n", "a local answer given after reading the whole body")

        let tooBig = try await blocking { try RawHTTPClient(port: port).request("POST", "/echo", headers: [("x-test", "body-local")], body: String(repeating: "z", count: 6000)) }
        XCTAssertEqual(tooBig.status, 413, "a paused filter's buffer is capped (buffer_limit_kb)")
        await p.stop()
    }

    func testHTTPCallAllowsDeniesAndFails() async throws {
        var p = try await proxy(filters: [("c", "")])
        var r = try get(p.port(), "callout")
        XCTAssertEqual(r.status, 200)
        var seen = try upstreamHeaders(r)
        XCTAssertEqual(seen["x-authz-status"], "200", "the request resumed after the callout response")
        XCTAssertEqual(seen["x-authz-body-bytes"], "some")

        r = try get(p.port(), "callout-bad-cluster")
        seen = try upstreamHeaders(r)
        XCTAssertEqual(seen["x-callout-status"], "2", "an unknown cluster is BadArgument")
        await p.stop()

        // The authorization service is down: the callout fails and the filter answers 503.
        p = try await proxy(filters: [("c", "")], authzPort: SluiceProcess.freePort())
        r = try get(p.port(), "callout")
        XCTAssertEqual(r.status, 503)
        XCTAssertEqual(r.text, "authz unavailable\n")
        await p.stop()
    }

    func testSharedDataCASIsExactAcrossWorkers() async throws {
        let p = try await proxy(filters: [("c", "")], workers: 2)
        let port = p.port()
        let perClient = 50, clients = 4
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<clients {
                group.addTask {
                    try await blocking {
                        // A new connection per request spreads the load over both workers.
                        for _ in 0..<perClient { _ = try httpGet(port, "/t", headers: [("x-test", "shared")]) }
                    }
                }
            }
            try await group.waitForAll()
        }
        let r = try get(port, "shared-read")
        XCTAssertEqual(try upstreamHeaders(r)["x-hits"], String(perClient * clients), "no increment lost to a race between the two workers' VMs")
        await p.stop()
    }

    func testTimersQueuesMetricsForeignFunctionsAndGrpc() async throws {
        let p = try await proxy(filters: [("c", "configuration: tick")])
        let port = p.port()
        _ = try get(port, "enqueue")
        var seen: [String: String] = [:]
        let ok = eventually { () -> Bool in
            guard let r = try? httpGet(port, "/t", headers: [("x-test", "shared-read")]),
                  let h = try? echoedHeaders(r) else { return false }
            seen = h
            return (Int(h["x-ticks"] ?? "") ?? 0) >= 3 && h["x-last-event"] == "hello-queue"
        }
        XCTAssertTrue(ok, "on_tick runs every 20 ms and on_queue_ready drained the queue: \(seen)")

        let r = try get(port, "foreign")
        let h = try upstreamHeaders(r)
        XCTAssertEqual(h["x-foreign"], "0/0/40", "compress then uncompress round-trips 40 bytes")
        XCTAssertEqual(h["x-foreign-missing"], "1", "unknown foreign function: NotFound")
        XCTAssertEqual(try upstreamHeaders(try get(port, "grpc"))["x-grpc-status"], "4", "a gRPC service naming no cluster: ParseFailure, as Envoy")

        let stats = try p.stats()
        let requests = Int(stats.split(separator: "\n").first { $0.hasPrefix("requests ") }?.split(separator: " ").last ?? "") ?? 0
        XCTAssertGreaterThanOrEqual(requests, 4, "the filter's counter is on /stats under the name it defined, as in Envoy")
        XCTAssertTrue(stats.contains("# TYPE body_bytes histogram"), stats)
        XCTAssertTrue(stats.contains("body_bytes_bucket{le=\"+Inf\"}"))
        XCTAssertTrue(stats.contains("# TYPE in_flight gauge"))
        await p.stop()
    }

    func testStreamEndCallbacksIncludingDownstreamReset() async throws {
        let p = try await proxy(filters: [("c", "")])
        let port = p.port()
        _ = try get(port, "none")
        // A client that gives up while the upstream is still working.
        let c = try RawHTTPClient(port: port)
        try c.send("GET /slow/300 HTTP/1.1\r\nHost: a\r\n\r\n")
        usleep(100_000)
        close(c.fd)
        let logged = eventually(timeout: 5) {
            guard let r = try? httpGet(port, "/t", headers: [("x-test", "shared-read")]), let h = try? echoedHeaders(r) else { return false }
            // Three streams have ended before this one: the first request, the reset one, and
            // any earlier shared-read attempt; at least two.
            return (Int(h["x-logged"] ?? "") ?? 0) >= 2 && h["x-clock-ok"] != "-1" && h["x-log-level"] != nil
        }
        XCTAssertTrue(logged, "on_log runs for finished and for reset streams, and sees the clock")
        let h = try echoedHeaders(try get(port, "shared-read"))
        XCTAssertEqual(h["x-log-level"].flatMap { Int($0) }.map { (0...5).contains($0) }, true, "proxy_get_log_level answers a valid level")
        await p.stop()
    }

    func testOutOfBoundsPointersGetInvalidMemoryAccess() async throws {
        let p = try await proxy(filters: [("c", "")])
        let r = try get(p.port(), "oob")
        XCTAssertEqual(r.status, 200, "the host survives and the request goes on")
        let h = try upstreamHeaders(r)
        XCTAssertEqual(h["x-oob-status"], "6", "a message pointer outside memory: InvalidMemoryAccess")
        XCTAssertEqual(h["x-oob-out-status"], "6", "out-pointers outside memory: InvalidMemoryAccess")
        await p.stop()
    }

    func testTrapFailClosed() async throws {
        let p = try await proxy(filters: [("c", "failure_policy: fail_closed")])
        let port = p.port()
        XCTAssertEqual(try get(port, "trap").status, 503)
        let after = try get(port, "none")
        XCTAssertEqual(after.status, 503, "a trapped VM is never called again; fail_closed refuses its streams")
        XCTAssertEqual(try p.sample("sluice_plugin_traps_total{plugin=\"c\"}"), 1)
        XCTAssertEqual(upstream.requests.load(ordering: .relaxed), 0)
        await p.stop()
    }

    /// Unbounded recursion in a filter ends at the engine's stack limit as a trap (WasmKit's
    /// call-depth limit, Wasmtime's guarded 1 MiB Wasm stack), not in the worker's own stack:
    /// the proxy answers, and keeps answering.
    /// A module whose initial memory is over `max_memory_mb` (Go's runtime starts at 2 MiB)
    /// is refused at start with the reason, on both engines; on Wasmtime this failed
    /// instantiation once freed the store twice and crashed the process.
    func testInitialMemoryOverTheCapIsRefused() async throws {
        do {
            let p = try await proxy(filters: [("go", "max_memory_mb: 1")])
            await p.stop()
            XCTFail("a module that cannot fit its cap was accepted")
        } catch {
            XCTAssertTrue("\(error)".contains("cannot instantiate") && "\(error)".contains("memory"), "\(error)")
        }
    }

    /// Also C's shadow stack in linear memory running past the start of memory.
    func testStackOverflowIsATrap() async throws {
        for mode in ["recurse", "recurse-memory"] {
            let p = try await proxy(filters: [("c", "failure_policy: fail_closed")])
            let port = p.port()
            XCTAssertEqual(try get(port, mode).status, 503, mode)
            XCTAssertEqual(try p.sample("sluice_plugin_traps_total{plugin=\"c\"}"), 1, mode)
            XCTAssertEqual(try httpGet(p.adminPort, "/ready").status, 200, "the worker survived")
            XCTAssertEqual(try get(port, "none").status, 503, "the trapped VM stays failed (fail_closed)")
            await p.stop()
        }
    }

    func testTrapFailOpen() async throws {
        let p = try await proxy(filters: [("c", "failure_policy: fail_open"), ("swift", "configuration: still-here")])
        let port = p.port()
        let trapped = try get(port, "trap")
        XCTAssertEqual(trapped.status, 200, "fail_open: the failed filter is skipped")
        XCTAssertEqual(try upstreamHeaders(trapped)["x-swift-filter"], "still-here", "the other filters still run")
        let after = try get(port, "none")
        XCTAssertEqual(after.status, 200)
        XCTAssertNil(try upstreamHeaders(after)["x-c-filter"], "the trapped filter is not called again")
        await p.stop()
    }

    func testEndlessLoopHitsTheCPUBudget() async throws {
        let p = try await proxy(filters: [("c", "cpu_budget: 50ms, failure_policy: fail_closed")])
        let start = Date()
        let r = try get(p.port(), "loop")
        XCTAssertEqual(r.status, 503)
        XCTAssertLessThan(Date().timeIntervalSince(start), 10, "the worker was not hung by the loop")
        XCTAssertEqual(try p.sample("sluice_plugin_cpu_budget_exhausted_total{plugin=\"c\"}"), 1)
        // The proxy still serves other listeners' work on that worker: admin answers.
        XCTAssertEqual(try httpGet(p.adminPort, "/ready").status, 200)
        await p.stop()
    }

    /// Host work a filter causes counts against its budget: appends stay cheap (10,000 headers
    /// go through), replaces that scan a growing map and memory growth that copies the
    /// memory each time run out of budget instead of stalling the worker for seconds.
    func testHostWorkIsChargedToTheCPUBudget() async throws {
        let p = try await proxy(filters: [("c", "cpu_budget: 100ms, failure_policy: fail_open")])
        let port = p.port()
        var start = Date()
        let many = try get(port, "many-headers")
        XCTAssertLessThan(Date().timeIntervalSince(start), 5, "10,000 appended headers")
        XCTAssertNotEqual(many.status, 0)
        XCTAssertEqual(try p.sample("sluice_plugin_cpu_budget_exhausted_total{plugin=\"c\"}"), 0, "appends are O(1) and cheap")
        XCTAssertEqual(try get(port, "none").status, 200, "the host still serves")
        await p.stop()

        for mode in ["replace-many", "grow"] {
            // WasmKit copies the whole memory on every grow, and charges it; Wasmtime grows in
            // place (the address space is reserved up front), so growing to the cap is cheap
            // there and ends inside the budget, at the cap.
            let exhausts = mode == "replace-many" || Self.wasmRuntime == .wasmkit
            let p = try await proxy(filters: [("c", "cpu_budget: 100ms, failure_policy: fail_closed")])
            start = Date()
            let r = try get(p.port(), mode)
            XCTAssertEqual(r.status, exhausts ? 503 : 200, mode)
            XCTAssertLessThan(Date().timeIntervalSince(start), 5, "\(mode) did not stall the worker")
            XCTAssertEqual(try p.sample("sluice_plugin_cpu_budget_exhausted_total{plugin=\"c\"}"), exhausts ? 1 : 0, mode)
            XCTAssertEqual(try httpGet(p.adminPort, "/ready").status, 200)
            await p.stop()
        }
    }

    func testReloadPolicyBringsAFreshVM() async throws {
        let p = try await proxy(filters: [("c", "failure_policy: reload")])
        let port = p.port()
        XCTAssertEqual(try get(port, "trap").status, 503)
        let recovered = eventually(timeout: 5) { (try? httpGet(port, "/t").header("x-upstream")) == "origin" }
        XCTAssertTrue(recovered, "after the back-off a new VM serves again")
        XCTAssertEqual(try p.sample("sluice_plugin_reloads_total{plugin=\"c\"}"), 1)
        await p.stop()
    }

    func testPerRouteDisableAndConfiguration() async throws {
        let p = try await proxy(filters: [("c", "configuration: default-conf")], routes: """
                  - { match: { prefix: /plain }, cluster: origin, plugins: { c: { disabled: true } } }
                  - { match: { prefix: /special }, cluster: origin, plugins: { c: { configuration: special-conf } } }
                  - { match: { prefix: / }, cluster: origin }
            """)
        let port = p.port()
        XCTAssertNil(try upstreamHeaders(try get(port, "none", path: "/plain"))["x-c-filter"])
        XCTAssertEqual(try upstreamHeaders(try get(port, "none", path: "/special"))["x-c-config"], "special-conf")
        XCTAssertEqual(try upstreamHeaders(try get(port, "none", path: "/other"))["x-c-config"], "default-conf")
        await p.stop()
    }

    func testBrokenPluginsAreRefusedAtStart() async throws {
        for (conf, expected) in [("configuration: reject", "proxy_on_configure returned false"),
                                 ("configuration: trap-on-configure", "proxy_on_configure trapped")] {
            do {
                let p = try await proxy(filters: [("c", conf)])
                await p.stop()
                XCTFail("\(conf) was accepted")
            } catch {
                XCTAssertTrue("\(error)".contains(expected), "\(error)")
                XCTAssertTrue("\(error)".contains("plugin 'c'"), "\(error)")
            }
        }
        // A file that is not a Proxy-Wasm module.
        let bogus = NSTemporaryDirectory() + "bogus-\(UUID().uuidString).wasm"
        try Data([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]).write(to: URL(fileURLWithPath: bogus))
        defer { try? FileManager.default.removeItem(atPath: bogus) }
        do {
            _ = try await ProxyUnderTest.start("""
                listeners: [{ name: main, address: "127.0.0.1:0", http_filters: [x], routes: [{ match: { prefix: / }, direct_response: { status: 200 } }] }]
                plugins: [{ name: x, module: "\(bogus)" }]
                """)
            XCTFail("an empty module was accepted")
        } catch {
            XCTAssertTrue("\(error)".contains("no known Proxy-Wasm ABI version"), "\(error)")
        }
    }
}

/// Resident set size of this process, from /proc.
func residentBytes() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = text.split(separator: " ")
    return (fields.count > 1 ? Int(fields[1]) ?? 0 : 0) * Int(sysconf(Int32(_SC_PAGESIZE)))
}
