/// Envoy's response flags: the bit values of its StreamInfo::ResponseFlag (what filters read
/// as the `response.flags` property) and the short names its access log prints.
struct ResponseFlags: OptionSet, Sendable {
    let rawValue: UInt64

    static let noHealthyUpstream = ResponseFlags(rawValue: 0x2)  // UH
    static let upstreamRequestTimeout = ResponseFlags(rawValue: 0x4)  // UT
    static let upstreamConnectionFailure = ResponseFlags(rawValue: 0x20)  // UF
    static let upstreamConnectionTermination = ResponseFlags(rawValue: 0x40)  // UC
    static let upstreamOverflow = ResponseFlags(rawValue: 0x80)  // UO
    static let noRouteFound = ResponseFlags(rawValue: 0x100)  // NR
    static let downstreamConnectionTermination = ResponseFlags(rawValue: 0x4000)  // DC
    static let streamIdleTimeout = ResponseFlags(rawValue: 0x10000)  // SI
    static let downstreamProtocolError = ResponseFlags(rawValue: 0x40000)  // DPE
    static let upstreamProtocolError = ResponseFlags(rawValue: 0x800000)  // UPE

    private static let names: [(ResponseFlags, String)] = [
        (.noHealthyUpstream, "UH"), (.upstreamRequestTimeout, "UT"), (.upstreamConnectionFailure, "UF"),
        (.upstreamConnectionTermination, "UC"), (.upstreamOverflow, "UO"), (.noRouteFound, "NR"),
        (.downstreamConnectionTermination, "DC"), (.streamIdleTimeout, "SI"), (.downstreamProtocolError, "DPE"),
        (.upstreamProtocolError, "UPE"),
    ]

    /// Envoy's %RESPONSE_FLAGS%: short names joined by commas, `-` when none is set.
    var shortString: String {
        let set = Self.names.filter { contains($0.0) }.map(\.1)
        return set.isEmpty ? "-" : set.joined(separator: ",")
    }
}

/// Why a stream ended the way it did, when Sluice rather than the upstream decided: one typed
/// value per stream, from which the access log's `flags` (Sluice's names), its
/// `response_flags` (Envoy's) and the `response.flags` property are all derived.
enum StreamFlag: Sendable, Equatable {
    case noRoute
    case directResponse
    case noHealthyUpstream
    case upstreamOverflow
    case upstreamConnectFailure
    case upstreamTimeout
    case upstreamProtocolError
    case upstreamReset
    case upstreamResetAfterHeaders
    case downstreamReset
    case upgrade
    case refused(DownstreamRefusal)
    /// A filter answered or ended the stream; the payload is its response code details
    /// (`wasm_local_reply`, `wasm_fail_stream`, `wasm_close_stream`, ...).
    case filter(String)

    var label: String {
        switch self {
        case .noRoute: return "no_route"
        case .directResponse: return "direct_response"
        case .noHealthyUpstream: return "no_healthy_upstream"
        case .upstreamOverflow: return "upstream_overflow"
        case .upstreamConnectFailure: return "upstream_connect_failure"
        case .upstreamTimeout: return "upstream_timeout"
        case .upstreamProtocolError: return "upstream_protocol_error"
        case .upstreamReset: return "upstream_reset"
        case .upstreamResetAfterHeaders: return "upstream_reset_after_headers"
        case .downstreamReset: return "downstream_reset"
        case .upgrade: return "upgrade"
        case .refused(let refusal): return refusal.label
        case .filter(let details): return details
        }
    }

    /// Envoy's response code details for an answer Sluice gave (the `response.code_details`
    /// property, and what filters see in on_log).
    var codeDetails: String {
        switch self {
        case .noRoute: return "route_not_found"
        default: return label
        }
    }

    var envoyFlags: ResponseFlags {
        switch self {
        case .noRoute: return .noRouteFound
        case .noHealthyUpstream: return .noHealthyUpstream
        case .upstreamOverflow: return .upstreamOverflow
        case .upstreamConnectFailure: return .upstreamConnectionFailure
        case .upstreamTimeout: return .upstreamRequestTimeout
        case .upstreamProtocolError: return .upstreamProtocolError
        case .upstreamReset, .upstreamResetAfterHeaders: return .upstreamConnectionTermination
        case .downstreamReset: return .downstreamConnectionTermination
        case .refused(.streamIdleTimeout): return .streamIdleTimeout
        case .refused(.requestTimeout), .refused(.requestHeadersTimeout), .refused(.pipelineLimit), .refused(.upgradeNotAllowed): return []
        case .refused: return .downstreamProtocolError
        case .directResponse, .upgrade, .filter: return []
        }
    }
}

extension Optional where Wrapped == StreamFlag {
    /// The access log's `flags` field: `-` for a normal proxied exchange.
    var label: String { self?.label ?? "-" }
}
