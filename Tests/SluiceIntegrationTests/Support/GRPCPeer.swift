import Foundation

/// Tests/support/grpc_peer.py run as a server for one test (the grpcio server, or the
/// server that drops connections mid-stream): started by the test, stopped with it.
final class GRPCPeer {
    let process: Process
    let port: Int

    struct Failure: Error, CustomStringConvertible { var description: String }

    /// `arguments`: `["server"]`, `["server", "--tls", cert, key]`, `["cut-server"]`, ...
    init(_ arguments: [String]) throws {
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", packageRoot.appendingPathComponent("Tests/support/grpc_peer.py").path] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardInput = Pipe()
        try process.run()
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { throw Failure(description: "the gRPC peer did not start (are grpcio and h2 installed?)") }
            line.append(chunk)
        }
        let text = String(decoding: line, as: UTF8.self)
        guard text.hasPrefix("PORT "), let port = Int(text.dropFirst(5).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw Failure(description: "unexpected gRPC peer output: \(text)")
        }
        self.port = port
    }

    /// Closing its stdin ends the peer.
    func stop() {
        try? (process.standardInput as? Pipe)?.fileHandleForWriting.close()
        process.terminate()
        process.waitUntilExit()
    }
}
