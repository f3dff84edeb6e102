import Foundation

/// The test filters (C, Embedded Swift, Go), built from source by filters/build.sh the first
/// time a test needs them in this process; the script rebuilds only what changed.
enum TestFilters {
    nonisolated(unsafe) private static var built = false
    private static let lock = NSLock()

    static func path(_ name: String) throws -> String {
        try lock.withLock {
            if !built {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: "/bin/bash")
                p.arguments = [packageRoot.appendingPathComponent("filters/build.sh").path]
                let err = Pipe()
                p.standardError = err
                p.standardOutput = FileHandle.nullDevice
                try p.run()
                let message = err.fileHandleForReading.readDataToEndOfFile()
                p.waitUntilExit()
                guard p.terminationStatus == 0 else {
                    throw RawHTTPClient.Failure(description: "filters/build.sh failed: \(String(decoding: message, as: UTF8.self))")
                }
                built = true
            }
        }
        let file = packageRoot.appendingPathComponent("filters/build/\(name).wasm").path
        guard FileManager.default.fileExists(atPath: file) else { throw RawHTTPClient.Failure(description: "no filter \(file)") }
        return file
    }
}
