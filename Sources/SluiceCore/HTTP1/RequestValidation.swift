import NIOHTTP1

/// Why Sluice refused a downstream request or cut a downstream connection. Each reason has one
/// status, one message, one stats label (`sluice_listener_refused_total{reason=…}`) and one
/// access-log flag, so refusals are counted and logged by kind, never by matching text.
enum DownstreamRefusal: Int, CaseIterable, Error, Sendable {
    case malformedRequest
    case headersTooLarge
    case missingHost
    case duplicateHost
    case invalidTarget
    case invalidContentLength
    case contentLengthWithTransferEncoding
    case unknownTransferEncoding
    case unsupportedTransferCoding
    case transferEncodingInHTTP10
    case connectMethod
    case traceWithBody
    case requestHeadersTimeout
    case requestTimeout
    case streamIdleTimeout
    case pipelineLimit
    case upgradeNotAllowed

    var status: HTTPResponseStatus {
        switch self {
        case .upgradeNotAllowed: return .forbidden
        case .headersTooLarge: return .requestHeaderFieldsTooLarge
        case .unsupportedTransferCoding: return .notImplemented
        case .connectMethod: return .methodNotAllowed
        case .requestHeadersTimeout, .requestTimeout, .streamIdleTimeout: return .requestTimeout
        case .pipelineLimit: return .serviceUnavailable
        default: return .badRequest
        }
    }

    var label: String {
        switch self {
        case .malformedRequest: return "malformed_request"
        case .headersTooLarge: return "headers_too_large"
        case .missingHost: return "missing_host"
        case .duplicateHost: return "duplicate_host"
        case .invalidTarget: return "invalid_target"
        case .invalidContentLength: return "invalid_content_length"
        case .contentLengthWithTransferEncoding: return "content_length_with_transfer_encoding"
        case .unknownTransferEncoding: return "unknown_transfer_encoding"
        case .unsupportedTransferCoding: return "unsupported_transfer_coding"
        case .transferEncodingInHTTP10: return "transfer_encoding_in_http10"
        case .connectMethod: return "connect_refused"
        case .traceWithBody: return "trace_with_body"
        case .requestHeadersTimeout: return "request_headers_timeout"
        case .requestTimeout: return "request_timeout"
        case .streamIdleTimeout: return "stream_idle_timeout"
        case .pipelineLimit: return "pipeline_limit"
        case .upgradeNotAllowed: return "upgrade_failed"
        }
    }

    var message: String {
        switch self {
        case .malformedRequest: return "malformed request\n"
        case .headersTooLarge: return "request headers too large\n"
        case .missingHost: return "missing Host header\n"
        case .duplicateHost: return "more than one Host header\n"
        case .invalidTarget: return "invalid request target\n"
        case .invalidContentLength: return "invalid or conflicting Content-Length\n"
        case .contentLengthWithTransferEncoding: return "both Content-Length and Transfer-Encoding\n"
        case .unknownTransferEncoding: return "unsupported Transfer-Encoding\n"
        case .unsupportedTransferCoding: return "unsupported transfer coding\n"
        case .transferEncodingInHTTP10: return "Transfer-Encoding in HTTP/1.0\n"
        case .connectMethod: return "CONNECT is not allowed here\n"
        case .traceWithBody: return "TRACE with a body\n"
        case .requestHeadersTimeout: return "request headers timeout\n"
        case .requestTimeout: return "request timeout\n"
        case .streamIdleTimeout: return "stream idle timeout\n"
        case .pipelineLimit: return "too many pipelined requests\n"
        case .upgradeNotAllowed: return ""
        }
    }
}

/// How a request body is delimited on the wire. Decided once, from the downstream request,
/// and re-applied explicitly on the upstream request: Sluice never lets an encoder guess
/// framing from the method, and never forwards a framing header it did not validate.
enum BodyFraming: Equatable, Sendable {
    case none
    case contentLength(Int)
    case chunked

    var hasBody: Bool {
        switch self {
        case .none, .contentLength(0): return false
        default: return true
        }
    }
}

/// A request that passed validation: its head normalised for routing and forwarding
/// (origin-form target, exactly one Host taken from an absolute-form target if there was one)
/// and its body framing.
struct ValidatedRequest {
    var head: HTTPRequestHead
    var framing: BodyFraming
    /// The authority routing uses: the Host header, or the absolute-form target's authority.
    var authority: String
}

/// Header names a `Connection` option may not remove: removing them would change how the
/// message is framed or routed, not just what one hop sees (RFC 9110 §7.6.1 lets a proxy
/// ignore such nominations). The framing headers are rebuilt from `BodyFraming` anyway.
let connectionNominationProtected: Set<String> = ["host", "content-length", "transfer-encoding", "te", "connection", "upgrade"]

enum RequestValidation {
    /// Checks the parts of a request head that two HTTP parsers could read differently
    /// (RFC 9112 §6, §3.2, §9.3) and normalises it. The decoder has already rejected what is
    /// syntactically invalid; this decides framing and target semantics.
    static func validate(_ head: HTTPRequestHead) -> Result<ValidatedRequest, DownstreamRefusal> {
        var head = head
        if head.method == .CONNECT { return .failure(.connectMethod) }
        let fields = FramingFields(head.headers)

        let framing: BodyFraming
        switch bodyFraming(fields, version: head.version) {
        case .success(let f): framing = f
        case .failure(let refusal): return .failure(refusal)
        }
        if head.method == .TRACE && framing.hasBody { return .failure(.traceWithBody) }

        if fields.hostCount > 1 { return .failure(.duplicateHost) }
        // RFC 9112 §3.2: an HTTP/1.1 request without Host is refused, even in absolute form.
        let hostRequired = head.version.major >= 2 || head.version.minor >= 1
        if fields.hostCount == 0 && hostRequired { return .failure(.missingHost) }
        var authority = fields.host.map { $0.trimmingOWS() } ?? ""
        if !authority.isEmpty {
            guard isValidAuthority(authority) else { return .failure(.invalidTarget) }
            if authority != fields.host { head.headers.replaceOrAdd(name: "host", value: authority) }
        }

        // The request target: origin-form, absolute-form (routed on its authority, which then
        // replaces Host, RFC 9112 §3.2.2), or asterisk-form for OPTIONS.
        let uri = head.uri
        // A fragment is never part of a request target (RFC 9112 §3.2); refusing it keeps
        // routing and the upstream from reading two different paths.
        if uri.utf8.contains(UInt8(ascii: "#")) { return .failure(.invalidTarget) }
        if uri.utf8.first == UInt8(ascii: "/") {
            // origin-form
        } else if uri == "*" {
            guard head.method == .OPTIONS else { return .failure(.invalidTarget) }
        } else if let absolute = AbsoluteTarget(uri), isValidAuthority(absolute.authority) {
            authority = absolute.authority
            head.uri = absolute.originForm
            head.headers.replaceOrAdd(name: "host", value: authority)
        } else {
            return .failure(.invalidTarget)
        }
        if authority.isEmpty && hostRequired { return .failure(.invalidTarget) }
        return .success(ValidatedRequest(head: head, framing: framing, authority: authority))
    }

    /// `host[:port]` as RFC 3986 §3.2.2 allows it in Host: a reg-name (unreserved, pct-encoded,
    /// a few sub-delims), an IPv4 address or a bracketed IPv6 literal, and a decimal port.
    /// Userinfo, spaces, commas and slashes are refused: each would let two readers disagree
    /// about which host was meant.
    static func isValidAuthority(_ authority: String) -> Bool {
        let bytes = authority.utf8
        guard let first = bytes.first else { return false }
        var hostEnd = bytes.endIndex
        var portStart = bytes.endIndex
        if first == UInt8(ascii: "[") {
            guard let close = bytes.firstIndex(of: UInt8(ascii: "]")) else { return false }
            let literal = bytes[bytes.index(after: bytes.startIndex)..<close]
            guard !literal.isEmpty, literal.allSatisfy({ hexOrColonOrDot[Int($0)] }) else { return false }
            let afterClose = bytes.index(after: close)
            if afterClose != bytes.endIndex {
                guard bytes[afterClose] == UInt8(ascii: ":") else { return false }
                portStart = bytes.index(after: afterClose)
            }
        } else {
            if let colon = bytes.lastIndex(of: UInt8(ascii: ":")) {
                hostEnd = colon
                portStart = bytes.index(after: colon)
                guard colon != bytes.startIndex else { return false }
            }
            guard bytes[..<hostEnd].allSatisfy({ regNameByte[Int($0)] }) else { return false }
        }
        let port = bytes[portStart...]
        return port.count <= 5 && port.allSatisfy { $0 >= 48 && $0 <= 57 }
    }

    /// reg-name bytes of RFC 3986 (unreserved, '%' of pct-encoding, and the sub-delims that
    /// are harmless in a host), as a lookup table: this runs on every request.
    private static let regNameByte: [Bool] = {
        var table = [Bool](repeating: false, count: 256)
        for b in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%!$&'()*+;=".utf8 { table[Int(b)] = true }
        return table
    }()

    private static let hexOrColonOrDot: [Bool] = {
        var table = [Bool](repeating: false, count: 256)
        for b in "0123456789abcdefABCDEF:.".utf8 { table[Int(b)] = true }
        return table
    }()

    /// RFC 9112 §6.1–6.3: Transfer-Encoding, if present, must be exactly `chunked` (any case)
    /// on HTTP/1.1 with no Content-Length; Content-Length must be one plain decimal number.
    static func bodyFraming(_ fields: FramingFields, version: HTTPVersion) -> Result<BodyFraming, DownstreamRefusal> {
        let te = fields.transferEncoding
        let cl = fields.contentLength
        if !te.isEmpty {
            if !cl.isEmpty { return .failure(.contentLengthWithTransferEncoding) }
            if version == .http1_0 { return .failure(.transferEncodingInHTTP10) }
            let codings = transferCodings(te)
            if codings == ["chunked"] { return .success(.chunked) }
            // A list that ends in chunked carries a coding Sluice does not decode: 501, as
            // RFC 9112 §6.1 asks. Anything else cannot be framed at all.
            if codings.count > 1 && codings.last == "chunked" && !codings.dropLast().contains(where: { $0.isEmpty || $0 == "chunked" }) {
                return .failure(.unsupportedTransferCoding)
            }
            return .failure(.unknownTransferEncoding)
        }
        guard !cl.isEmpty else { return .success(.none) }
        guard cl.count == 1, let length = parseContentLength(cl[0]) else { return .failure(.invalidContentLength) }
        return .success(.contentLength(length))
    }

    /// The codings of Transfer-Encoding field values, lower-cased, in order; empty list
    /// elements are kept (as empty strings) so that `chunked,` is not read as `chunked`.
    static func transferCodings(_ values: [String]) -> [String] {
        values.flatMap { $0.split(separator: ",", omittingEmptySubsequences: false) }.map { $0.trimmingOWS().lowercased() }
    }

    /// Host, Content-Length and Transfer-Encoding gathered in one pass over the headers (this
    /// runs for every request; nothing is allocated unless the fields are there).
    struct FramingFields {
        var hostCount = 0
        var host: String?
        var contentLength: [String] = []
        var transferEncoding: [String] = []

        init(_ headers: HTTPHeaders) {
            for (name, value) in headers {
                switch name.utf8.count {
                case 4 where name.isASCIICaseInsensitive("host"):
                    hostCount += 1
                    if host == nil { host = value }
                case 14 where name.isASCIICaseInsensitive("content-length"):
                    contentLength.append(value)
                case 17 where name.isASCIICaseInsensitive("transfer-encoding"):
                    transferEncoding.append(value)
                default:
                    break
                }
            }
        }
    }

    /// One run of 1 to 18 ASCII digits (no sign, no list, no spaces inside): anything longer
    /// could overflow somewhere downstream.
    static func parseContentLength(_ value: String) -> Int? {
        let digits = value.trimmingOWS()
        guard !digits.isEmpty, digits.utf8.count <= 18, digits.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
        return Int(digits)
    }
}

/// `http://authority/path?query` (or https), split for routing.
struct AbsoluteTarget {
    var authority: String
    var originForm: String

    init?(_ uri: String) {
        let lower = uri.lowercased()
        let rest: Substring
        if lower.hasPrefix("http://") {
            rest = uri.dropFirst(7)
        } else if lower.hasPrefix("https://") {
            rest = uri.dropFirst(8)
        } else {
            return nil
        }
        let end = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
        let authority = rest[..<end]
        // RFC 9112 §3.2.2: an absolute-form target without a host is invalid; userinfo is
        // deprecated and dangerous (it hides the real host from readers), so refused too.
        guard !authority.isEmpty, !authority.contains("@"), !authority.hasPrefix(":") else { return nil }
        self.authority = String(authority)
        let tail = rest[end...]
        if tail.hasPrefix("#") { return nil }
        self.originForm = tail.isEmpty ? "/" : (tail.hasPrefix("?") ? "/" + tail : String(tail))
    }
}

extension StringProtocol {
    /// Equal to `lowercase`, an ASCII lower-case literal of letters and '-', ignoring case.
    func isASCIICaseInsensitive(_ lowercase: StaticString) -> Bool {
        let other = UnsafeBufferPointer(start: lowercase.utf8Start, count: lowercase.utf8CodeUnitCount)
        guard utf8.count == other.count else { return false }
        return zip(utf8, other).allSatisfy { $0 == $1 || ($0 >= 65 && $0 <= 90 && $0 + 32 == $1) }
    }

    /// Trims optional whitespace (SP and HTAB, RFC 9110 §5.6.3) without Foundation.
    func trimmingOWS() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return String(s)
    }
}
