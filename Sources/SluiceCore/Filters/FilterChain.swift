import NIOCore
import NIOHTTP1
import ProxyWasm
import SluiceConfig

/// The HTTP filters of one stream, with the router as the last element: request events run
/// through the Proxy-Wasm filters in order and then reach the router; response events (from
/// the router, or a local reply) run through them in reverse and then reach the stream,
/// which writes them to the client. A listener without filters has an empty chain: events go
/// straight to the router and back, on the same path.
///
/// Iteration follows Envoy's filter manager. Per filter and direction an `Iteration` says
/// whether events flow past it, wait for it (StopIteration on headers, with
/// allow_on_headers_stop_iteration), or wait unseen behind it (StopAll; by default
/// StopIteration on headers means this too, as in Envoy). A body callback can keep data
/// (StopIterationAndBuffer / AndWatermark) or take it (NoBuffer); trailers can be held.
/// Held data is bounded by the plugin's `buffer_limit_kb`: in `buffer` mode going over it
/// answers 413 (request) or 500 (response); in `watermark` mode reading that direction stops
/// until the filter lets the data go. Every resume and local reply a filter asks for runs
/// after the callback that asked, never inside it.
final class FilterChain {
    enum Event {
        case headers(endOfStream: Bool)
        case data(ByteBuffer, endOfStream: Bool)
        case trailers(HTTPHeaders)

        var byteCount: Int {
            if case .data(let buffer, _) = self { return buffer.readableBytes }
            return 0
        }
    }

    enum Direction { case request, response }

    /// Whether events pass a filter in one direction.
    enum Iteration: Equatable {
        /// Events reach the filter and go on as its callbacks allow.
        case flowing
        /// StopIteration on headers with allow_on_headers_stop_iteration: the headers wait
        /// here; body callbacks still run (and may keep the body).
        case headersHeld
        /// StopAll on headers: headers and every later event wait here, unseen by the filter,
        /// until it resumes; then it sees what waited.
        case allHeld(HoldMode)
    }

    /// One filter's progress in one direction.
    struct Progress {
        var iteration = Iteration.flowing
        /// The headers reached this filter, and went past it.
        var headersReceived = false
        var headersPassed = false
        /// The last event this filter received ended the direction.
        var endReceived = false
        /// Events waiting behind an `allHeld` filter.
        var queued: [Event] = []
        /// Body a body callback kept, and how: `buffer` shows it whole to the next callback,
        /// `watermark` shows each chunk alone. Either way all of it goes on at Continue.
        var keptBody: ByteBuffer?
        var keptMode: HoldMode?
        var heldTrailers: HTTPHeaders?

        /// Bytes this filter holds (queued or kept), measured against its buffer limit.
        var heldBytes: Int { (keptBody?.readableBytes ?? 0) + queued.reduce(0) { $0 + $1.byteCount } }
        var holdMode: HoldMode? {
            if case .allHeld(let mode) = iteration { return mode }
            return keptMode
        }
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

    /// What the filters read and change; nil when the chain has no filters (nothing to share).
    let data: HTTPStreamData?
    let slots: [Slot]
    let router: RouterFilter
    unowned let stream: HTTPStream
    private var request: [Progress]
    private var response: [Progress]
    /// The request side stopped (local answer or reset): later request events are dropped.
    private(set) var requestAborted = false
    private var localReplies = 0
    private(set) var finished = false
    /// Where a response starts in reverse order: all filters for upstream responses, only
    /// those that saw the request for local answers.
    private var responseEntry: Int
    /// A filter holds more than its limit in watermark mode: reading that direction stops.
    private(set) var requestAboveWatermark = false
    private(set) var responseAboveWatermark = false

    init(plugins: [PluginWorker], data: HTTPStreamData?, stream: HTTPStream, router: RouterFilter) {
        // Filters whose VM is failed were resolved by the caller (fail_open drops them,
        // fail_closed answers 503 before the stream reaches the filters).
        self.slots = plugins.compactMap { p in p.activeVM.map { Slot(plugin: p, vm: $0) } }
        self.data = data
        self.stream = stream
        self.router = router
        self.request = Array(repeating: Progress(), count: slots.count)
        self.response = Array(repeating: Progress(), count: slots.count)
        self.responseEntry = slots.count - 1
        for (i, slot) in slots.enumerated() {
            slot.actions = SlotActions(chain: self, index: i)
            slot.plugin.streamStarted()
        }
    }

    var isEmpty: Bool { slots.isEmpty }
    /// The index that starts a response from the router's position (after every filter).
    var routerPosition: Int { slots.count - 1 }

    // MARK: entry points

    func requestHeaders(endOfStream: Bool) { deliver(.request, .headers(endOfStream: endOfStream), at: 0) }
    func requestData(_ buffer: ByteBuffer, endOfStream: Bool) { deliver(.request, .data(buffer, endOfStream: endOfStream), at: 0) }
    func requestTrailers(_ trailers: HTTPHeaders) { deliver(.request, .trailers(trailers), at: 0) }
    func responseHeaders(endOfStream: Bool) { deliver(.response, .headers(endOfStream: endOfStream), at: responseEntry) }
    func responseData(_ buffer: ByteBuffer, endOfStream: Bool) { deliver(.response, .data(buffer, endOfStream: endOfStream), at: responseEntry) }
    func responseTrailers(_ trailers: HTTPHeaders) { deliver(.response, .trailers(trailers), at: responseEntry) }

    /// on_log, on_done, on_delete for every filter that saw the stream. Once.
    func finish() {
        guard !finished else { return }
        finished = true
        for slot in slots {
            if let id = slot.contextID, !slot.vm.failed { slot.vm.finishStream(id) }
            slot.plugin.streamEnded()
        }
    }

    // MARK: iteration

    /// Filter `i`'s progress in `dir`, read in place (a copy would retain its queue and
    /// buffers; this is read several times per event).
    private subscript(progress dir: Direction, _ i: Int) -> Progress {
        _read {
            if dir == .request { yield request[i] } else { yield response[i] }
        }
    }
    private func update(_ dir: Direction, _ i: Int, _ body: (inout Progress) -> Void) {
        if dir == .request { body(&request[i]) } else { body(&response[i]) }
    }
    private func next(_ dir: Direction, _ i: Int) -> Int { dir == .request ? i + 1 : i - 1 }
    private func stopped(_ dir: Direction) -> Bool { finished || (dir == .request && requestAborted) }

    private func deliver(_ dir: Direction, _ event: Event, at i: Int) {
        if stopped(dir) { return }
        guard i >= 0 && i < slots.count else {
            toTerminal(dir, event)
            return
        }
        let slot = slots[i]
        if slot.bypassed {
            deliver(dir, event, at: next(dir, i))
            return
        }
        if case .allHeld = self[progress: dir, i].iteration {
            update(dir, i) { $0.queued.append(event) }
            checkHeld(dir, i)
            return
        }
        guard let data, let id = context(for: slot) else {
            // The VM failed creating this stream's context: the plugin's failure policy.
            _ = failed(slot, i, dir, event)
            return
        }
        let vm = slot.vm
        switch event {
        case .headers(let eos):
            update(dir, i) { $0.endReceived = eos; $0.headersReceived = true }
            let count = (dir == .request ? data.requestHeaders : data.responseHeaders)?.entries.count ?? 0
            let action = dir == .request ? vm.onRequestHeaders(id, count: count, endOfStream: eos) : vm.onResponseHeaders(id, count: count, endOfStream: eos)
            if failed(slot, i, dir, event) || stopped(dir) { return }
            switch action {
            case .continue:
                update(dir, i) { $0.headersPassed = true }
                deliver(dir, event, at: next(dir, i))
            case .stopIteration:
                update(dir, i) { $0.iteration = .headersHeld }
            case .stopAll(let mode):
                update(dir, i) { $0.iteration = .allHeld(mode) }
            }
        case .data(let chunk, let eos):
            let before = self[progress: dir, i]
            update(dir, i) { $0.endReceived = eos }
            // Under `buffer` the callback sees everything kept so far plus this chunk.
            var visible = chunk
            if before.keptMode == .buffer, var kept = before.keptBody {
                var chunk = chunk
                kept.writeBuffer(&chunk)
                visible = kept
            }
            // The filter reads the chunk in place; only an edit makes a new buffer.
            let body = StreamBody(visible)
            if dir == .request { data.requestBody = body } else { data.responseBody = body }
            let action = dir == .request ? vm.onRequestBody(id, size: visible.readableBytes, endOfStream: eos) : vm.onResponseBody(id, size: visible.readableBytes, endOfStream: eos)
            let edited = (dir == .request ? data.requestBody : data.responseBody).edited
            if dir == .request { data.requestBody = StreamBody() } else { data.responseBody = StreamBody() }
            if failed(slot, i, dir, event) || stopped(dir) { return }
            let out = edited.map { stream.allocator.buffer(bytes: $0) } ?? visible
            // What the filter did not see again (kept under `watermark`) goes before its output.
            var all = out
            if before.keptMode != .buffer, var kept = before.keptBody {
                var rest = out
                kept.writeBuffer(&rest)
                all = kept
            }
            switch action {
            case .continue:
                update(dir, i) { $0.keptBody = nil; $0.keptMode = nil }
                passHeaders(dir, i, endOfStream: false)
                deliver(dir, .data(all, endOfStream: eos), at: next(dir, i))
                checkHeld(dir, i)
            case .stop(let mode):
                update(dir, i) { $0.keptBody = all; $0.keptMode = mode }
                checkHeld(dir, i)
            case .stopNoBuffer:
                // The filter took this chunk; what it kept before stays kept. If it was the
                // last one, an empty chunk carries the end when the filter continues (as Envoy).
                let empty = stream.allocator.buffer(capacity: 0)
                update(dir, i) {
                    if before.keptMode == .buffer { $0.keptBody = nil; $0.keptMode = nil }
                    if eos && $0.keptBody == nil { $0.keptBody = empty; $0.keptMode = $0.keptMode ?? .watermark }
                }
            }
        case .trailers(let trailers):
            update(dir, i) { $0.endReceived = true }
            let map = HeaderMap(trailers.map { ($0.name.lowercased(), $0.value) })
            if dir == .request { data.requestTrailers = map } else { data.responseTrailers = map }
            let action = dir == .request ? vm.onRequestTrailers(id, count: map.entries.count) : vm.onResponseTrailers(id, count: map.entries.count)
            let edited = HTTPHeaders(((dir == .request ? data.requestTrailers : data.responseTrailers) ?? map).pairs)
            if failed(slot, i, dir, event) || stopped(dir) { return }
            if action == .continue {
                flush(dir, i, trailersFollow: true)
                deliver(dir, .trailers(edited), at: next(dir, i))
            } else {
                update(dir, i) { $0.heldTrailers = edited }
            }
        }
    }

    /// After a filter's holdings changed: over its limit, `buffer` mode answers 413/500 and
    /// `watermark` mode stops reading the direction; back under it, reading resumes.
    private func checkHeld(_ dir: Direction, _ i: Int) {
        guard i >= 0 && i < slots.count else { return }
        let limit = slots[i].plugin.runtime.config.bufferLimitBytes
        if self[progress: dir, i].holdMode == .buffer && self[progress: dir, i].heldBytes > limit {
            bufferLimitExceeded(dir, i)
            return
        }
        let above = (0..<slots.count).contains { j in
            self[progress: dir, j].holdMode == .watermark && self[progress: dir, j].heldBytes > slots[j].plugin.runtime.config.bufferLimitBytes
        }
        if dir == .request {
            guard above != requestAboveWatermark else { return }
            requestAboveWatermark = above
            stream.requestReadsChanged()
        } else {
            guard above != responseAboveWatermark else { return }
            responseAboveWatermark = above
            if !above { router.resumeUpstreamReads() }
        }
    }

    /// A filter holds more body than its `buffer_limit_kb`: 413 for a request, 500 for a
    /// response (Envoy's answers), and the held data is dropped.
    private func bufferLimitExceeded(_ dir: Direction, _ i: Int) {
        update(dir, i) { $0.queued = []; $0.keptBody = nil }
        if dir == .request {
            localReply(status: 413, body: "request body too large for the filters' buffer\n", details: "request_payload_too_large", startingAt: i)
        } else {
            localReply(status: 500, body: "response body too large for the filters' buffer\n", details: "response_payload_too_large", startingAt: i - 1)
        }
    }

    /// Forwards held headers past filter `i` if they have not gone yet.
    private func passHeaders(_ dir: Direction, _ i: Int, endOfStream: Bool) {
        guard !self[progress: dir, i].headersPassed else { return }
        update(dir, i) { $0.headersPassed = true; $0.iteration = .flowing }
        deliver(dir, .headers(endOfStream: endOfStream), at: next(dir, i))
    }

    /// Forwards what filter `i` holds: headers, then kept body.
    private func flush(_ dir: Direction, _ i: Int, trailersFollow: Bool) {
        let p = self[progress: dir, i]
        let end = p.endReceived && !trailersFollow && p.heldTrailers == nil
        passHeaders(dir, i, endOfStream: end && p.keptBody == nil && p.keptMode == nil)
        if p.keptBody != nil || p.keptMode != nil {
            update(dir, i) { $0.keptBody = nil; $0.keptMode = nil }
            deliver(dir, .data(p.keptBody ?? stream.allocator.buffer(capacity: 0), endOfStream: end), at: next(dir, i))
        }
        checkHeld(dir, i)
    }

    /// continue_stream from filter `i`.
    func resume(_ dir: Direction, from i: Int) {
        guard i < slots.count, !stopped(dir) else { return }
        let p = self[progress: dir, i]
        // continue_stream from a filter that holds nothing (it never stopped, or the headers
        // have not reached it) is a no-op, as in Envoy.
        let holding = p.iteration != .flowing || !p.headersPassed || p.keptBody != nil || p.keptMode != nil || p.heldTrailers != nil
        guard p.headersReceived, holding else { return }
        if case .allHeld = p.iteration {
            update(dir, i) { $0.iteration = .flowing; $0.queued = [] }
            passHeaders(dir, i, endOfStream: p.endReceived && p.queued.isEmpty)
            // The filter sees the events that waited, as after Envoy's continueDecoding.
            for event in p.queued { deliver(dir, event, at: i) }
            checkHeld(dir, i)
            return
        }
        update(dir, i) { $0.iteration = .flowing }
        flush(dir, i, trailersFollow: p.heldTrailers != nil)
        if let trailers = self[progress: dir, i].heldTrailers {
            update(dir, i) { $0.heldTrailers = nil }
            deliver(dir, .trailers(trailers), at: next(dir, i))
        }
    }

    /// The chain's two ends: requests reach the router, responses the stream.
    private func toTerminal(_ dir: Direction, _ event: Event) {
        switch (dir, event) {
        case (.request, .headers(let eos)): router.decodeHeaders(endOfStream: eos)
        case (.request, .data(let buffer, let eos)): router.decodeData(buffer, endOfStream: eos)
        case (.request, .trailers(let t)): router.decodeTrailers(t)
        case (.response, .headers(let eos)): stream.encodeHeaders(endOfStream: eos)
        case (.response, .data(let buffer, let eos)): stream.encodeData(buffer, endOfStream: eos)
        case (.response, .trailers(let t)): stream.encodeTrailers(t)
        }
    }

    private func context(for slot: Slot) -> UInt32? {
        if let id = slot.contextID { return id }
        guard let data else { return nil }
        let id = slot.vm.createStream(data: data, actions: slot.actions, root: slot.plugin.rootID)
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
            update(dir, i) { $0.iteration = .flowing }
            if case .headers(let eos) = event {
                // The headers the filter failed on go on, once.
                passHeaders(dir, i, endOfStream: eos)
            } else {
                // What the filter held goes on (without ending the stream), then the event
                // that failed, which carries the end if there is one.
                flush(dir, i, trailersFollow: true)
                deliver(dir, event, at: next(dir, i))
            }
        case .failClosed, .reload:
            slot.plugin.runtime.stats.failedClosedStreams.increment()
            // An empty 503, as Envoy's wasm_fail_stream (the reason is in the log and /stats).
            localReply(status: 503, body: "", details: "wasm_fail_stream", startingAt: i - 1)
        }
        return true
    }

    // MARK: local replies

    /// The one way Sluice or a filter answers a stream itself. The response runs through the
    /// response callbacks of the filters at `startingAt` and before it (those that saw the
    /// request); the router's position is `routerPosition`, before any filter is -1.
    func localReply(status: Int, body: String, details: String, flag: StreamFlag? = nil, startingAt: Int) {
        localReply(status: status, body: Array(body.utf8), details: details, flag: flag, startingAt: startingAt, headers: [])
    }

    func localReply(status: Int, body: [UInt8], details: String, flag: StreamFlag?, startingAt: Int, headers: [(String, String)]) {
        guard !finished else { return }
        requestAborted = true
        localReplies += 1
        router.abort()
        let flag = flag ?? .filter(details)
        if stream.responseStarted || localReplies > 2 {
            stream.reset(flag)
            return
        }
        if requestAboveWatermark {
            // What the filters held is moot now: the client may be read again (and the rest
            // of its request dropped).
            requestAboveWatermark = false
            stream.requestReadsChanged()
        }
        stream.prepareLocalReply(status: status, headers: headers, bodyLength: body.count, details: details, flag: flag)
        response = Array(repeating: Progress(), count: slots.count)
        responseEntry = min(startingAt, slots.count - 1)
        deliver(.response, .headers(endOfStream: body.isEmpty), at: responseEntry)
        if !body.isEmpty { deliver(.response, .data(stream.allocator.buffer(bytes: body), endOfStream: true), at: responseEntry) }
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
        chain.stream.eventLoop.assumeIsolatedUnsafeUnchecked().execute { [weak chain] in
            // A live chain means a live stream (the stream is the chain's only owner); held
            // here because the work may end the stream and its connection may let it go.
            guard let chain else { return }
            let stream = chain.stream
            work(chain)
            // Outside any read: what the resume wrote goes out now.
            stream.downstream.flush()
            chain.router.flushUpstream()
        }
    }

    func continueStream(_ type: StreamType) -> WasmResult {
        let index = self.index
        later { $0.resume(type == .request ? .request : .response, from: index) }
        return .ok
    }

    func closeStream(_ type: StreamType) -> WasmResult {
        later { chain in
            chain.router.abort()
            chain.stream.reset(.filter("wasm_close_stream"))
        }
        return .ok
    }

    func sendLocalResponse(status: Int, details: String, body: [UInt8], headers: [(String, String)], grpcStatus: Int32?) -> WasmResult {
        guard let chain else { return .notFound }
        if chain.stream.responseStarted { return .badArgument }
        let index = self.index
        var extra = headers
        if let grpcStatus { extra.append(("grpc-status", String(grpcStatus))) }
        later {
            $0.localReply(status: status, body: body, details: details.isEmpty ? "wasm_local_reply" : details, flag: nil,
                          startingAt: index, headers: extra)
        }
        return .ok
    }

    func clearRouteCache() {
        chain?.data?.routeCacheCleared = true
    }
}

/// Body chunks are lent to filters in place (see `StreamBody`).
extension ByteBuffer: BodyBytes {
    public var byteCount: Int { readableBytes }
    public func withBodyBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withUnsafeReadableBytes(body)
    }
}
