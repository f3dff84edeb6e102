import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A deliberately small blocking HTTP/1.1 client over a raw socket. Tests need to send bytes
/// no well-behaved client would (malformed lines, smuggling attempts, pipelined batches) and
/// to see exactly what comes back, so nothing here is clever.
final class RawHTTPClient: @unchecked Sendable {  // used from one thread at a time
    let fd: Int32
    private var buffer: [UInt8] = []

    struct Response: Sendable {
        var status: Int
        var headers: [(String, String)]
        var body: [UInt8]
        func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
        func headers(_ name: String) -> [String] { headers.filter { $0.0.lowercased() == name.lowercased() }.map(\.1) }
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    struct Failure: Error, CustomStringConvertible { var description: String }

    init(port: Int, timeout: Double = 10) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket() failed") }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int32((timeout - Double(Int(timeout))) * 1e6).asSuseconds)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            close(fd)
            throw Failure(description: "connect to 127.0.0.1:\(port) failed: errno \(errno)")
        }
    }

    deinit { close(fd) }

    func send(_ text: String) throws { try send(Array(text.utf8)) }

    func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw Failure(description: "send failed: errno \(errno)") }
            offset += n
        }
    }

    /// True when the peer has sent something (or closed) that has not been read yet.
    func hasDataToRead() -> Bool {
        if !buffer.isEmpty { return true }
        var byte: UInt8 = 0
        return recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT)) >= 0
    }

    /// Half-closes the write side (sends FIN).
    func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

    /// Reads more bytes into the buffer; false on EOF.
    private func fill() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n == 0 { return false }
        if n < 0 { throw Failure(description: errno == EAGAIN ? "timed out waiting for data" : "recv failed: errno \(errno)") }
        buffer.append(contentsOf: chunk[0..<n])
        return true
    }

    /// Reads everything until the peer closes.
    func readToEOF() throws -> [UInt8] {
        while try fill() {}
        defer { buffer.removeAll() }
        return buffer
    }

    /// True once the server has closed the connection (EOF with nothing pending).
    /// A reset counts as closed too: a server that closes with unread request bytes resets.
    func isClosedByPeer() -> Bool {
        if !buffer.isEmpty { return false }
        do { return try fill() == false } catch { return errno == ECONNRESET }
    }

    private func readLine() throws -> String {
        while true {
            if let i = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = buffer[..<i]
                buffer.removeSubrange(...i)
                return String(decoding: line.last == UInt8(ascii: "\r") ? line.dropLast() : line, as: UTF8.self)
            }
            guard try fill() else { throw Failure(description: "connection closed while reading a line") }
        }
    }

    /// The next `n` bytes as text (raw TCP exchanges).
    func receive(_ n: Int) throws -> String { String(decoding: try readExactly(n, discard: false), as: UTF8.self) }

    private func readExactly(_ n: Int, discard: Bool) throws -> [UInt8] {
        var out: [UInt8] = []
        var remaining = n
        while remaining > 0 {
            if buffer.isEmpty { guard try fill() else { throw Failure(description: "connection closed with \(remaining) body bytes missing") } }
            let take = min(remaining, buffer.count)
            if !discard { out.append(contentsOf: buffer[0..<take]) }
            buffer.removeFirst(take)
            remaining -= take
        }
        return out
    }

    /// Reads one response. `discardBody` counts body bytes without keeping them (for 100 MB).
    func readResponse(head: Bool = false, discardBody: Bool = false) throws -> (Response, bodyBytes: Int) {
        var status = 0
        var headers: [(String, String)] = []
        repeat {
            let statusLine = try readLine()
            let parts = statusLine.split(separator: " ", maxSplits: 2)
            guard parts.count >= 2, let code = Int(parts[1]) else { throw Failure(description: "bad status line '\(statusLine)'") }
            status = code
            headers = []
            while true {
                let line = try readLine()
                if line.isEmpty { break }
                guard let colon = line.firstIndex(of: ":") else { throw Failure(description: "bad header '\(line)'") }
                headers.append((String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
            }
        } while (100..<200).contains(status) && status != 101
        var response = Response(status: status, headers: headers, body: [])
        if head || status == 204 || status == 304 || status == 101 { return (response, 0) }
        var count = 0
        if let te = response.header("transfer-encoding"), te.lowercased().contains("chunked") {
            while true {
                let sizeLine = try readLine()
                guard let size = Int(sizeLine.split(separator: ";")[0], radix: 16) else { throw Failure(description: "bad chunk size '\(sizeLine)'") }
                if size == 0 {
                    while try !readLine().isEmpty {}
                    break
                }
                response.body += try readExactly(size, discard: discardBody)
                count += size
                _ = try readLine()
            }
        } else if let cl = response.header("content-length"), let n = Int(cl) {
            response.body = try readExactly(n, discard: discardBody)
            count = n
        } else {
            while try fill() { if discardBody { count += buffer.count; buffer.removeAll() } }
            if !discardBody { response.body = buffer; count = buffer.count; buffer.removeAll() }
        }
        return (response, count)
    }

    /// Sends a simple request and reads its response.
    func request(_ method: String = "GET", _ path: String, host: String = "test.local", headers: [(String, String)] = [], body: String? = nil) throws -> Response {
        var text = "\(method) \(path) HTTP/1.1\r\nHost: \(host)\r\n"
        for (k, v) in headers { text += "\(k): \(v)\r\n" }
        if let body { text += "Content-Length: \(body.utf8.count)\r\n" }
        text += "\r\n"
        if let body { text += body }
        try send(text)
        return try readResponse(head: method == "HEAD").0
    }
}

extension Int32 {
    fileprivate var asSuseconds: Int { Int(self) }
}

/// One-shot helper: a new connection per call.
func httpGet(_ port: Int, _ path: String, host: String = "test.local", headers: [(String, String)] = []) throws -> RawHTTPClient.Response {
    try RawHTTPClient(port: port).request("GET", path, host: host, headers: headers)
}
