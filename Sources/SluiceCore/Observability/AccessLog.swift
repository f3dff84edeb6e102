import Foundation
import NIOCore
import SluiceConfig

/// One finished request, as the access log records it.
struct AccessLogEntry {
    var start: Date
    var durationMs: Double
    var clientAddress: String
    var method: String
    var path: String
    var version: String
    var authority: String
    var status: Int
    var bytesReceived: Int
    var bytesSent: Int
    var listener: String
    var route: String
    var upstream: String
    var requestID: String
    var userAgent: String
    /// Why Sluice answered itself or cut the stream short ("no_route", "upstream_timeout", ...); "-" otherwise.
    var flags: String
    /// The same as Envoy's %RESPONSE_FLAGS% ("NR", "UT", "UF,URX", ...); "-" otherwise.
    var responseFlags: String = "-"
}

extension AccessLogEntry {
    /// A connection Sluice answered or cut before any request head could be read (a parse
    /// error, a slow head): no method, path or route to log, only the reason.
    static func connectionRefusal(_ refusal: DownstreamRefusal, listener: String, client: String) -> AccessLogEntry {
        AccessLogEntry(start: Date(), durationMs: 0, clientAddress: client, method: "-", path: "-", version: "-", authority: "-",
                       status: Int(refusal.status.code), bytesReceived: 0, bytesSent: refusal.message.utf8.count, listener: listener,
                       route: "-", upstream: "-", requestID: "-", userAgent: "-", flags: refusal.label,
                       responseFlags: StreamFlag.refused(refusal).envoyFlags.shortString)
    }
}

/// Shared sink; workers buffer lines and hand them over in batches so that logging costs
/// one write per batch, not one per request.
final class AccessLogSink: @unchecked Sendable {
    // @unchecked: `handle` is written only under `lock`.
    private let lock = NSLock()
    private let handle: FileHandle?
    let format: AccessLogFormat

    init(config: AccessLogConfig) {
        self.format = config.format
        if config.format == .off {
            handle = nil
        } else if config.path == "-" {
            handle = FileHandle.standardOutput
        } else {
            if !FileManager.default.fileExists(atPath: config.path) {
                FileManager.default.createFile(atPath: config.path, contents: nil)
            }
            let h = FileHandle(forWritingAtPath: config.path)
            _ = try? h?.seekToEnd()
            handle = h
        }
    }

    func write(_ text: String) {
        guard let handle else { return }
        lock.lock()
        defer { lock.unlock() }
        try? handle.write(contentsOf: Data(text.utf8))
    }
}

/// Per-worker buffer flushed every 100 ms or at 32 KiB.
final class AccessLogBuffer {
    private let sink: AccessLogSink
    private let eventLoop: EventLoop
    private var pending = ""
    private var flushScheduled = false

    init(sink: AccessLogSink, eventLoop: EventLoop) {
        self.sink = sink
        self.eventLoop = eventLoop
    }

    var enabled: Bool { sink.format != .off }

    func record(_ entry: AccessLogEntry) {
        guard enabled else { return }
        pending += sink.format == .json ? Self.json(entry) : Self.text(entry)
        pending += "\n"
        if pending.utf8.count >= 32 * 1024 {
            flush()
        } else if !flushScheduled {
            flushScheduled = true
            eventLoop.scheduleTask(in: .milliseconds(100)) { self.flush() }
        }
    }

    func flush() {
        flushScheduled = false
        guard !pending.isEmpty else { return }
        let text = pending
        pending = ""
        sink.write(text)
    }

    nonisolated(unsafe) private static let timestampFormatter: ISO8601DateFormatter = {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f
    }()

    /// Envoy-like default: [time] "METHOD path PROTO" status flags bytes_in bytes_out duration "xff-ish client" "ua" "request-id" "authority" "upstream"
    static func text(_ e: AccessLogEntry) -> String {
        "[\(timestampFormatter.string(from: e.start))] \"\(e.method) \(e.path) \(e.version)\" \(e.status) \(e.flags) \(e.bytesReceived) \(e.bytesSent) \(Int(e.durationMs.rounded())) \"\(e.clientAddress)\" \"\(e.userAgent)\" \"\(e.requestID)\" \"\(e.authority)\" \"\(e.upstream)\" \(e.listener) \(e.route)"
    }

    static func json(_ e: AccessLogEntry) -> String {
        func q(_ s: String) -> String { JSONRendering.quote(s) }
        return "{\"time\":\(q(timestampFormatter.string(from: e.start))),\"method\":\(q(e.method)),\"path\":\(q(e.path)),\"protocol\":\(q(e.version)),\"status\":\(e.status),\"flags\":\(q(e.flags)),\"response_flags\":\(q(e.responseFlags)),\"bytes_received\":\(e.bytesReceived),\"bytes_sent\":\(e.bytesSent),\"duration_ms\":\(String(format: "%.3f", e.durationMs)),\"client\":\(q(e.clientAddress)),\"user_agent\":\(q(e.userAgent)),\"request_id\":\(q(e.requestID)),\"authority\":\(q(e.authority)),\"upstream\":\(q(e.upstream)),\"listener\":\(q(e.listener)),\"route\":\(q(e.route))}"
    }
}
