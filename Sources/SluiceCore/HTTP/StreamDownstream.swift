import NIOCore
import NIOHTTP1
import ProxyWasm
import Synchronization

/// What an `HTTPStream` needs from the connection it lives on. The stream does not know the
/// protocol: `HTTP1Connection` implements this for HTTP/1.1 (framing, keep-alive and
/// pipelining stay there), `HTTP2StreamHandler` for each HTTP/2 stream.
protocol StreamDownstream: AnyObject {
    var eventLoop: EventLoop { get }
    var allocator: ByteBufferAllocator { get }
    /// The client can take more response bytes now (backpressure towards the upstream).
    var isWritable: Bool { get }

    /// An interim 100 Continue, for a client waiting to send its body.
    func writeContinue()
    /// The final response head, hop-by-hop headers already removed; the connection adds its
    /// own framing and persistence headers.
    func writeResponseHead(_ head: consuming HTTPResponseHead, for stream: HTTPStream)
    func writeResponseBody(_ buffer: ByteBuffer)
    func writeResponseEnd(_ trailers: HTTPHeaders?)
    func flush()
    /// A 101 the upstream sent: written as it is; the tunnel follows.
    func writeUpgradeResponse(_ head: HTTPResponseHead)

    /// The request body may be read again (or must pause): the connection asks
    /// `stream.wantsRequestData`.
    func requestReadsChanged()
    /// The response is complete but the request is not: returns true if the connection
    /// reads the rest of the request away (so the stream ends when it is read), false if it
    /// closes without reading (the stream ends now).
    func shouldReadRestOfRequest(_ stream: HTTPStream) -> Bool
    /// The protocol cannot carry on after this stream (a refused upgrade left HTTP/1.1's
    /// parser in upgrade mode): the connection ends once the stream is over.
    func closeAfterStream()
    /// The stream is over, cleanly: the connection may take the next one.
    func streamEnded(_ stream: HTTPStream)
    /// The stream cannot end cleanly (HTTP/1.1 closes the connection; HTTP/2 resets the stream).
    func resetStream(_ stream: HTTPStream)
    /// The upstream switched protocols; both connections become a byte tunnel.
    func startTunnel(to upstream: UpstreamConnection, clusterStats: ClusterStats)
}

/// Facts about the downstream connection a stream runs on.
struct DownstreamConnectionInfo {
    private static let ids = Atomic<UInt64>(0)
    /// Connection ids, unique in the process (filters' `connection.id`).
    static func nextID() -> UInt64 { ids.add(1, ordering: .relaxed).newValue }

    /// The id of the connection `pipeline` belongs to: the one its network filters already
    /// gave it (their contexts and the HTTP streams' see the same `connection.id`, as in
    /// Envoy), or a new one.
    static func id(of pipeline: ChannelPipeline) -> UInt64 {
        (try? pipeline.syncOperations.handler(type: NetworkFilterHandler.self))?.data.info.connectionID ?? nextID()
    }

    let id: UInt64
    let remote: SocketAddress?
    let local: SocketAddress?
    /// The client's address as text, for X-Forwarded-For and the access log.
    let clientAddress: String
    /// The local address as text, for filters' `destination.address` (formatted once per
    /// connection, not per stream).
    let localAddress: String
    /// The connection's TLS (nil: cleartext), read once when the handshake finished.
    let tls: TLSDetails?
    /// `https` over TLS: the scheme filters and the upstream's X-Forwarded-Proto see.
    var scheme: String { tls == nil ? "http" : "https" }

    init(id: UInt64, remote: SocketAddress?, local: SocketAddress?, clientAddress: String, tls: TLSDetails? = nil) {
        self.id = id
        self.remote = remote
        self.local = local
        self.clientAddress = clientAddress
        self.localAddress = local?.ipAddress ?? ""
        self.tls = tls
    }
}
