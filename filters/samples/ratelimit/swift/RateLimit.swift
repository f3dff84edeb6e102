// Sample filter `ratelimit`: a token bucket per client, kept in shared data so every worker
// draws from the same bucket (updated with compare-and-swap).
//   { "requests_per_second": 10, "burst": 20, "key_header": "x-client-id" }
// The client key is that header, or the client's address when the header is absent or not
// configured. Over the limit: 429 with Retry-After (seconds until a token is back).

final class RateLimitRoot: RootContext {
    var ratePerSecond = 10
    var burst = 20
    var keyHeader: String?

    func onConfigure(configuration: [UInt8]) -> Bool {
        guard let json = JSON.parse(configuration) else {
            log(.error, "ratelimit: configuration must be JSON")
            return false
        }
        ratePerSecond = json["requests_per_second"]?.int ?? ratePerSecond
        burst = json["burst"]?.int ?? burst
        keyHeader = json["key_header"]?.string
        guard ratePerSecond > 0, burst > 0 else {
            log(.error, "ratelimit: requests_per_second and burst must be positive")
            return false
        }
        return true
    }

    func createHTTPContext(id: UInt32) -> HTTPContext? { RateLimitStream(root: self) }

    /// Takes one token for `client`; nil when allowed, else seconds until the next token.
    func take(_ client: String) -> Int? {
        let key = "ratelimit:" + client
        let capacity = Int64(burst) * 1000  // milli-tokens
        for _ in 0..<32 {
            let now = Int64(nowNanoseconds())
            var tokens = capacity
            var cas: UInt32 = 0
            if let (value, c) = SharedData.get(key), let state = Self.decode(value) {
                cas = c
                let refill = (now - state.last) * Int64(ratePerSecond) / 1_000_000
                tokens = min(capacity, state.tokens + max(0, refill))
            }
            let allowed = tokens >= 1000
            if allowed { tokens -= 1000 }
            // Written even when denied, so the refill clock keeps its reference point.
            if SharedData.set(key, Self.encode(tokens, now), cas: cas) {
                if allowed { return nil }
                let missing = 1000 - tokens
                return Int((missing + Int64(ratePerSecond) * 1000 - 1) / (Int64(ratePerSecond) * 1000))
            }
            // Another worker updated the bucket first: read it again.
        }
        return nil  // heavy contention: fail open rather than refuse a request we could not count
    }

    static func encode(_ tokens: Int64, _ last: Int64) -> [UInt8] { Array((String(tokens) + ":" + String(last)).utf8) }

    static func decode(_ bytes: [UInt8]) -> (tokens: Int64, last: Int64)? {
        guard let colon = bytes.firstIndex(of: UInt8(ascii: ":")) else { return nil }
        guard let t = Int64(String(decoding: bytes[..<colon], as: UTF8.self)),
              let l = Int64(String(decoding: bytes[(colon + 1)...], as: UTF8.self)) else { return nil }
        return (t, l)
    }
}

final class RateLimitStream: HTTPContext {
    let root: RateLimitRoot
    init(root: RateLimitRoot) { self.root = root }

    func onRequestHeaders(endOfStream: Bool) -> Action {
        var client = root.keyHeader.flatMap { Headers.request[$0] } ?? ""
        if client.isEmpty {
            let address = propertyString("source", "address") ?? "unknown"
            client = String(address.split(separator: ":").first ?? Substring(address))
        }
        guard let retryAfter = root.take(client) else { return .continue }
        sendLocalResponse(status: 429, body: "rate limit exceeded\n", headers: [("retry-after", String(retryAfter))])
        return .pause
    }
}

func makeRootContext() -> RootContext { RateLimitRoot() }
