import Foundation

// Numeric constants of the Proxy-Wasm ABI (0.1.0, 0.2.0, 0.2.1), named as in the spec.
// See ../../docs/SUPPORT.md for what Sluice does with each.

public enum ABIVersion: String, Sendable, Comparable {
    case v0_1_0 = "0.1.0"
    case v0_2_0 = "0.2.0"
    case v0_2_1 = "0.2.1"

    /// The export that marks a module as built for this version.
    public var marker: String { "proxy_abi_version_" + rawValue.replacingOccurrences(of: ".", with: "_") }

    public static func < (a: ABIVersion, b: ABIVersion) -> Bool { a.rawValue < b.rawValue }
}

/// `proxy_status_t` / WasmResult: what every hostcall returns.
public enum WasmResult: UInt32, Sendable {
    case ok = 0
    case notFound = 1
    case badArgument = 2
    case serializationFailure = 3
    case parseFailure = 4
    case invalidMemoryAccess = 6
    case empty = 7
    case casMismatch = 8
    case internalFailure = 10
    case brokenConnection = 11
    case unimplemented = 12
}

public enum LogLevel: UInt32, Sendable, Comparable {
    case trace = 0, debug, info, warn, error, critical
    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue < b.rawValue }
}

public enum MapType: UInt32, Sendable {
    case requestHeaders = 0, requestTrailers, responseHeaders, responseTrailers
    case grpcInitialMetadata, grpcTrailingMetadata, httpCallResponseHeaders, httpCallResponseTrailers
}

public enum BufferType: UInt32, Sendable {
    case requestBody = 0, responseBody, downstreamData, upstreamData, httpCallResponseBody
    case grpcMessage, vmConfiguration, pluginConfiguration, foreignFunctionArguments
}

public enum StreamType: UInt32, Sendable {
    case request = 0, response, downstream, upstream
}

public enum MetricType: UInt32, Sendable {
    case counter = 0, gauge, histogram
}

/// How a filter holding a body reacts when it holds more than its buffer limit (Envoy's two
/// StopAll and StopIteration flavours): `buffer` answers 413 (request) or 500 (response);
/// `watermark` stops reading that direction until the filter lets the data go.
public enum HoldMode: Sendable, Equatable {
    case buffer, watermark
}

/// What a headers callback asked for (Envoy's FilterHeadersStatus, as cpp-host maps it).
public enum HeadersAction: Sendable, Equatable {
    case `continue`
    /// Headers are held; body callbacks still reach this filter (only with Envoy's
    /// allow_on_headers_stop_iteration: true; by default StopIteration becomes
    /// StopAllIterationAndWatermark).
    case stopIteration
    /// Headers and everything after them are held from this filter until it resumes.
    case stopAll(HoldMode)

    init(raw: UInt64, stopIterationHoldsAll: Bool) {
        switch raw {
        case 0, 2: self = .continue  // 2 (ContinueAndEndStream) falls back to Continue, as in Envoy
        case 1: self = stopIterationHoldsAll ? .stopAll(.watermark) : .stopIteration
        case 3: self = .stopAll(.buffer)
        default: self = .stopAll(.watermark)
        }
    }
}

/// What a body callback asked for (FilterDataStatus).
public enum DataAction: Sendable, Equatable {
    case `continue`
    /// StopIterationAndBuffer: keep the chunk; the next callback sees the whole body so far.
    /// StopIterationAndWatermark: keep the chunk; the next callback sees only its own chunk.
    /// Either way everything kept goes on when the filter continues.
    case stop(HoldMode)
    /// StopIterationNoBuffer: the chunk is not kept (the filter took it).
    case stopNoBuffer

    init(raw: UInt64) {
        switch raw {
        case 0: self = .continue
        case 1: self = .stop(.buffer)
        case 3: self = .stopNoBuffer
        default: self = .stop(.watermark)
        }
    }
}

/// What a TCP callback asked for (proxy_on_new_connection, _downstream_data, _upstream_data):
/// Envoy's network FilterStatus. Anything but 0 stops.
public enum NetworkAction: Sendable, Equatable {
    /// The data (or the new connection) goes on to the next filter.
    case `continue`
    /// Iteration stops here; the data stays in the connection's buffer, and the next callback
    /// in that direction sees it again with whatever arrived since.
    case stopIteration

    init(raw: UInt64?) { self = (raw ?? 0) == 0 ? .continue : .stopIteration }
}

/// Which side closed a connection (proxy_on_*_connection_close's peer type).
public enum PeerType: UInt32, Sendable {
    case unknown = 0, local, remote
}

/// What a trailers callback asked for (FilterTrailersStatus).
public enum TrailersAction: Sendable, Equatable {
    case `continue`, stop
    init(raw: UInt64) { self = raw == 0 ? .continue : .stop }
}

/// WASI preview1 errno values Sluice returns.
public enum WASIErrno: UInt32 {
    case success = 0, badf = 8, notdir = 20, fault = 21, inval = 28, noent = 44, nosys = 52, notsup = 58, notcapable = 76
}
