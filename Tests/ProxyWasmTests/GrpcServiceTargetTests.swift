import XCTest

@testable import ProxyWasm

/// A gRPC callout's `service` argument comes from the guest: a cluster name, a serialized
/// GrpcService, or anything a buggy or hostile filter writes. It must parse or be refused,
/// never crash or read out of bounds.
final class GrpcServiceTargetTests: XCTestCase {
    let clusters: Set<String> = ["grpc", "authz"]

    func parse(_ bytes: [UInt8]) -> GrpcServiceTarget? { GrpcServiceTarget.parse(bytes, isCluster: clusters.contains) }

    /// envoy.config.core.v3.GrpcService { envoy_grpc (1) { cluster_name (1), authority (2) } }
    func proto(cluster: String, authority: String? = nil) -> [UInt8] {
        var inner: [UInt8] = [0x0a, UInt8(cluster.utf8.count)] + Array(cluster.utf8)
        if let authority { inner += [0x12, UInt8(authority.utf8.count)] + Array(authority.utf8) }
        return [0x0a, UInt8(inner.count)] + inner + [0x18, 0x05]  // and a varint field 3 Sluice skips
    }

    func testNamesAndProtos() {
        guard case .cluster("grpc") = parse(Array("grpc".utf8)) else { return XCTFail("a bare cluster name") }
        guard case .service(cluster: "authz", authority: nil) = parse(proto(cluster: "authz")) else { return XCTFail("the C++ SDK's proto") }
        guard case .service(cluster: "authz", authority: "authz.internal") = parse(proto(cluster: "authz", authority: "authz.internal")) else {
            return XCTFail("authority")
        }
        XCTAssertNil(parse(Array("nope".utf8)), "neither a cluster nor a proto: ParseFailure")
        XCTAssertNil(parse([]))
    }

    func testMalformedProtosAreRefused() {
        let cases: [[UInt8]] = [
            [0x0a],                                   // a length-delimited key with no length
            [0x0a, 0x7f],                             // a length past the end
            [0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],     // a 4 GiB length
            [0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],  // a varint of 11 bytes
            [0x0f, 0x00],                             // wire type 7
            [0x00, 0x01],                             // field 0
            [0x09, 0x01, 0x02],                       // a fixed64 cut short
            [0x0a, 0x02, 0x0a, 0x05],                 // an envoy_grpc whose cluster_name overruns it
            [0x0a, 0x00],                             // an empty envoy_grpc: no cluster
        ]
        for bytes in cases { XCTAssertNil(parse(bytes), "\(bytes)") }
    }

    func testRandomBytesNeverCrash() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<20_000 {
            let count = Int.random(in: 0..<48, using: &generator)
            let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
            _ = parse(bytes)
        }
    }
}
