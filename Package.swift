// swift-tools-version:6.0
// Sluice: an edge reverse proxy hosting Proxy-Wasm filters.
//
// Module layout (dependencies point one way, downwards):
//   sluice (CLI)  ->  SluiceCore (NIO proxy)  ->  SluiceConfig (YAML model, validation)
// The Proxy-Wasm ABI host and the WasmKit engine join as their own modules; neither will
// depend on NIO, and SluiceConfig never learns about sockets.
import PackageDescription

let package = Package(
    name: "Sluice",
    platforms: [.macOS(.v14)],
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
    ],
    targets: [
        .target(
            name: "SluiceConfig",
            dependencies: [.product(name: "Yams", package: "Yams")]
        ),
        .target(
            name: "SluiceCore",
            dependencies: [
                "SluiceConfig",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
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
        .testTarget(
            name: "SluiceIntegrationTests",
            dependencies: [
                "SluiceCore",
                "SluiceConfig",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
    ]
)
