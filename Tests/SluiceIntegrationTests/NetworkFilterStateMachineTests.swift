import Logging
import NIOCore
import NIOEmbedded
import ProxyWasm
import SluiceConfig
import XCTest

@testable import SluiceCore

/// `NetworkFilterHandler.Phase` on NIO's EmbeddedChannel, without sockets: the real C test
/// filter (filters/test/c/network.c) on WasmKit, a recorder standing for the terminal (the TCP
/// proxy), one test per transition and iteration rule.
final class NetworkFilterStateMachineTests: XCTestCase {
    private var loop: EmbeddedEventLoop!
    private var channel: EmbeddedChannel!
    private var handler: NetworkFilterHandler!
    private var terminal: TerminalRecorder!
    private var plugin: PluginWorker!

    /// Stands where the TCP proxy would: records what reaches it and writes what it is told.
    final class TerminalRecorder: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        var active = false
        var received = ""
        var endReceived = false
        func channelActive(context: ChannelHandlerContext) { active = true }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            received += String(buffer: unwrapInboundIn(data))
        }
        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case ChannelEvent.inputClosed = event { endReceived = true }
        }
    }

    private func start(mode: String, limitKB: Int = 1024) async throws {
        loop = EmbeddedEventLoop()
        let module = try TestFilters.path("c-network")
        let config = try ConfigLoader.parse(yaml: """
            listeners:
              - { name: main, address: 127.0.0.1:0, protocol: tcp, cluster: up, network_filters: [net] }
            clusters:
              - { name: up, endpoints: ["127.0.0.1:1"] }
            plugins:
              - { name: net, module: \(module), runtime: wasmkit, configuration: "\(mode)", buffer_limit_kb: \(limitKB) }
            """)
        let runtime = ProxyRuntime(config: config, eventLoops: [loop])
        let worker = runtime.worker(for: loop)
        let plugins = try PluginManager(config: config, logger: Logger(label: "test"), cache: ModuleCache(), shared: PluginSharedState())
        plugin = PluginWorker(runtime: plugins.plugins["net"]!, shared: plugins.shared, worker: worker, logger: Logger(label: "test"))
        plugin.startVM()
        worker.plugins["net"] = plugin
        channel = EmbeddedChannel(loop: loop)
        handler = try XCTUnwrap(NetworkFilterHandler.install(on: channel, listener: runtime.listeners["main"]!, worker: worker))
        terminal = TerminalRecorder()
        try channel.pipeline.syncOperations.addHandler(terminal)
        try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 2)).get()
    }

    private func send(_ text: String) throws {
        try channel.writeInbound(ByteBuffer(string: text))
        loop.run()
    }

    /// What the filter wrote to the client, all of it.
    private func written() throws -> String {
        var out = ""
        while let part = try channel.readOutbound(as: IOData.self) {
            if case .byteBuffer(let b) = part { out += String(buffer: b) }
        }
        return out
    }

    func testFilteringBecomesPassingWhenTheFiltersLetTheConnectionThrough() async throws {
        try await start(mode: "count")
        XCTAssertTrue(terminal.active, "on_new_connection continued: the terminal (the TCP proxy) started")
        try send("hello")
        XCTAssertEqual(terminal.received, "hello")
    }

    func testAStopAtNewConnectionHoldsTheTerminalUntilContinue() async throws {
        try await start(mode: "pause-new 50")
        XCTAssertFalse(terminal.active, "held in filtering: the TCP proxy does not connect")
        loop.advanceTime(by: .milliseconds(60))  // the filter's tick: proxy_continue_stream(Downstream)
        loop.run()
        XCTAssertTrue(terminal.active, "resumed: the filters after it ran and the terminal started")
    }

    func testAStoppedFilterSeesItsHeldBytesAgainWithWhatFollows() async throws {
        try await start(mode: "pause-line")
        try send("abc")
        XCTAssertEqual(terminal.received, "", "held")
        try send("def\n")
        XCTAssertEqual(terminal.received, "abcdef\n", "the next callback saw everything held and let it all go")
    }

    func testTheClientsFinReachesTheFiltersThenTheTerminal() async throws {
        try await start(mode: "count")
        channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        loop.run()
        XCTAssertTrue(terminal.endReceived)
    }

    func testWritesTowardsTheClientRunThroughTheFilters() async throws {
        try await start(mode: "rewrite")
        try channel.writeAndFlush(ByteBuffer(string: "pong")).wait()
        XCTAssertEqual(try written(), "<pong>", "prepended and appended by proxy_on_upstream_data")
    }

    /// A filter that holds the upstream's bytes until their end: the FIN releases them, and
    /// they go out before it.
    func testHeldUpstreamBytesGoOutAtTheUpstreamsEnd() async throws {
        try await start(mode: "hold-up")
        // The writes' promises complete only when the bytes go out: not waited on here.
        channel.writeAndFlush(ByteBuffer(string: "part one, "), promise: nil)
        channel.writeAndFlush(ByteBuffer(string: "part two"), promise: nil)
        loop.run()
        XCTAssertEqual(try written(), "", "held: the next upstream callback saw both parts")
        channel.close(mode: .output, promise: nil)  // the TCP proxy passing the upstream's FIN
        loop.run()
        XCTAssertEqual(try written(), "part one, part two")
    }

    /// Bytes towards the client held past the limit close the connection: nothing could
    /// release them but more upstream bytes, which waiting would never read.
    func testHeldUpstreamBytesAboveTheLimitCloseTheConnection() async throws {
        try await start(mode: "hold-up", limitKB: 1)
        channel.writeAndFlush(ByteBuffer(string: String(repeating: "y", count: 2048)), promise: nil)
        loop.run()
        XCTAssertFalse(channel.isActive)
        XCTAssertEqual(try written(), "", "the held bytes were dropped, not sent")
    }

    func testHeldClientBytesAboveTheLimitStopReads() async throws {
        try await start(mode: "hold-once 1000", limitKB: 1)
        let reads = ReadCounter()
        try channel.pipeline.syncOperations.addHandler(reads, position: .first)
        try send(String(repeating: "x", count: 2048))
        let before = reads.count
        channel.read()
        XCTAssertEqual(reads.count, before, "2 KiB held against a 1 KiB limit: the read is kept back")
        loop.advanceTime(by: .milliseconds(1100))  // the tick resumes: the bytes go on
        loop.run()
        XCTAssertEqual(terminal.received.count, 2048)
        XCTAssertEqual(reads.count, before + 1, "back under the limit: the kept read goes out")
    }

    func testAFilterCloseEndsInClosedWithTheCallbacksInEnvoysOrder() async throws {
        try await start(mode: "close-on")
        try send("EVIL")
        XCTAssertFalse(channel.isActive, "proxy_close_stream(Downstream): closed after the flush")
        XCTAssertEqual(terminal.received, "", "the bytes with the pattern did not go on")
        XCTAssertEqual(plugin.activeStreams, 0, "the connection's contexts are done")
        let traces = String(decoding: plugin.shared.data.get(vmID: "", key: "trace")?.0 ?? [], as: UTF8.self)
        XCTAssertTrue(traces.contains("close-downstream downclose(1) done log"), traces)
    }

    func testAClientResetIsARemoteClose() async throws {
        try await start(mode: "count")
        channel.pipeline.fireErrorCaught(IOError(errnoCode: ECONNRESET, reason: "read"))
        try channel.close().wait()
        loop.run()
        let traces = String(decoding: plugin.shared.data.get(vmID: "", key: "trace")?.0 ?? [], as: UTF8.self)
        XCTAssertTrue(traces.contains("downclose(2) done log"), traces)
    }

    /// Counts reads that reach the front of the pipeline.
    final class ReadCounter: ChannelOutboundHandler {
        typealias OutboundIn = Any
        var count = 0
        func read(context: ChannelHandlerContext) {
            count += 1
            context.read()
        }
    }
}
