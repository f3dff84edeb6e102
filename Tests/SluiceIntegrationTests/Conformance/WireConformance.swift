import Foundation
import XCTest

/// What the strict upstream must have parsed for one request that Sluice forwarded.
struct Seen: Sendable {
    var method: String
    var target: String
    var body: String = ""
    /// Header expectations on what the upstream received: a value, or nil for "absent".
    var headers: [String: String?] = [:]
}

/// One raw request case: the bytes a client sends, the statuses it must get back in order,
/// whether Sluice must then close the connection, and exactly what the upstream parses.
struct WireCase: Sendable {
    var name: String
    var send: String
    var statuses: [Int]
    var closes: Bool
    var upstream: [Seen]
    /// Responses to HEAD carry no body; the client needs to know which ones.
    var headResponses: Set<Int> = []

    /// Refused before anything reaches the upstream: one status, then a close.
    static func refused(_ name: String, _ send: String, _ status: Int = 400) -> WireCase {
        WireCase(name: name, send: send, statuses: [status], closes: true, upstream: [])
    }

    /// Forwarded: one 200 per upstream request; the connection stays open unless `closes`.
    static func forwarded(_ name: String, _ send: String, _ upstream: [Seen], closes: Bool = false) -> WireCase {
        WireCase(name: name, send: send, statuses: upstream.map { _ in 200 }, closes: closes, upstream: upstream)
    }
}

/// One hostile-upstream case: the raw bytes the upstream answers `GET /script/NAME` with.
struct UpstreamCase: Sendable {
    var name: String
    var response: String
    /// The upstream closes its connection right after sending `response`.
    var upstreamCloses: Bool = false
    /// The status the client gets, or nil when it must get no complete response (a close).
    var status: Int?
    /// The body the client gets, when it matters.
    var body: String? = nil
    /// The client connection must be closed after the response.
    var clientCloses: Bool = false
    var method: String = "GET"
    var clientVersion: String = "HTTP/1.1"
    var extraRequestHeaders: String = ""
}

/// Runs wire cases against a Sluice listener in front of a RawUpstream. For every case: what
/// the client got, whether the connection closed, what the upstream parsed (no framing errors,
/// no unparsed bytes), a request on the same connection when it stays open, and a probe on a
/// fresh connection that must get its own answer.
struct WireRunner {
    let proxyPort: Int
    let upstream: RawUpstream

    struct Failure: Error, CustomStringConvertible { var description: String }

    func run(_ c: WireCase) throws {
        upstream.reset()
        let client = try RawHTTPClient(port: proxyPort, timeout: 3)
        try client.send(Array(c.send.utf8))
        var expected = c.upstream
        var upstreamIndex = 0
        for (i, status) in c.statuses.enumerated() {
            let response: RawHTTPClient.Response
            do { response = try client.readResponse(head: c.headResponses.contains(i)).0 } catch {
                throw Failure(description: "response \(i + 1): expected \(status), got \(error)")
            }
            guard response.status == status else {
                throw Failure(description: "response \(i + 1): expected \(status), got \(response.status) \(response.text.prefix(120).debugDescription)")
            }
            if status == 200 && !c.headResponses.contains(i) {
                // The body names the upstream request that produced it: responses and requests
                // pair up in order, none skipped, none answered twice.
                guard response.text.hasPrefix("seen-"), upstreamIndex < expected.count,
                      response.text.hasSuffix(" \(expected[upstreamIndex].method) \(expected[upstreamIndex].target)") else {
                    throw Failure(description: "response \(i + 1) is \(response.text.debugDescription), expected the answer to upstream request \(upstreamIndex + 1)")
                }
            }
            if status == 200 { upstreamIndex += 1 }
        }
        expected += try closedOrStillInStep(client, mustClose: c.closes)
        try probe()
        expected.append(Seen(method: "GET", target: "/probe"))
        try check(upstream.requests, expected)
    }

    /// Either the connection is closed, or it is still in step: the next request on it gets
    /// its own answer (which the upstream then also sees).
    func closedOrStillInStep(_ client: RawHTTPClient, mustClose: Bool) throws -> [Seen] {
        if mustClose {
            guard client.isClosedByPeer() else { throw Failure(description: "the connection stayed open") }
            return []
        }
        try client.send("GET /after HTTP/1.1\r\nHost: t\r\n\r\n")
        let after = try client.readResponse().0
        guard after.status == 200, after.text.hasSuffix(" GET /after") else {
            throw Failure(description: "the next request on the same connection got \(after.status) \(after.text.debugDescription)")
        }
        return [Seen(method: "GET", target: "/after")]
    }

    /// A fresh connection gets its own answer (not a leftover of the case before).
    func probe() throws {
        let probe = try httpGet(proxyPort, "/probe", host: "t")
        guard probe.status == 200, probe.text.hasSuffix(" GET /probe") else {
            throw Failure(description: "probe on a fresh connection got \(probe.status) \(probe.text.debugDescription)")
        }
    }

    func check(_ seen: [RawUpstream.Request], _ expected: [Seen]) throws {
        let errors = upstream.errors
        guard errors.isEmpty else { throw Failure(description: "the upstream could not parse what it got: \(errors)") }
        guard seen.count == expected.count else {
            throw Failure(description: "the upstream parsed \(seen.count) requests \(seen), expected \(expected.count) \(expected.map { "\($0.method) \($0.target)" })")
        }
        for (s, e) in zip(seen, expected) {
            guard s.method == e.method, s.target == e.target, s.bodyText == e.body else {
                throw Failure(description: "the upstream parsed \(s), expected \(e.method) \(e.target) body=\(e.body.debugDescription)")
            }
            for (name, value) in e.headers {
                let got = s.headers(name.lowercased())
                if let value {
                    guard got == [value] else { throw Failure(description: "\(e.target): upstream header \(name) is \(got), expected [\(value)]") }
                } else {
                    guard got.isEmpty else { throw Failure(description: "\(e.target): upstream header \(name) is \(got), expected absent") }
                }
            }
        }
    }

    func run(_ c: UpstreamCase) throws {
        upstream.reset()
        upstream.setScript(c.name, c.response, closeAfter: c.upstreamCloses)
        let client = try RawHTTPClient(port: proxyPort, timeout: 3)
        try client.send("\(c.method) /script/\(c.name) \(c.clientVersion)\r\nHost: t\r\n\(c.extraRequestHeaders)\r\n")
        var expected = [Seen(method: c.method, target: "/script/\(c.name)")]
        if let status = c.status {
            let response: RawHTTPClient.Response
            do { response = try client.readResponse(head: c.method == "HEAD").0 } catch {
                throw Failure(description: "expected \(status), got \(error)")
            }
            guard response.status == status else {
                throw Failure(description: "expected \(status), got \(response.status) \(response.text.prefix(120).debugDescription)")
            }
            if let body = c.body, response.text != body {
                throw Failure(description: "expected body \(body.debugDescription), got \(response.text.debugDescription)")
            }
            expected += try closedOrStillInStep(client, mustClose: c.clientCloses)
        } else {
            // No complete response: whatever arrived, the connection must end.
            guard (try? client.readToEOF()) != nil || client.isClosedByPeer() else {
                throw Failure(description: "the client connection stayed open")
            }
        }
        // The upstream connection that misbehaved must not serve anyone else: two probes,
        // each on a fresh client connection, get their own answers.
        try probe()
        try probe()
        expected += [Seen(method: "GET", target: "/probe"), Seen(method: "GET", target: "/probe")]
        try check(upstream.requests, expected)
    }
}
