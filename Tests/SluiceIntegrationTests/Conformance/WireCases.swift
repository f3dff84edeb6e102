import Foundation

// Raw request cases for WireConformanceTests, written the way attackers and sloppy clients
// write requests. The policy: anything malformed or ambiguous at the syntax or framing level
// is refused with 400 and a close, and nothing reaches the upstream; CONNECT gets 405, an
// oversized head 431, and a Transfer-Encoding list ending in chunked with another coding
// before it 501. Where a case could be read as valid or invalid, the strict reading wins and a
// `// why:` comment says so.

// MARK: - Helpers

/// A complete request hidden inside a body: it must reach the upstream as body bytes, never as
/// a second request.
private let smuggled = "GET /SMUGGLED HTTP/1.1\r\nHost: t\r\n\r\n"
/// An empty chunked body followed by the smuggled request: as a Content-Length body, all of it.
private let lastChunkThenSmuggled = "0\r\n\r\n\(smuggled)"

/// One chunk: hex size, CRLF, data, CRLF.
private func chunk(_ data: String) -> String { "\(String(data.utf8.count, radix: 16))\r\n\(data)\r\n" }

/// A whole chunked body: the chunks, the last chunk and an empty trailer section.
private func chunked(_ parts: String...) -> String { parts.map(chunk).joined(separator: "") + "0\r\n\r\n" }

/// `POST /x` with `Host: t` and `Transfer-Encoding: <te>`, then the raw body bytes.
private func tePost(_ te: String, _ body: String) -> String {
    "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: \(te)\r\n\r\n\(body)"
}

/// `POST /x` with `Host: t`, `Transfer-Encoding: chunked` and the raw (already framed) body.
private func chunkedPost(_ body: String) -> String { tePost("chunked", body) }

/// `POST /x` with `Host: t` and `Content-Length: <cl>` (written verbatim), then the body bytes.
private func clPost(_ cl: String, _ body: String) -> String {
    "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: \(cl)\r\n\r\n\(body)"
}

/// Requests written back to back, as one write.
private func cat(_ parts: String...) -> String { parts.joined(separator: "") }

/// `GET <target>` with `Host: t` and extra header lines (each ending in CRLF).
private func get(_ target: String, _ extra: String = "") -> String {
    "GET \(target) HTTP/1.1\r\nHost: t\r\n\(extra)\r\n"
}

private let getX = Seen(method: "GET", target: "/x")
private let postHello = Seen(method: "POST", target: "/x", body: "hello")
private let fiveGets: [Seen] = (1...5).map { Seen(method: "GET", target: "/\($0)") }

private let big17k = String(repeating: "a", count: 17 * 1024)
private let big12k = String(repeating: "b", count: 12 * 1024)
private let target20k = "/" + String(repeating: "p", count: 20 * 1024)
/// 400 header lines of 57 bytes each: about 22 KiB, each line harmless on its own.
private let manyFillerHeaders: String = (0..<400).map { "X-Filler-\(1000 + $0): 0123456789012345678901234567890123456789\r\n" }.joined(separator: "")
private let ninetyHeaders: String = (0..<90).map { "X-H\($0): v\r\n" }.joined(separator: "")

// MARK: - Request line

private let requestLineCases: [WireCase] = [
    // RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request line.
    .forwarded("leading CRLF before the request line", "\r\nGET /x HTTP/1.1\r\nHost: t\r\n\r\n", [getX]),
    .forwarded("leading CRLF between pipelined requests", "GET /a HTTP/1.1\r\nHost: t\r\n\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n",
               [Seen(method: "GET", target: "/a"), Seen(method: "GET", target: "/b")]),
    // why: only an empty CRLF line may be skipped; a lone LF is a bare-LF line ending.
    // RFC 9112 §2.2: empty lines before a request line are skipped, and a bare LF may end a
    // line; Sluice's decoder does both and re-serialises the request, so nothing can desync.
    .forwarded("leading bare LF before the request line", "\nGET /x HTTP/1.1\r\nHost: t\r\n\r\n", [getX]),
    .refused("method only", "GET\r\nHost: t\r\n\r\n"),
    .refused("method and target, no version", "GET /x\r\nHost: t\r\n\r\n"),
    .refused("method and version, no target", "GET HTTP/1.1\r\nHost: t\r\n\r\n"),
    .refused("target and version, no method", "/x HTTP/1.1\r\nHost: t\r\n\r\n"),
    .refused("HTTP/0.9 simple request", "GET /\r\n\r\n"),
    .refused("leading space before the method", " GET /x HTTP/1.1\r\nHost: t\r\n\r\n"),
    // RFC 9112 §3: a recipient may split the request line on whitespace runs. Sluice does,
    // and the upstream gets a single-spaced line, so the leniency cannot be exploited.
    .forwarded("two spaces after the method", "GET  /x HTTP/1.1\r\nHost: t\r\n\r\n", [getX]),
    .forwarded("two spaces before the version", "GET /x  HTTP/1.1\r\nHost: t\r\n\r\n", [getX]),
    .refused("trailing space after the version", "GET /x HTTP/1.1 \r\nHost: t\r\n\r\n"),
    .refused("tabs as request line separators", "GET\t/x\tHTTP/1.1\r\nHost: t\r\n\r\n"),
    .refused("tab before the version", "GET /x\tHTTP/1.1\r\nHost: t\r\n\r\n"),
    .refused("extra token after the version", "GET /x HTTP/1.1 extra\r\nHost: t\r\n\r\n"),
    .refused("request line of spaces only", "   \r\nHost: t\r\n\r\n"),
    .refused("garbage word as the request line", "GARBAGE\r\n\r\n"),
    // why: methods are case-sensitive; `get` is an unknown extension method, not GET.
    .refused("lowercase method", "get /x HTTP/1.1\r\nHost: t\r\n\r\n"),
    // why: as above, `Get` is not GET.
    .refused("mixed-case method", "Get /x HTTP/1.1\r\nHost: t\r\n\r\n"),
    .refused("method with a non-token character", "GE(T /x HTTP/1.1\r\nHost: t\r\n\r\n"),
    .refused("NUL inside the method", "G\u{0}ET /x HTTP/1.1\r\nHost: t\r\n\r\n"),
    // A TLS ClientHello on the plaintext port: no line ending ever comes, and the first byte is
    // not a token character, so the parser can refuse without waiting.
    .refused("TLS ClientHello on the plaintext port", "\u{16}\u{3}\u{1}\u{2}\u{0}\u{1}\u{0}\u{1}\u{fc}\u{3}\u{3}"),
    // why: RFC 9112 lets a server treat 1.2 as 1.1, but no such version exists; strict refuses.
    .refused("version HTTP/1.2", "GET /x HTTP/1.2\r\nHost: t\r\n\r\n"),
    // why: 505 would also be defensible; the policy answers an unusable version with 400.
    .refused("version HTTP/2.0", "GET /x HTTP/2.0\r\nHost: t\r\n\r\n"),
    .refused("version HTTP/3.0", "GET /x HTTP/3.0\r\nHost: t\r\n\r\n"),
    .refused("version HTTP/0.9 spelled out", "GET /x HTTP/0.9\r\nHost: t\r\n\r\n"),
    .refused("lowercase version http/1.1", "GET /x http/1.1\r\nHost: t\r\n\r\n"),
    .refused("version HTTP/1 without minor", "GET /x HTTP/1\r\nHost: t\r\n\r\n"),
    .refused("version HTTP/11 without dot", "GET /x HTTP/11\r\nHost: t\r\n\r\n"),
    .refused("version HTTP/1.10", "GET /x HTTP/1.10\r\nHost: t\r\n\r\n"),
    .refused("version HTTP/1.1.1", "GET /x HTTP/1.1.1\r\nHost: t\r\n\r\n"),
    .refused("version with a space after the slash", "GET /x HTTP/ 1.1\r\nHost: t\r\n\r\n"),
    .refused("version HTTPS/1.1", "GET /x HTTPS/1.1\r\nHost: t\r\n\r\n"),
    .refused("space inside the target", "GET /a b HTTP/1.1\r\nHost: t\r\n\r\n"),
    .refused("tab inside the target", "GET /a\tb HTTP/1.1\r\nHost: t\r\n\r\n"),
    .refused("NUL inside the target", "GET /a\u{0}b HTTP/1.1\r\nHost: t\r\n\r\n"),
    .refused("control character inside the target", "GET /a\u{1}b HTTP/1.1\r\nHost: t\r\n\r\n"),
    .refused("DEL inside the target", "GET /a\u{7F}b HTTP/1.1\r\nHost: t\r\n\r\n"),
    .refused("bare CR inside the target", "GET /a\rb HTTP/1.1\r\nHost: t\r\n\r\n"),
    // why: raw non-ASCII is not a URI character; a client must percent-encode it.
    .refused("raw UTF-8 inside the target", "GET /caf\u{e9} HTTP/1.1\r\nHost: t\r\n\r\n"),
    // why: a fragment is never part of a request target (RFC 9112 §3.2).
    .refused("fragment in the target", "GET /x#frag HTTP/1.1\r\nHost: t\r\n\r\n"),
    .refused("target without a leading slash", "GET x HTTP/1.1\r\nHost: t\r\n\r\n"),
    .refused("target that is only a query", "GET ?q=1 HTTP/1.1\r\nHost: t\r\n\r\n"),
    .refused("relative dot-dot target", "GET ../x HTTP/1.1\r\nHost: t\r\n\r\n"),
    .refused("target starting with a backslash", "GET \\x HTTP/1.1\r\nHost: t\r\n\r\n"),
    .forwarded("percent-encoded space in the target", get("/a%20b"), [Seen(method: "GET", target: "/a%20b")]),
    .forwarded("query with percent-encoded slash", get("/x?a=%2F&b=c"), [Seen(method: "GET", target: "/x?a=%2F&b=c")]),
]

// MARK: - Host

private let hostCases: [WireCase] = [
    .refused("HTTP/1.1 without Host", "GET /x HTTP/1.1\r\n\r\n"),
    .refused("HTTP/1.1 without Host but with other headers", "GET /x HTTP/1.1\r\nAccept: */*\r\nUser-Agent: curl\r\n\r\n"),
    .refused("empty Host", "GET /x HTTP/1.1\r\nHost:\r\n\r\n"),
    .refused("Host of whitespace only", "GET /x HTTP/1.1\r\nHost:    \r\n\r\n"),
    .refused("two Host headers with the same value", "GET /x HTTP/1.1\r\nHost: t\r\nHost: t\r\n\r\n"),
    .refused("two Host headers with different values", "GET /x HTTP/1.1\r\nHost: t\r\nHost: abs.example\r\n\r\n"),
    .refused("two Host headers spelled in different case", "GET /x HTTP/1.1\r\nHost: t\r\nhost: t\r\n\r\n"),
    .refused("two Host headers far apart", "GET /x HTTP/1.1\r\nHost: t\r\nAccept: */*\r\nX-A: 1\r\nHOST: abs.example\r\n\r\n"),
    .refused("Host as a list", "GET /x HTTP/1.1\r\nHost: t, abs.example\r\n\r\n"),
    .refused("Host with a space inside", "GET /x HTTP/1.1\r\nHost: t abs.example\r\n\r\n"),
    .refused("Host with a path", "GET /x HTTP/1.1\r\nHost: t/x\r\n\r\n"),
    // why: `@` is not allowed in uri-host; `u@t` is userinfo smuggled into Host.
    .refused("Host with userinfo", "GET /x HTTP/1.1\r\nHost: u@t\r\n\r\n"),
    // why: port = *DIGIT, so a non-numeric port makes the field value invalid.
    .refused("Host with a non-numeric port", "GET /x HTTP/1.1\r\nHost: t:abc\r\n\r\n"),
    .forwarded("Host with a port", "GET /x HTTP/1.1\r\nHost: t:80\r\n\r\n", [getX]),
    .forwarded("Host as a bracketed IPv6 literal with a port", "GET /x HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", [getX]),
    .forwarded("Host without a space after the colon", "GET /x HTTP/1.1\r\nHost:t\r\n\r\n",
               [Seen(method: "GET", target: "/x", headers: ["host": "t"])]),
    .forwarded("Host header name in odd case", "GET /x HTTP/1.1\r\nhOsT: t\r\n\r\n",
               [Seen(method: "GET", target: "/x", headers: ["host": "t"])]),
    .forwarded("Host with surrounding whitespace", "GET /x HTTP/1.1\r\nHost: \t t \t\r\n\r\n",
               [Seen(method: "GET", target: "/x", headers: ["host": "t"])]),
    // HTTP/1.0 does not require Host; the upstream gets one anyway (its value is not asserted).
    .forwarded("HTTP/1.0 without Host", "GET /x HTTP/1.0\r\n\r\n", [getX], closes: true),
]

// MARK: - Content-Length

private let contentLengthCases: [WireCase] = [
    // why: RFC 9110 lets a recipient accept identical repeated values; strict refuses.
    .refused("two Content-Length headers with the same value",
             "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
    .refused("two Content-Length headers with different values",
             "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    .refused("two Content-Length headers, zero and five",
             "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello"),
    // why: as for repeated headers, an identical list could be accepted; strict refuses.
    .refused("Content-Length list of equal values", clPost("5, 5", "hello")),
    .refused("Content-Length list of different values", clPost("5,6", "hello!")),
    .refused("Content-Length with a plus sign", clPost("+5", "hello")),
    .refused("Content-Length with a minus sign", clPost("-5", "hello")),
    .refused("Content-Length minus one", clPost("-1", "")),
    .refused("Content-Length in hex", clPost("0x5", "hello")),
    .refused("Content-Length with a decimal point", clPost("5.0", "hello")),
    .refused("Content-Length in exponent notation", clPost("5e0", "hello")),
    .refused("Content-Length with a space between digits", clPost("1 0", "helloworld")),
    .refused("empty Content-Length", clPost("", "hello")),
    .refused("Content-Length of 2^64", clPost("18446744073709551616", "hello")),
    .refused("Content-Length of thirty digits", clPost("999999999999999999999999999999", "hello")),
    .refused("non-digit Content-Length", clPost("abc", "hello")),
    .refused("Content-Length with trailing letters", clPost("5abc", "hello")),
    .refused("Content-Length with a non-ASCII digit", clPost("\u{665}", "hello")),
    .refused("Content-Length with a NUL", clPost("5\u{0}", "hello")),
    .refused("space between Content-Length and colon", "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length : 5\r\n\r\nhello"),
    // OWS around a field value is not part of it.
    .forwarded("Content-Length with extra leading spaces", clPost("    5", "hello"), [postHello]),
    .forwarded("Content-Length with trailing spaces", clPost("5    ", "hello"), [postHello]),
    .forwarded("Content-Length with a leading tab", "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length:\t5\r\n\r\nhello", [postHello]),
    // why: HTAB is OWS too, so this is valid, though parsers often forget trailing tabs.
    // Refused by the decoder, stricter than RFC 9110's OWS trimming: no client sends this.
    .refused("Content-Length with a trailing tab", clPost("5\t", "hello")),
    .forwarded("Content-Length with leading zeros", clPost("005", "hello"), [postHello]),
    .forwarded("Content-Length without a space after the colon", "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length:5\r\n\r\nhello", [postHello]),
    .forwarded("Content-Length header name in odd case", "POST /x HTTP/1.1\r\nHost: t\r\ncOnTeNt-LeNgTh: 5\r\n\r\nhello", [postHello]),
    .forwarded("Content-Length zero on a GET", get("/x", "Content-Length: 0\r\n"), [getX]),
    // The underscore spelling is an unrelated header: the body length is zero.
    .forwarded("Content_Length with an underscore is just another header", get("/x", "Content_Length: 5\r\n"), [getX]),
    .forwarded("Content-Length zero, then a pipelined request",
               "GET /x HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\nGET /y HTTP/1.1\r\nHost: t\r\n\r\n",
               [getX, Seen(method: "GET", target: "/y")]),
    // The body ends after three bytes; the leftover "lo" starts a request line that is garbage.
    WireCase(name: "Content-Length shorter than the body: the leftover is the next request",
             send: clPost("3", "hello\r\n\r\n"), statuses: [200, 400], closes: true,
             upstream: [Seen(method: "POST", target: "/x", body: "hel")]),
    // A Content-Length body that happens to look like a chunked terminator is still five bytes.
    .forwarded("Content-Length body that looks like a last chunk", clPost("5", "0\r\n\r\n"),
               [Seen(method: "POST", target: "/x", body: "0\r\n\r\n")]),
]

// MARK: - Transfer-Encoding

private let transferEncodingCases: [WireCase] = [
    .refused("Content-Length then Transfer-Encoding",
             "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    .refused("Transfer-Encoding then Content-Length",
             "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    .refused("Content-Length zero with Transfer-Encoding",
             "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    .refused("Transfer-Encoding xchunked", tePost("xchunked", "5\r\nhello\r\n0\r\n\r\n")),
    .refused("Transfer-Encoding chunkedx", tePost("chunkedx", "5\r\nhello\r\n0\r\n\r\n")),
    .refused("Transfer-Encoding chunked, identity", tePost("chunked, identity", "5\r\nhello\r\n0\r\n\r\n")),
    // why: "identity" is no longer a registered coding; before chunked it is an unsupported coding.
    .refused("Transfer-Encoding identity, chunked", tePost("identity, chunked", "5\r\nhello\r\n0\r\n\r\n"), 501),
    .refused("Transfer-Encoding gzip, chunked", tePost("gzip, chunked", "5\r\nhello\r\n0\r\n\r\n"), 501),
    .refused("Transfer-Encoding deflate, chunked", tePost("deflate, chunked", "5\r\nhello\r\n0\r\n\r\n"), 501),
    .refused("Transfer-Encoding chunked, gzip", tePost("chunked, gzip", "5\r\nhello\r\n0\r\n\r\n")),
    // why: chunked must not be applied twice (RFC 9112 §7), so this is malformed, not 501.
    .refused("Transfer-Encoding chunked, chunked", tePost("chunked, chunked", "5\r\nhello\r\n0\r\n\r\n")),
    // why: the same list split over two header lines.
    .refused("Transfer-Encoding chunked in two headers",
             "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    .refused("Transfer-Encoding chunked and an unknown coding in two headers",
             "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: cow\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    // why: empty list elements are legal in general, but a framing header a proxy has to
    // guess about is refused.
    .refused("Transfer-Encoding chunked with a trailing comma", tePost("chunked,", "5\r\nhello\r\n0\r\n\r\n")),
    // why: as above.
    .refused("Transfer-Encoding chunked with a leading comma", tePost(", chunked", "5\r\nhello\r\n0\r\n\r\n")),
    // why: chunked takes no parameters; with one it is not the coding we know.
    .refused("Transfer-Encoding chunked with a parameter", tePost("chunked;q=1", "5\r\nhello\r\n0\r\n\r\n")),
    .refused("Transfer-Encoding chunked in quotes", tePost("\"chunked\"", "5\r\nhello\r\n0\r\n\r\n")),
    .refused("Transfer-Encoding with a vertical tab before chunked", tePost("\u{B}chunked", "5\r\nhello\r\n0\r\n\r\n")),
    .refused("empty Transfer-Encoding", tePost("", "5\r\nhello\r\n0\r\n\r\n")),
    // why: identity alone leaves chunked not final: the length cannot be determined (§6.3).
    .refused("Transfer-Encoding identity alone", tePost("identity", "hello")),
    .refused("space between Transfer-Encoding and colon",
             "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    .refused("Transfer-Encoding in HTTP/1.0",
             "POST /x HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    .refused("Transfer-Encoding and Content-Length in HTTP/1.0",
             "POST /x HTTP/1.0\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    // Transfer codings are case-insensitive.
    .forwarded("Transfer-Encoding Chunked", tePost("Chunked", "5\r\nhello\r\n0\r\n\r\n"), [postHello]),
    .forwarded("Transfer-Encoding CHUNKED", tePost("CHUNKED", "5\r\nhello\r\n0\r\n\r\n"), [postHello]),
    .forwarded("Transfer-Encoding header name in odd case",
               "POST /x HTTP/1.1\r\nHost: t\r\ntRaNsFeR-eNcOdInG: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", [postHello]),
    // why: HTAB is OWS, so the value is exactly "chunked"; some parsers miss it.
    .forwarded("Transfer-Encoding with a tab before chunked",
               "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", [postHello]),
    .forwarded("Transfer-Encoding with spaces after chunked", tePost("chunked   ", "5\r\nhello\r\n0\r\n\r\n"), [postHello]),
    // The underscore spelling is an unrelated header: Content-Length frames the body.
    .forwarded("Transfer_Encoding with an underscore is just another header",
               "POST /x HTTP/1.1\r\nHost: t\r\nTransfer_Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello", [postHello]),
    // TE (the request header about response codings) is hop-by-hop and says nothing about framing.
    .forwarded("TE: chunked request header does not frame the body",
               "POST /x HTTP/1.1\r\nHost: t\r\nTE: chunked\r\nContent-Length: 5\r\n\r\nhello",
               [Seen(method: "POST", target: "/x", body: "hello", headers: ["te": nil])]),
]

// MARK: - Chunked bodies

private let chunkedBodyCases: [WireCase] = [
    .forwarded("chunk extension with a token value", chunkedPost("5;ext=1\r\nhello\r\n0\r\n\r\n"), [postHello]),
    .forwarded("chunk extension with a quoted value", chunkedPost("5;ext=\"a b;c\"\r\nhello\r\n0\r\n\r\n"), [postHello]),
    .forwarded("chunk extension with an escaped quote", chunkedPost("5;ext=\"a\\\"b\"\r\nhello\r\n0\r\n\r\n"), [postHello]),
    .forwarded("chunk extension without a value", chunkedPost("5;flag\r\nhello\r\n0\r\n\r\n"), [postHello]),
    .forwarded("several chunk extensions", chunkedPost("5;a=1;b=2;c\r\nhello\r\n0\r\n\r\n"), [postHello]),
    .forwarded("chunk extension on the last chunk", chunkedPost("5\r\nhello\r\n0;done=1\r\n\r\n"), [postHello]),
    .forwarded("uppercase hex chunk size", chunkedPost("A\r\n0123456789\r\n0\r\n\r\n"),
               [Seen(method: "POST", target: "/x", body: "0123456789")]),
    .forwarded("lowercase hex chunk size", chunkedPost("b\r\nhello world\r\n0\r\n\r\n"),
               [Seen(method: "POST", target: "/x", body: "hello world")]),
    .forwarded("chunk size with leading zeros", chunkedPost("0005\r\nhello\r\n0\r\n\r\n"), [postHello]),
    .forwarded("last chunk written as 000", chunkedPost("5\r\nhello\r\n000\r\n\r\n"), [postHello]),
    .forwarded("five one-byte chunks", chunkedPost(chunked("h", "e", "l", "l", "o")), [postHello]),
    .forwarded("empty chunked body", chunkedPost("0\r\n\r\n"), [Seen(method: "POST", target: "/x")]),
    .forwarded("trailer field after the last chunk", chunkedPost("5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n"), [postHello]),
    .forwarded("several trailer fields", chunkedPost("5\r\nhello\r\n0\r\nX-A: 1\r\nX-B: 2\r\n\r\n"), [postHello]),
    .forwarded("NUL byte inside chunk data", chunkedPost("5\r\nhe\u{0}lo\r\n0\r\n\r\n"),
               [Seen(method: "POST", target: "/x", body: "he\u{0}lo")]),
    .forwarded("CRLF inside chunk data", chunkedPost(chunked("a\r\nb")), [Seen(method: "POST", target: "/x", body: "a\r\nb")]),
    .forwarded("chunk data that looks like a last chunk", chunkedPost(chunked("0\r\n\r\n")),
               [Seen(method: "POST", target: "/x", body: "0\r\n\r\n")]),
    .refused("chunk size in 0x hex", chunkedPost("0x5\r\nhello\r\n0\r\n\r\n")),
    .refused("chunk size with a leading space", chunkedPost(" 5\r\nhello\r\n0\r\n\r\n")),
    // why: BWS is only allowed before a `;`; a bare trailing space matches no grammar rule.
    .refused("chunk size with a trailing space", chunkedPost("5 \r\nhello\r\n0\r\n\r\n")),
    .refused("chunk size with a leading tab", chunkedPost("\t5\r\nhello\r\n0\r\n\r\n")),
    .refused("negative chunk size", chunkedPost("-1\r\nx\r\n0\r\n\r\n")),
    .refused("chunk size with a plus sign", chunkedPost("+5\r\nhello\r\n0\r\n\r\n")),
    .refused("chunk size of 2^64", chunkedPost("10000000000000000\r\nhello\r\n0\r\n\r\n")),
    .refused("chunk size of twenty-four f", chunkedPost("ffffffffffffffffffffffff\r\nhello\r\n0\r\n\r\n")),
    .refused("non-hex chunk size", chunkedPost("z\r\nhello\r\n0\r\n\r\n")),
    .refused("chunk size with a trailing non-hex letter", chunkedPost("5g\r\nhello\r\n0\r\n\r\n")),
    .refused("empty chunk size line", chunkedPost("\r\nhello\r\n0\r\n\r\n")),
    .refused("missing CRLF after chunk data", chunkedPost("5\r\nhello0\r\n\r\n")),
    .refused("extra bytes after chunk data", chunkedPost("3\r\nhello\r\n0\r\n\r\n")),
    .refused("chunk data shorter than its size", chunkedPost("5\r\nhel\r\n0\r\n\r\n")),
    .refused("bare LF after the chunk size", chunkedPost("5\nhello\r\n0\r\n\r\n")),
    .refused("bare LF after the chunk data", chunkedPost("5\r\nhello\n0\r\n\r\n")),
    .refused("bare LF after the last chunk", chunkedPost("5\r\nhello\r\n0\n\r\n")),
    .refused("bare LF ending the trailer section", chunkedPost("5\r\nhello\r\n0\r\n\n")),
    .refused("bare CR after the chunk size", chunkedPost("5\rhello\r\n0\r\n\r\n")),
    .refused("missing last chunk, then the next request", chunkedPost("5\r\nhello\r\nGET /y HTTP/1.1\r\nHost: t\r\n\r\n")),
    .refused("NUL inside a chunk extension", chunkedPost("5;a\u{0}b\r\nhello\r\n0\r\n\r\n")),
    // why: chunk-ext-name is a token, so `;` must be followed by at least one token character.
    .refused("chunk extension with an empty name", chunkedPost("5;\r\nhello\r\n0\r\n\r\n")),
    .refused("chunk extension with an unterminated quote", chunkedPost("5;a=\"b\r\nhello\r\n0\r\n\r\n")),
    // why: trailer lines are field lines; a line without a colon is as malformed there as in the head.
    .refused("trailer line without a colon", chunkedPost("5\r\nhello\r\n0\r\nbroken trailer\r\n\r\n")),
    .refused("obs-fold in a trailer", chunkedPost("5\r\nhello\r\n0\r\nX-A: 1\r\n 2\r\n\r\n")),
]

// MARK: - Header section syntax

private let headerSyntaxCases: [WireCase] = [
    .refused("bare LF line endings throughout", "GET /x HTTP/1.1\nHost: t\n\n"),
    .refused("bare LF after the request line", "GET /x HTTP/1.1\nHost: t\r\n\r\n"),
    .refused("bare LF after one header", "GET /x HTTP/1.1\r\nHost: t\nX-A: 1\r\n\r\n"),
    .refused("bare LF ending the header section", "GET /x HTTP/1.1\r\nHost: t\r\n\n"),
    .refused("bare LF splitting a header value", "GET /x HTTP/1.1\r\nHost: t\r\nX-A: a\nb\r\n\r\n"),
    .refused("bare CR ending a header line", "GET /x HTTP/1.1\r\nHost: t\rX-A: 1\r\n\r\n"),
    .refused("bare CR inside a header value", "GET /x HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n"),
    .refused("CR CR LF ending a header line", "GET /x HTTP/1.1\r\nHost: t\r\nX-A: a\r\r\n\r\n"),
    .refused("NUL inside a header value", "GET /x HTTP/1.1\r\nHost: t\r\nX-A: a\u{0}b\r\n\r\n"),
    .refused("NUL inside the Host value", "GET /x HTTP/1.1\r\nHost: t\u{0}.evil\r\n\r\n"),
    // RFC 9112 §5.2 lets a server reject obs-fold or replace it with SP; strict rejects.
    .refused("obs-fold with a space", "GET /x HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n 2\r\n\r\n"),
    .refused("obs-fold with a tab", "GET /x HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n\t2\r\n\r\n"),
    .refused("obs-fold continuing Host", "GET /x HTTP/1.1\r\nHost: t\r\n .evil\r\n\r\n"),
    .refused("obs-fold continuing Transfer-Encoding",
             "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\r\n chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    .refused("obs-fold hiding a Content-Length line", "POST /x HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n Content-Length: 5\r\n\r\nhello"),
    .refused("space between header name and colon", "GET /x HTTP/1.1\r\nHost: t\r\nX-A : 1\r\n\r\n"),
    .refused("tab between header name and colon", "GET /x HTTP/1.1\r\nHost: t\r\nX-A\t: 1\r\n\r\n"),
    .refused("space between Host and colon", "GET /x HTTP/1.1\r\nHost : t\r\n\r\n"),
    .refused("space inside a header name", "GET /x HTTP/1.1\r\nHost: t\r\nX A: 1\r\n\r\n"),
    .refused("empty header name", "GET /x HTTP/1.1\r\nHost: t\r\n: 1\r\n\r\n"),
    .refused("header line without a colon", "GET /x HTTP/1.1\r\nHost: t\r\nX-A 1\r\n\r\n"),
    .refused("header line that is a single word", "GET /x HTTP/1.1\r\nHost: t\r\nGarbage\r\n\r\n"),
    .refused("leading space before the first header", "GET /x HTTP/1.1\r\n Host: t\r\n\r\n"),
    // why: RFC 9112 §2.2 allows rejecting or silently skipping this line; strict rejects.
    .refused("whitespace-led line before Host", "GET /x HTTP/1.1\r\n X-A: 1\r\nHost: t\r\n\r\n"),
    .refused("leading tab before the first header", "GET /x HTTP/1.1\r\n\tHost: t\r\n\r\n"),
    .refused("header name with a parenthesis", "GET /x HTTP/1.1\r\nHost: t\r\nX(A): 1\r\n\r\n"),
    .refused("header name with a slash", "GET /x HTTP/1.1\r\nHost: t\r\nX/A: 1\r\n\r\n"),
    .refused("header name with raw UTF-8", "GET /x HTTP/1.1\r\nHost: t\r\nX-\u{e9}: 1\r\n\r\n"),
    .refused("header name with a NUL", "GET /x HTTP/1.1\r\nHost: t\r\nX-\u{0}A: 1\r\n\r\n"),
    // why: a field value is VCHAR, SP, HTAB and obs-text; other control characters are invalid.
    .refused("control character in a header value", "GET /x HTTP/1.1\r\nHost: t\r\nX-A: a\u{1}b\r\n\r\n"),
    // why: as above.
    .refused("vertical tab in a header value", "GET /x HTTP/1.1\r\nHost: t\r\nX-A: a\u{B}b\r\n\r\n"),
    // why: as above (DEL is not a VCHAR).
    .refused("DEL in a header value", "GET /x HTTP/1.1\r\nHost: t\r\nX-A: a\u{7F}b\r\n\r\n"),
    .forwarded("obs-text in a header value", get("/x", "X-A: caf\u{e9}\r\n"), [getX]),
    .forwarded("OWS around a header value", get("/x", "X-A: \t 1 \t\r\n"), [Seen(method: "GET", target: "/x", headers: ["x-a": "1"])]),
    .forwarded("empty header value", get("/x", "X-Empty:\r\n"), [getX]),
    .forwarded("header value with inner spaces kept", get("/x", "X-A: a  b\r\n"), [Seen(method: "GET", target: "/x", headers: ["x-a": "a  b"])]),
    .forwarded("ninety small header fields", get("/x", ninetyHeaders), [getX]),
    .forwarded("12 KiB header field under the 16 KiB limit", get("/x", "X-Big: \(big12k)\r\n"), [getX]),
]

// MARK: - Connection and hop-by-hop headers

private let connectionCases: [WireCase] = [
    // Nominating framing or routing headers is ignored: the request is forwarded as is.
    .forwarded("Connection nominates Content-Length",
               "POST /x HTTP/1.1\r\nHost: t\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello",
               [Seen(method: "POST", target: "/x", body: "hello", headers: ["host": "t"])]),
    .forwarded("Connection nominates Transfer-Encoding",
               "POST /x HTTP/1.1\r\nHost: t\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
               [Seen(method: "POST", target: "/x", body: "hello", headers: ["host": "t"])]),
    .forwarded("Connection nominates Host", get("/x", "Connection: host\r\n"),
               [Seen(method: "GET", target: "/x", headers: ["host": "t"])]),
    .forwarded("Connection nominates Host and Content-Length",
               "POST /x HTTP/1.1\r\nHost: t\r\nConnection: Host, Content-Length\r\nContent-Length: 5\r\n\r\nhello",
               [Seen(method: "POST", target: "/x", body: "hello", headers: ["host": "t"])]),
    .forwarded("Connection nominates Content-Length before the header appears",
               "POST /x HTTP/1.1\r\nConnection: keep-alive, Content-Length\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
               [Seen(method: "POST", target: "/x", body: "hello", headers: ["host": "t"])]),
    .forwarded("Connection nominates TE", get("/x", "Connection: te\r\nTE: trailers\r\n"),
               [Seen(method: "GET", target: "/x", headers: ["te": nil, "host": "t"])]),
    .forwarded("Connection nominates a custom header", get("/x", "Connection: x-custom\r\nX-Custom: 1\r\n"),
               [Seen(method: "GET", target: "/x", headers: ["x-custom": nil])]),
    .forwarded("Connection nominates a custom header in other case", get("/x", "Connection: X-CUSTOM\r\nx-custom: 1\r\n"),
               [Seen(method: "GET", target: "/x", headers: ["x-custom": nil])]),
    .forwarded("Connection nominates a custom header that appears twice",
               get("/x", "X-Custom: 1\r\nConnection: x-custom\r\nX-Custom: 2\r\n"),
               [Seen(method: "GET", target: "/x", headers: ["x-custom": nil])]),
    .forwarded("Connection nominates several custom headers", get("/x", "Connection: keep-alive, X-A,x-b\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\n"),
               [Seen(method: "GET", target: "/x", headers: ["x-a": nil, "x-b": nil, "x-c": "3"])]),
    .forwarded("two Connection headers nominate custom headers",
               get("/x", "Connection: x-a\r\nConnection: x-b\r\nX-A: 1\r\nX-B: 2\r\n"),
               [Seen(method: "GET", target: "/x", headers: ["x-a": nil, "x-b": nil])]),
    .forwarded("Connection: close", get("/x", "Connection: close\r\n"), [getX], closes: true),
    .forwarded("Connection: CLOSE in caps", get("/x", "Connection: CLOSE\r\n"), [getX], closes: true),
    .forwarded("Connection: keep-alive, close", get("/x", "Connection: keep-alive, close\r\n"), [getX], closes: true),
    .forwarded("two Connection headers, the second says close", get("/x", "Connection: keep-alive\r\nConnection: close\r\n"),
               [getX], closes: true),
    // RFC 9112 §9.6: after a close request the server must not process further requests.
    .forwarded("Connection: close, then a pipelined request",
               "GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n",
               [Seen(method: "GET", target: "/a")], closes: true),
    .forwarded("Keep-Alive header is not forwarded", get("/x", "Keep-Alive: timeout=5, max=100\r\n"),
               [Seen(method: "GET", target: "/x", headers: ["keep-alive": nil])]),
    .forwarded("Proxy-Connection header is not forwarded", get("/x", "Proxy-Connection: keep-alive\r\n"),
               [Seen(method: "GET", target: "/x", headers: ["proxy-connection": nil])]),
    .forwarded("TE: trailers is not forwarded", get("/x", "TE: trailers\r\n"),
               [Seen(method: "GET", target: "/x", headers: ["te": nil])]),
    .forwarded("Upgrade without Connection: upgrade is not an upgrade", get("/x", "Upgrade: websocket\r\n"),
               [Seen(method: "GET", target: "/x", headers: ["upgrade": nil])]),
    .forwarded("Upgrade with Connection: keep-alive is not an upgrade", get("/x", "Connection: keep-alive\r\nUpgrade: h2c\r\n"),
               [Seen(method: "GET", target: "/x", headers: ["upgrade": nil])]),
]

// MARK: - A body on every method

private let methodBodyCases: [WireCase] = [
    .forwarded("GET with a Content-Length body", "GET /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
               [Seen(method: "GET", target: "/x", body: "hello")]),
    .forwarded("GET with a chunked body", "GET /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\(chunked("hel", "lo"))",
               [Seen(method: "GET", target: "/x", body: "hello")]),
    WireCase(name: "HEAD with a Content-Length body", send: "HEAD /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
             statuses: [200], closes: false, upstream: [Seen(method: "HEAD", target: "/x", body: "hello")], headResponses: [0]),
    WireCase(name: "HEAD with a chunked body", send: "HEAD /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
             statuses: [200], closes: false, upstream: [Seen(method: "HEAD", target: "/x", body: "hello")], headResponses: [0]),
    .forwarded("OPTIONS with a Content-Length body", "OPTIONS /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
               [Seen(method: "OPTIONS", target: "/x", body: "hello")]),
    .forwarded("OPTIONS with a chunked body", "OPTIONS /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
               [Seen(method: "OPTIONS", target: "/x", body: "hello")]),
    .forwarded("DELETE with a Content-Length body", "DELETE /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
               [Seen(method: "DELETE", target: "/x", body: "hello")]),
    .forwarded("DELETE with a chunked body", "DELETE /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
               [Seen(method: "DELETE", target: "/x", body: "hello")]),
    .forwarded("PUT with a Content-Length body", "PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
               [Seen(method: "PUT", target: "/x", body: "hello")]),
    .forwarded("PUT with a chunked body", "PUT /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
               [Seen(method: "PUT", target: "/x", body: "hello")]),
    .forwarded("POST with a Content-Length body", clPost("5", "hello"), [postHello]),
    .forwarded("POST with a chunked body", chunkedPost("2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n"), [postHello]),
    .forwarded("PATCH with a Content-Length body", "PATCH /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
               [Seen(method: "PATCH", target: "/x", body: "hello")]),
    .forwarded("PATCH with a chunked body", "PATCH /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
               [Seen(method: "PATCH", target: "/x", body: "hello")]),
    .forwarded("POST with Content-Length zero and no body", clPost("0", ""), [Seen(method: "POST", target: "/x")]),
    // A client must not send content in a TRACE request (RFC 9110 §9.3.8).
    .refused("TRACE with a Content-Length body", "TRACE /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
    .refused("TRACE with a chunked body", "TRACE /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    .forwarded("TRACE without a body", "TRACE /x HTTP/1.1\r\nHost: t\r\n\r\n", [Seen(method: "TRACE", target: "/x")]),
]

// MARK: - Smuggling and pipelining

private let smugglingCases: [WireCase] = [
    .forwarded("chunked GET whose chunk is a complete request",
               "GET /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\(chunked(smuggled))",
               [Seen(method: "GET", target: "/x", body: smuggled)]),
    .forwarded("Content-Length GET whose body is a complete request",
               "GET /x HTTP/1.1\r\nHost: t\r\nContent-Length: \(smuggled.utf8.count)\r\n\r\n\(smuggled)",
               [Seen(method: "GET", target: "/x", body: smuggled)]),
    .forwarded("chunked POST whose smuggled request spans two chunks",
               chunkedPost(chunked("GET /SMUGG", "LED HTTP/1.1\r\nHost: t\r\n\r\n")),
               [Seen(method: "POST", target: "/x", body: smuggled)]),
    .forwarded("chunked OPTIONS carrying a smuggled request",
               "OPTIONS /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\(chunked(smuggled))",
               [Seen(method: "OPTIONS", target: "/x", body: smuggled)]),
    .refused("CL.TE desync", "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG"),
    .refused("CL.TE desync with a full smuggled request",
             "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: \(lastChunkThenSmuggled.utf8.count)\r\nTransfer-Encoding: chunked\r\n\r\n\(lastChunkThenSmuggled)"),
    .refused("TE.CL desync", "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n"),
    .refused("TE.CL desync with a smuggled request in the chunk",
             "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\(chunked(smuggled))"),
    .refused("TE.TE desync with an obfuscated second coding",
             "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-encoding: x\r\n\r\n0\r\n\r\n\(smuggled)"),
    .refused("CL.TE desync with Transfer-Encoding hidden by obs-fold",
             "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nG"),
    .refused("missing Host, then a valid pipelined request", "GET /x HTTP/1.1\r\n\r\nGET /y HTTP/1.1\r\nHost: t\r\n\r\n"),
    .refused("bad request line, then a valid pipelined request", "GET /x HTTP/1.1 extra\r\nHost: t\r\n\r\nGET /y HTTP/1.1\r\nHost: t\r\n\r\n"),
    .refused("CL plus TE, then a valid pipelined request",
             "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /y HTTP/1.1\r\nHost: t\r\n\r\n"),
    .refused("bad chunk size, then a valid pipelined request", chunkedPost("zz\r\n\r\nGET /y HTTP/1.1\r\nHost: t\r\n\r\n")),
    .refused("obs-fold, then a valid pipelined request", "GET /x HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n 2\r\n\r\nGET /y HTTP/1.1\r\nHost: t\r\n\r\n"),
    WireCase(name: "valid request, then one missing Host",
             send: "GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
             statuses: [200, 400], closes: true, upstream: [Seen(method: "GET", target: "/a")]),
    WireCase(name: "two valid requests, then CL plus TE",
             send: cat(get("/a"), get("/b"), "POST /c HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
             statuses: [200, 200, 400], closes: true,
             upstream: [Seen(method: "GET", target: "/a"), Seen(method: "GET", target: "/b")]),
    .forwarded("two pipelined requests in one write", cat(get("/1"), get("/2")),
               [Seen(method: "GET", target: "/1"), Seen(method: "GET", target: "/2")]),
    .forwarded("three pipelined requests in one write", cat(get("/1"), get("/2"), get("/3")),
               [Seen(method: "GET", target: "/1"), Seen(method: "GET", target: "/2"), Seen(method: "GET", target: "/3")]),
    .forwarded("five pipelined requests in one write", cat(get("/1"), get("/2"), get("/3"), get("/4"), get("/5")),
               fiveGets),
    .forwarded("pipelined request after a chunked body", cat(chunkedPost("5\r\nhello\r\n0\r\n\r\n"), get("/y")),
               [postHello, Seen(method: "GET", target: "/y")]),
    .forwarded("pipelined request after a chunked body with trailers",
               cat(chunkedPost("5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"), get("/y")),
               [postHello, Seen(method: "GET", target: "/y")]),
    .forwarded("pipelined request after a Content-Length body", cat(clPost("5", "hello"), get("/y")),
               [postHello, Seen(method: "GET", target: "/y")]),
    .forwarded("pipelined bodies framed both ways",
               cat(clPost("5", "hello"), "PUT /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\(chunked("world"))", "DELETE /d HTTP/1.1\r\nHost: t\r\n\r\n"),
               [postHello, Seen(method: "PUT", target: "/p", body: "world"), Seen(method: "DELETE", target: "/d")]),
    WireCase(name: "pipelined GET, HEAD, GET",
             send: cat(get("/1"), "HEAD /2 HTTP/1.1\r\nHost: t\r\n\r\n", get("/3")),
             statuses: [200, 200, 200], closes: false,
             upstream: [Seen(method: "GET", target: "/1"), Seen(method: "HEAD", target: "/2"), Seen(method: "GET", target: "/3")],
             headResponses: [1]),
]

// MARK: - HTTP/1.0

private let http10Cases: [WireCase] = [
    .forwarded("HTTP/1.0 request closes after the response", "GET /x HTTP/1.0\r\nHost: t\r\n\r\n", [getX], closes: true),
    .forwarded("HTTP/1.0 with Connection: keep-alive", "GET /x HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n", [getX]),
    .forwarded("HTTP/1.0 with Connection: Keep-Alive capitalised", "GET /x HTTP/1.0\r\nHost: t\r\nConnection: Keep-Alive\r\n\r\n", [getX]),
    .forwarded("HTTP/1.0 POST with a Content-Length body", "POST /x HTTP/1.0\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
               [postHello], closes: true),
    .forwarded("two pipelined HTTP/1.0 keep-alive requests",
               "GET /a HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n",
               [Seen(method: "GET", target: "/a"), Seen(method: "GET", target: "/b")]),
    .forwarded("HTTP/1.0 keep-alive, then a plain HTTP/1.0 request",
               "GET /a HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\nHost: t\r\n\r\n",
               [Seen(method: "GET", target: "/a"), Seen(method: "GET", target: "/b")], closes: true),
    // A server must ignore 100-continue in an HTTP/1.0 request; the body follows anyway.
    .forwarded("HTTP/1.0 with Expect: 100-continue",
               "POST /x HTTP/1.0\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello", [postHello], closes: true),
    .refused("HTTP/1.0 with Transfer-Encoding identity", "POST /x HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: identity\r\n\r\nhello"),
]

// MARK: - Absolute, authority and asterisk forms; CONNECT

private let targetFormCases: [WireCase] = [
    .forwarded("absolute form routes on its authority", "GET http://abs.example/p?q=1 HTTP/1.1\r\nHost: t\r\n\r\n",
               [Seen(method: "GET", target: "/abs/p?q=1", headers: ["host": "abs.example"])]),
    .forwarded("absolute form agreeing with Host", "GET http://abs.example/p HTTP/1.1\r\nHost: abs.example\r\n\r\n",
               [Seen(method: "GET", target: "/abs/p", headers: ["host": "abs.example"])]),
    .forwarded("absolute form for the catch-all host", "GET http://t/x HTTP/1.1\r\nHost: t\r\n\r\n",
               [Seen(method: "GET", target: "/x", headers: ["host": "t"])]),
    .forwarded("absolute https form", "GET https://t/x HTTP/1.1\r\nHost: t\r\n\r\n",
               [Seen(method: "GET", target: "/x", headers: ["host": "t"])]),
    // The authority wins over a conflicting Host header (RFC 9112 §3.2.2).
    .forwarded("absolute form overrides a conflicting Host", "GET http://t/x HTTP/1.1\r\nHost: abs.example\r\n\r\n",
               [Seen(method: "GET", target: "/x", headers: ["host": "t"])]),
    .forwarded("absolute form with a port on the catch-all host", "GET http://t:8080/x HTTP/1.1\r\nHost: t\r\n\r\n",
               [Seen(method: "GET", target: "/x")]),
    // why: an empty path in absolute form means "/" (RFC 9112 §3.2.1).
    .forwarded("absolute form without a path", "GET http://t HTTP/1.1\r\nHost: t\r\n\r\n", [Seen(method: "GET", target: "/")]),
    .forwarded("POST in absolute form with a body", "POST http://t/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", [postHello]),
    .refused("absolute form with an empty authority", "GET http:///x HTTP/1.1\r\nHost: t\r\n\r\n"),
    .refused("absolute form that is only the scheme", "GET http:// HTTP/1.1\r\nHost: t\r\n\r\n"),
    .refused("absolute form with the ftp scheme", "GET ftp://t/x HTTP/1.1\r\nHost: t\r\n\r\n"),
    .refused("absolute form with one slash", "GET http:/x HTTP/1.1\r\nHost: t\r\n\r\n"),
    // why: RFC 9110 §4.2.4 says to treat userinfo in an http URI from an untrusted source as an error.
    .refused("absolute form with userinfo", "GET http://evil@t/x HTTP/1.1\r\nHost: t\r\n\r\n"),
    // why: HTTP/1.1 requires Host even when the target carries an authority.
    .refused("absolute form without a Host header", "GET http://t/x HTTP/1.1\r\n\r\n"),
    .refused("authority form on GET", "GET t:80 HTTP/1.1\r\nHost: t\r\n\r\n"),
    .refused("authority form on POST", "POST t:80 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
    WireCase(name: "asterisk form OPTIONS", send: "OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n",
             statuses: [404], closes: false, upstream: []),
    WireCase(name: "asterisk form OPTIONS, then a pipelined GET", send: cat("OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n", get("/y")),
             statuses: [404, 200], closes: false, upstream: [Seen(method: "GET", target: "/y")]),
    .refused("asterisk form on GET", "GET * HTTP/1.1\r\nHost: t\r\n\r\n"),
    .refused("asterisk form on POST", "POST * HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"),
    .refused("CONNECT in authority form", "CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n", 405),
    .refused("CONNECT with a body", "CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\nContent-Length: 5\r\n\r\nhello", 405),
    .refused("CONNECT in absolute form", "CONNECT http://t:443/ HTTP/1.1\r\nHost: t\r\n\r\n", 405),
    .refused("CONNECT in HTTP/1.0", "CONNECT t:443 HTTP/1.0\r\n\r\n", 405),
    .refused("CONNECT, then a pipelined GET", "CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\nGET /y HTTP/1.1\r\nHost: t\r\n\r\n", 405),
]

// MARK: - Expect, oversize

private let expectAndSizeCases: [WireCase] = [
    .forwarded("Expect: 100-continue with the body in the same write",
               "POST /x HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
               [Seen(method: "POST", target: "/x", body: "hello", headers: ["expect": nil])]),
    // The expectation token is case-insensitive.
    .forwarded("Expect: 100-Continue in mixed case",
               "POST /x HTTP/1.1\r\nHost: t\r\nExpect: 100-Continue\r\nContent-Length: 5\r\n\r\nhello",
               [Seen(method: "POST", target: "/x", body: "hello", headers: ["expect": nil])]),
    .forwarded("Expect: 100-continue with a chunked body",
               "POST /x HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
               [Seen(method: "POST", target: "/x", body: "hello", headers: ["expect": nil])]),
    .forwarded("Expect: 100-continue on a GET without a body", get("/x", "Expect: 100-continue\r\n"), [getX]),
    .refused("header field over 16 KiB", get("/x", "X-Big: \(big17k)\r\n"), 431),
    .refused("header block over 16 KiB across many fields", get("/x", manyFillerHeaders), 431),
    .refused("20 KiB request target", "GET \(target20k) HTTP/1.1\r\nHost: t\r\n\r\n", 431),
    .refused("header field over 16 KiB in a POST with a body",
             "POST /x HTTP/1.1\r\nHost: t\r\nX-Big: \(big17k)\r\nContent-Length: 5\r\n\r\nhello", 431),
]

// MARK: - A close announced, then an error

/// A request that says `Connection: close` and then breaks its own body is still refused
/// with 400 (the error is in the request, not in bytes after it); bytes after a complete
/// close request are ignored without a 400.
private let closeAndErrorCases: [WireCase] = [
    .refused("Connection: close with a bad chunk size in its own body",
             "POST /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
    .refused("Connection: close with junk after its chunk data",
             "POST /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n"),
    .forwarded("Connection: close, then garbage", "GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n\u{1}\u{2}garbage\r\n\r\n",
               [Seen(method: "GET", target: "/a")], closes: true),
    .forwarded("HTTP/1.0 without keep-alive, then a second request", "GET /a HTTP/1.0\r\nHost: t\r\n\r\nGET /b HTTP/1.0\r\nHost: t\r\n\r\n",
               [Seen(method: "GET", target: "/a")], closes: true),
]

// MARK: - All cases

let wireCases: [WireCase] = [
    requestLineCases,
    hostCases,
    contentLengthCases,
    transferEncodingCases,
    chunkedBodyCases,
    headerSyntaxCases,
    connectionCases,
    methodBodyCases,
    smugglingCases,
    http10Cases,
    targetFormCases,
    expectAndSizeCases,
    closeAndErrorCases,
].flatMap { $0 }
