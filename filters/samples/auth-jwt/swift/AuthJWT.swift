// Sample filter `auth-jwt`: verifies HS256 JSON Web Tokens from `Authorization: Bearer`.
//   { "secret": "…", "issuer": "https://issuer", "audience": "api",
//     "claims_to_headers": { "sub": "x-jwt-sub", "scope": "x-jwt-scope" }, "leeway_seconds": 30 }
// Checks the signature, exp, nbf, iss and aud; forwards chosen claims as headers (and drops
// the Authorization header); refuses with 401 and the reason otherwise.

final class JWTRoot: RootContext {
    var secret: [UInt8] = []
    var issuer: String?
    var audience: String?
    var claimsToHeaders: [(String, String)] = []
    var leeway: Int64 = 30

    func onConfigure(configuration: [UInt8]) -> Bool {
        guard let json = JSON.parse(configuration), let s = json["secret"]?.string, !s.isEmpty else {
            log(.error, "auth-jwt: configuration must be JSON with a non-empty 'secret'")
            return false
        }
        secret = Array(s.utf8)
        issuer = json["issuer"]?.string
        audience = json["audience"]?.string
        claimsToHeaders = json["claims_to_headers"]?.members.compactMap { k, v in v.string.map { (k, $0) } } ?? []
        leeway = Int64(json["leeway_seconds"]?.int ?? 30)
        return true
    }

    func createHTTPContext(id: UInt32) -> HTTPContext? { JWTStream(root: self) }

    /// The claims of a valid token, or the reason it is not.
    func verify(_ token: String) -> (claims: JSON?, error: String?) {
        let parts = Array(token.utf8).split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 3 else { return (nil, "malformed token") }
        guard let headerBytes = Crypto.base64URLDecode(Array(parts[0])), let header = JSON.parse(headerBytes),
              let payloadBytes = Crypto.base64URLDecode(Array(parts[1])), let claims = JSON.parse(payloadBytes),
              let signature = Crypto.base64URLDecode(Array(parts[2])) else { return (nil, "malformed token") }
        guard header["alg"]?.string == "HS256" else { return (nil, "unsupported algorithm") }
        let signed = Array(parts[0]) + [UInt8(ascii: ".")] + Array(parts[1])
        guard Crypto.constantTimeEqual(Crypto.hmacSHA256(key: secret, message: signed), signature) else { return (nil, "invalid signature") }
        let now = Int64(nowNanoseconds() / 1_000_000_000)
        if let exp = claims["exp"]?.int, Int64(exp) + leeway < now { return (nil, "token expired") }
        if let nbf = claims["nbf"]?.int, Int64(nbf) - leeway > now { return (nil, "token not yet valid") }
        if let issuer, claims["iss"]?.string != issuer { return (nil, "wrong issuer") }
        if let audience {
            let aud = claims["aud"]
            let ok = aud?.string == audience || (aud?.array.contains { $0.string == audience } ?? false)
            if !ok { return (nil, "wrong audience") }
        }
        return (claims, nil)
    }
}

final class JWTStream: HTTPContext {
    let root: JWTRoot
    init(root: JWTRoot) { self.root = root }

    func onRequestHeaders(endOfStream: Bool) -> Action {
        guard let authorization = Headers.request["authorization"], authorization.hasPrefix("Bearer ") else {
            return deny("missing bearer token")
        }
        let token = String(authorization.dropFirst(7))
        let (claims, error) = root.verify(token)
        if let error { return deny(error) }
        Headers.request.remove("authorization")
        for (claim, header) in root.claimsToHeaders {
            switch claims?[claim] {
            case .string(let s)?: Headers.request.set(header, s)
            case .number(let n)?: Headers.request.set(header, n)
            case .bool(let b)?: Headers.request.set(header, b ? "true" : "false")
            default: break
            }
        }
        return .continue
    }

    private func deny(_ reason: String) -> Action {
        sendLocalResponse(status: 401, body: reason + "\n",
                          headers: [("www-authenticate", "Bearer error=\"invalid_token\", error_description=\"" + reason + "\"")])
        return .pause
    }
}

func makeRootContext() -> RootContext { JWTRoot() }
