import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import SluiceConfig

/// Active HTTP health checking: every interval, each endpoint of a cluster gets a
/// `GET <path>` on a fresh connection; a 2xx within the timeout is a pass. An endpoint
/// flips to unhealthy after `unhealthy_threshold` consecutive failures and back after
/// `healthy_threshold` consecutive passes. Runs on one event loop; workers read the result
/// through the endpoint's atomic.
final class HealthChecker: @unchecked Sendable {
    // @unchecked: mutable state is confined to `eventLoop`.
    private let cluster: ClusterRuntime
    private let check: HealthCheckConfig
    private let eventLoop: EventLoop
    private let logger: Logger
    private var passes: [Int]
    private var failures: [Int]
    private var task: RepeatedTask?

    init(cluster: ClusterRuntime, check: HealthCheckConfig, eventLoop: EventLoop, logger: Logger) {
        self.cluster = cluster
        self.check = check
        self.eventLoop = eventLoop
        self.logger = logger
        self.passes = Array(repeating: 0, count: cluster.endpoints.count)
        self.failures = Array(repeating: 0, count: cluster.endpoints.count)
    }

    func start() {
        task = eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: check.interval.timeAmount) { [weak self] _ in
            self?.runRound()
        }
    }

    func stop() { task?.cancel() }

    private func runRound() {
        for index in cluster.endpoints.indices {
            probe(index).whenComplete { result in
                let passed = (try? result.get()) ?? false
                self.record(index, passed: passed)
            }
        }
    }

    private func record(_ index: Int, passed: Bool) {
        let endpoint = cluster.endpoints[index]
        if passed {
            cluster.stats.healthChecksPassed.increment()
            failures[index] = 0
            passes[index] += 1
            if !endpoint.isHealthy && passes[index] >= check.healthyThreshold {
                endpoint.setHealthy(true)
                logger.info("endpoint healthy again", metadata: ["cluster": "\(cluster.config.name)", "endpoint": "\(endpoint.address)"])
            }
        } else {
            cluster.stats.healthChecksFailed.increment()
            passes[index] = 0
            failures[index] += 1
            if endpoint.isHealthy && failures[index] >= check.unhealthyThreshold {
                endpoint.setHealthy(false)
                logger.warning("endpoint failed health checks", metadata: ["cluster": "\(cluster.config.name)", "endpoint": "\(endpoint.address)"])
            }
        }
    }

    private func probe(_ index: Int) -> EventLoopFuture<Bool> {
        let endpoint = cluster.endpoints[index]
        let promise = eventLoop.makePromise(of: Bool.self)
        let host = check.host ?? cluster.config.name
        let path = check.path
        let tls = cluster.tls
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(check.timeout.timeAmount)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // Over the cluster's TLS, as its requests go (the request waits in the TLS
                    // handler until the handshake is done; a failed handshake fails the check).
                    if let tls { try channel.pipeline.syncOperations.addHandler(try tls.handler(host: endpoint.address.host)) }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(HealthProbeHandler(promise: promise, host: host, path: path))
                }
            }
        let connecting = endpoint.socketAddress.map { bootstrap.connect(to: $0) } ?? bootstrap.connect(host: endpoint.address.host, port: endpoint.address.port)
        connecting.whenComplete { result in
            switch result {
            case .failure: promise.succeed(false)
            case .success(let channel):
                // A timeout closes the probe; the handler then reports the failure exactly once.
                let timer = channel.eventLoop.scheduleTask(in: self.check.timeout.timeAmount) { channel.close(promise: nil) }
                promise.futureResult.whenComplete { _ in
                    timer.cancel()
                    channel.close(promise: nil)
                }
            }
        }
        return promise.futureResult
    }
}

private final class HealthProbeHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart
    private let promise: EventLoopPromise<Bool>
    private let host: String
    private let path: String
    private var done = false

    init(promise: EventLoopPromise<Bool>, host: String, path: String) {
        self.promise = promise
        self.host = host
        self.path = path
    }

    func channelActive(context: ChannelHandlerContext) {
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path)
        head.headers.add(name: "host", value: host)
        head.headers.add(name: "user-agent", value: "sluice-health-check")
        head.headers.add(name: "connection", value: "close")
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data), !done {
            done = true
            promise.succeed((200..<300).contains(head.status.code))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !done { done = true; promise.succeed(false) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if !done { done = true; promise.succeed(false) }
        context.close(promise: nil)
    }
}
