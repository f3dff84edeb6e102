/// The import table: every `env` hostcall of the ABI (Appendix A of the reference) and the
/// WASI preview1 set, bound to a VM. Registered per ABI version exactly as cpp-host does,
/// so a module importing a call its version does not have fails to link, as on Envoy.
enum HostCalls {
    /// Calls allowed while `_initialize`/`_start` run and while the host is inside the
    /// module's allocator (cpp-host's allow-list); anything else traps.
    static let startupSafe: Set<String> = [
        "proxy_log", "proxy_get_log_level", "proxy_get_current_time_nanoseconds",
    ]

    static func all(abi: ABIVersion, box: VMBox) -> [HostFunction] {
        var table: [HostFunction] = []

        /// An `env` hostcall taking `params` i32 arguments and returning a status.
        func env(_ name: String, _ params: Int, _ body: @escaping (PluginVM, HostArgs) -> WasmResult) {
            envTyped(name, WasmFunctionType(Array(repeating: .i32, count: params), [.i32]), body)
        }
        func envTyped(_ name: String, _ type: WasmFunctionType, _ body: @escaping (PluginVM, HostArgs) -> WasmResult) {
            let safe = startupSafe.contains(name)
            table.append(HostFunction(module: "env", name: name, type: type) { args in
                guard let vm = box.vm else { throw HostTrap.refused("\(name) called before the VM was ready") }
                if vm.phase != .normal && !safe {
                    throw HostTrap.refused("restricted_callback: \(name) may not be called during \(vm.phase == .startup ? "start-up" : "allocation")")
                }
                return UInt64(body(vm, args).rawValue)
            })
        }

        // Logging and time
        env("proxy_log", 3) { vm, a in vm.log(level: a.u32(0), ptr: a.u32(1), len: a.u32(2)) }
        if abi == .v0_2_1 { env("proxy_get_log_level", 1) { vm, a in vm.getLogLevel(out: a.u32(0)) } }
        env("proxy_get_current_time_nanoseconds", 1) { vm, a in vm.getCurrentTime(out: a.u32(0)) }

        // Properties
        env("proxy_get_property", 4) { vm, a in vm.getProperty(a.u32(0), a.u32(1), a.u32(2), a.u32(3)) }
        env("proxy_set_property", 4) { vm, a in vm.setProperty(a.u32(0), a.u32(1), a.u32(2), a.u32(3)) }

        // Header maps
        env("proxy_get_header_map_value", 5) { vm, a in vm.getHeaderMapValue(a.u32(0), a.u32(1), a.u32(2), a.u32(3), a.u32(4)) }
        env("proxy_add_header_map_value", 5) { vm, a in vm.addHeaderMapValue(a.u32(0), a.u32(1), a.u32(2), a.u32(3), a.u32(4)) }
        env("proxy_replace_header_map_value", 5) { vm, a in vm.replaceHeaderMapValue(a.u32(0), a.u32(1), a.u32(2), a.u32(3), a.u32(4)) }
        env("proxy_remove_header_map_value", 3) { vm, a in vm.removeHeaderMapValue(a.u32(0), a.u32(1), a.u32(2)) }
        env("proxy_get_header_map_pairs", 3) { vm, a in vm.getHeaderMapPairs(a.u32(0), a.u32(1), a.u32(2)) }
        env("proxy_set_header_map_pairs", 3) { vm, a in vm.setHeaderMapPairs(a.u32(0), a.u32(1), a.u32(2)) }
        env("proxy_get_header_map_size", 2) { vm, a in vm.getHeaderMapSize(a.u32(0), a.u32(1)) }

        // Buffers
        env("proxy_get_buffer_bytes", 5) { vm, a in vm.getBufferBytes(a.u32(0), a.u32(1), a.u32(2), a.u32(3), a.u32(4)) }
        env("proxy_set_buffer_bytes", 5) { vm, a in vm.setBufferBytes(a.u32(0), a.u32(1), a.u32(2), a.u32(3), a.u32(4)) }
        env("proxy_get_buffer_status", 3) { vm, a in vm.getBufferStatus(a.u32(0), a.u32(1), a.u32(2)) }

        // Stream control
        env("proxy_send_local_response", 8) { vm, a in
            vm.sendLocalResponse(status: a.u32(0), details: (a.u32(1), a.u32(2)), body: (a.u32(3), a.u32(4)), headers: (a.u32(5), a.u32(6)), grpcStatus: Int32(bitPattern: a.u32(7)))
        }
        switch abi {
        case .v0_1_0:
            env("proxy_continue_request", 0) { vm, _ in vm.continueStream(StreamType.request.rawValue) }
            env("proxy_continue_response", 0) { vm, _ in vm.continueStream(StreamType.response.rawValue) }
            env("proxy_clear_route_cache", 0) { vm, _ in vm.clearRouteCache() }
            env("proxy_get_configuration", 2) { vm, a in vm.getConfiguration(a.u32(0), a.u32(1)) }
        case .v0_2_0, .v0_2_1:
            env("proxy_continue_stream", 1) { vm, a in vm.continueStream(a.u32(0)) }
            env("proxy_close_stream", 1) { vm, a in vm.closeStream(a.u32(0)) }
        }

        // Callouts
        env("proxy_http_call", 10) { vm, a in
            vm.httpCall(upstream: (a.u32(0), a.u32(1)), headers: (a.u32(2), a.u32(3)), body: (a.u32(4), a.u32(5)), trailers: (a.u32(6), a.u32(7)), timeoutMs: a.u32(8), tokenOut: a.u32(9))
        }
        env("proxy_grpc_call", 12) { vm, a in
            vm.grpcCall(service: (a.u32(0), a.u32(1)), serviceName: (a.u32(2), a.u32(3)), method: (a.u32(4), a.u32(5)), metadata: (a.u32(6), a.u32(7)),
                        message: (a.u32(8), a.u32(9)), timeoutMs: a.u32(10), tokenOut: a.u32(11))
        }
        env("proxy_grpc_stream", 9) { vm, a in
            vm.grpcStream(service: (a.u32(0), a.u32(1)), serviceName: (a.u32(2), a.u32(3)), method: (a.u32(4), a.u32(5)), metadata: (a.u32(6), a.u32(7)), tokenOut: a.u32(8))
        }
        env("proxy_grpc_send", 4) { vm, a in vm.grpcSend(a.u32(0), a.u32(1), a.u32(2), a.u32(3)) }
        env("proxy_grpc_cancel", 1) { vm, a in vm.grpcCancel(a.u32(0)) }
        env("proxy_grpc_close", 1) { vm, a in vm.grpcClose(a.u32(0)) }

        // Timers
        env("proxy_set_tick_period_milliseconds", 1) { vm, a in vm.setTickPeriod(a.u32(0)) }

        // Shared data and queues
        env("proxy_get_shared_data", 5) { vm, a in vm.getSharedData(a.u32(0), a.u32(1), a.u32(2), a.u32(3), a.u32(4)) }
        env("proxy_set_shared_data", 5) { vm, a in vm.setSharedData(a.u32(0), a.u32(1), a.u32(2), a.u32(3), a.u32(4)) }
        env("proxy_register_shared_queue", 3) { vm, a in vm.registerSharedQueue(a.u32(0), a.u32(1), a.u32(2)) }
        env("proxy_resolve_shared_queue", 5) { vm, a in vm.resolveSharedQueue(a.u32(0), a.u32(1), a.u32(2), a.u32(3), a.u32(4)) }
        env("proxy_enqueue_shared_queue", 3) { vm, a in vm.enqueueSharedQueue(a.u32(0), a.u32(1), a.u32(2)) }
        env("proxy_dequeue_shared_queue", 3) { vm, a in vm.dequeueSharedQueue(a.u32(0), a.u32(1), a.u32(2)) }

        // Metrics (the value/delta parameters are i64)
        env("proxy_define_metric", 4) { vm, a in vm.defineMetric(a.u32(0), a.u32(1), a.u32(2), a.u32(3)) }
        envTyped("proxy_increment_metric", WasmFunctionType([.i32, .i64], [.i32])) { vm, a in vm.incrementMetric(a.u32(0), Int64(bitPattern: a[1])) }
        envTyped("proxy_record_metric", WasmFunctionType([.i32, .i64], [.i32])) { vm, a in vm.recordMetric(a.u32(0), a[1]) }
        env("proxy_get_metric", 2) { vm, a in vm.getMetric(a.u32(0), a.u32(1)) }

        // Context control, status, foreign functions
        env("proxy_set_effective_context", 1) { vm, a in vm.setEffectiveContext(a.u32(0)) }
        env("proxy_done", 0) { vm, _ in vm.done() }
        env("proxy_get_status", 3) { vm, a in vm.getStatus(a.u32(0), a.u32(1), a.u32(2)) }
        env("proxy_call_foreign_function", 6) { vm, a in vm.callForeignFunction(a.u32(0), a.u32(1), a.u32(2), a.u32(3), a.u32(4), a.u32(5)) }

        // Emscripten leftovers cpp-host also provides.
        table.append(HostFunction(module: "env", name: "emscripten_notify_memory_growth", type: WasmFunctionType([.i32], [])) { _ in nil })
        table.append(HostFunction(module: "env", name: "pthread_equal", type: WasmFunctionType([.i32, .i32], [.i32])) { a in a[0] == a[1] ? 1 : 0 })

        table += WASI.functions(box: box)
        return table
    }
}

extension PluginVM {
    /// Reads guest bytes; nil when the range is outside linear memory.
    func bytes(_ ptr: UInt32, _ len: UInt32) -> [UInt8]? { memory.read(ptr, len) }
    func string(_ ptr: UInt32, _ len: UInt32) -> String? { memory.readString(ptr, len) }
}
