import Foundation
import XCTest

/// 100 MB each way through the real binary, with the proxy's memory sampled throughout:
/// streaming with backpressure means the proxy holds a few buffers, never the body.
final class StreamingTests: XCTestCase {
    func testHundredMegabytesUpAndDownWithBoundedMemory() async throws {
        let upstream = try await TestUpstream.start(name: "big", group: testGroup)
        let port = SluiceProcess.freePort(), admin = SluiceProcess.freePort()
        let sluice = try SluiceProcess(config: """
            admin: { address: "127.0.0.1:\(admin)" }
            access_log: { format: off }
            listeners:
              - { name: main, address: "127.0.0.1:\(port)", routes: [{ match: { prefix: / }, cluster: big, timeout: 60s }] }
            clusters:
              - { name: big, endpoints: ["127.0.0.1:\(upstream.port)"] }
            """, arguments: ["--workers", "2"])
        try sluice.waitReady(adminPort: admin)
        let size = 100 * 1024 * 1024
        // Warm up: pools, allocator arenas, lazily initialised runtime state.
        _ = try await blocking {
            for _ in 0..<20 { _ = try httpGet(port, "/bytes/1000000") }
            return 0
        }
        let baseline = sluice.residentBytes
        let sampler = PeakSampler { sluice.residentBytes }
        sampler.start()

        let uploaded = try await blocking { () -> String in
            let client = try RawHTTPClient(port: port, timeout: 60)
            try client.send("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: \(size)\r\n\r\n")
            let piece = [UInt8](repeating: 0x61, count: 256 * 1024)
            for _ in 0..<(size / piece.count) { try client.send(piece) }
            return try client.readResponse().0.text
        }
        XCTAssertEqual(uploaded, "received \(size)\n")

        let downloaded = try await blocking { () -> Int in
            let client = try RawHTTPClient(port: port, timeout: 60)
            try client.send("GET /bytes/\(size) HTTP/1.1\r\nHost: a\r\n\r\n")
            return try client.readResponse(discardBody: true).bodyBytes
        }
        XCTAssertEqual(downloaded, size)

        // Chunked upload of the same size: no Content-Length for the proxy to lean on.
        let chunked = try await blocking { () -> String in
            let client = try RawHTTPClient(port: port, timeout: 60)
            try client.send("POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
            let piece = [UInt8](repeating: 0x62, count: 256 * 1024)
            let frame = Array("40000\r\n".utf8) + piece + Array("\r\n".utf8)
            for _ in 0..<(size / piece.count) { try client.send(frame) }
            try client.send("0\r\n\r\n")
            return try client.readResponse().0.text
        }
        XCTAssertEqual(chunked, "received \(size)\n")

        let peak = sampler.stop()
        let growth = peak - baseline
        print("proxy RSS: baseline \(baseline >> 20) MiB, peak \(peak >> 20) MiB, growth \(growth >> 20) MiB")
        XCTAssertLessThan(growth, 32 << 20, "streaming 3 × 100 MB grew the proxy by \(growth >> 20) MiB")
        sluice.terminate()
        XCTAssertEqual(sluice.waitExit(), 0)
        await upstream.stop()
    }
}

/// Samples a value every 10 ms on its own thread and keeps the maximum.
final class PeakSampler: @unchecked Sendable {
    private let read: () -> Int
    private let lock = NSLock()
    private var peak = 0
    private var running = true
    private let done = DispatchSemaphore(value: 0)

    init(_ read: @escaping () -> Int) { self.read = read }

    func start() {
        Thread.detachNewThread { [self] in
            while lock.withLock({ running }) {
                let v = read()
                lock.withLock { peak = max(peak, v) }
                usleep(10_000)
            }
            done.signal()
        }
    }

    func stop() -> Int {
        lock.withLock { running = false }
        done.wait()
        return lock.withLock { max(peak, read()) }
    }
}
