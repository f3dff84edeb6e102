import Foundation
import XCTest

/// Seeded, reproducible random request streams mixing valid and invalid framing. Whatever
/// Sluice accepts or refuses, one invariant must hold: the upstream never parses a message
/// boundary Sluice did not intend. Every request the upstream parses is one the generator
/// wrote, with the method, target and body the generator meant (never a smuggled
/// `/SMUGGLED`), and the client's 200s pair up with the upstream's requests in order.
///
/// `SLUICE_FUZZ_SEED` and `SLUICE_FUZZ_STREAMS` reproduce or widen a run.
final class WireFuzzTests: XCTestCase {
    var upstream: RawUpstream!
    var proxy: ProxyUnderTest!

    override func setUp() async throws {
        upstream = try await RawUpstream.start(group: testGroup)
        proxy = try await ProxyUnderTest.start("""
            listeners:
              - name: main
                address: 127.0.0.1:0
                routes: [{ match: { prefix: / }, cluster: raw, timeout: 2s }]
            clusters:
              - { name: raw, endpoints: ["127.0.0.1:{{raw}}"] }
            """, ports: ["raw": upstream.port], workers: 1)
    }

    override func tearDown() async throws {
        await proxy.stop()
        await upstream.stop()
    }

    func testRandomRequestStreamsNeverDesync() async throws {
        let environment = ProcessInfo.processInfo.environment
        let seed = environment["SLUICE_FUZZ_SEED"].flatMap { UInt64($0) } ?? 0x5EED_2026
        let streams = environment["SLUICE_FUZZ_STREAMS"].flatMap { Int($0) } ?? 2500
        let port = proxy.port()
        let upstream = self.upstream!
        let (failures, stats) = try await blocking { () -> ([String], String) in
            var rng = SplitMix64(seed: seed)
            var failures: [String] = []
            var forwarded = 0, refused = 0
            for stream in 0..<streams {
                let generated = RequestStreamGenerator.make(stream: stream, rng: &rng)
                do {
                    let (ok, notOK) = try FuzzRun.check(generated, port: port, upstream: upstream)
                    forwarded += ok
                    refused += notOK
                } catch {
                    failures.append("stream \(stream) (seed \(seed)): \(error)\n\(generated.bytes.debugDescription)")
                    if failures.count >= 5 { break }
                }
            }
            return (failures, "\(streams) streams, \(forwarded) requests forwarded, \(refused) answered otherwise")
        }
        print("wire fuzz: \(stats)")
        for f in failures { XCTFail(f) }
    }
}

/// A small, fast, reproducible generator (SplitMix64).
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

struct GeneratedStream {
    struct Intended { var method: String; var target: String; var body: String }
    var bytes: String
    /// Every request the generator wrote, by target: the only ones the upstream may parse.
    var intended: [String: Intended]
}

enum RequestStreamGenerator {
    static let methods = ["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "FOO", "get", "POST"]
    static let bodies = ["", "hello", "GET /SMUGGLED HTTP/1.1\r\nHost: t\r\n\r\n", "0\r\n\r\n", "x=1&y=2",
                         "POST /SMUGGLED HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc", String(repeating: "z", count: 300)]

    static func make(stream: Int, rng: inout SplitMix64) -> GeneratedStream {
        var bytes = ""
        var intended: [String: GeneratedStream.Intended] = [:]
        let count = Int.random(in: 1...4, using: &rng)
        for i in 0..<count {
            let method = methods.randomElement(using: &rng)!
            let target = "/f/\(stream)/\(i)"
            let framing = Int.random(in: 0..<16, using: &rng)
            // Without framing the body would be the next request on the wire, a request the
            // client really sent: that case carries no body, so every request is intended.
            let body = framing == 0 ? "" : bodies.randomElement(using: &rng)!
            intended[target] = .init(method: method, target: target, body: body)
            let version = Int.random(in: 0..<10, using: &rng) == 0 ? "HTTP/1.0" : "HTTP/1.1"
            var head = "\(method) \(target) \(version)\r\n"
            switch Int.random(in: 0..<12, using: &rng) {
            case 0: break  // no Host
            case 1: head += "Host: t\r\nHost: u\r\n"
            case 2: head += "Host : t\r\n"
            default: head += "Host: t\r\n"
            }
            if Int.random(in: 0..<6, using: &rng) == 0 {
                head += ["Connection: content-length\r\n", "Connection: transfer-encoding\r\n", "Connection: host\r\n",
                         "Connection: keep-alive\r\n", "X-A: 1\r\n b\r\n", "X-B: \u{0}\r\n"].randomElement(using: &rng)!
            }
            let n = body.utf8.count
            switch framing {
            case 0:
                bytes += head + "\r\n"
            case 1, 2, 3:
                bytes += head + "Content-Length: \(n)\r\n\r\n" + body
            case 4:
                bytes += head + "Content-Length: \(n)\r\nConnection: close\r\n\r\n" + body
            case 5:
                bytes += head + "Content-Length: \(n)\r\nContent-Length: \(n + 1)\r\n\r\n" + body
            case 6:
                bytes += head + ["Content-Length: +\(n)", "Content-Length: \(n), \(n)", "Content-Length: 0x\(String(n, radix: 16))", "Content-Length: \(n) ", "Content-Length:"].randomElement(using: &rng)! + "\r\n\r\n" + body
            case 7, 8, 9:
                bytes += head + "Transfer-Encoding: chunked\r\n\r\n" + chunked(body, rng: &rng)
            case 10:
                bytes += head + ["Transfer-Encoding: xchunked", "Transfer-Encoding: chunked, identity", "Transfer-Encoding: Chunked",
                                 "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", "Transfer-Encoding:  chunked",
                                 "Transfer-Encoding: gzip, chunked", "Transfer-Encoding\t: chunked"].randomElement(using: &rng)! + "\r\n\r\n" + chunked(body, rng: &rng)
            case 11:
                bytes += head + "Content-Length: \(n)\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(body, rng: &rng)
            case 12:
                bytes += head + "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n" + chunked(body, rng: &rng)
            case 13:  // a chunk whose declared size is short of its data
                bytes += head + "Transfer-Encoding: chunked\r\n\r\n" + (n > 1 ? "\(String(n - 1, radix: 16))\r\n\(body)\r\n0\r\n\r\n" : "0\r\n\r\n")
            case 14:  // bare LF line ends
                bytes += (head + "Content-Length: \(n)\r\n\r\n").replacingOccurrences(of: "\r\n", with: "\n") + body
            default:
                bytes += head + "Content-Length: \(n)\r\nExpect: 100-continue\r\n\r\n" + body
            }
        }
        return GeneratedStream(bytes: bytes, intended: intended)
    }

    /// The body as 1–3 chunks, sometimes with an extension or a trailer.
    static func chunked(_ body: String, rng: inout SplitMix64) -> String {
        var out = ""
        var rest = Substring(body)
        while !rest.isEmpty {
            let take = min(rest.count, Int.random(in: 1...max(1, rest.count), using: &rng))
            let piece = rest.prefix(take)
            rest = rest.dropFirst(take)
            let ext = Int.random(in: 0..<5, using: &rng) == 0 ? ";ext=1" : ""
            out += "\(String(piece.utf8.count, radix: 16))\(ext)\r\n\(piece)\r\n"
        }
        return out + (Int.random(in: 0..<5, using: &rng) == 0 ? "0\r\nX-Trailer: 1\r\n\r\n" : "0\r\n\r\n")
    }
}

enum FuzzRun {
    struct Failure: Error, CustomStringConvertible { var description: String }

    /// Sends one stream plus a closing sentinel, reads every response, then checks the
    /// upstream's view against the generator's. Returns (forwarded, answered otherwise).
    static func check(_ generated: GeneratedStream, port: Int, upstream: RawUpstream) throws -> (Int, Int) {
        upstream.reset()
        let client = try RawHTTPClient(port: port, timeout: 1)
        try client.send(generated.bytes + "GET /end HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        var responses: [RawHTTPClient.Response] = []
        while true {
            guard let r = try? client.readResponse().0 else { break }
            responses.append(r)
            if r.header("connection")?.lowercased() == "close" { break }
        }
        let seen = upstream.requests
        let errors = upstream.errors
        if !errors.isEmpty { throw Failure(description: "the upstream could not parse what Sluice sent: \(errors)") }
        var intended = generated.intended
        intended["/end"] = .init(method: "GET", target: "/end", body: "")
        for request in seen {
            guard let want = intended[request.target] else {
                throw Failure(description: "the upstream parsed a request nobody sent: \(request)")
            }
            // A request the generator sent with broken framing may legitimately be refused,
            // but if it was forwarded, it was forwarded whole and as written.
            guard request.method == want.method, request.bodyText == want.body else {
                throw Failure(description: "the upstream parsed \(request), the client sent \(want.method) \(want.target) body=\(want.body.debugDescription)")
            }
            intended[request.target] = nil  // each at most once
        }
        let answered = responses.filter { $0.status == 200 }
        guard answered.count == seen.count else {
            throw Failure(description: "the client got \(answered.count) 200s \(answered.map(\.text)), the upstream parsed \(seen.count) requests \(seen)")
        }
        for (response, request) in zip(answered, seen) where !response.text.hasSuffix(" \(request.method) \(request.target)") {
            throw Failure(description: "response \(response.text.debugDescription) paired with upstream request \(request)")
        }
        return (answered.count, responses.count - answered.count)
    }
}
