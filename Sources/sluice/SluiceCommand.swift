import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import SluiceConfig
import SluiceCore

@main
struct Sluice: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice",
        abstract: "An edge reverse proxy that hosts Proxy-Wasm filters.",
        version: SluiceVersion.string,
        subcommands: [Run.self, Validate.self, DemoUpstreamCommand.self],
        defaultSubcommand: Run.self
    )
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the proxy on a config file.")

    @Option(name: [.short, .customLong("config")], help: "Path of the Sluice YAML config (an Envoy bootstrap is detected too).")
    var config: String?

    @Option(help: "Path of an Envoy v3 bootstrap (YAML or JSON) to run as is.")
    var envoyConfig: String?

    @Option(help: "Worker threads (event loops); default: one per core.")
    var workers: Int = System.coreCount

    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    @Flag(help: "Run an Envoy bootstrap even if it uses fields Sluice does not implement (they are listed and ignored).")
    var allowUnsupported: Bool = false

    @Flag(inversion: .prefixedNo, help: "Reload when the config file or a plugin module changes.")
    var watch: Bool = true

    @Option(help: "Wasm engine for plugins that name none: wasmtime or wasmkit (default: wasmtime when its library is installed, else wasmkit).")
    var wasmRuntime: String?

    func run() async throws {
        let logger = makeLogger(logLevel)
        guard let path = envoyConfig ?? config else {
            throw ValidationError("give -c FILE or --envoy-config FILE")
        }
        let parsed: SluiceConfiguration
        do {
            let (loaded, unsupported) = try ConfigLoader.loadAny(file: path, forceEnvoy: envoyConfig != nil, allowUnsupported: allowUnsupported)
            for u in unsupported { logger.warning("\(u.description)") }
            parsed = loaded
        } catch {
            FileHandle.standardError.write(Data((error.description + "\n").utf8))
            throw ExitCode(1)
        }
        let server = SluiceServer(config: parsed, workers: workers, logger: logger)
        if let name = wasmRuntime {
            guard let runtime = WasmRuntime(rawValue: name) else {
                throw ValidationError("--wasm-runtime: one of \(WasmRuntime.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            server.defaultWasmRuntime = runtime
        }
        do {
            try await server.start()
        } catch {
            FileHandle.standardError.write(Data("sluice: cannot start: \(error)\n".utf8))
            await server.shutdown(drainTimeout: .zero)
            throw ExitCode(1)
        }
        server.configPath = path
        server.allowUnsupported = allowUnsupported
        if watch { server.watchFiles() }
        // SIGHUP reloads (any number of times); SIGTERM or SIGINT drains and stops.
        let signals = SignalStream(reload: { Task { await server.reload() } })
        let signal = await signals.waitForTermination()
        logger.info("draining", metadata: ["signal": "\(signal)", "timeout": "\(server.config.drainTimeout)"])
        await server.shutdown()
        logger.info("stopped")
    }
}

struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check a config file and report every problem with its line and key path.")

    @Argument(help: "Path of the Sluice YAML config.")
    var file: String?

    @Option(help: "Path of an Envoy v3 bootstrap: every field Sluice does not support is listed.")
    var envoyConfig: String?

    func run() throws {
        guard let file = envoyConfig ?? file else { throw ValidationError("give FILE or --envoy-config FILE") }
        do {
            let (config, unsupported) = try ConfigLoader.loadAny(file: file, forceEnvoy: envoyConfig != nil, allowUnsupported: true)
            for u in unsupported { print(u.description) }
            print("\(file): ok (\(config.listeners.count) listeners, \(config.clusters.count) clusters, \(config.plugins.count) plugins)\(unsupported.isEmpty ? "" : ", \(unsupported.count) unsupported field(s) listed above")")
            if !unsupported.isEmpty { throw ExitCode(2) }
        } catch let error as ExitCode {
            throw error
        } catch let error as ConfigError {
            print(error.description)
            FileHandle.standardError.write(Data("\(file): \(error.diagnostics.count) error(s)\n".utf8))
            throw ExitCode(1)
        }
    }
}

struct DemoUpstreamCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "demo-upstream", abstract: "Run a small origin server that echoes what it receives as JSON.")

    @Option(help: "host:port to listen on.")
    var listen: String = "127.0.0.1:8081"

    @Option(help: "Name reported in responses.")
    var name: String = "demo"

    func run() async throws {
        guard let address = HostPort.parse(listen) else {
            throw ValidationError("--listen expects host:port")
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let channel = try await DemoUpstream.start(host: address.host, port: address.port, name: name, group: group)
        print("demo upstream '\(name)' on \(listen)")
        _ = await waitForTerminationSignal()
        try? await channel.close()
    }
}

func makeLogger(_ level: String) -> Logger {
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = Logger.Level(rawValue: level) ?? .info
        return handler
    }
    return Logger(label: "sluice")
}

/// Suspends until SIGTERM or SIGINT arrives.
func waitForTerminationSignal() async -> String {
    await SignalStream(reload: nil).waitForTermination()
}

/// Signal handling through Dispatch sources: SIGHUP calls `reload`, SIGTERM/SIGINT end the wait.
final class SignalStream: @unchecked Sendable {
    private let lock = NSLock()
    private var continuation: CheckedContinuation<String, Never>?
    private var sources: [DispatchSourceSignal] = []
    private let reload: (() -> Void)?

    init(reload: (() -> Void)?) { self.reload = reload }

    func waitForTermination() async -> String {
        await withCheckedContinuation { (c: CheckedContinuation<String, Never>) in
            lock.withLock { continuation = c }
            var wanted: [(Int32, String)] = [(SIGTERM, "SIGTERM"), (SIGINT, "SIGINT")]
            if reload != nil { wanted.append((SIGHUP, "SIGHUP")) }
            for (sig, name) in wanted {
                signal(sig, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
                source.setEventHandler { [weak self] in self?.fire(name) }
                source.resume()
                lock.withLock { sources.append(source) }
            }
        }
    }

    private func fire(_ name: String) {
        if name == "SIGHUP" {
            reload?()
            return
        }
        let c: CheckedContinuation<String, Never>? = lock.withLock {
            defer { continuation = nil }
            return continuation
        }
        c?.resume(returning: name)
    }
}
