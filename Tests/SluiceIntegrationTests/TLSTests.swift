import Foundation
import Logging
import NIOCore
import NIOSSL
import SluiceConfig
import SluiceCore
import XCTest

/// TLS termination over real sockets with certificates made for the test: SNI picks the
/// certificate, ALPN the protocol, client certificates are verified, filters see the TLS
/// properties, certificates reload without dropping a request, and broken handshakes are
/// bounded and counted.
final class TLSTests: XCTestCase {
    var upstream: TestUpstream!
    var certs: TestCertificates!

    override func setUp() async throws {
        upstream = try await TestUpstream.start(name: "origin", group: testGroup)
        certs = try TestCertificates.make()
    }

    override func tearDown() async throws {
        for proxy in proxies { await proxy.stop() }
        await upstream.stop()
        certs.remove()
    }

    var proxies: [ProxyUnderTest] = []
    func start(_ yaml: String, ports: [String: Int]) async throws -> ProxyUnderTest {
        let proxy = try await ProxyUnderTest.start(yaml, ports: ports)
        proxies.append(proxy)
        return proxy
    }

    func tlsConfig(clientCA: Bool = false, require: Bool = false, filters: String = "", extra: String = "") -> String {
        """
        listeners:
          - name: main
            address: 127.0.0.1:0
            request_headers_timeout: 1s
            \(filters)
            tls:
              certificates:
                - { certificate_chain: \(certs.path("alpha.pem")), private_key: \(certs.path("alpha.key")), server_names: [alpha.test, "*.alpha.test"] }
                - { certificate_chain: \(certs.path("beta.pem")), private_key: \(certs.path("beta.key")), server_names: [beta.test] }
              \(clientCA ? "client_ca: \(certs.path("ca.pem"))" : "")
              \(require ? "require_client_certificate: true" : "")
              \(extra)
            routes: [{ match: { prefix: / }, cluster: origin }]
        clusters:
          - { name: origin, endpoints: ["127.0.0.1:{{origin}}"] }
        """
    }

    func curlTLS(_ proxy: ProxyUnderTest, _ name: String, _ path: String = "/", _ options: [String] = []) throws -> (status: Int32, output: String) {
        try curl(["--cacert", certs.path("ca.pem"), "--resolve", "\(name):\(proxy.port()):127.0.0.1"] + options + ["https://\(name):\(proxy.port())\(path)"])
    }

    func testServerNameChoosesTheCertificateAndALPNTheProtocol() async throws {
        let proxy = try await start(tlsConfig(), ports: ["origin": upstream.port])
        // Verification against the CA with the SNI as the name proves which certificate came.
        let alpha = try await tlsHandshake(port: proxy.port(), serverName: "alpha.test", certificates: certs)
        XCTAssertEqual(alpha.alpn, "h2")
        XCTAssertTrue(alpha.peerCommonNames.contains("alpha.test"))
        let wildcard = try await tlsHandshake(port: proxy.port(), serverName: "api.alpha.test", alpn: ["http/1.1"], certificates: certs)
        XCTAssertEqual(wildcard.alpn, "http/1.1")
        XCTAssertTrue(wildcard.peerCommonNames.contains("*.alpha.test"))
        let beta = try await tlsHandshake(port: proxy.port(), serverName: "beta.test", alpn: [], certificates: certs)
        XCTAssertNil(beta.alpn)
        XCTAssertEqual(beta.peerCommonNames, ["beta.test"])
        // An unknown name and no name get the first certificate (the default, as nginx's).
        let unknown = try await tlsHandshake(port: proxy.port(), serverName: "gamma.test", certificates: certs, verify: false)
        XCTAssertTrue(unknown.peerCommonNames.contains("alpha.test"))
        let none = try await tlsHandshake(port: proxy.port(), serverName: nil, certificates: certs, verify: false)
        XCTAssertTrue(none.peerCommonNames.contains("alpha.test"))
        // TLS 1.1 is below the default minimum (1.2): refused.
        do {
            _ = try await tlsHandshake(port: proxy.port(), serverName: "alpha.test", certificates: certs, maximumVersion: .tlsv11)
            XCTFail("a TLS 1.1 handshake was accepted")
        } catch {}

        // Requests over both protocols reach the origin, which sees X-Forwarded-Proto https.
        let h2 = try curlTLS(proxy, "alpha.test", "/", ["--http2", "-w", "\n%{http_version}"])
        XCTAssertEqual(h2.status, 0)
        XCTAssertTrue(h2.output.hasSuffix("\n2"), h2.output)
        XCTAssertTrue(h2.output.contains("\"x-forwarded-proto\":\"https\""), h2.output)
        let h1 = try curlTLS(proxy, "beta.test", "/", ["--http1.1", "-w", "\n%{http_version}"])
        XCTAssertTrue(h1.output.hasSuffix("\n1.1"), h1.output)
        XCTAssertEqual(try proxy.sample("sluice_listener_tls_handshakes_total{listener=\"main\"}") ?? 0 >= 7, true)
    }

    func testClientCertificatesAreVerified() async throws {
        let proxy = try await start(tlsConfig(clientCA: true, require: true), ports: ["origin": upstream.port])
        let ok = try curlTLS(proxy, "alpha.test", "/", ["--cert", certs.path("client.pem"), "--key", certs.path("client.key"), "-o", "/dev/null", "-w", "%{http_code}"])
        XCTAssertEqual(ok.output, "200")
        for options in [[], ["--cert", certs.path("rogue.pem"), "--key", certs.path("rogue.key")]] {
            let refused = try curlTLS(proxy, "alpha.test", "/", options + ["-o", "/dev/null", "-w", "%{http_code}"])
            XCTAssertNotEqual(refused.status, 0, "a client without a trusted certificate got through: \(options)")
            XCTAssertNotEqual(refused.output, "200")
        }
        XCTAssertTrue(try eventually { try proxy.sample("sluice_listener_tls_failures_total{listener=\"main\",reason=\"handshake_failed\"}") ?? 0 >= 2 })
    }

    func testOptionalClientCertificateAndTheTLSPropertiesFiltersRead() async throws {
        let plugin = """
              http_filters: [conformance]
        """
        var yaml = tlsConfig(clientCA: true, filters: plugin.trimmingCharacters(in: .whitespaces))
        yaml += "\nplugins:\n  - { name: conformance, module: \(try TestFilters.path("c-conformance")), root_id: conformance }\n"
        let proxy = try await start(yaml, ports: ["origin": upstream.port])
        func properties(_ options: [String]) throws -> [String: String] {
            let r = try curlTLS(proxy, "beta.test", "/", options + ["-H", "x-test: tls-props", "-D", "-", "-o", "/dev/null"])
            XCTAssertEqual(r.status, 0, r.output)
            var values: [String: String] = [:]
            for line in r.output.split(separator: "\r\n") where line.hasPrefix("x-p-") {
                let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
                let bytes = stride(from: 0, to: parts[2].count, by: 2).map { i -> UInt8 in
                    let start = parts[2].index(parts[2].startIndex, offsetBy: i)
                    return UInt8(parts[2][start..<parts[2].index(start, offsetBy: 2)], radix: 16)!
                }
                values[parts[0]] = parts[1] == "0" ? String(decoding: bytes, as: UTF8.self) : "not found"
            }
            return values
        }
        let withCertificate = try properties(["--http2", "--cert", certs.path("client.pem"), "--key", certs.path("client.key")])
        XCTAssertEqual(withCertificate["x-p-0"], "\u{1}")  // connection.mtls
        XCTAssertEqual(withCertificate["x-p-1"], "TLSv1.3")
        XCTAssertEqual(withCertificate["x-p-2"], "beta.test")
        XCTAssertEqual(withCertificate["x-p-3"], "CN=client,O=Acme")
        XCTAssertEqual(withCertificate["x-p-4"], "OU=beta,O=Sluice")
        XCTAssertEqual(withCertificate["x-p-5"], "spiffe://sluice.test/client")
        XCTAssertEqual(withCertificate["x-p-6"], "not found")  // the server certificate has no URI SAN
        XCTAssertEqual(withCertificate["x-p-7"], "client.sluice.test")
        XCTAssertEqual(withCertificate["x-p-8"], "beta.test")
        XCTAssertEqual(withCertificate["x-p-9"], try sha256OfCertificate(certs.path("client.pem")))
        XCTAssertEqual(withCertificate["x-p-10"], "HTTP/2")
        XCTAssertEqual(withCertificate["x-p-11"], "https")

        let without = try properties(["--http1.1", "--tls-max", "1.2"])
        XCTAssertEqual(without["x-p-0"], "\u{0}")
        XCTAssertEqual(without["x-p-1"], "TLSv1.2")
        XCTAssertEqual(without["x-p-3"], "")  // as Envoy: an empty subject, not "not found"
        XCTAssertEqual(without["x-p-5"], "not found")
        XCTAssertEqual(without["x-p-9"], "not found")
        XCTAssertEqual(without["x-p-10"], "HTTP/1.1")
    }

    /// BoringSSL's session resumption: openssl's -reconnect makes five more handshakes with
    /// the first one's session, and each is resumed (abbreviated, no certificate).
    func testSessionsAreResumed() async throws {
        let proxy = try await start(tlsConfig(), ports: ["origin": upstream.port])
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl", "s_client", "-connect", "127.0.0.1:\(proxy.port())", "-servername", "alpha.test", "-tls1_2", "-reconnect"]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = Pipe()
        process.standardInput = Pipe()
        try process.run()
        try (process.standardInput as! Pipe).fileHandleForWriting.close()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(text.components(separatedBy: "\nReused, TLSv1.2").count - 1, 5, text)
    }

    func sha256OfCertificate(_ pem: String) throws -> String {
        let der = try NIOSSLCertificate.fromPEMFile(pem)[0].toDERBytes()
        let file = certs.path("client.der")
        try Data(der).write(to: URL(fileURLWithPath: file))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["sha256sum", file]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        process.waitUntilExit()
        return String(String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).prefix(64))
    }

    /// Certificates are replaced under load (files renamed into place, then a reload): no
    /// request fails, new handshakes get the new certificate, and a broken certificate is
    /// refused while the one before keeps serving.
    func testCertificatesReloadUnderLoadWithoutFailures() async throws {
        let live = try LiveCertificate(certs, folder: "live")
        let server = try await live.startServer(upstreamPort: upstream.port, workers: 2)
        let port = server.address(ofListener: "main")!.port!

        // Load: new TLS connections (each a handshake) and requests, without pause.
        let stop = ManagedAtomicFlag()
        let load = Task.detached { () -> (ok: Int, failed: [String]) in
            var ok = 0
            var failed: [String] = []
            while !stop.isSet {
                let r = try curl(["-k", "--http2", "-o", "/dev/null", "-w", "%{http_code}", "--resolve", "any.test:\(port):127.0.0.1", "https://any.test:\(port)/"])
                if r.output == "200" { ok += 1 } else { failed.append("curl \(r.status) \(r.output)") }
            }
            return (ok, failed)
        }
        try await Task.sleep(for: .milliseconds(300))
        let before = try await tlsHandshake(port: port, serverName: "beta.test", verify: false)
        XCTAssertTrue(before.peerCommonNames.contains("alpha.test"))

        try live.install("beta")
        let outcome = await server.reload()
        XCTAssertTrue(outcome.ok, "\(outcome.errors)")
        let after = try await tlsHandshake(port: port, serverName: "beta.test", verify: false)
        XCTAssertEqual(after.peerCommonNames, ["beta.test"])

        // A key that does not belong to the certificate, then garbage: both refused.
        try FileManager.default.copyItem(atPath: self.certs.path("alpha.key"), toPath: live.dir.appendingPathComponent("wrong.key").path)
        _ = rename(live.dir.appendingPathComponent("wrong.key").path, live.dir.appendingPathComponent("live.key").path)
        let mismatched = await server.reload()
        XCTAssertFalse(mismatched.ok)
        XCTAssertTrue(mismatched.errors.joined().contains("listeners[0].tls.certificates[0]"), "\(mismatched.errors)")
        try "not a certificate".write(toFile: live.dir.appendingPathComponent("live.pem").path, atomically: true, encoding: .utf8)
        let garbage = await server.reload()
        XCTAssertFalse(garbage.ok)
        XCTAssertTrue(garbage.errors.joined().contains("certificate_chain"), "\(garbage.errors)")
        let still = try await tlsHandshake(port: port, serverName: "beta.test", verify: false)
        XCTAssertEqual(still.peerCommonNames, ["beta.test"], "the certificate before the bad ones keeps serving")

        try await Task.sleep(for: .milliseconds(300))
        stop.set()
        let result = try await load.value
        await server.shutdown(drainTimeout: .seconds(1))
        XCTAssertEqual(result.failed, [], "requests failed during certificate reloads")
        XCTAssertGreaterThan(result.ok, 5)
    }

    /// A renewed certificate is picked up by the file watcher alone (as a certificate manager
    /// renaming new files into place would trigger it), without a signal or an admin call.
    func testARenewedCertificateFileIsPickedUpByTheWatcher() async throws {
        let live = try LiveCertificate(certs, folder: "watched")
        let server = try await live.startServer(upstreamPort: upstream.port, workers: 1)
        server.watchFiles()
        let port = server.address(ofListener: "main")!.port!
        let before = try await tlsHandshake(port: port, serverName: "beta.test", verify: false)
        XCTAssertTrue(before.peerCommonNames.contains("alpha.test"))
        try live.install("beta")
        var renewed = false
        for _ in 0..<50 where !renewed {
            try await Task.sleep(for: .milliseconds(100))
            renewed = try await tlsHandshake(port: port, serverName: "beta.test", verify: false).peerCommonNames == ["beta.test"]
        }
        await server.shutdown(drainTimeout: .seconds(1))
        XCTAssertTrue(renewed, "the watcher did not load the renewed certificate within 5 s")
    }

    /// A client that stalls in the handshake is cut at request_headers_timeout; bytes that
    /// are not TLS are refused; both are counted, and nothing else is disturbed.
    func testBrokenHandshakesAreBoundedAndCounted() async throws {
        let proxy = try await start(tlsConfig(), ports: ["origin": upstream.port])
        let port = proxy.port()
        let silent = try RawHTTPClient(port: port, timeout: 5)
        let plaintext = try RawHTTPClient(port: port, timeout: 5)
        try plaintext.send(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        let started = Date()
        XCTAssertTrue(try silent.readToEOF().isEmpty)
        XCTAssertLessThan(Date().timeIntervalSince(started), 4)
        _ = try? plaintext.readToEOF()
        XCTAssertTrue(try eventually { try proxy.sample("sluice_listener_tls_failures_total{listener=\"main\",reason=\"handshake_timeout\"}") == 1 })
        XCTAssertTrue(try eventually { try proxy.sample("sluice_listener_tls_failures_total{listener=\"main\",reason=\"handshake_failed\"}") ?? 0 >= 1 })
        let ok = try curlTLS(proxy, "alpha.test", "/", ["-o", "/dev/null", "-w", "%{http_code}"])
        XCTAssertEqual(ok.output, "200")
    }

    func testBadTLSConfigurationIsRefusedWithFileAndField() async throws {
        let missing = """
            listeners:
              - name: main
                address: 127.0.0.1:0
                tls:
                  certificates:
                    - { certificate_chain: /nonexistent/cert.pem, private_key: \(certs.path("alpha.key")) }
                  require_client_certificate: true
                routes: [{ match: { prefix: / }, cluster: origin }]
            clusters: [{ name: origin, endpoints: ["127.0.0.1:1"] }]
            """
        XCTAssertThrowsError(try ConfigLoader.parse(yaml: missing, file: "edge.yaml")) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("edge.yaml:6"), text)
            XCTAssertTrue(text.contains("listeners[0].tls.certificates[0].certificate_chain"), text)
            XCTAssertTrue(text.contains("require_client_certificate needs client_ca"), text)
        }
        // An active health check cannot check an HTTP/2 cluster (it speaks HTTP/1.1): refused
        // rather than marking every endpoint down.
        let checked = """
            listeners: [{ name: main, address: 127.0.0.1:0, routes: [{ match: { prefix: / }, cluster: origin }] }]
            clusters:
              - { name: origin, endpoints: ["127.0.0.1:1"], protocol: http2, health_check: { path: /healthz } }
            """
        XCTAssertThrowsError(try ConfigLoader.parse(yaml: checked, file: "edge.yaml")) { error in
            XCTAssertTrue("\(error)".contains("clusters[0].health_check"), "\(error)")
        }
        // A file that exists but holds no certificate: refused when the server starts.
        let bad = certs.path("bad.pem")
        try "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n".write(toFile: bad, atomically: true, encoding: .utf8)
        let yaml = tlsConfig().replacingOccurrences(of: certs.path("beta.pem"), with: bad)
        do {
            _ = try await start(yaml, ports: ["origin": upstream.port])
            XCTFail("started with a broken certificate")
        } catch {
            XCTAssertTrue("\(error)".contains("listeners[0].tls.certificates[1].certificate_chain"), "\(error)")
        }
    }
}

/// A TLS listener's certificate as files a deploy tool replaces: `live.pem` and `live.key` in
/// their own folder, swapped by renaming new ones into place, with a config file beside them.
struct LiveCertificate {
    let certs: TestCertificates
    let dir: URL

    /// The folder, holding alpha.test's certificate to start with.
    init(_ certs: TestCertificates, folder: String) throws {
        self.certs = certs
        dir = certs.dir.appendingPathComponent(folder)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try install("alpha")
    }

    func install(_ name: String) throws {
        for ext in ["pem", "key"] {
            let tmp = dir.appendingPathComponent("tmp.\(ext)").path
            try? FileManager.default.removeItem(atPath: tmp)
            try FileManager.default.copyItem(atPath: certs.path("\(name).\(ext)"), toPath: tmp)
            _ = rename(tmp, dir.appendingPathComponent("live.\(ext)").path)
        }
    }

    /// A server on a config file that names the live certificate (so `reload()` and the
    /// file watcher can read it again).
    func startServer(upstreamPort: Int, workers: Int) async throws -> SluiceServer {
        let configFile = dir.appendingPathComponent("sluice.yaml").path
        try """
            admin: { address: 127.0.0.1:0 }
            access_log: { format: off }
            listeners:
              - name: main
                address: 127.0.0.1:0
                tls: { certificates: [{ certificate_chain: live.pem, private_key: live.key }] }
                routes: [{ match: { prefix: / }, cluster: origin }]
            clusters:
              - { name: origin, endpoints: ["127.0.0.1:\(upstreamPort)"] }
            """.write(toFile: configFile, atomically: true, encoding: .utf8)
        var logger = Logger(label: "sluice-test")
        logger.logLevel = .critical
        let server = SluiceServer(config: try ConfigLoader.load(file: configFile), workers: workers, logger: logger)
        server.configPath = configFile
        try await server.start()
        return server
    }
}

/// A flag one task sets and another polls.
final class ManagedAtomicFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
    func set() { lock.lock(); value = true; lock.unlock() }
}
