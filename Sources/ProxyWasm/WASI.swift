import Foundation

/// WASI preview1, as a Proxy-Wasm host must provide it (ABI §3.18): everything Go 1.24+
/// (wasip1), Rust, TinyGo and wasi-libc modules import. No file or socket access: stdout and
/// stderr go to the plugin's log, clocks and randomness are real, the environment is the
/// plugin's configured one, and everything else answers a proper errno.
/// Registered under both `wasi_snapshot_preview1` and `wasi_unstable`.
enum WASI {
    static func functions(box: VMBox) -> [HostFunction] {
        var list: [HostFunction] = []
        func def(_ name: String, _ params: [WasmValueType], _ body: @escaping (PluginVM, HostArgs) throws -> WASIErrno) {
            for module in ["wasi_snapshot_preview1", "wasi_unstable"] {
                list.append(HostFunction(module: module, name: name, type: WasmFunctionType(params, [.i32])) { args in
                    guard let vm = box.vm else { return UInt64(WASIErrno.fault.rawValue) }
                    return UInt64(try body(vm, args).rawValue)
                })
            }
        }
        let i32 = WasmValueType.i32, i64 = WasmValueType.i64

        def("fd_write", [i32, i32, i32, i32]) { vm, a in vm.wasiWrite(fd: a.u32(0), iovs: a.u32(1), count: a.u32(2), nwrittenOut: a.u32(3)) }
        def("fd_pwrite", [i32, i32, i32, i64, i32]) { vm, a in vm.wasiWrite(fd: a.u32(0), iovs: a.u32(1), count: a.u32(2), nwrittenOut: a.u32(4)) }
        def("fd_read", [i32, i32, i32, i32]) { _, _ in .nosys }
        def("fd_pread", [i32, i32, i32, i64, i32]) { _, _ in .nosys }
        def("fd_seek", [i32, i64, i32, i32]) { _, a in isStdio(a.u32(0)) ? .notsup : .badf }
        def("fd_close", [i32]) { _, a in isStdio(a.u32(0)) ? .success : .badf }
        def("fd_fdstat_get", [i32, i32]) { vm, a in
            guard isStdio(a.u32(0)) else { return .badf }
            // filetype CHARACTER_DEVICE (2), no flags, rights: FD_WRITE (1 << 6).
            var stat = [UInt8](repeating: 0, count: 24)
            stat[0] = 2
            stat[8] = 64
            return vm.memory.write(a.u32(1), stat) ? .success : .fault
        }
        def("fd_fdstat_set_flags", [i32, i32]) { _, _ in .nosys }
        def("fd_fdstat_set_rights", [i32, i64, i64]) { _, a in isStdio(a.u32(0)) ? .success : .badf }
        def("fd_prestat_get", [i32, i32]) { _, _ in .badf }  // no preopened directories
        def("fd_prestat_dir_name", [i32, i32, i32]) { _, _ in .nosys }
        def("fd_filestat_get", [i32, i32]) { _, _ in .badf }
        def("fd_advise", [i32, i64, i64, i32]) { _, _ in .success }
        def("fd_allocate", [i32, i64, i64]) { _, a in isStdio(a.u32(0)) ? .success : .badf }
        def("fd_datasync", [i32]) { _, a in isStdio(a.u32(0)) ? .success : .badf }
        def("fd_sync", [i32]) { _, a in isStdio(a.u32(0)) ? .success : .badf }
        def("fd_filestat_set_size", [i32, i64]) { _, a in isStdio(a.u32(0)) ? .success : .badf }
        def("fd_filestat_set_times", [i32, i64, i64, i32]) { _, a in isStdio(a.u32(0)) ? .success : .badf }
        def("fd_readdir", [i32, i32, i32, i64, i32]) { vm, a in
            vm.memory.writeU32(a.u32(4), 0)
            return .notdir
        }
        def("fd_renumber", [i32, i32]) { _, _ in .notsup }
        def("fd_tell", [i32, i32]) { vm, a in
            guard isStdio(a.u32(0)) else { return .badf }
            return vm.memory.writeU64(a.u32(1), 0) ? .success : .fault
        }
        def("path_open", [i32, i32, i32, i32, i32, i64, i64, i32, i32]) { _, _ in .noent }
        for name in ["path_create_directory", "path_remove_directory", "path_unlink_file"] {
            def(name, [i32, i32, i32]) { _, _ in .notsup }
        }
        def("path_filestat_get", [i32, i32, i32, i32, i32]) { _, _ in .notsup }
        def("path_filestat_set_times", [i32, i32, i32, i32, i64, i64, i32]) { _, _ in .notsup }
        def("path_link", [i32, i32, i32, i32, i32, i32, i32]) { _, _ in .notsup }
        def("path_readlink", [i32, i32, i32, i32, i32, i32]) { vm, a in
            vm.memory.writeU32(a.u32(5), 0)
            return .notsup
        }
        def("path_rename", [i32, i32, i32, i32, i32, i32]) { _, _ in .notsup }
        def("path_symlink", [i32, i32, i32, i32, i32]) { _, _ in .notsup }
        def("sock_accept", [i32, i32, i32]) { _, _ in .notsup }
        def("sock_recv", [i32, i32, i32, i32, i32, i32]) { _, _ in .notsup }
        def("sock_send", [i32, i32, i32, i32, i32]) { _, _ in .notsup }
        def("sock_shutdown", [i32, i32]) { _, _ in .notsup }

        def("environ_sizes_get", [i32, i32]) { vm, a in
            let env = vm.environmentStrings
            guard vm.memory.writeU32(a.u32(0), UInt32(env.count)),
                  vm.memory.writeU32(a.u32(1), UInt32(env.reduce(0) { $0 + $1.count })) else { return .fault }
            return .success
        }
        def("environ_get", [i32, i32]) { vm, a in
            var pointer = a.u32(0), buffer = a.u32(1)
            for entry in vm.environmentStrings {
                guard vm.memory.writeU32(pointer, buffer), vm.memory.write(buffer, entry) else { return .fault }
                pointer &+= 4
                buffer &+= UInt32(entry.count)
            }
            return .success
        }
        def("args_sizes_get", [i32, i32]) { vm, a in
            vm.memory.writeU32(a.u32(0), 0) && vm.memory.writeU32(a.u32(1), 0) ? .success : .fault
        }
        def("args_get", [i32, i32]) { _, _ in .success }
        def("clock_time_get", [i32, i64, i32]) { vm, a in
            let nanos: UInt64
            switch a.u32(0) {
            case 0: nanos = UInt64(Date().timeIntervalSince1970 * 1e9)
            case 1: nanos = DispatchTime.now().uptimeNanoseconds
            default: return .notsup
            }
            return vm.memory.writeU64(a.u32(2), nanos) ? .success : .fault
        }
        def("clock_res_get", [i32, i32]) { vm, a in
            guard a.u32(0) <= 1 else { return .notsup }
            return vm.memory.writeU64(a.u32(1), 1) ? .success : .fault
        }
        def("random_get", [i32, i32]) { vm, a in
            let n = a.int(1)
            guard n <= 65536 else { return .inval }
            var bytes = [UInt8](repeating: 0, count: n)
            var rng = SystemRandomNumberGenerator()
            for i in 0..<n { bytes[i] = UInt8.random(in: 0...255, using: &rng) }
            return vm.memory.write(a.u32(0), bytes) ? .success : .fault
        }
        def("sched_yield", []) { _, _ in .success }
        // The Go runtime sleeps through poll_oneoff and needs it to succeed: no events.
        def("poll_oneoff", [i32, i32, i32, i32]) { vm, a in
            vm.memory.writeU32(a.u32(3), 0) ? .success : .fault
        }
        for module in ["wasi_snapshot_preview1", "wasi_unstable"] {
            for name in ["proc_exit", "proc_raise"] {
                list.append(HostFunction(module: module, name: name, type: WasmFunctionType([.i32], name == "proc_exit" ? [] : [.i32])) { args in
                    if name == "proc_raise" { return UInt64(WASIErrno.nosys.rawValue) }
                    // The guest asked to stop: end the call as a trap (a module that exits
                    // mid-request cannot be trusted to continue), exit code in the message.
                    throw HostTrap.exit(args.u32(0))
                })
            }
        }
        return list
    }

    static func isStdio(_ fd: UInt32) -> Bool { fd == 1 || fd == 2 }
}

extension PluginVM {
    /// stdout → info log, stderr → error log, one trailing newline stripped.
    func wasiWrite(fd: UInt32, iovs: UInt32, count: UInt32, nwrittenOut: UInt32) -> WASIErrno {
        guard WASI.isStdio(fd) else { return .badf }
        var text: [UInt8] = []
        for i in 0..<count {
            guard let base = memory.readU32(iovs &+ i * 8), let len = memory.readU32(iovs &+ i * 8 &+ 4),
                  let chunk = memory.read(base, len) else { return .fault }
            text += chunk
        }
        guard memory.writeU32(nwrittenOut, UInt32(text.count)) else { return .fault }
        if text.last == 10 { text.removeLast() }
        services?.log(fd == 1 ? .info : .error, String(decoding: text, as: UTF8.self))
        return .success
    }

    /// KEY=VALUE\0 strings from the plugin's configured environment.
    var environmentStrings: [[UInt8]] {
        identity.environment.map { Array("\($0.0)=\($0.1)".utf8) + [0] }
    }
}
