import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// An origin that sees the proxy's bytes exactly as they arrive and parses them with the
/// strictest reading RFC 9112 allows: one request line, header lines ending in CRLF, and a body
/// framed by exactly one of a plain decimal Content-Length or `Transfer-Encoding: chunked`.
/// Anything else it records as a framing error, as is any byte left over when a connection
/// closes. Conformance tests assert on what it parsed and on those errors: when the proxy and
/// this parser disagree about where a message ends, the test sees it.
///
/// It answers each parsed request with `200` and a body naming the request (`seen-N <method>
/// <target>`), except for targets `/script/NAME`, which get the raw bytes registered under NAME
/// (a hostile or malformed response) and, if the script says so, a close.
final class RawUpstream: @unchecked Sendable {
    struct Request: Sendable, CustomStringConvertible {
        var index: Int
        var connection: Int
        var method: String
        var target: String
        var headers: [(String, String)]
        var body: [UInt8]
        func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name }?.1 }
        func headers(_ name: String) -> [String] { headers.filter { $0.0.lowercased() == name }.map(\.1) }
        var bodyText: String { String(decoding: body, as: UTF8.self) }
        var description: String { "\(method) \(target) body=\(bodyText.debugDescription)" }
    }

    struct Script: Sendable {
        var bytes: [UInt8]
        var closeAfter: Bool
    }

    private struct State {
        var requests: [Request] = []
        var errors: [String] = []
        var raw: [Int: [UInt8]] = [:]
        var connections = 0
        var aborted = 0
        var scripts: [String: Script] = [:]
    }

    private let state = Mutex(State())
    let channel: Channel
    var port: Int { channel.localAddress!.port! }

    private init(channel: Channel) { self.channel = channel }

    static func start(group: EventLoopGroup) async throws -> RawUpstream {
        let box = Box()
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let upstream = box.upstream!
                    let id = upstream.state.withLock { s -> Int in
                        s.connections += 1
                        return s.connections
                    }
                    try channel.pipeline.syncOperations.addHandler(RawUpstreamConnection(upstream: upstream, id: id))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let upstream = RawUpstream(channel: channel)
        box.upstream = upstream
        return upstream
    }

    func stop() async { try? await channel.close() }

    func setScript(_ name: String, _ bytes: String, closeAfter: Bool = false) {
        state.withLock { $0.scripts[name] = Script(bytes: Array(bytes.utf8), closeAfter: closeAfter) }
    }

    var requests: [Request] { state.withLock { $0.requests } }
    var errors: [String] { state.withLock { $0.errors } }
    var connectionCount: Int { state.withLock { $0.connections } }
    /// Requests whose connection closed before they were complete.
    var abortedCount: Int { state.withLock { $0.aborted } }
    fileprivate func recordAborted(connection: Int) { state.withLock { $0.aborted += 1 } }
    func rawBytes(connection: Int) -> [UInt8] { state.withLock { $0.raw[connection] ?? [] } }

    /// Forgets what was seen so far (between cases); scripts stay.
    func reset() { state.withLock { $0.requests = []; $0.errors = []; $0.raw = [:]; $0.aborted = 0 } }

    fileprivate func record(connection: Int, raw: ByteBuffer) {
        state.withLock { $0.raw[connection, default: []] += raw.readableBytesView }
    }

    fileprivate func record(_ request: Request) -> Int {
        state.withLock { s -> Int in
            var r = request
            r.index = s.requests.count
            s.requests.append(r)
            return r.index
        }
    }

    fileprivate func record(error: String, connection: Int) {
        state.withLock { $0.errors.append("connection \(connection): \(error)") }
    }

    fileprivate func script(_ name: String) -> Script? { state.withLock { $0.scripts[name] } }

    private final class Box: @unchecked Sendable { var upstream: RawUpstream? }
}

/// One connection of the raw upstream: accumulates bytes, parses as many complete requests as
/// they hold, answers each in order.
private final class RawUpstreamConnection: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let upstream: RawUpstream
    let id: Int
    var pending: [UInt8] = []
    var failed = false

    init(upstream: RawUpstream, id: Int) {
        self.upstream = upstream
        self.id = id
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        upstream.record(connection: id, raw: buffer)
        guard !failed else { return }
        pending += buffer.readableBytesView
        while true {
            switch StrictRequestParser.parse(pending) {
            case .needMore:
                return
            case .invalid(let why):
                failed = true
                upstream.record(error: "\(why) in \(String(decoding: pending.prefix(200), as: UTF8.self).debugDescription)", connection: id)
                context.close(promise: nil)
                return
            case .complete(let method, let target, let headers, let body, let consumed):
                pending.removeFirst(consumed)
                let index = upstream.record(RawUpstream.Request(index: 0, connection: id, method: method, target: target, headers: headers, body: body))
                if target.hasPrefix("/script/"), let script = upstream.script(String(target.dropFirst(8))) {
                    context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: script.bytes)), promise: nil)
                    if script.closeAfter {
                        context.close(promise: nil)
                        failed = true
                        return
                    }
                    continue
                }
                let text = "seen-\(index) \(method) \(target)"
                let response = method == "HEAD"
                    ? "HTTP/1.1 200 OK\r\nContent-Length: \(text.utf8.count)\r\n\r\n"
                    : "HTTP/1.1 200 OK\r\nContent-Length: \(text.utf8.count)\r\n\r\n\(text)"
                context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: response)), promise: nil)
            }
        }
    }

    /// A connection that closes inside a request is an aborted request (the proxy gave up on
    /// it), not a framing disagreement, as long as what arrived parses as the start of one.
    func channelInactive(context: ChannelHandlerContext) {
        if !failed && !pending.isEmpty {
            upstream.recordAborted(connection: id)
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }
}

/// The strict request reader behind RawUpstream (and usable on any captured bytes).
enum StrictRequestParser {
    enum Outcome {
        case needMore
        case invalid(String)
        case complete(method: String, target: String, headers: [(String, String)], body: [UInt8], consumed: Int)
    }

    static let tchar: Set<UInt8> = Set(Array("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8))

    static func parse(_ bytes: [UInt8]) -> Outcome {
        var lines: [[UInt8]] = []
        var i = 0
        // The head: CRLF-terminated lines up to an empty one. A bare CR or LF is an error.
        while true {
            guard let lf = bytes[i...].firstIndex(of: 10) else { return .needMore }
            guard lf > i, bytes[lf - 1] == 13 else { return .invalid("bare LF") }
            let line = Array(bytes[i..<(lf - 1)])
            if line.contains(13) { return .invalid("bare CR") }
            i = lf + 1
            if line.isEmpty { break }
            lines.append(line)
            if lines.count > 500 { return .invalid("too many header lines") }
        }
        guard let requestLine = lines.first else { return .invalid("empty request") }
        let parts = requestLine.split(separator: 32, omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, parts[0].allSatisfy({ tchar.contains($0) }), !parts[1].isEmpty,
              Array(parts[2]) == Array("HTTP/1.1".utf8) else {
            return .invalid("bad request line \(String(decoding: requestLine, as: UTF8.self).debugDescription)")
        }
        var headers: [(String, String)] = []
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: 58), colon > 0 else { return .invalid("header line without a name") }
            let name = line[..<colon]
            guard name.allSatisfy({ tchar.contains($0) }) else { return .invalid("bad header name \(String(decoding: name, as: UTF8.self).debugDescription)") }
            let value = line[(colon + 1)...]
            if value.contains(0) || value.contains(10) { return .invalid("NUL or LF in a header value") }
            let trimmed = String(decoding: value, as: UTF8.self).trimmingCharacters(in: CharacterSet(charactersIn: " \t"))
            headers.append((String(decoding: name, as: UTF8.self), trimmed))
        }
        let te = headers.filter { $0.0.lowercased() == "transfer-encoding" }.map(\.1)
        let cl = headers.filter { $0.0.lowercased() == "content-length" }.map(\.1)
        let hosts = headers.filter { $0.0.lowercased() == "host" }
        if hosts.count != 1 { return .invalid("\(hosts.count) Host headers") }
        if !te.isEmpty && !cl.isEmpty { return .invalid("both Content-Length and Transfer-Encoding") }
        if te.count > 1 || cl.count > 1 { return .invalid("repeated framing header") }
        let method = String(decoding: parts[0], as: UTF8.self)
        let target = String(decoding: parts[1], as: UTF8.self)
        if let te = te.first {
            guard te == "chunked" else { return .invalid("Transfer-Encoding \(te.debugDescription)") }
            var body: [UInt8] = []
            while true {
                guard let lf = bytes[i...].firstIndex(of: 10) else { return .needMore }
                guard lf > i, bytes[lf - 1] == 13 else { return .invalid("bare LF in chunked body") }
                let sizeText = bytes[i..<(lf - 1)]
                guard !sizeText.isEmpty, sizeText.count <= 8, sizeText.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) || ($0 >= 65 && $0 <= 70) }),
                      let size = Int(String(decoding: sizeText, as: UTF8.self), radix: 16) else {
                    return .invalid("bad chunk size line \(String(decoding: sizeText, as: UTF8.self).debugDescription)")
                }
                i = lf + 1
                if size == 0 {
                    // Trailer section: header lines, then an empty line.
                    while true {
                        guard let lf = bytes[i...].firstIndex(of: 10) else { return .needMore }
                        guard lf > i, bytes[lf - 1] == 13 else { return .invalid("bare LF in trailers") }
                        let empty = lf - 1 == i
                        i = lf + 1
                        if empty { return .complete(method: method, target: target, headers: headers, body: body, consumed: i) }
                    }
                }
                guard bytes.count >= i + size + 2 else { return .needMore }
                body += bytes[i..<(i + size)]
                guard bytes[i + size] == 13, bytes[i + size + 1] == 10 else { return .invalid("chunk data not followed by CRLF") }
                i += size + 2
            }
        }
        if let cl = cl.first {
            guard !cl.isEmpty, cl.count <= 12, cl.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), let n = Int(cl) else {
                return .invalid("Content-Length \(cl.debugDescription)")
            }
            guard bytes.count >= i + n else { return .needMore }
            return .complete(method: method, target: target, headers: headers, body: Array(bytes[i..<(i + n)]), consumed: i + n)
        }
        return .complete(method: method, target: target, headers: headers, body: [], consumed: i)
    }
}
