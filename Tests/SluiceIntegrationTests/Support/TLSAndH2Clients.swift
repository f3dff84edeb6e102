import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import NIOSSL
import NIOTLS
import XCTest

/// Certificates made fresh for a test by Tests/support/make_certs.py (trustme): a CA, leaves
/// for alpha.test (and *.alpha.test) and beta.test, a client certificate (URI and DNS SANs)
/// and a rogue client certificate from another CA.
struct TestCertificates {
    let dir: URL

    static func make() throws -> TestCertificates {
        let dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("sluice-certs-\(UUID().uuidString)")
        let script = packageRoot.appendingPathComponent("Tests/support/make_certs.py").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script, dir.path]
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw TLSClientFailure(description: "make_certs.py failed (is trustme installed? Tests/install-deps.sh does it)") }
        return TestCertificates(dir: dir)
    }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
    func remove() { try? FileManager.default.removeItem(at: dir) }
}

struct TLSClientFailure: Error, CustomStringConvertible { var description: String }

/// What a TLS handshake showed the client.
struct HandshakeOutcome: Sendable {
    var alpn: String?
    var peerSubjectDER: [UInt8]
    var peerCommonNames: [String]
}

/// Opens a TLS connection to Sluice with NIOSSL, completes the handshake and reports what the
/// server presented (or throws what failed).
func tlsHandshake(port: Int, serverName: String?, alpn: [String] = ["h2", "http/1.1"], certificates: TestCertificates? = nil,
                  clientCertificate: String? = nil, maximumVersion: TLSVersion? = nil, verify: Bool = true) async throws -> HandshakeOutcome {
    var config = TLSConfiguration.makeClientConfiguration()
    config.applicationProtocols = alpn
    config.maximumTLSVersion = maximumVersion
    if verify, let certificates {
        config.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(certificates.path("ca.pem")))
    } else {
        config.certificateVerification = .none
    }
    if let clientCertificate, let certificates {
        config.certificateChain = try NIOSSLCertificate.fromPEMFile(certificates.path("\(clientCertificate).pem")).map { .certificate($0) }
        config.privateKey = .privateKey(try NIOSSLPrivateKey(file: certificates.path("\(clientCertificate).key"), format: .pem))
    }
    let context = try NIOSSLContext(configuration: config)
    let done = testGroup.next().makePromise(of: HandshakeOutcome.self)
    let channel = try await ClientBootstrap(group: testGroup)
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                let ssl = try NIOSSLClientHandler(context: context, serverHostname: serverName)
                try channel.pipeline.syncOperations.addHandler(ssl)
                try channel.pipeline.syncOperations.addHandler(HandshakeWatcher(promise: done))
            }
        }
        .connect(host: "127.0.0.1", port: port).get()
    defer { channel.close(promise: nil) }
    return try await done.futureResult.get()
}

private final class HandshakeWatcher: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let promise: EventLoopPromise<HandshakeOutcome>
    init(promise: EventLoopPromise<HandshakeOutcome>) { self.promise = promise }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted(let negotiated) = event as? TLSUserEvent {
            let ssl = try? context.pipeline.syncOperations.handler(type: NIOSSLHandler.self)
            let peer = ssl?.peerCertificate
            let names = peer.map { $0._subjectAlternativeNames().compactMap { name -> String? in
                name.nameType == .dnsName ? String(decoding: name.contents, as: UTF8.self) : nil
            } } ?? []
            promise.succeed(HandshakeOutcome(alpn: negotiated, peerSubjectDER: (try? peer?.toDERBytes()) ?? [], peerCommonNames: names))
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        promise.fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(TLSClientFailure(description: "connection closed during the handshake"))
    }
}

/// A small HTTP/2 client on NIOHTTP2 (cleartext by prior knowledge, or over TLS with ALPN
/// h2): one connection, many concurrent streams, request and response trailers.
final class H2TestClient: @unchecked Sendable {
    struct Response: Sendable {
        var status: Int
        var headers: [(String, String)]
        var body: ByteBuffer
        var trailers: [(String, String)]
        /// Set when the stream was reset instead of completed.
        var resetCode: HTTP2ErrorCode?
        func header(_ name: String) -> String? { headers.first { $0.0 == name }?.1 }
        var text: String { String(buffer: body) }
    }

    let channel: Channel
    private let streams: NIOHTTP2Handler.StreamMultiplexer

    private init(channel: Channel, streams: NIOHTTP2Handler.StreamMultiplexer) {
        self.channel = channel
        self.streams = streams
    }

    static func connect(port: Int, tls certificates: TestCertificates? = nil, serverName: String? = nil) async throws -> H2TestClient {
        var sslContext: NIOSSLContext?
        if let certificates {
            var config = TLSConfiguration.makeClientConfiguration()
            config.applicationProtocols = ["h2"]
            config.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(certificates.path("ca.pem")))
            sslContext = try NIOSSLContext(configuration: config)
        }
        let holder = NIOLockedValueBox<NIOHTTP2Handler.StreamMultiplexer?>(nil)
        let channel = try await ClientBootstrap(group: testGroup)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let sslContext {
                        try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: sslContext, serverHostname: serverName))
                    }
                    // The client sends what the test asks, malformed or not: Sluice is the one to judge.
                    var connection = NIOHTTP2Handler.ConnectionConfiguration()
                    connection.headerBlockValidation = .disabled
                    connection.contentLengthValidation = .disabled
                    let streams = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                        mode: .client, connectionConfiguration: connection, streamConfiguration: .init()) { $0.eventLoop.makeSucceededVoidFuture() }
                    holder.withLockedValue { $0 = streams }
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return H2TestClient(channel: channel, streams: holder.withLockedValue { $0! })
    }

    /// Sends one request (headers, optional body, optional trailers) on a new stream.
    func request(_ method: String = "GET", _ path: String, authority: String = "test.local", scheme: String = "http",
                 headers: [(String, String)] = [], body: ByteBuffer? = nil, trailers: [(String, String)] = []) async throws -> Response {
        let done = channel.eventLoop.makePromise(of: Response.self)
        // No test waits forever for an answer.
        let timeout = channel.eventLoop.scheduleTask(in: .seconds(15)) { done.fail(TLSClientFailure(description: "no response in 15 s")) }
        done.futureResult.whenComplete { _ in timeout.cancel() }
        let stream = try await streams.createStreamChannel { channel in
            channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(H2ResponseCollector(promise: done)) }
        }.get()
        var fields: HPACKHeaders = [":method": method, ":path": path, ":scheme": scheme, ":authority": authority]
        for (n, v) in headers { fields.add(name: n, value: v) }
        let bodyless = body == nil && trailers.isEmpty
        stream.write(HTTP2Frame.FramePayload.headers(.init(headers: fields, endStream: bodyless)), promise: nil)
        if let body {
            stream.write(HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(body), endStream: trailers.isEmpty)), promise: nil)
        }
        if !trailers.isEmpty {
            stream.write(HTTP2Frame.FramePayload.headers(.init(headers: HPACKHeaders(trailers), endStream: true)), promise: nil)
        }
        stream.flush()
        return try await done.futureResult.get()
    }

    func close() async { try? await channel.close() }
}

private final class H2ResponseCollector: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    let promise: EventLoopPromise<H2TestClient.Response>
    var response = H2TestClient.Response(status: 0, headers: [], body: ByteBuffer(), trailers: [])
    var headersSeen = false
    var completed = false

    init(promise: EventLoopPromise<H2TestClient.Response>) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .headers(let h):
            let status = h.headers.first(name: ":status").flatMap { Int($0) }
            if let status, status < 200 { break }  // interim
            if !headersSeen {
                headersSeen = true
                response.status = status ?? 0
                response.headers = h.headers.map { ($0.name, $0.value) }
            } else {
                response.trailers = h.headers.map { ($0.name, $0.value) }
            }
            if h.endStream { complete() }
        case .data(let d):
            if case .byteBuffer(var b) = d.data { response.body.writeBuffer(&b) }
            if d.endStream { complete() }
        case .rstStream(let code):
            response.resetCode = code
            complete()
        default:
            break
        }
    }

    private func complete() {
        guard !completed else { return }
        completed = true
        promise.succeed(response)
    }

    func channelInactive(context: ChannelHandlerContext) {
        guard !completed else { return }
        completed = true
        promise.fail(TLSClientFailure(description: "stream closed without a complete response"))
    }
}

/// Runs curl (Debian's, with HTTP/2) and returns its stdout and exit status.
func curl(_ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["curl", "-sS", "--max-time", "10"] + arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = Pipe()
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}
