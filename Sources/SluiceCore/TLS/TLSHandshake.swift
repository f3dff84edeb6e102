import NIOCore
import NIOSSL
import NIOTLS
import ProxyWasm

/// Why a TLS connection ended before it could carry a request (counted per listener).
enum TLSFailure: Int, CaseIterable {
    /// The client's SNI named a server this listener has no certificate for (and no default).
    case unknownServerName
    /// BoringSSL refused the handshake: no shared version or cipher, a client certificate
    /// missing or failing verification, not TLS at all.
    case handshakeFailed
    /// The handshake did not finish within the listener's request_headers_timeout.
    case handshakeTimeout
    /// The client went away mid-handshake.
    case closedDuringHandshake

    var label: String {
        switch self {
        case .unknownServerName: return "unknown_server_name"
        case .handshakeFailed: return "handshake_failed"
        case .handshakeTimeout: return "handshake_timeout"
        case .closedDuringHandshake: return "closed_during_handshake"
        }
    }
}

/// The TLS leg of a downstream connection: reads the ClientHello's SNI (NIO's `SNIHandler`),
/// puts the chosen certificate's `NIOSSLServerHandler` in front of itself, waits for the
/// handshake (bounded), and then hands the connection to HTTP with what ALPN chose and the
/// connection's TLS details. Removes itself once done.
final class TLSHandshakeHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    enum State {
        case awaitingClientHello
        case handshaking(serverName: String?, local: CertificateFacts)
        case done
    }

    private var state = State.awaitingClientHello
    private let tls: ServerTLS
    private let listener: ListenerRuntime
    private let timeout: TimeAmount
    private let established: (Channel, String?, TLSDetails) throws -> Void
    private var timer: Scheduled<Void>?

    /// - Parameter established: configures HTTP on the channel, given the ALPN protocol.
    init(tls: ServerTLS, listener: ListenerRuntime, timeout: TimeAmount, established: @escaping (Channel, String?, TLSDetails) throws -> Void) {
        self.tls = tls
        self.listener = listener
        self.timeout = timeout
        self.established = established
    }

    /// The handlers for a new TLS connection: the SNI reader, then this.
    static func install(on channel: Channel, handler: TLSHandshakeHandler) throws {
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(ByteToMessageHandler(SNIHandler { [weak handler] result in
            guard let handler else { return channel.eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel) }
            return handler.clientHelloRead(result, channel: channel)
        }))
        try sync.addHandler(handler)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if timeout > .zero {
            timer = context.eventLoop.scheduleTask(in: timeout) { [weak self, weak context] in
                guard let self, let context else { return }
                self.fail(context, .handshakeTimeout)  // nothing if the handshake is done
            }
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
    }

    /// The SNI is known (or the client sent none): choose the certificate and start TLS.
    private func clientHelloRead(_ result: SNIResult, channel: Channel) -> EventLoopFuture<Void> {
        var serverName: String?
        if case .hostname(let name) = result, tls.inspectsServerName { serverName = name.lowercased() }
        guard let choice = tls.choose(serverName: serverName) else {
            listener.stats.record(.unknownServerName)
            state = .done
            channel.close(promise: nil)
            return channel.eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel)
        }
        state = .handshaking(serverName: serverName, local: choice.local)
        return channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: choice.context), position: .before(self))
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case .handshakeCompleted(let negotiated) = event as? TLSUserEvent,
              case .handshaking(let serverName, let local) = state else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        state = .done
        timer?.cancel()
        listener.stats.tlsHandshakes.increment()
        do {
            let ssl = try context.pipeline.syncOperations.handler(type: NIOSSLHandler.self)
            let details = TLSDetails(handler: ssl, serverName: serverName, local: local)
            try established(context.channel, negotiated, details)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        } catch {
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard case .done = state else {
            fail(context, (error as? NIOSSLError) == .uncleanShutdown ? .closedDuringHandshake : .handshakeFailed)
            return
        }
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .done = state {} else { fail(context, .closedDuringHandshake) }
        context.fireChannelInactive()
    }

    private func fail(_ context: ChannelHandlerContext, _ failure: TLSFailure) {
        if case .done = state { return }
        state = .done
        timer?.cancel()
        listener.stats.record(failure)
        context.close(promise: nil)
    }
}
