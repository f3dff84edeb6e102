extension PluginVM {
    func continueStream(_ type: UInt32) -> WasmResult {
        guard let type = StreamType(rawValue: type) else { return .badArgument }
        switch type {
        case .request, .response:
            guard let stream = effectiveStream else { return .notFound }
            // On a TCP connection's context there is no HTTP stream to resume: Ok, nothing
            // happens (Envoy's answer when it has no decoder/encoder callbacks).
            guard let actions = stream.actions else { return stream.network != nil ? .ok : .notFound }
            return actions.continueStream(type)
        case .downstream:
            guard let stream = effectiveStream else { return .notFound }
            stream.networkActions?.continueDownstream()
            return .ok
        case .upstream:
            // Envoy cannot resume the upstream direction: data held there goes on with the
            // next upstream data callback that continues.
            return .unimplemented
        }
    }

    func closeStream(_ type: UInt32) -> WasmResult {
        guard let type = StreamType(rawValue: type) else { return .badArgument }
        switch type {
        case .request, .response:
            guard let stream = effectiveStream else { return .notFound }
            guard let actions = stream.actions else { return stream.network != nil ? .ok : .notFound }
            return actions.closeStream(type)
        case .downstream, .upstream:
            guard let stream = effectiveStream else { return .notFound }
            stream.networkActions?.closeConnection(type)
            return .ok
        }
    }

    func sendLocalResponse(status: UInt32, details: (UInt32, UInt32), body: (UInt32, UInt32), headers: (UInt32, UInt32), grpcStatus: Int32) -> WasmResult {
        guard let detailsText = string(details.0, details.1), let bodyBytes = bytes(body.0, body.1) else { return .invalidMemoryAccess }
        guard let parsed = memory.withBytes(headers.0, headers.1, { Pairs.parse($0) }) else { return .invalidMemoryAccess }
        guard let extra = parsed, extra.allSatisfy({ PluginVM.validHeader($0.0, $0.1) && !$0.0.hasPrefix(":") }) else { return .badArgument }
        // A final status only: 1xx (and 101) would leave the client waiting, 0 and
        // 4294967295 are not statuses.
        guard (200...599).contains(status) else { return .badArgument }
        guard let stream = effectiveStream, let actions = stream.actions else { return .notFound }
        let result = actions.sendLocalResponse(status: Int(status), details: detailsText, body: bodyBytes, headers: extra,
                                               grpcStatus: (0...16).contains(grpcStatus) ? grpcStatus : nil)
        if result == .ok { stream.localResponseSent = true }
        return result
    }

    func clearRouteCache() -> WasmResult {
        guard let actions = effectiveStream?.actions else { return .notFound }
        actions.clearRouteCache()
        return .ok
    }
}
