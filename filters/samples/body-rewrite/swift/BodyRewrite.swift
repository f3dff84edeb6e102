// Sample filter `body-rewrite`: buffers text and JSON bodies and rewrites them: string
// replacements and redaction of JSON fields, with Content-Length set to the new length.
//   { "replace": { "internal.example": "example.com" }, "redact": ["password", "ssn"],
//     "requests": false, "responses": true }
// It holds the headers while it reads the body (Sluice delivers body callbacks to a filter
// that paused on headers), so the corrected Content-Length goes out with them.

final class BodyRewriteRoot: RootContext {
    var replacements: [([UInt8], [UInt8])] = []
    var redact: [String] = []
    var requests = false
    var responses = true

    func onConfigure(configuration: [UInt8]) -> Bool {
        guard let json = JSON.parse(configuration) else {
            log(.error, "body-rewrite: configuration must be JSON")
            return false
        }
        replacements = json["replace"]?.members.compactMap { k, v in v.string.map { (Array(k.utf8), Array($0.utf8)) } } ?? []
        redact = json["redact"]?.array.compactMap { $0.string } ?? []
        requests = json["requests"]?.bool ?? false
        responses = json["responses"]?.bool ?? true
        return true
    }

    func createHTTPContext(id: UInt32) -> HTTPContext? { BodyRewriteStream(root: self) }

    func rewrite(_ body: [UInt8], json: Bool) -> [UInt8] {
        var out = body
        for (from, to) in replacements { out = replaceAll(out, from, to) }
        if json { for field in redact { out = redactField(out, field) } }
        return out
    }
}

final class BodyRewriteStream: HTTPContext {
    let root: BodyRewriteRoot
    var rewriteRequest = false
    var rewriteResponse = false
    var requestIsJSON = false
    var responseIsJSON = false
    init(root: BodyRewriteRoot) { self.root = root }

    static func textual(_ contentType: String?) -> (Bool, Bool) {
        guard let type = contentType?.lowercased() else { return (false, false) }
        let json = type.hasPrefix("application/json") || indexOf(Array(type.utf8), Array("+json".utf8), from: 0) != nil
        return (json || type.hasPrefix("text/"), json)
    }

    /// The headers go on at once, without their Content-Length (the body will change), and
    /// the body is held until its end. Pausing the headers instead would work only with
    /// `allow_on_headers_stop_iteration: true`: by default (Envoy's and Sluice's) a paused
    /// filter gets no body callbacks until it resumes, so it would wait forever.
    func onRequestHeaders(endOfStream: Bool) -> Action {
        guard root.requests, !endOfStream else { return .continue }
        (rewriteRequest, requestIsJSON) = Self.textual(Headers.request["content-type"])
        if rewriteRequest { Headers.request.remove("content-length") }
        return .continue
    }

    func onRequestBody(size: Int, endOfStream: Bool) -> Action {
        guard rewriteRequest else { return .continue }
        if !endOfStream { return .pause }
        let body = root.rewrite(Body.request.bytes, json: requestIsJSON)
        Body.request.replace(with: body)
        return .continue
    }

    func onResponseHeaders(endOfStream: Bool) -> Action {
        guard root.responses, !endOfStream else { return .continue }
        (rewriteResponse, responseIsJSON) = Self.textual(Headers.response["content-type"])
        if rewriteResponse { Headers.response.remove("content-length") }
        return .continue
    }

    func onResponseBody(size: Int, endOfStream: Bool) -> Action {
        guard rewriteResponse else { return .continue }
        if !endOfStream { return .pause }
        let body = root.rewrite(Body.response.bytes, json: responseIsJSON)
        Body.response.replace(with: body)
        return .continue
    }
}

func indexOf(_ haystack: [UInt8], _ needle: [UInt8], from: Int) -> Int? {
    guard !needle.isEmpty, haystack.count >= needle.count, from <= haystack.count - needle.count else { return nil }
    var i = from
    while i <= haystack.count - needle.count {
        var match = true
        for j in 0..<needle.count where haystack[i + j] != needle[j] {
            match = false
            break
        }
        if match { return i }
        i += 1
    }
    return nil
}

func replaceAll(_ s: [UInt8], _ from: [UInt8], _ to: [UInt8]) -> [UInt8] {
    var out: [UInt8] = []
    var i = 0
    while let at = indexOf(s, from, from: i) {
        out.append(contentsOf: s[i..<at])
        out.append(contentsOf: to)
        i = at + from.count
    }
    out.append(contentsOf: s[i...])
    return out
}

/// Replaces the value of every `"field": value` with "[redacted]" (strings, numbers, literals).
func redactField(_ s: [UInt8], _ field: String) -> [UInt8] {
    let key = Array(("\"" + field + "\"").utf8)
    var out: [UInt8] = []
    var i = 0
    while let at = indexOf(s, key, from: i) {
        var j = at + key.count
        while j < s.count, s[j] == 32 || s[j] == 9 || s[j] == 10 || s[j] == 13 { j += 1 }
        guard j < s.count, s[j] == UInt8(ascii: ":") else {
            out.append(contentsOf: s[i..<(at + key.count)])
            i = at + key.count
            continue
        }
        j += 1
        while j < s.count, s[j] == 32 || s[j] == 9 || s[j] == 10 || s[j] == 13 { j += 1 }
        var end = j
        if end < s.count, s[end] == UInt8(ascii: "\"") {
            end += 1
            while end < s.count, s[end] != UInt8(ascii: "\"") { end += s[end] == UInt8(ascii: "\\") ? 2 : 1 }
            end = min(end + 1, s.count)
        } else {
            while end < s.count, s[end] != UInt8(ascii: ","), s[end] != UInt8(ascii: "}"), s[end] != UInt8(ascii: "]") { end += 1 }
        }
        out.append(contentsOf: s[i..<j])
        out.append(contentsOf: Array("\"[redacted]\"".utf8))
        i = end
    }
    out.append(contentsOf: s[i...])
    return out
}

func makeRootContext() -> RootContext { BodyRewriteRoot() }
