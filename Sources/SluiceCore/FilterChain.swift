import NIOCore
import ProxyWasm
import SluiceConfig

/// Where a filter chain delivers what passed all its filters (the HTTP proxy handler).
protocol FilterChainSink: AnyObject {
    /// Request headers (in `data.requestHeaders`) passed every filter.
    func chainRequestHeaders(endOfStream: Bool)
    func chainRequestData(_ bytes: [UInt8], endOfStream: Bool)
    func chainRequestTrailers(_ trailers: HeaderMap)
    func chainResponseHeaders(endOfStream: Bool)
    func chainResponseData(_ bytes: [UInt8], endOfStream: Bool)
    func chainResponseTrailers(_ trailers: HeaderMap)
    /// A filter answered locally: stop whatever the upstream side is doing.
    func chainAbortUpstream()
    /// The stream must end abruptly (close_stream, or a failure after the response began).
    func chainResetStream(reason: String)
    var responseStarted: Bool { get }
}

/// Drives one HTTP stream through a listener's Proxy-Wasm filters with Envoy's semantics:
/// request events flow through the filters in order, response events in reverse. A filter
/// can hold headers (StopIteration: by default everything after them is held too, as in
/// Envoy; with allow_on_headers_stop_iteration its body callbacks still run), hold
/// everything after the headers (StopAll), buffer the body, hold trailers, answer
/// locally, and resume later (continue_stream, possibly from an http_call response).
/// Every resume and local answer runs after the callback that asked for it, never inside.
final class FilterChain {
    enum Event {
        case headers(endOfStream: Bool)
        case data([UInt8], endOfStream: Bool)
        case trailers(HeaderMap)
    }

    enum Direction { case request, response }

    /// One filter's progress in one direction.
    struct Progress {
        var headersPassed = false
        var holdAll = false
        var queued: [Event] = []
        /// Body bytes in `queued`: held like a buffered body, under the same limit.
        var queuedBytes = 0
        var pending: [UInt8] = []
        var buffering = false
        var endReceived = false
        var heldTrailers: HeaderMap?
    }

    final class Slot {
        let plugin: PluginWorker
        let vm: PluginVM
        var contextID: UInt32?
        /// fail_open after a failure: events pass this filter untouched.
        var bypassed = false
        var actions: SlotActions!
        init(plugin: PluginWorker, vm: PluginVM) {
            self.plugin = plugin
            self.vm = vm
        }
    }

    let data: HTTPStreamData
    let slots: [Slot]
    private var request: [Progress]
    private var response: [Progress]
    weak var sink: FilterChainSink?
    let eventLoop: EventLoop
    /// The request side stopped (local answer or reset): later request events are dropped.
    private(set) var requestAborted = false
    private var localReplies = 0
    private var finished = false
    /// Where a response starts in reverse order: all filters for upstream responses, only
    /// those that saw the request for local answers.
    private var responseEntry: Int
    var routeCacheCleared = false

    init(plugins: [PluginWorker], data: HTTPStreamData, sink: FilterChainSink, eventLoop: EventLoop) {
        // Filters whose VM is failed were resolved by the caller (fail_open drops them,
        // fail_closed answers 503 before a chain is built).
        self.slots = plugins.compactMap { p in p.activeVM.map { Slot(plugin: p, vm: $0) } }
        self.data = data
        self.sink = sink
        self.eventLoop = eventLoop
        self.request = Array(repeating: Progress(), count: slots.count)
        self.response = Array(repeating: Progress(), count: slots.count)
        self.responseEntry = slots.count - 1
        for (i, slot) in slots.enumerated() {
            slot.actions = SlotActions(chain: self, index: i)
            slot.plugin.streamStarted()
        }
    }

    // MARK: entry points (from the proxy handler)

    func requestHeaders(endOfStream: Bool) { deliver(.request, .headers(endOfStream: endOfStream), at: 0) }
    func requestData(_ bytes: [UInt8], endOfStream: Bool) { deliver(.request, .data(bytes, endOfStream: endOfStream), at: 0) }
    func requestTrailers(_ t: HeaderMap) { deliver(.request, .trailers(t), at: 0) }
    func responseHeaders(endOfStream: Bool) { deliver(.response, .headers(endOfStream: endOfStream), at: responseEntry) }
    func responseData(_ bytes: [UInt8], endOfStream: Bool) { deliver(.response, .data(bytes, endOfStream: endOfStream), at: responseEntry) }
    func responseTrailers(_ t: HeaderMap) { deliver(.response, .trailers(t), at: responseEntry) }

    /// on_log, on_done, on_delete for every filter that saw the stream. Once.
    func finish() {
        guard !finished else { return }
        finished = true
        for slot in slots {
            if let id = slot.contextID, !slot.vm.failed { slot.vm.finishStream(id) }
            slot.plugin.streamEnded()
        }
    }

    // MARK: the state machine

    private func progress(_ dir: Direction, _ i: Int) -> Progress { dir == .request ? request[i] : response[i] }
    private func update(_ dir: Direction, _ i: Int, _ body: (inout Progress) -> Void) {
        if dir == .request { body(&request[i]) } else { body(&response[i]) }
    }
    private func next(_ dir: Direction, _ i: Int) -> Int { dir == .request ? i + 1 : i - 1 }

    private func deliver(_ dir: Direction, _ event: Event, at i: Int) {
        if dir == .request && requestAborted { return }
        if finished { return }
        guard i >= 0 && i < slots.count else {
            toSink(dir, event)
            return
        }
        let slot = slots[i]
        if slot.bypassed {
            deliver(dir, event, at: next(dir, i))
            return
        }
        if progress(dir, i).holdAll {
            var size = 0
            if case .data(let bytes, _) = event { size = bytes.count }
            update(dir, i) {
                $0.queued.append(event)
                $0.queuedBytes += size
            }
            if progress(dir, i).queuedBytes > slot.plugin.runtime.config.bufferLimitBytes { bufferLimitExceeded(dir, i) }
            return
        }
        guard let id = context(for: slot) else { return }
        let vm = slot.vm
        switch event {
        case .headers(let eos):
            update(dir, i) { $0.endReceived = eos }
            let count = (dir == .request ? data.requestHeaders : data.responseHeaders)?.entries.count ?? 0
            let action = dir == .request ? vm.onRequestHeaders(id, count: count, endOfStream: eos) : vm.onResponseHeaders(id, count: count, endOfStream: eos)
            if failed(slot, i, dir, event) || stopped(dir) { return }
            switch action {
            case .continue:
                update(dir, i) { $0.headersPassed = true }
                deliver(dir, event, at: next(dir, i))
            case .stopIteration:
                break
            case .stopAll:
                update(dir, i) { $0.holdAll = true }
            }
        case .data(let bytes, let eos):
            update(dir, i) { $0.endReceived = eos }
            let p = progress(dir, i)
            let body = p.buffering ? p.pending + bytes : bytes
            if dir == .request { data.requestBody = body } else { data.responseBody = body }
            let action = dir == .request ? vm.onRequestBody(id, size: body.count, endOfStream: eos) : vm.onResponseBody(id, size: body.count, endOfStream: eos)
            let out = dir == .request ? data.requestBody : data.responseBody
            if dir == .request { data.requestBody = [] } else { data.responseBody = [] }
            if failed(slot, i, dir, event) || stopped(dir) { return }
            switch action {
            case .continue:
                update(dir, i) { $0.pending = []; $0.buffering = false }
                passHeaders(dir, i, endOfStream: false)
                deliver(dir, .data(out, endOfStream: eos), at: next(dir, i))
            case .stopAndBuffer:
                update(dir, i) { $0.pending = out; $0.buffering = true }
                if out.count > slot.plugin.runtime.config.bufferLimitBytes { bufferLimitExceeded(dir, i) }
            }
        case .trailers(let t):
            update(dir, i) { $0.endReceived = true }
            if dir == .request { data.requestTrailers = t } else { data.responseTrailers = t }
            let count = t.entries.count
            let action = dir == .request ? vm.onRequestTrailers(id, count: count) : vm.onResponseTrailers(id, count: count)
            let edited = (dir == .request ? data.requestTrailers : data.responseTrailers) ?? t
            if failed(slot, i, dir, event) || stopped(dir) { return }
            if action == .continue {
                flush(dir, i, trailersFollow: true)
                deliver(dir, .trailers(edited), at: next(dir, i))
            } else {
                update(dir, i) { $0.heldTrailers = edited }
            }
        }
    }

    /// A filter holds more body than its `buffer_limit_kb`: 413 for a request, 500 for a
    /// response (Envoy's answers), and the held data is dropped.
    private func bufferLimitExceeded(_ dir: Direction, _ i: Int) {
        update(dir, i) { $0.queued = []; $0.queuedBytes = 0; $0.pending = [] }
        if dir == .request {
            localReply(status: 413, body: "request body too large for the filters' buffer\n", details: "request_payload_too_large", startingAt: i)
        } else {
            localReply(status: 500, body: "response body too large for the filters' buffer\n", details: "response_payload_too_large", startingAt: i - 1)
        }
    }

    private func stopped(_ dir: Direction) -> Bool { finished || (dir == .request && requestAborted) }

    /// Forwards held headers past filter `i` if they have not gone yet.
    private func passHeaders(_ dir: Direction, _ i: Int, endOfStream: Bool) {
        guard !progress(dir, i).headersPassed else { return }
        update(dir, i) { $0.headersPassed = true }
        deliver(dir, .headers(endOfStream: endOfStream), at: next(dir, i))
    }

    /// Forwards what filter `i` holds: headers, then buffered body.
    private func flush(_ dir: Direction, _ i: Int, trailersFollow: Bool) {
        let p = progress(dir, i)
        let end = p.endReceived && !trailersFollow && p.heldTrailers == nil
        passHeaders(dir, i, endOfStream: end && !p.buffering && p.pending.isEmpty)
        if p.buffering || !p.pending.isEmpty {
            update(dir, i) { $0.pending = []; $0.buffering = false }
            deliver(dir, .data(p.pending, endOfStream: end), at: next(dir, i))
        }
    }

    /// continue_stream from filter `i`.
    func resume(_ dir: Direction, from i: Int) {
        guard i < slots.count, !stopped(dir) else { return }
        let p = progress(dir, i)
        if p.holdAll {
            update(dir, i) { $0.holdAll = false; $0.queued = []; $0.queuedBytes = 0 }
            passHeaders(dir, i, endOfStream: p.endReceived && p.queued.isEmpty)
            // The filter sees the body it held back, as after Envoy's continueDecoding.
            for event in p.queued { deliver(dir, event, at: i) }
            return
        }
        flush(dir, i, trailersFollow: p.heldTrailers != nil)
        if let t = progress(dir, i).heldTrailers {
            update(dir, i) { $0.heldTrailers = nil }
            deliver(dir, .trailers(t), at: next(dir, i))
        }
    }

    private func toSink(_ dir: Direction, _ event: Event) {
        guard let sink else { return }
        switch (dir, event) {
        case (.request, .headers(let eos)): sink.chainRequestHeaders(endOfStream: eos)
        case (.request, .data(let b, let eos)): sink.chainRequestData(b, endOfStream: eos)
        case (.request, .trailers(let t)): sink.chainRequestTrailers(t)
        case (.response, .headers(let eos)): sink.chainResponseHeaders(endOfStream: eos)
        case (.response, .data(let b, let eos)): sink.chainResponseData(b, endOfStream: eos)
        case (.response, .trailers(let t)): sink.chainResponseTrailers(t)
        }
    }

    private func context(for slot: Slot) -> UInt32? {
        if let id = slot.contextID { return id }
        let id = slot.vm.createStream(data: data, actions: slot.actions)
        slot.contextID = id
        return slot.vm.failed ? nil : id
    }

    // MARK: failures

    /// After a callback: if the VM failed, apply the plugin's policy. fail_open lets the
    /// event continue past the filter; fail_closed and reload answer 503 (or reset if the
    /// response has begun). Returns true when the caller must stop.
    private func failed(_ slot: Slot, _ i: Int, _ dir: Direction, _ event: Event) -> Bool {
        guard slot.vm.failed else { return false }
        switch slot.plugin.failurePolicy {
        case .failOpen:
            slot.plugin.runtime.stats.failedOpenStreams.increment()
            slot.bypassed = true
            // What the filter held goes on, then the event that failed.
            flush(dir, i, trailersFollow: false)
            deliver(dir, event, at: next(dir, i))
        case .failClosed, .reload:
            slot.plugin.runtime.stats.failedClosedStreams.increment()
            // An empty 503, as Envoy's wasm_fail_stream (the reason is in the log and /stats).
            localReply(status: 503, body: "", details: "wasm_fail_stream", startingAt: i - 1)
        }
        return true
    }

    // MARK: local replies

    /// Answers the client from the filter chain. The response runs through the response
    /// callbacks of the filters at `startingAt` and before it (those that saw the request).
    func localReply(status: Int, body: String, details: String, startingAt: Int, headers: [(String, String)] = []) {
        localReply(status: status, body: Array(body.utf8), details: details, startingAt: startingAt, headers: headers)
    }

    func localReply(status: Int, body: [UInt8], details: String, startingAt: Int, headers: [(String, String)]) {
        guard !finished, let sink else { return }
        requestAborted = true
        localReplies += 1
        sink.chainAbortUpstream()
        if sink.responseStarted || localReplies > 2 {
            sink.chainResetStream(reason: details)
            return
        }
        var map = HeaderMap([(":status", String(status))])
        for (k, v) in headers { map.add(k, v) }
        if map.first("content-type") == nil && !body.isEmpty { map.add("content-type", "text/plain") }
        map.replace("content-length", String(body.count))
        data.responseHeaders = map
        data.responseTrailers = nil
        data.info.responseCode = status
        data.info.responseCodeDetails = details
        response = Array(repeating: Progress(), count: slots.count)
        responseEntry = min(startingAt, slots.count - 1)
        deliver(.response, .headers(endOfStream: body.isEmpty), at: responseEntry)
        if !body.isEmpty { deliver(.response, .data(body, endOfStream: true), at: responseEntry) }
    }
}

/// The actions of one filter on its stream. Deferred to the next event-loop turn, so they
/// never run inside the guest call that requested them.
final class SlotActions: HTTPStreamActions {
    weak var chain: FilterChain?
    let index: Int

    init(chain: FilterChain, index: Int) {
        self.chain = chain
        self.index = index
    }

    private func later(_ work: @escaping (FilterChain) -> Void) {
        guard let chain else { return }
        chain.eventLoop.assumeIsolatedUnsafeUnchecked().execute { [weak chain] in
            if let chain { work(chain) }
        }
    }

    func continueStream(_ type: StreamType) -> WasmResult {
        let index = self.index
        later { $0.resume(type == .request ? .request : .response, from: index) }
        return .ok
    }

    func closeStream(_ type: StreamType) -> WasmResult {
        later { chain in
            chain.sink?.chainAbortUpstream()
            chain.sink?.chainResetStream(reason: "wasm_close_stream")
        }
        return .ok
    }

    func sendLocalResponse(status: Int, details: String, body: [UInt8], headers: [(String, String)], grpcStatus: Int32?) -> WasmResult {
        guard let chain else { return .notFound }
        if chain.sink?.responseStarted == true { return .badArgument }
        let index = self.index
        var extra = headers
        if let grpcStatus { extra.append(("grpc-status", String(grpcStatus))) }
        later { $0.localReply(status: status, body: body, details: details.isEmpty ? "wasm_local_reply" : details, startingAt: index, headers: extra) }
        return .ok
    }

    func clearRouteCache() {
        chain?.routeCacheCleared = true
    }
}
