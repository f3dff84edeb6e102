extension PluginVM {
    /// Switches the context later hostcalls in this callback act on. Any live context of this
    /// VM may be chosen (the SDKs switch to the stream that started a callout).
    func setEffectiveContext(_ id: UInt32) -> WasmResult {
        guard isRootContext(id) || streams[id] != nil else { return .badArgument }
        effectiveContextID = id
        return .ok
    }

    /// Finishes a root context whose on_done returned false; on_delete follows after the
    /// current callback, never inside it.
    func done() -> WasmResult {
        guard rootDonePending else { return .notFound }
        rootDonePending = false
        runAfterCall { [weak self] in
            guard let self else { return }
            self.call(self.fns.onDelete, "proxy_on_delete", context: self.rootContextID, GuestArgs(UInt64(self.rootContextID)))
        }
        return .ok
    }

    func getStatus(_ codeOut: UInt32, _ messagePtrOut: UInt32, _ messageLenOut: UInt32) -> WasmResult {
        guard memory.writeU32(codeOut, lastStatus.code) else { return .invalidMemoryAccess }
        return copyOut(Array(lastStatus.message.utf8), ptrOut: messagePtrOut, lenOut: messageLenOut)
    }

    func callForeignFunction(_ namePtr: UInt32, _ nameLen: UInt32, _ argsPtr: UInt32, _ argsLen: UInt32, _ resultPtrOut: UInt32, _ resultLenOut: UInt32) -> WasmResult {
        guard let name = string(namePtr, nameLen), let args = bytes(argsPtr, argsLen) else { return .invalidMemoryAccess }
        guard let function = ForeignFunctions.table[name] else { return .notFound }
        let (status, result) = function(self, args)
        guard status == .ok else { return status }
        if resultPtrOut == 0 { return .ok }  // the caller does not want the result
        return copyOut(result, ptrOut: resultPtrOut, lenOut: resultLenOut)
    }
}

/// Host functions a module can call by name with proxy_call_foreign_function.
enum ForeignFunctions {
    typealias Body = @Sendable (PluginVM, [UInt8]) -> (WasmResult, [UInt8])

    static let table: [String: Body] = [
        // Envoy's: zlib compress / uncompress.
        "compress": { _, args in
            guard let out = Zlib.compress(args) else { return (.serializationFailure, []) }
            return (.ok, out)
        },
        "uncompress": { _, args in
            guard let out = Zlib.uncompress(args) else { return (.serializationFailure, []) }
            return (.ok, out)
        },
        // Envoy >= 1.33: route selection runs again with the edited headers.
        "clear_route_cache": { vm, _ in
            guard let actions = vm.effectiveStream?.actions else { return (.notFound, []) }
            actions.clearRouteCache()
            return (.ok, [])
        },
        // Sluice extensions to shared data (documented in docs/SUPPORT.md).
        // Arguments are pairs: key (required), cas (decimal, optional).
        "sluice_shared_data_delete": { vm, args in
            guard let pairs = Pairs.parse(args), let key = pairs.first(where: { $0.0 == "key" })?.1 else { return (.badArgument, []) }
            let cas = pairs.first(where: { $0.0 == "cas" }).flatMap { UInt32($0.1) } ?? 0
            return (vm.shared.data.delete(vmID: vm.identity.vmID, key: key, cas: cas), [])
        },
        // Pairs: key, value, ttl_ms (all required), cas (optional). The entry disappears after ttl_ms.
        "sluice_shared_data_set_with_ttl": { vm, args in
            guard let pairs = Pairs.parse(args), let key = pairs.first(where: { $0.0 == "key" })?.1,
                  let value = pairs.first(where: { $0.0 == "value" })?.1,
                  let ttl = pairs.first(where: { $0.0 == "ttl_ms" }).flatMap({ UInt64($0.1) }) else { return (.badArgument, []) }
            let cas = pairs.first(where: { $0.0 == "cas" }).flatMap { UInt32($0.1) } ?? 0
            return (vm.shared.data.set(vmID: vm.identity.vmID, key: key, value: Array(value.utf8), cas: cas, ttl: .milliseconds(Int64(ttl))), [])
        },
    ]
}
