import Foundation
import Logging
import NIOCore
import NIOPosix
import SluiceConfig
import SluiceCore
import XCTest

/// Starts Sluice in-process on ephemeral ports from a YAML config, exactly as `sluice run`
/// would parse it. `{{name}}` placeholders are replaced by the given upstream ports.
final class ProxyUnderTest {
    /// The engine for plugins that name none, set by `EngineMatrixTestCase` for its tests
    /// (nil: the proxy's own default). Tests run one at a time, so one value suffices.
    nonisolated(unsafe) static var wasmRuntime: WasmRuntime?
    let server: SluiceServer
    init(server: SluiceServer) { self.server = server }

    static func start(_ yaml: String, ports: [String: Int] = [:], workers: Int = 2) async throws -> ProxyUnderTest {
        var text = yaml
        for (name, port) in ports { text = text.replacingOccurrences(of: "{{\(name)}}", with: String(port)) }
        if !text.contains("admin:") { text = "admin: { address: 127.0.0.1:0 }\naccess_log: { format: off }\n" + text }
        let config = try ConfigLoader.parse(yaml: text, file: "test.yaml")
        var logger = Logger(label: "sluice-test")
        logger.logLevel = .warning
        let server = SluiceServer(config: config, workers: workers, logger: logger)
        server.defaultWasmRuntime = wasmRuntime
        try await server.start()
        return ProxyUnderTest(server: server)
    }

    func port(_ listener: String = "main") -> Int { server.address(ofListener: listener)!.port! }
    var adminPort: Int { server.adminAddress!.port! }

    func stats() throws -> String { try httpGet(adminPort, "/stats").text }

    /// The value of one Prometheus sample, e.g. `sample("sluice_cluster_retries_total{cluster=\"b\"}")`.
    func sample(_ series: String) throws -> Int? {
        for line in try stats().split(separator: "\n") where line.hasPrefix(series + " ") {
            return Int(line.split(separator: " ").last!)
        }
        return nil
    }

    func stop() async { await server.shutdown(drainTimeout: .seconds(1)) }
}

/// Polls until `condition` holds or `timeout` passes; for effects that are asynchronous by
/// design (health checks, stats after a close), never as a timing assertion.
func eventually(timeout: Double = 5, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try condition() { return true }
        usleep(20_000)
    }
    return try condition()
}

/// Runs a blocking client body off the cooperative pool so NIO and the test do not starve.
func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread {
            continuation.resume(with: Result { try body() })
        }
    }
}

let testGroup = MultiThreadedEventLoopGroup(numberOfThreads: 2)

/// Path of the package root, for finding the built `sluice` binary and example configs.
let packageRoot: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

func sluiceBinary() throws -> String {
    for dir in [".build/debug", ".build/release"] {
        let p = packageRoot.appendingPathComponent(dir).appendingPathComponent("sluice").path
        if FileManager.default.isExecutableFile(atPath: p) { return p }
    }
    throw RawHTTPClient.Failure(description: "the sluice binary is not built; run `swift build` first")
}
