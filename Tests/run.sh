#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need, builds
# everything (the `sluice` binary included, which the process tests start), runs the Swift
# tests, then the envoy-compat comparisons against the real Envoy (filters, HTTP/1.1 on the
# wire, and a corpus of bootstraps both must accept or refuse alike).
set -euo pipefail
cd "$(dirname "$0")/.."
Tests/install-deps.sh
swift build --build-tests
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# All Swift tests are XCTest; Swift Testing is disabled so its empty run is not the last word.
swift test --skip-build --disable-swift-testing 2>&1 | tee "$log" || status=$?
# XCTest's own summary ("Executed N tests, with M failures"): counting "Test Case ... passed"
# lines undercounts when a test's log output lands on the same line.
summary=$(grep -E "Executed [0-9]+ tests?, with [0-9]+ failures?" "$log" | tail -1)
executed=$(echo "$summary" | sed -E 's/.*Executed ([0-9]+) tests?.*/\1/')
failed=$(echo "$summary" | sed -E 's/.*with ([0-9]+) failures?.*/\1/')
if [ -z "$summary" ]; then executed=0; failed=1; fi
passed=$((executed - failed))
# The Wasm test classes again on the second engine (EngineMatrixTestCase): the run above
# used WasmKit, this one Wasmtime.
matrix_status=0
SLUICE_TEST_WASM_RUNTIME=wasmtime swift test --skip-build --disable-swift-testing \
  --filter 'WasmFilterTests|SampleFilterTests|JWTTests|HotReloadTests|NetworkFilterTests|GrpcCalloutTests' 2>&1 | tee "$log" || matrix_status=$?
summary=$(grep -E "Executed [0-9]+ tests?, with [0-9]+ failures?" "$log" | tail -1)
if [ -z "$summary" ]; then failed=$((failed + 1)); status=1; else
  m_executed=$(echo "$summary" | sed -E 's/.*Executed ([0-9]+) tests?.*/\1/')
  m_failed=$(echo "$summary" | sed -E 's/.*with ([0-9]+) failures?.*/\1/')
  passed=$((passed + m_executed - m_failed)); failed=$((failed + m_failed))
fi
[ "$matrix_status" -eq 0 ] || status=$matrix_status
echo "swift tests (WasmKit, then the Wasm classes on Wasmtime): $passed passed, $failed failed"
# The Python suites print "N passed, M failed" last; each adds to the totals (a suite that
# prints no summary counts as one failure) and its exit status decides the run.
suites_status=0
suite() {
  local suite_status=0 suite_passed suite_failed
  python3 "$@" 2>&1 | tee "$log" || suite_status=$?
  suite_passed=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$log" | tail -1)
  suite_failed=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$log" | tail -1)
  if [ -z "$suite_passed" ]; then suite_passed=0; suite_failed=1; fi
  passed=$((passed + suite_passed)); failed=$((failed + suite_failed))
  [ "$suite_status" -eq 0 ] || suites_status=$suite_status
}
# Filters side by side with Envoy.
suite envoy-compat/run.py
# HTTP/1.1 on the wire, side by side with Envoy: identical or a documented difference.
suite envoy-compat/wire.py
# Envoy bootstraps as users write them: Envoy's `--mode validate` and `sluice validate` must
# agree on every one (envoy-compat/bootstraps/expected.json).
suite envoy-compat/bootstraps.py
# TLS and HTTP/2 side by side with Envoy (SNI, ALPN, mTLS, the TLS properties, h2c, gRPC).
suite envoy-compat/tls.py
# Network (TCP) filters and gRPC callouts side by side with Envoy: callback traces, bytes,
# callout reports.
suite envoy-compat/network.py
# HTTP/2 attacks with raw frames: the process survives, memory stays bounded, honest clients
# on other connections are served.
suite Tests/h2-attacks/attacks.py
echo "$passed passed, $failed failed"
[ "$status" -eq 0 ] && [ "$suites_status" -eq 0 ]
