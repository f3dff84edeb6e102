// Sample filter `headers`: add, remove and rename request and response headers, from
// configuration such as
//   { "request":  { "add": { "x-edge": "sluice" }, "remove": ["x-internal"], "rename": { "x-old": "x-new" } },
//     "response": { "add": { "x-served-by": "sluice" }, "remove": ["server"] } }

struct Edits {
    var add: [(String, String)] = []
    var remove: [String] = []
    var rename: [(String, String)] = []

    init(_ json: JSON?) {
        guard let json else { return }
        add = json["add"]?.members.compactMap { k, v in v.string.map { (k, $0) } } ?? []
        remove = json["remove"]?.array.compactMap { $0.string } ?? []
        rename = json["rename"]?.members.compactMap { k, v in v.string.map { (k, $0) } } ?? []
    }

    func apply(_ headers: Headers) {
        for (from, to) in rename {
            if let value = headers[from] {
                headers.remove(from)
                headers.set(to, value)
            }
        }
        for name in remove { headers.remove(name) }
        for (name, value) in add { headers.add(name, value) }
    }
}

final class HeadersRoot: RootContext {
    var request = Edits(nil)
    var response = Edits(nil)

    func onConfigure(configuration: [UInt8]) -> Bool {
        if configuration.isEmpty { return true }
        guard let json = JSON.parse(configuration) else {
            log(.error, "headers: configuration is not JSON")
            return false
        }
        request = Edits(json["request"])
        response = Edits(json["response"])
        return true
    }

    func createHTTPContext(id: UInt32) -> HTTPContext? { HeadersStream(root: self) }
}

final class HeadersStream: HTTPContext {
    let root: HeadersRoot
    init(root: HeadersRoot) { self.root = root }

    func onRequestHeaders(endOfStream: Bool) -> Action {
        root.request.apply(.request)
        return .continue
    }

    func onResponseHeaders(endOfStream: Bool) -> Action {
        root.response.apply(.response)
        return .continue
    }
}

func makeRootContext() -> RootContext { HeadersRoot() }
