import Foundation

/// The real `sluice` binary in a child process, for what only a separate process can show:
/// its memory, its exit code, its handling of signals.
final class SluiceProcess {
    let process = Process()
    let stdout = Pipe()
    let stderr = Pipe()
    let configPath: String

    /// A free loopback port: bound, read and released (the usual small race is acceptable here).
    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { p in p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { p in p.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    init(config: String, arguments: [String] = [], environment: [String: String] = [:]) throws {
        configPath = NSTemporaryDirectory() + "sluice-test-\(UUID().uuidString).yaml"
        try config.write(toFile: configPath, atomically: true, encoding: .utf8)
        process.executableURL = URL(fileURLWithPath: try sluiceBinary())
        process.arguments = ["run", "-c", configPath] + arguments
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new } }
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }

    /// Waits for the admin API to answer /ready.
    func waitReady(adminPort: Int) throws {
        let ok = eventually(timeout: 20) { (try? httpGet(adminPort, "/ready").status) == 200 }
        if !ok { throw RawHTTPClient.Failure(description: "sluice did not become ready: \(String(decoding: stderr.fileHandleForReading.availableData, as: UTF8.self))") }
    }

    /// Resident set size in bytes, from /proc.
    var residentBytes: Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let kb = line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
            return kb * 1024
        }
        return 0
    }

    func terminate(signal sig: Int32 = SIGTERM) { kill(pid, sig) }

    func waitExit(timeout: Double = 20) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            kill(pid, SIGKILL)
            process.waitUntilExit()
            return nil
        }
        return process.terminationStatus
    }

    deinit {
        if process.isRunning { kill(pid, SIGKILL); process.waitUntilExit() }
        try? FileManager.default.removeItem(atPath: configPath)
    }
}
