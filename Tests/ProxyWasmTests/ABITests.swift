import ProxyWasm
import XCTest

/// Pure logic of the ABI host: serialization, header maps, shared data, version detection.
final class ABITests: XCTestCase {
    func testPairsRoundTripAndTheSpecExample() {
        let bytes = Pairs.serialize([("a", "1"), ("b", "22")])
        XCTAssertEqual(bytes, [2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0x61, 0, 0x31, 0, 0x62, 0, 0x32, 0x32, 0])
        let parsed = Pairs.parse(bytes)!
        XCTAssertEqual(parsed.map(\.0), ["a", "b"])
        XCTAssertEqual(parsed.map(\.1), ["1", "22"])
        XCTAssertEqual(Pairs.serialize([]), [])
    }

    func testPairsAcceptEveryEmptyFormAndRejectMalformed() {
        XCTAssertEqual(Pairs.parse([])?.count, 0)
        XCTAssertEqual(Pairs.parse([0])?.count, 0)
        XCTAssertEqual(Pairs.parse([0, 0, 0, 0])?.count, 0)
        XCTAssertNil(Pairs.parse([1, 0, 0, 0]), "count without sizes")
        XCTAssertNil(Pairs.parse([1, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0x61, 0]), "sizes larger than the data")
        var noNul = Pairs.serialize([("a", "1")])
        noNul[noNul.count - 1] = 0x41
        XCTAssertNil(Pairs.parse(noNul), "missing NUL terminator")
        XCTAssertNil(Pairs.parse(Pairs.serialize([("a", "1")]) + [0]), "trailing bytes")
    }

    func testHeaderMapReplaceKeepsPositionAndDropsDuplicates() {
        var m = HeaderMap([("a", "1"), ("b", "2"), ("a", "3")])
        m.replace("A", "x")
        XCTAssertEqual(m.pairs.map(\.0), ["a", "b"])
        XCTAssertEqual(m.first("a"), "x")
        m.replace("c", "new")
        XCTAssertEqual(m.pairs.last?.1, "new")
        m.remove("B")
        XCTAssertNil(m.first("b"))
        XCTAssertEqual(m.byteSize, 2 + 4)
    }

    func testSharedDataCASSemantics() {
        let store = SharedDataStore()
        XCTAssertNil(store.get(vmID: "v", key: "k"))
        XCTAssertEqual(store.set(vmID: "v", key: "k", value: [1], cas: 0), .ok)
        let (_, cas) = store.get(vmID: "v", key: "k")!
        XCTAssertNotEqual(cas, 0)
        XCTAssertEqual(store.set(vmID: "v", key: "k", value: [2], cas: cas &+ 1), .casMismatch)
        XCTAssertEqual(store.set(vmID: "v", key: "k", value: [2], cas: cas), .ok)
        XCTAssertEqual(store.set(vmID: "v", key: "k", value: [3], cas: cas), .casMismatch, "the CAS moved on")
        XCTAssertEqual(store.set(vmID: "v", key: "new", value: [1], cas: 12345), .ok, "a CAS on a missing key is not checked (cpp-host)")
        XCTAssertNil(store.get(vmID: "other", key: "k"), "data is scoped by vm_id")
        XCTAssertEqual(store.set(vmID: "v", key: "t", value: [1], cas: 0, ttl: .milliseconds(1)), .ok)
        usleep(5000)
        XCTAssertNil(store.get(vmID: "v", key: "t"), "the Sluice TTL extension expires entries")
        XCTAssertEqual(store.delete(vmID: "v", key: "k", cas: 0), .ok)
        XCTAssertNil(store.get(vmID: "v", key: "k"))
    }

    func testQueueRegistry() {
        let queues = SharedQueueRegistry()
        let notified = NotifyCount()
        let id = queues.register(vmID: "v", name: "q", ownerToken: 1) { _ in notified.bump() }
        XCTAssertEqual(queues.resolve(vmID: "v", name: "q"), id)
        XCTAssertNil(queues.resolve(vmID: "w", name: "q"))
        XCTAssertEqual(queues.dequeue(id).0, .empty)
        XCTAssertEqual(queues.enqueue(id, [1, 2]), .ok)
        XCTAssertEqual(notified.value, 1)
        XCTAssertEqual(queues.dequeue(id).1, [1, 2])
        XCTAssertEqual(queues.enqueue(999, [1]), .notFound)
    }

    func testABIDetection() throws {
        XCTAssertEqual(try PluginVM.detectABI(exports: ["memory", "proxy_abi_version_0_2_0"]), .v0_2_0)
        XCTAssertEqual(try PluginVM.detectABI(exports: ["proxy_abi_version_0_1_0"]), .v0_1_0)
        XCTAssertThrowsError(try PluginVM.detectABI(exports: ["proxy_abi_version_0_x_x"]))
    }
}

final class NotifyCount: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func bump() { lock.withLock { n += 1 } }
    var value: Int { lock.withLock { n } }
}
