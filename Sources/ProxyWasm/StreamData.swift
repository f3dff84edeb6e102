import Foundation

/// What filters read and change on one HTTP stream. Owned by the proxy's filter-chain
/// driver and shared by every filter on the stream, so filter N sees filter N-1's edits.
/// Nil maps are not available in the current phase.
public final class HTTPStreamData {
    public var requestHeaders: HeaderMap?
    public var requestTrailers: HeaderMap?
    public var responseHeaders: HeaderMap?
    public var responseTrailers: HeaderMap?
    /// The body bytes the current body callback is about (a chunk, or all buffered so far).
    public var requestBody = StreamBody()
    public var responseBody = StreamBody()
    /// Values set with proxy_set_property, readable by later filters (Envoy's filter state).
    public var filterState: [String: [UInt8]] = [:]
    /// A filter changed the request headers (or asked for it with proxy_clear_route_cache):
    /// the route chosen for the stream is chosen again before the request goes upstream,
    /// as Envoy's Wasm filters clear the route cache when they edit request headers.
    public var routeCacheCleared = false
    public let info: StreamInfo

    public init(info: StreamInfo) { self.info = info }
}

/// What network (TCP) filters read and change on one connection: the bytes waiting in each
/// direction, and the connection's facts. As in Envoy, a direction's bytes are there during
/// its data callbacks and for as long as a filter holds them after one (it may edit them from
/// a tick or a callout's answer before it continues); nil otherwise: reads see nothing,
/// writes are BadArgument.
public final class NetworkConnectionData {
    /// Bytes from the client not yet past the filters (DownstreamData).
    public var downstreamData: StreamBody?
    /// Bytes towards the client not yet past the filters (UpstreamData).
    public var upstreamData: StreamBody?
    public var filterState: [String: [UInt8]] = [:]
    public let info: StreamInfo

    public init(info: StreamInfo) { self.info = info }
}

/// Actions a network filter can take on its connection; carried out after the callback.
public protocol NetworkConnectionActions: AnyObject {
    /// proxy_continue_stream(Downstream): data held by this filter goes on.
    func continueDownstream()
    /// proxy_close_stream(Downstream or Upstream): the connection closes once what was
    /// already written is flushed (Envoy's FlushWrite).
    func closeConnection(_ type: StreamType)
}

/// Bytes the proxy owns (a network buffer), lent to the host for reading in place.
public protocol BodyBytes {
    var byteCount: Int { get }
    func withBodyBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R
}

/// A body chunk as a body callback sees it: the proxy's own bytes, read in place (copied
/// only into guest memory, and only if the filter asks for them), until a filter edits
/// them; then the edited copy.
public struct StreamBody {
    private var original: (any BodyBytes)?
    /// The bytes after a filter's edit; nil while unedited.
    public private(set) var edited: [UInt8]?

    public init() {}
    public init(_ bytes: any BodyBytes) { original = bytes }

    public var count: Int { edited?.count ?? original?.byteCount ?? 0 }

    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        if let edited { return try edited.withUnsafeBytes(body) }
        if let original { return try original.withBodyBytes(body) }
        return try body(UnsafeRawBufferPointer(start: nil, count: 0))
    }

    /// Edits the bytes, copying the original the first time.
    public mutating func edit<R>(_ change: (inout [UInt8]) -> R) -> R {
        var bytes = edited ?? withBytes { Array($0) }
        original = nil
        edited = nil  // unique while edited: no copy on write
        let result = change(&bytes)
        edited = bytes
        return result
    }
}

/// What a TLS connection's properties expose (`connection.*` downstream, `upstream.*`
/// upstream), in Envoy's encodings: the version as BoringSSL names it (`TLSv1.3`), subjects in
/// RFC 2253 order (`CN=client,O=Acme`), the digest as lower-case hex.
public struct TLSDetails: Sendable {
    public var version: String
    public var requestedServerName: String
    public var peerCertificatePresented: Bool
    public var peerSubject: String
    public var peerURISANs: [String]
    public var peerDNSSANs: [String]
    public var peerSHA256Digest: String
    public var localSubject: String
    public var localURISANs: [String]
    public var localDNSSANs: [String]

    public init(version: String, requestedServerName: String, peerCertificatePresented: Bool = false, peerSubject: String = "",
                peerURISANs: [String] = [], peerDNSSANs: [String] = [], peerSHA256Digest: String = "",
                localSubject: String = "", localURISANs: [String] = [], localDNSSANs: [String] = []) {
        self.version = version
        self.requestedServerName = requestedServerName
        self.peerCertificatePresented = peerCertificatePresented
        self.peerSubject = peerSubject
        self.peerURISANs = peerURISANs
        self.peerDNSSANs = peerDNSSANs
        self.peerSHA256Digest = peerSHA256Digest
        self.localSubject = localSubject
        self.localURISANs = localURISANs
        self.localDNSSANs = localDNSSANs
    }
}

/// Facts about a stream that properties expose (request.*, source.*, upstream.*, response.*).
/// Filled by the proxy as the stream progresses.
public final class StreamInfo {
    public var connectionID: UInt64 = 0
    public var sourceAddress: String = ""
    public var sourcePort: Int = 0
    public var destinationAddress: String = ""
    public var destinationPort: Int = 0
    public var requestStart = Date()
    public var protocolName: String = "HTTP/1.1"
    /// The downstream connection's TLS; nil on cleartext.
    public var downstreamTLS: TLSDetails?
    /// The upstream connection's TLS (from its response head on); nil on cleartext.
    public var upstreamTLS: TLSDetails?
    public var requestBodyBytes: Int = 0
    public var responseBodyBytes: Int = 0
    public var responseCode: Int = 0
    public var responseCodeDetails: String = ""
    public var responseFlags: Int = 0
    public var routeName: String = ""
    public var clusterName: String = ""
    public var virtualHostName: String = ""
    public var listenerName: String = ""
    public var upstreamAddress: String = ""
    public var upstreamPort: Int = 0
    public var upstreamAttempts: Int = 0
    /// Envoy's metadata of the stream's route, cluster, listener and upstream endpoint.
    public var routeMetadata: Metadata?
    public var clusterMetadata: Metadata?
    public var listenerMetadata: Metadata?
    public var upstreamHostMetadata: Metadata?
    public var endTime: Date?
    /// The request's headers as first received, for properties read in phases where the
    /// live map is gone (on_log).
    public var finalRequestHeaders: HeaderMap?
    public var finalResponseHeaders: HeaderMap?
    public var finalResponseTrailers: HeaderMap?

    public init() {}
}

/// Actions a filter can take on its stream; the proxy's chain driver implements them.
/// Every action is carried out after the current callback returns (never re-entrantly).
public protocol HTTPStreamActions: AnyObject {
    func continueStream(_ type: StreamType) -> WasmResult
    func closeStream(_ type: StreamType) -> WasmResult
    func sendLocalResponse(status: Int, details: String, body: [UInt8], headers: [(String, String)], grpcStatus: Int32?) -> WasmResult
    /// Ask the router to choose the route again (headers changed in ways that matter).
    func clearRouteCache()
}
