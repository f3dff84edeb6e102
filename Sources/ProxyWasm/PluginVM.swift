import Foundation

/// One plugin running in one Wasm instance on one worker thread: the VM context (id 0), the
/// plugin's root context and its stream contexts. Confined to its thread; shares nothing
/// with other VMs but the process-wide shared data, queues and metrics.
public final class PluginVM {
    /// The plugin that created the VM (root context 1).
    public let primaryIdentity: PluginIdentity
    public let abi: ABIVersion
    let instance: WasmInstance
    let memory: GuestMemory
    public weak var services: PluginServices?
    let shared: PluginSharedState

    // Exports, resolved once.
    let allocate: WasmFunction
    let fns: Exports

    /// The root context of the plugin (cpp-host numbering: the first id after the VM's 0).
    public let rootContextID: UInt32 = 1
    private var nextContextID: UInt32 = 2
    var streams: [UInt32: StreamContext] = [:]

    /// Further plugins sharing this VM (same vm_id, code and VM configuration, as cpp-host
    /// shares them): each its own root context, identity and services.
    struct SharedRoot {
        let identity: PluginIdentity
        weak var services: PluginServices?
    }
    private(set) var sharedRoots: [UInt32: SharedRoot] = [:]
    /// Which root context each pending callout belongs to.
    private var calloutRoots: [UInt32: UInt32] = [:]

    /// The root context of the context being called: itself, or its stream's root.
    var currentRootID: UInt32 {
        if sharedRoots.isEmpty { return rootContextID }
        let id = effectiveContextID
        if id == rootContextID || sharedRoots[id] != nil { return id }
        return streams[id]?.rootID ?? rootContextID
    }

    /// The plugin being called (its configuration, budget, names).
    public var identity: PluginIdentity {
        // Yielded in place, not returned: a copy of the identity retains and releases every
        // one of its strings and arrays, and this is read on every guest call.
        _read {
            if sharedRoots.isEmpty {
                yield primaryIdentity
            } else if let shared = sharedRoots[currentRootID] {
                yield shared.identity
            } else {
                yield primaryIdentity
            }
        }
    }

    /// The services of the plugin being called (its callouts, ticks).
    var currentServices: PluginServices? {
        if sharedRoots.isEmpty { return services }
        return sharedRoots[currentRootID]?.services ?? services
    }

    /// The services of the plugin whose root context is `root` (a callout's owner, whichever
    /// context touches it).
    func services(ofRoot root: UInt32) -> PluginServices? {
        if root == rootContextID { return services }
        return sharedRoots[root]?.services
    }

    func isRootContext(_ id: UInt32) -> Bool { id == rootContextID || sharedRoots[id] != nil }

    /// The context the host is calling into, and the one hostcalls act on (may be switched
    /// by proxy_set_effective_context until the callback returns).
    var currentContextID: UInt32 = 0
    var effectiveContextID: UInt32 = 0
    private var callDepth = 0
    /// Work the guest asked for that must not run inside its own call (proxy_done → on_delete).
    private var afterCall: [() -> Void] = []

    enum Phase { case startup, allocator, normal }
    var phase: Phase = .normal
    /// Set only while proxy_on_configure / on_vm_start run, as in Envoy.
    var configurationReadable = false
    /// The HTTP-call response being delivered, readable only inside its callback.
    var httpCallResponse: (headers: HeaderMap, body: [UInt8], trailers: HeaderMap)?
    var lastStatus: (code: UInt32, message: String) = (0, "")
    /// gRPC callouts in flight, and what their current callback may read.
    var grpcCallouts: [UInt32: GrpcCallout] = [:]
    var grpcMessage: [UInt8]?
    var grpcMetadata: HeaderMap?
    var nextCalloutToken: UInt32 = 1
    public private(set) var pendingCallouts: Set<UInt32> = []
    var rootDonePending = false

    public private(set) var failed = false
    public private(set) var failureReason: String?

    /// Exports the ABI host calls, looked up once; nil when the module does not export them.
    struct Exports {
        var onContextCreate, onVMStart, onConfigure, onTick, onQueueReady, onForeignFunction: WasmFunction?
        var onRequestHeaders, onRequestBody, onRequestTrailers: WasmFunction?
        var onResponseHeaders, onResponseBody, onResponseTrailers: WasmFunction?
        var onHTTPCallResponse, onDone, onLog, onDelete: WasmFunction?
        var onNewConnection, onDownstreamData, onUpstreamData, onDownstreamClose, onUpstreamClose: WasmFunction?
        var onGrpcReceive, onGrpcClose, onGrpcInitialMetadata, onGrpcTrailingMetadata: WasmFunction?
    }

    /// Detects the ABI version from the module's exports (the first marker found wins).
    public static func detectABI(exports: [String]) throws -> ABIVersion {
        for name in exports {
            switch name {
            case ABIVersion.v0_1_0.marker: return .v0_1_0
            case ABIVersion.v0_2_0.marker: return .v0_2_0
            case ABIVersion.v0_2_1.marker: return .v0_2_1
            default: continue
            }
        }
        throw PluginError.load("the module exports no known Proxy-Wasm ABI version marker (proxy_abi_version_0_1_0, _0_2_0 or _0_2_1)")
    }

    /// Instantiates `module` and runs its WASI entry point. Start the root context with `start()`.
    public init(module: WasmModule, identity: PluginIdentity, services: PluginServices, shared: PluginSharedState) throws {
        self.primaryIdentity = identity
        self.services = services
        self.shared = shared
        let abi = try PluginVM.detectABI(exports: module.exportNames)
        self.abi = abi
        // Host functions need `self`; they are bound through a box filled in right after.
        let box = VMBox()
        let instance: WasmInstance
        do {
            instance = try module.instantiate(hostFunctions: HostCalls.all(abi: abi, box: box))
        } catch {
            throw PluginError.load("\(error)")
        }
        self.instance = instance
        guard let memory = instance.memory else { throw PluginError.load("the module exports no memory") }
        self.memory = memory
        guard let allocate = instance.function("malloc") ?? instance.function("proxy_on_memory_allocate") else {
            throw PluginError.load("the module exports no allocator (proxy_on_memory_allocate or malloc)")
        }
        guard allocate.type == WasmFunctionType([.i32], [.i32]) else {
            throw PluginError.load("the allocator has signature \(allocate.type), expected (i32) -> (i32)")
        }
        self.allocate = allocate
        var f = Exports()
        func get(_ name: String, _ params: Int, _ results: Int) throws -> WasmFunction? {
            guard let fn = instance.function(name) else { return nil }
            guard fn.type.parameters.count == params, fn.type.results.count == results,
                  fn.type.parameters.allSatisfy({ $0 == .i32 }), fn.type.results.allSatisfy({ $0 == .i32 }) else {
                throw PluginError.load("export \(name) has signature \(fn.type), expected \(params) i32 parameters and \(results) i32 result(s) for ABI \(abi.rawValue)")
            }
            return fn
        }
        let headerParams = abi == .v0_1_0 ? 2 : 3
        f.onContextCreate = try get("proxy_on_context_create", 2, 0)
        f.onVMStart = try get("proxy_on_vm_start", 2, 1)
        f.onConfigure = try get("proxy_on_configure", 2, 1)
        f.onTick = try get("proxy_on_tick", 1, 0)
        f.onQueueReady = try get("proxy_on_queue_ready", 2, 0)
        f.onForeignFunction = abi == .v0_1_0 ? nil : try get("proxy_on_foreign_function", 3, 0)
        f.onRequestHeaders = try get("proxy_on_request_headers", headerParams, 1)
        f.onRequestBody = try get("proxy_on_request_body", 3, 1)
        f.onRequestTrailers = try get("proxy_on_request_trailers", 2, 1)
        f.onResponseHeaders = try get("proxy_on_response_headers", headerParams, 1)
        f.onResponseBody = try get("proxy_on_response_body", 3, 1)
        f.onResponseTrailers = try get("proxy_on_response_trailers", 2, 1)
        f.onHTTPCallResponse = try get("proxy_on_http_call_response", 5, 0)
        f.onDone = try get("proxy_on_done", 1, 1)
        f.onLog = try get("proxy_on_log", 1, 0)
        f.onDelete = try get("proxy_on_delete", 1, 0)
        f.onNewConnection = try get("proxy_on_new_connection", 1, 1)
        f.onDownstreamData = try get("proxy_on_downstream_data", 3, 1)
        f.onUpstreamData = try get("proxy_on_upstream_data", 3, 1)
        f.onDownstreamClose = try get("proxy_on_downstream_connection_close", 2, 0)
        f.onUpstreamClose = try get("proxy_on_upstream_connection_close", 2, 0)
        f.onGrpcInitialMetadata = try get("proxy_on_grpc_receive_initial_metadata", 3, 0)
        f.onGrpcReceive = try get("proxy_on_grpc_receive", 3, 0)
        f.onGrpcTrailingMetadata = try get("proxy_on_grpc_receive_trailing_metadata", 3, 0)
        f.onGrpcClose = try get("proxy_on_grpc_close", 3, 0)
        self.fns = f
        box.vm = self
        try runEntryPoint()
    }

    /// WASI reactor (`_initialize`, then `main(0,0)` if present) or command (`_start`), with
    /// only the start-up-safe hostcalls allowed, as in cpp-host.
    private func runEntryPoint() throws {
        phase = .startup
        defer { phase = .normal }
        do {
            instance.setFuel(startupFuel)
            if let initialize = instance.function("_initialize") {
                _ = try initialize.call(GuestArgs())
                if let main = instance.function("main"), main.type.parameters.count == 2 {
                    _ = try main.call(GuestArgs(0, 0))
                } else if let mainVoid = instance.function("__main_void"), mainVoid.type.parameters.isEmpty {
                    _ = try mainVoid.call(GuestArgs())
                }
            } else if let start = instance.function("_start") {
                _ = try start.call(GuestArgs())
            }
        } catch {
            if case .exit(0) = error {
                return  // proc_exit(0) from a command module's _start is a normal end
            }
            throw PluginError.load("the module's start-up code failed: \(error)")
        }
    }

    /// Start-up may be slower than a request callback (a Go runtime initialises its heap):
    /// ten times the callback budget.
    var startupFuel: UInt64 { identity.cpuBudgetMs * 10 * fuelPerMs }
    var callbackFuel: UInt64 { identity.cpuBudgetMs * fuelPerMs }
    public var fuelPerMs: UInt64 = 50_000

    // MARK: calling into the guest

    /// Calls a callback export with `context` as current and effective context. A trap marks
    /// the VM failed for good; the caller then applies the plugin's failure policy.
    @discardableResult
    func call(_ fn: WasmFunction?, _ name: String, context: UInt32, _ args: GuestArgs) -> UInt64? {
        guard !failed, let fn else { return nil }
        let saved = (currentContextID, effectiveContextID)
        currentContextID = context
        effectiveContextID = context
        callDepth += 1
        if callDepth == 1 { instance.setFuel(callbackFuel) }
        defer {
            callDepth -= 1
            (currentContextID, effectiveContextID) = saved
            if callDepth == 0 { drainAfterCall() }
        }
        do {
            return try fn.call(args)
        } catch {
            fail(error.kind, "\(name) on context \(context): \(error)")
            return nil
        }
    }

    /// Hostcall work (header scans, copies) counts against the callback's CPU budget, so a
    /// filter cannot make the host do unbounded work between two of its own instructions.
    /// One unit is a header looked at, about 80 ns of host work: four fuel units of
    /// WasmKit's interpreted guest work, 80 nanoseconds of a Wasmtime deadline.
    func chargeHostWork(_ units: UInt64) {
        guard callDepth > 0 else { return }
        instance.chargeFuel(units &* max(1, fuelPerMs / 12_500))
    }

    private func drainAfterCall() {
        while !afterCall.isEmpty {
            let work = afterCall.removeFirst()
            work()
        }
    }

    func runAfterCall(_ work: @escaping () -> Void) {
        if callDepth == 0 { work() } else { afterCall.append(work) }
    }

    func fail(_ kind: WasmFailureKind, _ reason: String) {
        guard !failed else { return }
        failed = true
        failureReason = reason
        services?.log(.critical, "plugin '\(identity.name)' failed and will not be called again: \(reason)")
        services?.vmFailed(self, kind: kind, reason: reason)
        // Every plugin in a shared VM fails with it and applies its own policy.
        for root in sharedRoots.values { root.services?.vmFailed(self, kind: kind, reason: reason) }
    }

    /// Allocates `count` bytes in guest memory with the module's allocator (§4.5). During the
    /// allocation only logging, clock and WASI stdio hostcalls are allowed.
    func guestAllocate(_ count: Int) -> UInt32? {
        guard count > 0, count <= UInt32.max else { return nil }
        let saved = phase
        phase = .allocator
        defer { phase = saved }
        do {
            guard let p = try allocate.call(GuestArgs(UInt64(count))), p != 0 else { return nil }
            let addr = UInt32(truncatingIfNeeded: p)
            guard UInt64(addr) + UInt64(count) <= UInt64(memory.byteCount) else { return nil }
            return addr
        } catch {
            fail(error.kind, "allocator: \(error)")
            return nil
        }
    }

    /// Copies `bytes` into fresh guest memory and writes its address and length to the
    /// out-pointers; empty data writes 0/0 without allocating.
    func copyOut(_ bytes: [UInt8], ptrOut: UInt32, lenOut: UInt32) -> WasmResult {
        bytes.withUnsafeBytes { copyOut($0, ptrOut: ptrOut, lenOut: lenOut) }
    }

    func copyOut(_ bytes: UnsafeRawBufferPointer, ptrOut: UInt32, lenOut: UInt32) -> WasmResult {
        // Probe the out-params before allocating so a bad pointer costs no guest memory.
        guard memory.withBytes(ptrOut, 4, { _ in true }) != nil, memory.withBytes(lenOut, 4, { _ in true }) != nil else {
            return .invalidMemoryAccess
        }
        if bytes.isEmpty {
            memory.writeU32(ptrOut, 0)
            memory.writeU32(lenOut, 0)
            return .ok
        }
        guard let addr = guestAllocate(bytes.count) else { return .invalidMemoryAccess }
        guard memory.write(addr, bytes), memory.writeU32(ptrOut, addr), memory.writeU32(lenOut, UInt32(bytes.count)) else {
            return .invalidMemoryAccess
        }
        return .ok
    }

    // MARK: lifecycle

    /// Creates the root context and runs on_vm_start and on_configure. False from either
    /// (or a trap) rejects the plugin.
    public func start() throws {
        try startRoot(rootContextID, identity: primaryIdentity)
    }

    /// Another plugin joins this VM with its own root context (cpp-host's VM sharing): its
    /// on_vm_start and on_configure run with its own configuration. Returns its root id.
    public func addRoot(identity: PluginIdentity, services: PluginServices) throws -> UInt32 {
        var id = nextContextID
        while streams[id] != nil || id == 0 || isRootContext(id) { id &+= 1 }
        nextContextID = id &+ 1
        sharedRoots[id] = SharedRoot(identity: identity, services: services)
        do {
            try startRoot(id, identity: identity)
        } catch {
            sharedRoots[id] = nil
            throw error
        }
        return id
    }

    private func startRoot(_ id: UInt32, identity: PluginIdentity) throws {
        call(fns.onContextCreate, "proxy_on_context_create", context: id, GuestArgs(UInt64(id), 0))
        configurationReadable = true
        defer { configurationReadable = false }
        let started = fns.onVMStart == nil ? 1 : call(fns.onVMStart, "proxy_on_vm_start", context: id, GuestArgs(UInt64(id), UInt64(identity.vmConfiguration.count)))
        if failed { throw PluginError.start("proxy_on_vm_start trapped: \(failureReason ?? "")") }
        guard started != 0 else { throw PluginError.start("proxy_on_vm_start returned false") }
        let configured = fns.onConfigure == nil ? 1 : call(fns.onConfigure, "proxy_on_configure", context: id, GuestArgs(UInt64(id), UInt64(identity.pluginConfiguration.count)))
        if failed { throw PluginError.start("proxy_on_configure trapped: \(failureReason ?? "")") }
        guard configured != 0 else { throw PluginError.start("proxy_on_configure returned false (configuration rejected)") }
    }

    /// Root shutdown: on_done, and on_delete now or after proxy_done.
    public func shutdown() {
        shutdownRoot(rootContextID)
    }

    /// One plugin of the VM stops: its root context's on_done and on_delete.
    public func shutdownRoot(_ id: UInt32) {
        let done = call(fns.onDone, "proxy_on_done", context: id, GuestArgs(UInt64(id))) ?? 1
        if done != 0 {
            call(fns.onDelete, "proxy_on_delete", context: id, GuestArgs(UInt64(id)))
        } else if id == rootContextID {
            rootDonePending = true
        }
        if id == rootContextID {
            services?.setTickPeriod(vm: self, milliseconds: 0)
        } else {
            sharedRoots[id]?.services?.setTickPeriod(vm: self, milliseconds: 0)
        }
    }

    // MARK: streams

    /// Creates a stream context (the lazily created context of an HTTP stream).
    public func createStream(data: HTTPStreamData, actions: HTTPStreamActions, root: UInt32? = nil) -> UInt32 {
        let root = root ?? rootContextID
        let id = nextStreamID()
        let stream = StreamContext(id: id, data: data, actions: actions, rootID: root)
        streams[id] = stream
        call(fns.onContextCreate, "proxy_on_context_create", context: id, GuestArgs(UInt64(id), UInt64(root)))
        return id
    }

    public func onRequestHeaders(_ id: UInt32, count: Int, endOfStream: Bool) -> HeadersAction {
        beginCallback(id)
        let args = abi == .v0_1_0 ? GuestArgs(UInt64(id), UInt64(count)) : GuestArgs(UInt64(id), UInt64(count), endOfStream ? 1 : 0)
        return headersAction(call(fns.onRequestHeaders, "proxy_on_request_headers", context: id, args), id)
    }

    public func onResponseHeaders(_ id: UInt32, count: Int, endOfStream: Bool) -> HeadersAction {
        beginCallback(id)
        let args = abi == .v0_1_0 ? GuestArgs(UInt64(id), UInt64(count)) : GuestArgs(UInt64(id), UInt64(count), endOfStream ? 1 : 0)
        return headersAction(call(fns.onResponseHeaders, "proxy_on_response_headers", context: id, args), id)
    }

    public func onRequestBody(_ id: UInt32, size: Int, endOfStream: Bool) -> DataAction {
        beginCallback(id)
        return dataAction(call(fns.onRequestBody, "proxy_on_request_body", context: id, GuestArgs(UInt64(id), UInt64(size), endOfStream ? 1 : 0)), id)
    }

    public func onResponseBody(_ id: UInt32, size: Int, endOfStream: Bool) -> DataAction {
        beginCallback(id)
        return dataAction(call(fns.onResponseBody, "proxy_on_response_body", context: id, GuestArgs(UInt64(id), UInt64(size), endOfStream ? 1 : 0)), id)
    }

    public func onRequestTrailers(_ id: UInt32, count: Int) -> TrailersAction {
        beginCallback(id)
        return trailersAction(call(fns.onRequestTrailers, "proxy_on_request_trailers", context: id, GuestArgs(UInt64(id), UInt64(count))), id)
    }

    public func onResponseTrailers(_ id: UInt32, count: Int) -> TrailersAction {
        beginCallback(id)
        return trailersAction(call(fns.onResponseTrailers, "proxy_on_response_trailers", context: id, GuestArgs(UInt64(id), UInt64(count))), id)
    }

    /// A local response sent during the callback forces "stop", whatever the guest returned;
    /// only during that callback, so the flag is cleared before each one.
    @discardableResult
    private func beginCallback(_ id: UInt32) -> UInt32 {
        streams[id]?.localResponseSent = false
        return id
    }

    private func headersAction(_ raw: UInt64?, _ id: UInt32) -> HeadersAction {
        if streams[id]?.localResponseSent == true { return .stopAll(.buffer) }
        return HeadersAction(raw: raw ?? 0, stopIterationHoldsAll: !identity.allowOnHeadersStopIteration)
    }

    private func dataAction(_ raw: UInt64?, _ id: UInt32) -> DataAction {
        if streams[id]?.localResponseSent == true { return .stop(.buffer) }
        return DataAction(raw: raw ?? 0)
    }

    private func trailersAction(_ raw: UInt64?, _ id: UInt32) -> TrailersAction {
        if streams[id]?.localResponseSent == true { return .stop }
        return TrailersAction(raw: raw ?? 0)
    }

    /// End of a stream, in Envoy's HTTP order: on_log, on_done, on_delete.
    public func finishStream(_ id: UInt32) { finish(id, logFirst: true) }

    /// The last callbacks of a stream or connection context; Envoy logs an HTTP stream before
    /// on_done and a TCP connection after it.
    private func finish(_ id: UInt32, logFirst: Bool) {
        guard streams[id] != nil else { return }
        let log = { self.call(self.fns.onLog, "proxy_on_log", context: id, GuestArgs(UInt64(id))) }
        if logFirst { log() }
        call(fns.onDone, "proxy_on_done", context: id, GuestArgs(UInt64(id)))
        if !logFirst { log() }
        call(fns.onDelete, "proxy_on_delete", context: id, GuestArgs(UInt64(id)))
        streams[id] = nil
    }

    // MARK: TCP connections

    /// Creates the context of a TCP connection (proxy_on_context_create); the connection's
    /// callbacks follow.
    public func createConnection(data: NetworkConnectionData, actions: NetworkConnectionActions, root: UInt32? = nil) -> UInt32 {
        let root = root ?? rootContextID
        let id = nextStreamID()
        streams[id] = StreamContext(id: id, connection: data, actions: actions, rootID: root)
        call(fns.onContextCreate, "proxy_on_context_create", context: id, GuestArgs(UInt64(id), UInt64(root)))
        return id
    }

    public func onNewConnection(_ id: UInt32) -> NetworkAction {
        NetworkAction(raw: call(fns.onNewConnection, "proxy_on_new_connection", context: id, GuestArgs(UInt64(id))))
    }

    public func onDownstreamData(_ id: UInt32, size: Int, endOfStream: Bool) -> NetworkAction {
        NetworkAction(raw: call(fns.onDownstreamData, "proxy_on_downstream_data", context: id, GuestArgs(UInt64(id), UInt64(size), endOfStream ? 1 : 0)))
    }

    public func onUpstreamData(_ id: UInt32, size: Int, endOfStream: Bool) -> NetworkAction {
        NetworkAction(raw: call(fns.onUpstreamData, "proxy_on_upstream_data", context: id, GuestArgs(UInt64(id), UInt64(size), endOfStream ? 1 : 0)))
    }

    public func onDownstreamConnectionClose(_ id: UInt32, peer: PeerType) {
        call(fns.onDownstreamClose, "proxy_on_downstream_connection_close", context: id, GuestArgs(UInt64(id), UInt64(peer.rawValue)))
    }

    public func onUpstreamConnectionClose(_ id: UInt32, peer: PeerType) {
        call(fns.onUpstreamClose, "proxy_on_upstream_connection_close", context: id, GuestArgs(UInt64(id), UInt64(peer.rawValue)))
    }

    /// End of a TCP connection, in Envoy's order for network filters (its onCloseTCP):
    /// on_done, on_log, on_delete.
    public func finishConnection(_ id: UInt32) { finish(id, logFirst: false) }

    private func nextStreamID() -> UInt32 {
        var id = nextContextID
        while streams[id] != nil || id == 0 || isRootContext(id) { id &+= 1 }
        nextContextID = id &+ 1
        return id
    }

    // MARK: root-context events

    public func onTick(root: UInt32? = nil) {
        let root = root ?? rootContextID
        call(fns.onTick, "proxy_on_tick", context: root, GuestArgs(UInt64(root)))
    }

    public func onQueueReady(_ queueID: UInt32, root: UInt32? = nil) {
        let root = root ?? rootContextID
        call(fns.onQueueReady, "proxy_on_queue_ready", context: root, GuestArgs(UInt64(root), UInt64(queueID)))
    }

    /// Delivers a callout's response (nil: it failed; get_status then says why).
    public func deliverHTTPCallResponse(token: UInt32, response: (headers: HeaderMap, body: [UInt8], trailers: HeaderMap)?, failure: String = "reset") {
        guard pendingCallouts.remove(token) != nil else { return }
        if let response {
            httpCallResponse = response
            lastStatus = (0, "")
        } else {
            httpCallResponse = nil
            lastStatus = (WasmResult.brokenConnection.rawValue, failure)
        }
        defer { httpCallResponse = nil }
        let root = calloutRoots.removeValue(forKey: token) ?? rootContextID
        call(fns.onHTTPCallResponse, "proxy_on_http_call_response", context: root, GuestArgs(
            UInt64(root), UInt64(token), UInt64(response?.headers.entries.count ?? 0),
            UInt64(response?.body.count ?? 0), UInt64(response?.trailers.entries.count ?? 0)))
    }

    func registerCallout() -> UInt32 {
        let token = nextCalloutToken
        nextCalloutToken &+= 1
        if nextCalloutToken == 0 { nextCalloutToken = 1 }
        pendingCallouts.insert(token)
        if !sharedRoots.isEmpty { calloutRoots[token] = currentRootID }
        return token
    }

    /// gRPC callouts keep their root in `grpcCallouts`.
    func forgetCalloutRoot(_ token: UInt32) { calloutRoots[token] = nil }

    func forgetCallout(_ token: UInt32) {
        pendingCallouts.remove(token)
        calloutRoots[token] = nil
    }

    var effectiveStream: StreamContext? { streams[effectiveContextID] }

    /// Current size of the module's linear memory (it only grows).
    public var memoryBytes: Int { memory.byteCount }
}

/// The per-stream state of one VM: its context id, and the stream it acts on: an HTTP
/// stream (headers, bodies, trailers) or a TCP connection (downstream and upstream bytes).
/// Hostcalls ask for the capability they need (`http`, `network`); a context of the other
/// kind answers as Envoy's does when that capability is absent.
final class StreamContext {
    enum Kind {
        case http(HTTPStreamData)
        case network(NetworkConnectionData)
    }

    let id: UInt32
    let kind: Kind
    weak var actions: HTTPStreamActions?
    weak var networkActions: NetworkConnectionActions?
    var localResponseSent = false
    /// The root context (plugin) this stream belongs to.
    let rootID: UInt32

    init(id: UInt32, data: HTTPStreamData, actions: HTTPStreamActions, rootID: UInt32) {
        self.id = id
        self.kind = .http(data)
        self.actions = actions
        self.rootID = rootID
    }

    init(id: UInt32, connection: NetworkConnectionData, actions: NetworkConnectionActions, rootID: UInt32) {
        self.id = id
        self.kind = .network(connection)
        self.networkActions = actions
        self.rootID = rootID
    }

    /// The HTTP stream's data; nil on a TCP connection's context.
    var http: HTTPStreamData? {
        if case .http(let data) = kind { return data }
        return nil
    }

    /// The TCP connection's data; nil on an HTTP stream's context.
    var network: NetworkConnectionData? {
        if case .network(let data) = kind { return data }
        return nil
    }

    var info: StreamInfo {
        switch kind {
        case .http(let data): return data.info
        case .network(let data): return data.info
        }
    }

    /// Values set with proxy_set_property (Envoy's filter state of the stream or connection).
    var filterState: [String: [UInt8]] {
        get {
            switch kind {
            case .http(let data): return data.filterState
            case .network(let data): return data.filterState
            }
        }
        set {
            switch kind {
            case .http(let data): data.filterState = newValue
            case .network(let data): data.filterState = newValue
            }
        }
    }
}

/// Lets host functions created before `PluginVM.init` finished reach the VM.
final class VMBox { unowned(unsafe) var vm: PluginVM? }

public enum PluginError: Error, CustomStringConvertible {
    case load(String)
    case start(String)
    public var description: String {
        switch self {
        case .load(let m): return "cannot load module: \(m)"
        case .start(let m): return "plugin failed to start: \(m)"
        }
    }
}

/// proc_exit is delivered to the engine as a trap whose message carries this marker and code.
