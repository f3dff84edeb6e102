// Sample filter `ext-authz`: asks an authorization service before letting a request through.
//   { "cluster": "authz", "path_prefix": "/check", "timeout_ms": 500,
//     "forward_headers": ["authorization", "cookie"], "upstream_headers": ["x-user-id"] }
// The filter sends GET <path_prefix><request path> to the cluster with the listed request
// headers. 2xx: the listed response headers are added to the request, which continues.
// Anything else: the service's status and body go back to the client. No answer in time:
// 403, fail closed (Envoy ext_authz's default status on error).

final class ExtAuthzRoot: RootContext {
    var cluster = "authz"
    var pathPrefix = ""
    var timeoutMs: UInt32 = 500
    var forwardHeaders: [String] = ["authorization"]
    var upstreamHeaders: [String] = []

    func onConfigure(configuration: [UInt8]) -> Bool {
        guard let json = JSON.parse(configuration) else {
            log(.error, "ext-authz: configuration must be JSON")
            return false
        }
        cluster = json["cluster"]?.string ?? cluster
        pathPrefix = json["path_prefix"]?.string ?? pathPrefix
        timeoutMs = UInt32(json["timeout_ms"]?.int ?? Int(timeoutMs))
        if let f = json["forward_headers"] { forwardHeaders = f.array.compactMap { $0.string } }
        if let u = json["upstream_headers"] { upstreamHeaders = u.array.compactMap { $0.string } }
        return true
    }

    func createHTTPContext(id: UInt32) -> HTTPContext? { ExtAuthzStream(root: self) }
}

final class ExtAuthzStream: HTTPContext {
    let root: ExtAuthzRoot
    /// Set once the service said yes. Until then the body is held too: with Envoy's
    /// `allow_on_headers_stop_iteration: true` body callbacks arrive while the headers are
    /// paused, and returning Continue from them would let the request through unauthorized.
    var authorized = false
    init(root: ExtAuthzRoot) { self.root = root }

    func onRequestBody(size: Int, endOfStream: Bool) -> Action { authorized ? .continue : .pause }

    func onRequestHeaders(endOfStream: Bool) -> Action {
        var forwarded: [(String, String)] = []
        for name in root.forwardHeaders {
            if let value = Headers.request[name] { forwarded.append((name, value)) }
        }
        let path = root.pathPrefix + (Headers.request[":path"] ?? "/")
        let upstreamHeaders = root.upstreamHeaders
        let sent = httpCall(cluster: root.cluster, path: path, authority: root.cluster, headers: forwarded, timeoutMilliseconds: root.timeoutMs) { response in
            guard let response else {
                sendLocalResponse(status: 403, body: "authorization service unavailable\n")
                return
            }
            if (200..<300).contains(response.status) {
                self.authorized = true
                for name in upstreamHeaders {
                    if let value = response.headers.first(where: { $0.0 == name })?.1 { Headers.request.set(name, value) }
                }
                continueRequest()
            } else {
                var headers: [(String, String)] = []
                if let challenge = response.headers.first(where: { $0.0 == "www-authenticate" })?.1 { headers.append(("www-authenticate", challenge)) }
                sendLocalResponse(status: response.status, body: String(decoding: response.body, as: UTF8.self), headers: headers)
            }
        }
        if !sent {
            sendLocalResponse(status: 403, body: "authorization service unavailable\n")
        }
        return .pause
    }
}

func makeRootContext() -> RootContext { ExtAuthzRoot() }
