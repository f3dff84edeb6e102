import Foundation

// Hostile and malformed upstream responses for WireConformanceTests: the raw bytes the upstream
// answers `GET /script/<name>` with (names are used in the request target, so they stay
// URL-safe). The policy: a malformed or ambiguous response head gets the client a 502 on a
// connection that stays open, and the upstream connection is discarded; a response that goes
// wrong after its head was forwarded ends the client connection (`status: nil`). Bytes the
// upstream sends beyond the response must never reach the next request (the runner's probes).

// MARK: - Helpers

/// A malformed or ambiguous head: 502, the client connection stays open.
private func badGateway(_ name: String, _ response: String) -> UpstreamCase {
    UpstreamCase(name: name, response: response, status: 502)
}

/// A response the client gets with `status` and `body`, the connection staying open.
private func passes(_ name: String, _ response: String, _ status: Int = 200, body: String? = "ok") -> UpstreamCase {
    UpstreamCase(name: name, response: response, status: status, body: body)
}

/// The upstream sends `response` and closes; the client must see its connection end.
private func cutOff(_ name: String, _ response: String) -> UpstreamCase {
    UpstreamCase(name: name, response: response, upstreamCloses: true, status: nil)
}

private let okTail = "Content-Length: 2\r\n\r\nok"
private let flood102 = String(repeating: "HTTP/1.1 102 Processing\r\n\r\n", count: 50)
private let header70k = String(repeating: "h", count: 70 * 1024)
/// 2,000 header lines of about 40 bytes: over 64 KiB in total, each line small.
private let manyHeaders80k: String = (0..<2000).map { "X-Filler-\(10000 + $0): 01234567890123456789\r\n" }.joined(separator: "")

// MARK: - Status line

private let statusLineCases: [UpstreamCase] = [
    badGateway("status-four-digits", "HTTP/1.1 2000 OK\r\n\(okTail)"),
    badGateway("status-two-digits", "HTTP/1.1 20 OK\r\n\(okTail)"),
    // A missing reason phrase (even without the SP before it) is common and harmless.
    passes("status-without-reason", "HTTP/1.1 200\r\n\(okTail)"),
    passes("status-with-empty-reason", "HTTP/1.1 200 \r\n\(okTail)"),
    passes("status-with-unusual-reason", "HTTP/1.1 200 Fine, thanks: and you?\r\n\(okTail)"),
    // Any three-digit code from 100 to 599 is valid; an unknown one is forwarded as is.
    passes("status-299-unregistered", "HTTP/1.1 299 Custom\r\n\(okTail)", 299),
    badGateway("protocol-name-misspelled", "HTP/1.1 200 OK\r\n\(okTail)"),
    badGateway("status-after-two-spaces", "HTTP/1.1  200 OK\r\n\(okTail)"),
    badGateway("version-http-2", "HTTP/2 200\r\n\(okTail)"),
    badGateway("version-http-2-0", "HTTP/2.0 200 OK\r\n\(okTail)"),
    badGateway("status-099", "HTTP/1.1 099 Low\r\n\(okTail)"),
    badGateway("status-600", "HTTP/1.1 600 High\r\n\(okTail)"),
    badGateway("status-not-a-number", "HTTP/1.1 abc OK\r\n\(okTail)"),
    badGateway("status-glued-to-reason", "HTTP/1.1 200OK\r\n\(okTail)"),
    badGateway("version-lowercase", "http/1.1 200 OK\r\n\(okTail)"),
    badGateway("status-line-icy", "ICY 200 OK\r\n\(okTail)"),
    badGateway("status-line-tab-separated", "HTTP/1.1\t200 OK\r\n\(okTail)"),
    badGateway("status-line-garbage", "garbage\r\n\r\n"),
]

// MARK: - Framing of the response body

private let framingCases: [UpstreamCase] = [
    badGateway("cl-then-te", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
    badGateway("te-then-cl", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
    badGateway("cl-negative", "HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok"),
    badGateway("cl-two-different", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!"),
    // why: identical repeated values may be accepted by RFC 9110; strict refuses.
    badGateway("cl-two-equal", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"),
    // why: as above, for the list form.
    badGateway("cl-list-equal", "HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok"),
    badGateway("cl-list-different", "HTTP/1.1 200 OK\r\nContent-Length: 2,3\r\n\r\nok!"),
    badGateway("cl-plus-sign", "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok"),
    badGateway("cl-hex", "HTTP/1.1 200 OK\r\nContent-Length: 0x2\r\n\r\nok"),
    badGateway("cl-empty", "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\nok"),
    badGateway("cl-overflow", "HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551617\r\n\r\nok"),
    // why: gzip as a transfer coding cannot be passed to a client that never offered it, and
    // the proxy does not decode it.
    badGateway("te-gzip-chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
    // why: RFC 9112 would read this as close-delimited; strict treats it as ambiguous.
    badGateway("te-chunked-gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
    badGateway("te-identity", "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nok"),
    badGateway("te-xchunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
    badGateway("te-chunked-twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
    // Transfer codings are case-insensitive.
    passes("te-chunked-capitalised", "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
    // The extra bytes after a complete response are not the start of the next one.
    passes("second-response-in-same-write", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED"),
    passes("garbage-after-response", "HTTP/1.1 200 OK\r\n\(okTail)\u{0}\u{ff}garbage\r\n\r\n\u{7}\u{1b}[0m"),
    passes("cl-shorter-than-body", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"),
    passes("chunked-response-then-smuggled-response",
           "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED"),
    // The upstream says close but keeps its socket open: Sluice must drop the connection itself,
    // and the client's own connection is not affected.
    passes("connection-close-upstream-stays-open", "HTTP/1.1 200 OK\r\nConnection: close\r\n\(okTail)"),
]

// MARK: - Cut off

private let cutOffCases: [UpstreamCase] = [
    cutOff("close-mid-body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
    cutOff("close-after-head-before-body", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
    cutOff("close-mid-chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"),
    cutOff("close-before-last-chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n"),
    // why: a client must not take a truncated chunked body as complete, even on a clean close.
    cutOff("close-huge-chunk-declared", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n200000\r\nabc"),
    // Nothing was forwarded yet, so the client gets a 502 and keeps its connection.
    // POST: a request that is not idempotent is never replayed on a fresh connection (a GET
    // would be, once, and the upstream would see it twice).
    UpstreamCase(name: "close-before-any-byte", response: "", upstreamCloses: true, status: 502, method: "POST"),
    UpstreamCase(name: "close-mid-status-line", response: "HTTP/1.1 20", upstreamCloses: true, status: 502),
    UpstreamCase(name: "close-mid-headers", response: "HTTP/1.1 200 OK\r\nContent-Le", upstreamCloses: true, status: 502),
    UpstreamCase(name: "close-after-status-line", response: "HTTP/1.1 200 OK\r\n", upstreamCloses: true, status: 502),
]

// MARK: - Interim responses

private let interimCases: [UpstreamCase] = [
    // The request had no Expect: the 100 is unasked for, but harmless.
    passes("100-before-200", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\(okTail)"),
    passes("102-before-200", "HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\n\(okTail)"),
    passes("103-before-200", "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\nHTTP/1.1 200 OK\r\n\(okTail)"),
    passes("100-102-103-before-200",
           "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.js>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\n\(okTail)"),
    passes("102-flood-before-200", "\(flood102)HTTP/1.1 200 OK\r\n\(okTail)"),
    // Nobody asked to upgrade.
    badGateway("unsolicited-101", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n"),
    badGateway("unsolicited-101-then-bytes", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\u{81}\u{2}hi"),
]

// MARK: - Header section syntax

private let headerCases: [UpstreamCase] = [
    badGateway("header-with-nul", "HTTP/1.1 200 OK\r\nX-A: a\u{0}b\r\n\(okTail)"),
    badGateway("header-obs-fold", "HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\n\(okTail)"),
    badGateway("header-obs-fold-tab", "HTTP/1.1 200 OK\r\nX-A: 1\r\n\t2\r\n\(okTail)"),
    badGateway("header-space-before-colon", "HTTP/1.1 200 OK\r\nX-A : 1\r\n\(okTail)"),
    badGateway("content-length-space-before-colon", "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok"),
    // why: strict line endings, as for requests.
    badGateway("bare-lf-line-endings", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok"),
    badGateway("bare-lf-after-status-line", "HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\nok"),
    badGateway("bare-cr-in-header", "HTTP/1.1 200 OK\r\nX-A: a\rb\r\n\(okTail)"),
    badGateway("header-without-colon", "HTTP/1.1 200 OK\r\nX-A 1\r\n\(okTail)"),
    badGateway("header-name-with-space", "HTTP/1.1 200 OK\r\nX A: 1\r\n\(okTail)"),
    badGateway("header-empty-name", "HTTP/1.1 200 OK\r\n: 1\r\n\(okTail)"),
    badGateway("header-leading-whitespace", "HTTP/1.1 200 OK\r\n X-A: 1\r\n\(okTail)"),
    badGateway("header-block-over-64k", "HTTP/1.1 200 OK\r\nX-Big: \(header70k)\r\n\(okTail)"),
    badGateway("header-block-over-64k-many-lines", "HTTP/1.1 200 OK\r\n\(manyHeaders80k)\(okTail)"),
]

// MARK: - Close-delimited bodies and HTTP/1.0 on either side

private let closeDelimitedCases: [UpstreamCase] = [
    // No Content-Length, no Transfer-Encoding: the body runs to the close. An HTTP/1.1 client
    // gets it re-framed (chunked) and keeps its connection.
    UpstreamCase(name: "close-delimited-http11-client", response: "HTTP/1.1 200 OK\r\n\r\nhello until close",
                 upstreamCloses: true, status: 200, body: "hello until close"),
    UpstreamCase(name: "close-delimited-with-connection-close", response: "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello until close",
                 upstreamCloses: true, status: 200, body: "hello until close"),
    // An HTTP/1.0 client without keep-alive: the body, then the close.
    UpstreamCase(name: "close-delimited-http10-client", response: "HTTP/1.1 200 OK\r\n\r\nhello until close",
                 upstreamCloses: true, status: 200, body: "hello until close", clientCloses: true, clientVersion: "HTTP/1.0"),
    // An HTTP/1.0 client cannot read chunked: the body is close-delimited for it, keep-alive or not.
    UpstreamCase(name: "chunked-to-http10-keepalive-client", response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                 status: 200, body: "hello world", clientCloses: true, clientVersion: "HTTP/1.0",
                 extraRequestHeaders: "Connection: keep-alive\r\n"),
    UpstreamCase(name: "close-delimited-to-http10-keepalive-client", response: "HTTP/1.1 200 OK\r\n\r\nhello until close",
                 upstreamCloses: true, status: 200, body: "hello until close", clientCloses: true, clientVersion: "HTTP/1.0",
                 extraRequestHeaders: "Connection: keep-alive\r\n"),
    UpstreamCase(name: "content-length-to-http10-keepalive-client", response: "HTTP/1.1 200 OK\r\n\(okTail)",
                 status: 200, body: "ok", clientCloses: false, clientVersion: "HTTP/1.0",
                 extraRequestHeaders: "Connection: keep-alive\r\n"),
    // An HTTP/1.0 upstream without keep-alive: its connection must not be reused, even though it
    // stays open here.
    passes("http10-response-with-content-length", "HTTP/1.0 200 OK\r\n\(okTail)"),
    passes("http10-response-with-keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\(okTail)"),
    UpstreamCase(name: "http10-response-close-delimited", response: "HTTP/1.0 200 OK\r\n\r\nhello until close",
                 upstreamCloses: true, status: 200, body: "hello until close"),
]

// MARK: - Responses without a body

private let noBodyCases: [UpstreamCase] = [
    // The five bytes after a 204 are not its body and must poison nothing.
    passes("204-with-content-length-and-body", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello", 204, body: nil),
    // In a 304, Content-Length describes the selected representation, not this message.
    passes("304-with-content-length-no-body", "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", 304, body: nil),
    passes("304-with-body-bytes", "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello", 304, body: nil),
    UpstreamCase(name: "head-content-length-no-body", response: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", status: 200, method: "HEAD"),
    UpstreamCase(name: "head-chunked-no-body", response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", status: 200, method: "HEAD"),
    // The upstream wrongly sends a body to HEAD: those bytes must not become the next response.
    UpstreamCase(name: "head-content-length-with-body-bytes", response: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", status: 200, method: "HEAD"),
]

// MARK: - Chunked response bodies

private let chunkedCases: [UpstreamCase] = [
    passes("chunked-with-trailers", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n"),
    passes("chunked-with-extension", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;name=\"v\"\r\nok\r\n0;last\r\n\r\n"),
    passes("chunked-many-small-chunks", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nh\r\n1\r\ne\r\n1\r\nl\r\n1\r\nl\r\n1\r\no\r\n0\r\n\r\n",
           body: "hello"),
    passes("chunked-uppercase-hex-and-leading-zeros", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n00A\r\n0123456789\r\n0\r\n\r\n",
           body: "0123456789"),
    // After the head went out, an unreadable body can only end the client connection.
    UpstreamCase(name: "chunked-bad-size-mid-body", response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\nmore\r\n0\r\n\r\n", status: nil),
    UpstreamCase(name: "chunked-missing-crlf-after-data", response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n", status: nil),
    // why: strict line endings inside the body too.
    UpstreamCase(name: "chunked-bare-lf-after-size", response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nok\r\n0\r\n\r\n", status: nil),
    UpstreamCase(name: "chunked-size-overflow", response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\nok\r\n0\r\n\r\n", status: nil),
]

// MARK: - All cases

let upstreamCases: [UpstreamCase] = [
    statusLineCases,
    framingCases,
    cutOffCases,
    interimCases,
    headerCases,
    closeDelimitedCases,
    noBodyCases,
    chunkedCases,
].flatMap { $0 }
