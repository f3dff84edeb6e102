import Foundation
import Logging
import SluiceConfig
import SluiceCore
import Synchronization
import XCTest

/// Hot reload of modules and configuration under load: nothing dropped, every response from
/// exactly one filter version, new versions serving quickly, bad updates rejected.
final class HotReloadTests: EngineMatrixTestCase {
    var upstream: TestUpstream!
    var dir: URL!

    override func setUp() async throws {
        upstream = try await TestUpstream.start(name: "origin", group: testGroup)
        dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("sluice-reload-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDown() async throws {
        await upstream.stop()
        try? FileManager.default.removeItem(at: dir)
    }

    var configFile: String { dir.appendingPathComponent("sluice.yaml").path }
    var moduleFile: String { dir.appendingPathComponent("plugin.wasm").path }

    /// Replaces the module atomically (write aside, rename), as a deploy tool would.
    func installModule(_ name: String) throws {
        let tmp = dir.appendingPathComponent("plugin.wasm.tmp-\(UUID().uuidString)")
        try FileManager.default.copyItem(atPath: try TestFilters.path(name), toPath: tmp.path)
        _ = rename(tmp.path, moduleFile)
    }

    func writeConfig(_ configuration: String, extraPlugin: String = "", rollout: String = "") throws {
        let text = """
            admin: { address: "127.0.0.1:0" }
            access_log: { format: off }
            listeners:
              - name: main
                address: 127.0.0.1:0
                http_filters: [versioned]
                routes: [{ match: { prefix: / }, cluster: origin }]
            clusters:
              - { name: origin, endpoints: ["127.0.0.1:\(upstream.port)"] }
            plugins:
              - { name: versioned, module: plugin.wasm, configuration: "\(configuration)"\(rollout) }
            \(extraPlugin)
            """
        let tmp = configFile + ".tmp"
        try text.write(toFile: tmp, atomically: true, encoding: .utf8)
        _ = rename(tmp, configFile)
    }

    func startServer() async throws -> SluiceServer {
        var logger = Logger(label: "sluice-test")
        logger.logLevel = .error
        let server = SluiceServer(config: try ConfigLoader.load(file: configFile), workers: 2, logger: logger)
        server.configPath = configFile
        server.defaultWasmRuntime = Self.wasmRuntime
        try await server.start()
        server.watchFiles()
        return server
    }

    /// Polls with fresh requests until one is served by `version` (and `config`, if given).
    func waitForVersion(_ port: Int, _ version: String, config: String? = nil, timeout: Double = 5) -> Double? {
        let start = Date()
        let ok = eventually(timeout: timeout) {
            guard let r = try? httpGet(port, "/probe"), r.header("x-filter-version") == version else { return false }
            if let config { return (try? echoedHeaders(r)["x-filter-config"]) == config }
            return true
        }
        return ok ? Date().timeIntervalSince(start) : nil
    }

    func testSwapsUnderLoadDropNothing() async throws {
        try installModule("c-version-1")
        try writeConfig("conf-0")
        let server = try await startServer()
        let port = server.address(ofListener: "main")!.port!
        XCTAssertNotNil(waitForVersion(port, "1"))

        // Several keep-alive clients hammer the proxy for the whole test.
        let stop = StopFlag()
        let results = LoadResults()
        let clients = (0..<4).map { _ in
            Thread.detachedLoad(stop: stop, results: results) {
                let client = try RawHTTPClient(port: port, timeout: 5)
                return { try client.request("GET", "/load") }
            }
        }

        // A quiet second first, for the latency baseline without swaps.
        usleep(1_000_000)
        let baseline = results.summary
        var swapTimes: [Double] = []
        for i in 1...20 {
            let version = i % 2 == 0 ? "1" : "2"
            try installModule("c-version-\(version)")
            guard let t = waitForVersion(port, version) else {
                XCTFail("module swap \(i) to version \(version) never served")
                break
            }
            swapTimes.append(t)
            if i % 4 == 0 {
                // Interleave configuration changes: 5 in total.
                let conf = "conf-\(i / 4)"
                try writeConfig(conf)
                guard let tc = waitForVersion(port, version, config: conf) else {
                    XCTFail("config change \(conf) never served")
                    break
                }
                swapTimes.append(tc)
            }
        }
        stop.value.store(true, ordering: .relaxed)
        for c in clients { c.join() }

        let summary = results.summary
        print("hot reload under load: \(summary.requests) requests, \(summary.failures) failures, \(summary.mixed) mixed-version responses; "
              + "change-to-serving max \(String(format: "%.3f", swapTimes.max() ?? 0)) s, median \(String(format: "%.3f", swapTimes.sorted()[swapTimes.count / 2])) s; "
              + "request latency p50 \(String(format: "%.2f", summary.p50 * 1000)) ms, p99 \(String(format: "%.2f", summary.p99 * 1000)) ms, max \(String(format: "%.2f", summary.max * 1000)) ms; "
              + "baseline before swaps p50 \(String(format: "%.2f", baseline.p50 * 1000)) ms, p99 \(String(format: "%.2f", baseline.p99 * 1000)) ms")
        XCTAssertEqual(swapTimes.count, 25, "20 module swaps and 5 configuration changes")
        XCTAssertGreaterThan(summary.requests, 500, "the load kept going")
        XCTAssertEqual(summary.failures, 0, "no request failed during the swaps: \(summary.firstFailure ?? "")")
        XCTAssertEqual(summary.mixed, 0, "every response comes from exactly one filter version")
        XCTAssertLessThan(swapTimes.max() ?? 99, 1.0, "each new version serves within 1 s of its change")
        XCTAssertEqual(server.generationNumber, 26)
        await server.shutdown(drainTimeout: .seconds(1))
    }

    func testBrokenModulesAreRejectedAndTheOldOneKeepsServing() async throws {
        try installModule("c-version-1")
        try writeConfig("stable")
        let server = try await startServer()
        let port = server.address(ofListener: "main")!.port!
        let admin = server.adminAddress!.port!

        for broken in ["c-version-bad-configure", "c-version-bad-import"] {
            let expected = broken == "c-version-bad-configure" ? "proxy_on_configure trapped" : "proxy_no_such_hostcall"
            try installModule(broken)
            let reported = eventually(timeout: 5) { (try? httpGet(admin, "/plugins").text.contains(expected)) == true }
            XCTAssertTrue(reported, "/plugins shows why \(broken) was rejected")
            let r = try httpGet(port, "/still")
            XCTAssertEqual(r.status, 200)
            XCTAssertEqual(r.header("x-filter-version"), "1", "the old version keeps serving")
        }
        XCTAssertTrue(server.prometheusText().contains("sluice_config_reload_failures_total 2"))
        let json = try JSONSerialization.jsonObject(with: Data(try httpGet(admin, "/plugins").body)) as! [String: Any]
        let plugin = (json["plugins"] as! [[String: Any]]).first!
        XCTAssertEqual(plugin["name"] as? String, "versioned")
        XCTAssertEqual((plugin["sha256"] as? String)?.count, 64)
        XCTAssertEqual(plugin["versions"] as? Int, 1, "rejected versions do not count")
        XCTAssertNotNil(plugin["loaded_at"])
        await server.shutdown(drainTimeout: .seconds(1))
    }

    func testInvalidConfigIsRejectedWithLineAndKey() async throws {
        try installModule("c-version-1")
        try writeConfig("good")
        let server = try await startServer()
        let port = server.address(ofListener: "main")!.port!
        let admin = server.adminAddress!.port!
        server.configPath = configFile
        // An unknown cluster on line 7, written where the watcher will see it.
        try """
            admin: { address: "127.0.0.1:0" }
            listeners:
              - name: main
                address: 127.0.0.1:0
                http_filters: [versioned]
                routes:
                  - { match: { prefix: / }, cluster: nowhere }
            plugins:
              - { name: versioned, module: plugin.wasm }
            """.write(toFile: configFile, atomically: true, encoding: .utf8)
        let response = try RawHTTPClient(port: admin).request("POST", "/reload", body: "")
        XCTAssertEqual(response.status, 400)
        XCTAssertTrue(response.text.contains("sluice.yaml:7:") && response.text.contains("listeners[0].routes[0].cluster"), response.text)
        let r = try httpGet(port, "/x")
        XCTAssertEqual(r.status, 200, "the old configuration keeps serving")
        XCTAssertEqual(try echoedHeaders(r)["x-filter-config"], "good")
        XCTAssertTrue(try httpGet(admin, "/plugins").text.contains("listeners[0].routes[0].cluster"), "the error is shown on /plugins")
        await server.shutdown(drainTimeout: .seconds(1))
    }

    func testGradualRolloutSplitsTrafficByWeight() async throws {
        try installModule("c-version-1")
        try FileManager.default.copyItem(atPath: try TestFilters.path("c-version-2"), toPath: dir.appendingPathComponent("v2.wasm").path)
        try writeConfig("split", rollout: ", rollout: { module: v2.wasm, weight: 30 }")
        let server = try await startServer()
        let port = server.address(ofListener: "main")!.port!
        var counts: [String: Int] = [:]
        for _ in 0..<300 { counts[try httpGet(port, "/r").header("x-filter-version") ?? "?", default: 0] += 1 }
        XCTAssertEqual(counts.keys.sorted(), ["1", "2"])
        XCTAssertTrue((45...135).contains(counts["2"] ?? 0), "about 30% on the new version: \(counts)")
        let stats = server.prometheusText()
        XCTAssertTrue(stats.contains("sluice_plugin_streams_total{plugin=\"versioned\",version=\"rollout\"} \(counts["2"]!)"), stats)

        // Rolling back is editing one number.
        try writeConfig("split", rollout: ", rollout: { module: v2.wasm, weight: 0 }")
        XCTAssertTrue(eventually(timeout: 5) { server.generationNumber == 2 })
        for _ in 0..<50 { XCTAssertEqual(try httpGet(port, "/r").header("x-filter-version"), "1") }
        await server.shutdown(drainTimeout: .seconds(1))
    }

    func testListenersAddedAndRemovedOnReload() async throws {
        try installModule("c-version-1")
        try writeConfig("a")
        let server = try await startServer()
        let extraPort = SluiceProcess.freePort()
        let text = try String(contentsOfFile: configFile, encoding: .utf8).replacingOccurrences(of: "clusters:", with: """
              - name: extra
                address: 127.0.0.1:\(extraPort)
                routes: [{ match: { prefix: / }, direct_response: { status: 200, body: "extra" } }]
            clusters:
            """)
        try text.write(toFile: configFile, atomically: true, encoding: .utf8)
        var outcome = await server.reload()
        XCTAssertTrue(outcome.ok, "\(outcome.errors)")
        XCTAssertEqual(try httpGet(extraPort, "/").text, "extra", "a new listener is bound")
        try writeConfig("a")
        outcome = await server.reload()
        XCTAssertTrue(outcome.ok, "\(outcome.errors)")
        XCTAssertNil(try? RawHTTPClient(port: extraPort, timeout: 1).request("GET", "/"), "a removed listener is closed")
        await server.shutdown(drainTimeout: .seconds(1))
    }
}

/// Counts outcomes and latencies of the load threads.
final class LoadResults: @unchecked Sendable {
    private let lock = NSLock()
    private var latencies: [Double] = []
    private var failures = 0
    private var mixed = 0
    private var firstFailure: String?

    func record(latency: Double, response: RawHTTPClient.Response?, error: Error?) {
        lock.withLock {
            if let error {
                failures += 1
                firstFailure = firstFailure ?? "\(error)"
                return
            }
            guard let r = response else { return }
            latencies.append(latency)
            if r.status != 200 {
                failures += 1
                firstFailure = firstFailure ?? "status \(r.status): \(r.text)"
            }
            let down = r.header("x-filter-version")
            let up = try? echoedHeaders(r)["x-filter-version"]
            if down == nil || down != up { mixed += 1 }
        }
    }

    var summary: (requests: Int, failures: Int, mixed: Int, p50: Double, p99: Double, max: Double, firstFailure: String?) {
        lock.withLock {
            let sorted = latencies.sorted()
            func pct(_ p: Double) -> Double { sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
            return (latencies.count + failures, failures, mixed, pct(0.5), pct(0.99), sorted.last ?? 0, firstFailure)
        }
    }
}

extension Thread {
    /// A thread that sends requests on one keep-alive connection until `stop`.
    final class LoadThread: @unchecked Sendable {
        private let done = DispatchSemaphore(value: 0)
        func join() { done.wait() }
        fileprivate func finished() { done.signal() }
    }

    static func detachedLoad(stop stopFlag: StopFlag, results: LoadResults, makeClient: @escaping () throws -> () throws -> RawHTTPClient.Response) -> LoadThread {
        let handle = LoadThread()
        nonisolated(unsafe) let makeClient = makeClient
        Thread.detachNewThread {
            defer { handle.finished() }
            guard let send = try? makeClient() else { return }
            while !stopFlag.value.load(ordering: .relaxed) {
                let start = Date()
                do {
                    let r = try send()
                    results.record(latency: Date().timeIntervalSince(start), response: r, error: nil)
                } catch {
                    results.record(latency: 0, response: nil, error: error)
                    return
                }
            }
        }
        return handle
    }
}

final class StopFlag: Sendable {
    let value = Atomic<Bool>(false)
}
