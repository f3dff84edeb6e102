// Sample filter `auth-apikey`: requests must carry a known API key.
//   { "header": "x-api-key", "keys": { "<key>": "<key id>", ... }, "forward_header": "x-api-key-id", "realm": "api" }
// Unknown or missing key: 401 with WWW-Authenticate. Known key: the key header is removed
// (it never reaches the upstream) and the key's id is forwarded instead.

final class APIKeyRoot: RootContext {
    var header = "x-api-key"
    var forwardHeader = "x-api-key-id"
    var realm = "api"
    var keys: [(String, String)] = []

    func onConfigure(configuration: [UInt8]) -> Bool {
        guard let json = JSON.parse(configuration) else {
            log(.error, "auth-apikey: configuration must be JSON with a 'keys' object")
            return false
        }
        header = json["header"]?.string ?? header
        forwardHeader = json["forward_header"]?.string ?? forwardHeader
        realm = json["realm"]?.string ?? realm
        keys = json["keys"]?.members.compactMap { k, v in v.string.map { (k, $0) } } ?? []
        if keys.isEmpty { log(.warn, "auth-apikey: no keys configured; every request will be refused") }
        return true
    }

    func createHTTPContext(id: UInt32) -> HTTPContext? { APIKeyStream(root: self) }
}

final class APIKeyStream: HTTPContext {
    let root: APIKeyRoot
    init(root: APIKeyRoot) { self.root = root }

    func onRequestHeaders(endOfStream: Bool) -> Action {
        guard let presented = Headers.request[root.header] else {
            return deny("missing API key")
        }
        guard let id = root.keys.first(where: { $0.0 == presented })?.1 else {
            return deny("unknown API key")
        }
        Headers.request.remove(root.header)
        Headers.request.set(root.forwardHeader, id)
        return .continue
    }

    private func deny(_ reason: String) -> Action {
        sendLocalResponse(status: 401, body: reason + "\n", headers: [("www-authenticate", "ApiKey realm=\"" + root.realm + "\"")])
        return .pause
    }
}

func makeRootContext() -> RootContext { APIKeyRoot() }
