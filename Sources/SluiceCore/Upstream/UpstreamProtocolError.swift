/// What an upstream did wrong on the wire. Each kind is counted per cluster
/// (`sluice_cluster_protocol_errors_total{reason=…}`); the ones that reach a client before
/// any response byte become a 502 with the matching access-log flag.
enum UpstreamProtocolError: Int, CaseIterable, Sendable {
    /// The response head could not be parsed, or its framing was ambiguous.
    case malformedResponse
    /// A transfer coding other than `chunked` (gzip, chunked): Sluice does not decode it and
    /// will not relabel the body as identity.
    case unsupportedTransferCoding
    /// `101 Switching Protocols` to a request that did not ask to upgrade.
    case unsolicitedUpgrade
    /// Bytes after a complete response, or a response nobody asked for: the connection is
    /// closed, never pooled, so they cannot reach another client.
    case unsolicitedResponse

    var label: String {
        switch self {
        case .malformedResponse: return "malformed_response"
        case .unsupportedTransferCoding: return "unsupported_transfer_coding"
        case .unsolicitedUpgrade: return "unsolicited_upgrade"
        case .unsolicitedResponse: return "unsolicited_response"
        }
    }
}
