import NIOCore
import NIOSSL
import NIOTLS
import ProxyWasm
import SluiceConfig

/// TLS from Sluice to a cluster's endpoints: one client context per cluster, built with the
/// configuration generation (a bad CA or client certificate fails the load or reload).
struct UpstreamTLS: Sendable {
    let context: NIOSSLContext
    /// ALPN `h2` for the endpoint's multiplexed connection, which gRPC callouts use whatever
    /// the cluster's protocol (the same context when the cluster speaks HTTP/2).
    let http2Context: NIOSSLContext
    let config: UpstreamTLSConfig
    /// The client certificate's facts (`upstream.subject_local_certificate` and SANs).
    let local: CertificateFacts?

    init(cluster: ClusterConfig, tls config: UpstreamTLSConfig) throws(TLSSetupError) {
        let field = "cluster '\(cluster.name)' tls"
        var tls = TLSConfiguration.makeClientConfiguration()
        // Closing waits this long for the peer's close_notify (NIOSSL's default 5 s held
        // every shutdown and reload that closed an upstream connection).
        tls.shutdownTimeout = .seconds(1)
        tls.minimumTLSVersion = config.minimumVersion.nio
        tls.maximumTLSVersion = config.maximumVersion.nio
        // ALPN says which HTTP the connection carries; a server that picks another is refused
        // by the HTTP layer, not guessed at.
        tls.applicationProtocols = cluster.upstreamProtocol == .http2 ? ["h2"] : ["http/1.1"]
        tls.certificateVerification = !config.verify ? .none : config.verifyName ? .fullVerification : .noHostnameVerification
        if let ca = config.trustedCA {
            do {
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca))
            } catch {
                throw TLSSetupError(description: "\(field).trusted_ca \(ca): not a PEM certificate bundle (\(error))")
            }
        }
        var local: CertificateFacts?
        if let client = config.clientCertificate {
            do {
                let chain = try NIOSSLCertificate.fromPEMFile(client.certificateChain)
                tls.certificateChain = chain.map { .certificate($0) }
                local = try chain.first.map { try CertificateFacts(der: $0.toDERBytes()) }
            } catch {
                throw TLSSetupError(description: "\(field).certificate_chain \(client.certificateChain): not a PEM certificate chain (\(error))")
            }
            do {
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: client.privateKey, format: .pem))
            } catch {
                throw TLSSetupError(description: "\(field).private_key \(client.privateKey): not a PEM private key (\(error))")
            }
        }
        do {
            context = try NIOSSLContext(configuration: tls)
            if cluster.upstreamProtocol == .http2 {
                http2Context = context
            } else {
                tls.applicationProtocols = ["h2"]
                http2Context = try NIOSSLContext(configuration: tls)
            }
        } catch {
            throw TLSSetupError(description: "\(field): the settings do not fit together (\(error))")
        }
        self.config = config
        self.local = local
    }

    /// What a finished handshake on `channel` (an HTTP/1.1 connection, or an HTTP/2 stream
    /// whose parent holds the TLS) shows; nil before the handshake.
    func details(of channel: Channel) -> TLSDetails? {
        let connection = channel.parent ?? channel
        guard let ssl = try? connection.pipeline.syncOperations.handler(type: NIOSSLHandler.self), ssl.tlsVersion != nil else { return nil }
        let facts = local ?? CertificateFacts(subject: "", uriSANs: [], dnsSANs: [])
        return TLSDetails(handler: ssl, serverName: config.serverName, local: facts)
    }

    /// Every cluster's TLS, or the first error.
    static func build(_ config: SluiceConfiguration) throws(TLSSetupError) -> [String: UpstreamTLS] {
        var all: [String: UpstreamTLS] = [:]
        for cluster in config.clusters {
            if let tls = cluster.tls { all[cluster.name] = try UpstreamTLS(cluster: cluster, tls: tls) }
        }
        return all
    }

    /// TLS in front of a new connection to `host`, and the waiter that tells when it is up.
    func install(on channel: Channel, host: String, waiter: UpstreamHandshakeWaiter, http2: Bool = false) throws {
        try channel.pipeline.syncOperations.addHandler(try handler(host: host, http2: http2))
        try channel.pipeline.syncOperations.addHandler(waiter)
    }

    /// The TLS handler for a connection to `host`: SNI is the configured name, else the host
    /// when it is a DNS name (never an IP address, RFC 6066 §3).
    func handler(host: String, http2: Bool = false) throws -> NIOSSLClientHandler {
        let isAddress = (try? SocketAddress(ipAddress: host, port: 0)) != nil
        return try NIOSSLClientHandler(context: http2 ? http2Context : context, serverHostname: config.serverName ?? (isAddress ? nil : host))
    }
}

/// Behind an upstream connection's TLS handler until the handshake is over: the connection
/// counts as established only then, so a refused certificate or a failed handshake is a
/// connect failure (503, retried on `connect_failure`), as Envoy reports it. Bounded by the
/// cluster's connect timeout.
final class UpstreamHandshakeWaiter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    struct TimedOut: Error {}

    let done: EventLoopPromise<Void>
    private let timeout: TimeAmount
    private var timer: Scheduled<Void>?

    init(eventLoop: EventLoop, timeout: TimeAmount) {
        self.done = eventLoop.makePromise()
        self.timeout = timeout
    }

    /// `connected`, once the handshake is done as well; a failed handshake closes the channel.
    func after(_ connected: EventLoopFuture<Channel>) -> EventLoopFuture<Channel> {
        connected.flatMap { channel in
            self.done.futureResult.map { channel }.flatMapErrorThrowing { error in
                channel.close(promise: nil)
                throw error
            }
        }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let done = self.done
        timer = context.eventLoop.scheduleTask(in: timeout) { [weak context] in
            done.fail(TimedOut())
            context?.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted = event as? TLSUserEvent {
            timer?.cancel()
            done.succeed(())
            context.fireUserInboundEventTriggered(event)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        done.fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        done.fail(ChannelError.ioOnClosedChannel)
        context.fireChannelInactive()
    }
}
