// swift-tools-version:6.0
// Sluice: an edge reverse proxy hosting Proxy-Wasm filters.
//
// Module layout (dependencies point one way, downwards):
//   sluice (CLI) -> SluiceCore (NIO proxy) -> SluiceConfig (YAML model, validation)
//                                          -> ProxyWasm (ABI host)  <- SluiceWasmKit, SluiceWasmtime (engines)
// ProxyWasm knows neither NIO nor a runtime; SluiceConfig never learns about sockets.
import PackageDescription

let package = Package(
    name: "Sluice",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "sluice", targets: ["sluice"]),
        .library(name: "SluiceCore", targets: ["SluiceCore"]),
        .library(name: "SluiceConfig", targets: ["SluiceConfig"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/swiftwasm/WasmKit.git", from: "0.4.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
    ],
    targets: [
        .target(
            name: "SluiceConfig",
            dependencies: [.product(name: "Yams", package: "Yams")]
        ),
        // The Proxy-Wasm ABI host: contexts, hostcalls, serialization. Knows neither NIO nor any
        // Wasm runtime; the proxy core and an engine plug into its small protocols.
        .target(name: "ProxyWasm", dependencies: ["CZlib"]),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib"),
        // WasmKit behind ProxyWasm's engine protocol (one module per runtime).
        .target(
            name: "SluiceWasmKit",
            dependencies: ["ProxyWasm", .product(name: "WasmKit", package: "WasmKit")]
        ),
        // Wasmtime (a JIT) behind the same protocol. Its C library is loaded at run time, so
        // Sluice builds and runs without it (CWasmtime declares the part of the API used).
        .target(name: "CWasmtime", linkerSettings: [.linkedLibrary("dl")]),
        .target(name: "SluiceWasmtime", dependencies: ["ProxyWasm", "CWasmtime"]),
        .target(
            name: "SluiceCore",
            dependencies: [
                "SluiceConfig",
                "ProxyWasm",
                "SluiceWasmKit",
                "SluiceWasmtime",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "sluice",
            dependencies: [
                "SluiceCore",
                "SluiceConfig",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(name: "SluiceConfigTests", dependencies: ["SluiceConfig"]),
        .testTarget(name: "ProxyWasmTests", dependencies: ["ProxyWasm", "SluiceWasmKit"]),
        .testTarget(
            name: "SluiceIntegrationTests",
            dependencies: [
                "SluiceCore",
                "SluiceConfig",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
            ]
        ),
    ]
)
