import Foundation
import SluiceConfig
import XCTest

/// A test class whose tests run on each Wasm engine: the engine comes from
/// `SLUICE_TEST_WASM_RUNTIME` (`wasmkit`, the default, or `wasmtime`), and Tests/run.sh runs
/// these classes once per engine. Proxies the tests start take it as their default for
/// plugins that name none, so one test body serves both engines. (An environment variable
/// rather than a subclass per engine: XCTest's discovery on Linux runs only the tests a
/// class declares itself.)
/// Tests/run.sh names the subclasses in its second run's `--filter`; a new one is added there.
class EngineMatrixTestCase: XCTestCase {
    static let wasmRuntime: WasmRuntime = {
        guard let name = ProcessInfo.processInfo.environment["SLUICE_TEST_WASM_RUNTIME"], !name.isEmpty else { return .wasmkit }
        guard let runtime = WasmRuntime(rawValue: name) else { fatalError("SLUICE_TEST_WASM_RUNTIME: unknown engine \(name)") }
        return runtime
    }()

    override func setUpWithError() throws {
        try super.setUpWithError()
        ProxyUnderTest.wasmRuntime = Self.wasmRuntime
    }

    override func tearDown() {
        ProxyUnderTest.wasmRuntime = nil
        super.tearDown()
    }
}
