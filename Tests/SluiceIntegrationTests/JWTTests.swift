import Foundation
@testable import SluiceCore
import SluiceConfig
import XCTest

/// HS256 tokens minted here, verified by the auth-jwt sample filter through the proxy.
final class JWTTests: EngineMatrixTestCase {
    func sha256(_ data: [UInt8]) -> [UInt8] {
        let hex = Array(SHA256.hex(data).utf8)
        return stride(from: 0, to: hex.count, by: 2).map { UInt8(String(decoding: hex[$0..<($0 + 2)], as: UTF8.self), radix: 16)! }
    }

    func hmac(_ key: [UInt8], _ message: [UInt8]) -> [UInt8] {
        var k = key.count > 64 ? sha256(key) : key
        k += [UInt8](repeating: 0, count: 64 - k.count)
        return sha256(k.map { $0 ^ 0x5c } + sha256(k.map { $0 ^ 0x36 } + message))
    }

    func b64url(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    func token(_ claims: String, secret: String = "s3cret", alg: String = "HS256") -> String {
        let signed = b64url(Array("{\"alg\":\"\(alg)\",\"typ\":\"JWT\"}".utf8)) + "." + b64url(Array(claims.utf8))
        return signed + "." + b64url(hmac(Array(secret.utf8), Array(signed.utf8)))
    }

    /// The Swift and the C build pass the same checks.
    func testHS256VerificationClaimsAndReasons() async throws {
        for module in ["sample-auth-jwt", "sample-auth-jwt-c"] { try await check(module) }
    }

    func check(_ module: String) async throws {
        let upstream = try await TestUpstream.start(name: "origin", group: testGroup)
        let proxy = try await ProxyUnderTest.start("""
            listeners:
              - { name: main, address: "127.0.0.1:0", http_filters: [jwt], routes: [{ match: { prefix: / }, cluster: origin }] }
            clusters:
              - { name: origin, endpoints: ["127.0.0.1:{{origin}}"] }
            plugins:
              - name: jwt
                module: "\(try TestFilters.path(module))"
                configuration: { secret: s3cret, issuer: "https://issuer.test", audience: api, claims_to_headers: { sub: x-jwt-sub, admin: x-jwt-admin }, leeway_seconds: 5 }
            """, ports: ["origin": upstream.port])
        let port = proxy.port()
        let now = Int(Date().timeIntervalSince1970)
        let good = token("{\"sub\":\"ann\",\"iss\":\"https://issuer.test\",\"aud\":[\"web\",\"api\"],\"exp\":\(now + 60),\"admin\":true}")
        var r = try httpGet(port, "/", headers: [("authorization", "Bearer \(good)")])
        XCTAssertEqual(r.status, 200, module)
        let seen = try echoedHeaders(r)
        XCTAssertEqual(seen["x-jwt-sub"], "ann")
        XCTAssertEqual(seen["x-jwt-admin"], "true")
        XCTAssertNil(seen["authorization"], "the token is not forwarded")

        let cases: [(String?, String)] = [
            (nil, "missing bearer token"),
            ("Bearer abc", "malformed token"),
            ("Bearer " + token("{\"sub\":\"ann\",\"iss\":\"https://issuer.test\",\"aud\":\"api\"}", secret: "wrong"), "invalid signature"),
            ("Bearer " + token("{\"iss\":\"https://issuer.test\",\"aud\":\"api\",\"exp\":\(now - 60)}"), "token expired"),
            ("Bearer " + token("{\"iss\":\"https://issuer.test\",\"aud\":\"api\",\"nbf\":\(now + 600)}"), "token not yet valid"),
            ("Bearer " + token("{\"iss\":\"https://other\",\"aud\":\"api\"}"), "wrong issuer"),
            ("Bearer " + token("{\"iss\":\"https://issuer.test\",\"aud\":\"web\"}"), "wrong audience"),
            ("Bearer " + token("{}", alg: "none"), "unsupported algorithm"),
        ]
        for (header, reason) in cases {
            r = try httpGet(port, "/", headers: header.map { [("authorization", $0)] } ?? [])
            XCTAssertEqual(r.status, 401, "\(module): \(reason)")
            XCTAssertEqual(r.text, reason + "\n", module)
            XCTAssertEqual(r.header("www-authenticate"), "Bearer error=\"invalid_token\", error_description=\"\(reason)\"")
        }
        XCTAssertEqual(upstream.requests.load(ordering: .relaxed), 1)
        await proxy.stop()
        await upstream.stop()
    }
}
