import Foundation
import Logging
import NIOCore
import NIOPosix
import ProxyWasm
import SluiceConfig

/// One plugin on one worker: owns that worker's VM, its tick timer and callouts, and applies
/// the failure policy when the VM traps. Confined to the worker's event loop.
final class PluginWorker: PluginServices {
    let runtime: PluginRuntime
    let shared: PluginSharedState
    let eventLoop: EventLoop
    unowned let worker: Worker
    let logger: Logger
    private(set) var vm: PluginVM?
    /// This plugin's root context in `vm` (not the first one when the VM is shared).
    private(set) var rootID: UInt32 = 1
    private var tick: RepeatedTask?
    private var reloadAttempts = 0
    private var reloadScheduled = false
    /// gRPC callouts in flight, by token.
    private var grpcCallouts: [UInt32: GrpcCallout] = [:]

    init(runtime: PluginRuntime, shared: PluginSharedState, worker: Worker, logger: Logger) {
        self.runtime = runtime
        self.shared = shared
        self.eventLoop = worker.eventLoop
        self.worker = worker
        var l = logger
        l[metadataKey: "plugin"] = "\(runtime.config.name)"
        self.logger = l
    }

    /// The VM streams should use now; nil when the plugin is failed (and not yet reloaded).
    var activeVM: PluginVM? {
        if let vm, !vm.failed { return vm }
        return nil
    }

    var failurePolicy: FailurePolicy { runtime.config.failurePolicy }

    /// Creates and starts this worker's VM, or joins `sharing` (a VM of another plugin with the
    /// same vm_id, module and VM configuration) with a root context of its own, as cpp-host
    /// shares VMs. Failure leaves the plugin failed (policy applies).
    func startVM(sharing: PluginVM? = nil) {
        do {
            if let sharing, !sharing.failed {
                vm = sharing
                rootID = try sharing.addRoot(identity: runtime.identity, services: self)
                return
            }
            let vm = try PluginVM(module: runtime.module, identity: runtime.identity, services: self, shared: shared)
            vm.fuelPerMs = runtime.engineFuelPerMs
            self.vm = vm
            rootID = vm.rootContextID
            try vm.start()
            if vm.failed { throw PluginError.start(vm.failureReason ?? "trap") }
        } catch {
            logger.error("plugin VM failed to start on this worker: \(error)")
            // Callouts its start-up began go with it.
            cancelGrpcCallouts()
            vm = nil
            runtime.stats.reloadFailures.increment()
            if failurePolicy == .reload { scheduleReload() }
        }
    }

    /// Streams currently using this worker's VM; a retired plugin stops when it reaches 0.
    private(set) var activeStreams = 0
    private var retired = false

    func streamStarted() { activeStreams += 1 }

    private var streamsSinceSample = 0

    func streamEnded() {
        activeStreams -= 1
        streamsSinceSample += 1
        if streamsSinceSample >= 256, let vm {
            streamsSinceSample = 0
            let bytes = vm.memoryBytes
            if bytes > runtime.stats.memoryBytes.load { runtime.stats.memoryBytes.set(bytes) }
        }
        if retired && activeStreams == 0 { stop() }
    }

    /// A reload replaced this plugin: stop now if idle, else after its last stream.
    func retire() {
        retired = true
        tick?.cancel()
        tick = nil
        if activeStreams == 0 { stop() }
    }

    func stop() {
        tick?.cancel()
        tick = nil
        cancelGrpcCallouts()
        if let vm, !vm.failed { vm.shutdownRoot(rootID) }
        if let vm, rootID == vm.rootContextID { shared.queues.ownerGone(token: vm.ownerToken) }
        vm = nil
    }

    // MARK: PluginServices

    func log(_ level: LogLevel, _ message: String) {
        logger.log(level: level.swiftLogLevel, "\(message)")
    }

    var logLevel: LogLevel { LogLevel(logger.logLevel) }

    func setTickPeriod(vm: PluginVM, milliseconds: UInt32) {
        tick?.cancel()
        tick = nil
        guard milliseconds > 0 else { return }
        let period = TimeAmount.milliseconds(Int64(milliseconds))
        let root = rootID
        tick = eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) { [weak self, weak vm] task in
            guard let self, let vm, !vm.failed, self.vm === vm else {
                task.cancel()
                return
            }
            vm.onTick(root: root)
        }
    }

    func execute(_ work: @escaping () -> Void) {
        eventLoop.assumeIsolatedUnsafeUnchecked().execute(work)
    }

    var executor: @Sendable (@escaping @Sendable () -> Void) -> Void {
        let loop = eventLoop
        return { work in loop.execute(work) }
    }

    func vmFailed(_ vm: PluginVM, kind: WasmFailureKind, reason: String) {
        switch kind {
        case .budgetExhausted: runtime.stats.budgetExhausted.increment()
        case .trap, .exit, .refusedHostcall: runtime.stats.traps.increment()
        }
        tick?.cancel()
        tick = nil
        cancelGrpcCallouts()
        shared.queues.ownerGone(token: vm.ownerToken)
        if failurePolicy == .reload { scheduleReload() }
    }

    /// FAIL_RELOAD: a fresh VM after an exponential back-off (1 s, 2 s, 4 s … up to 60 s);
    /// until then streams are failed closed.
    private func scheduleReload() {
        guard !reloadScheduled else { return }
        reloadScheduled = true
        let delay = min(60_000, 1000 << min(reloadAttempts, 6))
        reloadAttempts += 1
        eventLoop.assumeIsolatedUnsafeUnchecked().scheduleTask(in: .milliseconds(Int64(delay))) { [weak self] in
            guard let self else { return }
            self.reloadScheduled = false
            self.startVM()
            if self.activeVM != nil {
                self.runtime.stats.reloads.increment()
                self.logger.notice("plugin VM reloaded after failure")
            }
        }
    }

    /// An HTTP callout to a configured cluster (or, when the plugin allows it, any host:port).
    func httpCall(vm: PluginVM, token: UInt32, upstream: String, headers: [(String, String)], body: [UInt8], trailers: [(String, String)], timeoutMs: UInt32) -> WasmResult {
        let target: HTTPCallClient.Target
        if let cluster = worker.clusters[upstream] {
            guard let index = cluster.pick() else {
                // No healthy endpoint: fail the call asynchronously, as a reset.
                execute { [weak vm] in vm?.deliverHTTPCallResponse(token: token, response: nil, failure: "no healthy upstream") }
                return .ok
            }
            let endpoint = cluster.runtime.endpoints[index]
            target = .init(address: endpoint.socketAddress, host: endpoint.address.host, port: endpoint.address.port, connectTimeout: cluster.runtime.config.connectTimeout)
        } else if runtime.identity.allowAnyHTTPCallTarget, let hp = HostPort.parse(upstream), hp.port != 0 {
            target = .init(address: try? SocketAddress(ipAddress: hp.host, port: hp.port), host: hp.host, port: hp.port, connectTimeout: .seconds(5))
        } else {
            log(.warn, "http_call to unknown cluster '\(upstream)'")
            return .badArgument
        }
        HTTPCallClient.send(on: eventLoop, to: target, headers: headers, body: body, trailers: trailers,
                            timeout: timeoutMs == 0 ? nil : .milliseconds(Int64(timeoutMs))) { [weak vm] result in
            guard let vm, !vm.failed else { return }
            switch result {
            case .success(let response):
                vm.deliverHTTPCallResponse(token: token, response: response)
            case .failure(let error):
                vm.deliverHTTPCallResponse(token: token, response: nil, failure: error.description)
            }
        }
        return .ok
    }

    // MARK: gRPC callouts

    func hasCluster(_ name: String) -> Bool { worker.clusters[name] != nil }

    /// A gRPC callout to a cluster: an HTTP/2 stream on one of its endpoints, whatever the
    /// cluster's configured protocol. Events reach the VM on later event-loop turns, never
    /// inside the guest call that started the callout.
    func grpcStart(vm: PluginVM, token: UInt32, request: GrpcCalloutRequest) -> WasmResult {
        guard let cluster = worker.clusters[request.cluster] else { return .parseFailure }
        let callout = GrpcCallout(kind: request.message == nil ? .stream : .call, request: request) { [weak self, weak vm] event in
            self?.execute {
                guard let self else { return }
                guard let vm, !vm.failed, self.vm === vm else {
                    // The VM is gone (failed, stopped, replaced): the callout goes too.
                    self.grpcCallouts.removeValue(forKey: token)?.cancel()
                    return
                }
                switch event {
                case .initialMetadata(let map): vm.deliverGrpcInitialMetadata(token: token, metadata: map)
                case .message(let message):
                    if self.grpcCallouts[token]?.kind == .call { self.grpcCallouts[token] = nil }
                    vm.deliverGrpcMessage(token: token, message: message)
                case .trailingMetadata(let map): vm.deliverGrpcTrailingMetadata(token: token, metadata: map)
                case .close(let status, let message):
                    self.grpcCallouts[token] = nil
                    vm.deliverGrpcClose(token: token, status: status, message: message)
                }
            }
        }
        grpcCallouts[token] = callout
        guard let index = cluster.pick() else {
            execute { [weak self, weak vm] in
                self?.grpcCallouts[token] = nil
                vm?.deliverGrpcClose(token: token, status: 14, message: GrpcCallout.envoyMessage("no healthy upstream", details: "no_healthy_upstream"))
            }
            return .ok
        }
        callout.start(on: cluster.pools[index], httpProtocol: cluster.runtime.tls == nil ? .http : .https, eventLoop: eventLoop)
        return .ok
    }

    func grpcSend(token: UInt32, message: [UInt8]?, endStream: Bool) {
        grpcCallouts[token]?.send(message, endStream: endStream)
    }

    func grpcCancel(token: UInt32) {
        grpcCallouts.removeValue(forKey: token)?.cancel()
    }

    /// The VM is gone or failed: its callouts are reset.
    private func cancelGrpcCallouts() {
        let open = grpcCallouts
        grpcCallouts.removeAll()
        for callout in open.values { callout.cancel() }
    }
}
