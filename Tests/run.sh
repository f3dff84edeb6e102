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
  --filter 'WasmFilterTests|SampleFilterTests|JWTTests|HotReloadTests' 2>&1 | tee "$log" || matrix_status=$?
summary=$(grep -E "Executed [0-9]+ tests?, with [0-9]+ failures?" "$log" | tail -1)
if [ -z "$summary" ]; then failed=$((failed + 1)); status=1; else
  m_executed=$(echo "$summary" | sed -E 's/.*Executed ([0-9]+) tests?.*/\1/')
  m_failed=$(echo "$summary" | sed -E 's/.*with ([0-9]+) failures?.*/\1/')
  passed=$((passed + m_executed - m_failed)); failed=$((failed + m_failed))
fi
[ "$matrix_status" -eq 0 ] || status=$matrix_status
echo "swift tests (WasmKit, then the Wasm classes on Wasmtime): $passed passed, $failed failed"
compat_status=0
python3 envoy-compat/run.py 2>&1 | tee "$log" || compat_status=$?
compat_passed=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$log" | tail -1)
compat_failed=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$log" | tail -1)
if [ -z "$compat_passed" ]; then compat_passed=0; compat_failed=1; fi
# HTTP/1.1 on the wire, side by side with Envoy: identical or a documented difference.
wire_status=0
python3 envoy-compat/wire.py 2>&1 | tee "$log" || wire_status=$?
wire_passed=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$log" | tail -1)
wire_failed=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$log" | tail -1)
if [ -z "$wire_passed" ]; then wire_passed=0; wire_failed=1; fi
# Envoy bootstraps as users write them: Envoy's `--mode validate` and `sluice validate` must
# agree on every one (envoy-compat/bootstraps/expected.json).
boot_status=0
python3 envoy-compat/bootstraps.py 2>&1 | tee "$log" || boot_status=$?
boot_passed=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$log" | tail -1)
boot_failed=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$log" | tail -1)
if [ -z "$boot_passed" ]; then boot_passed=0; boot_failed=1; fi
# TLS and HTTP/2 side by side with Envoy (SNI, ALPN, mTLS, the TLS properties, h2c).
tls_status=0
python3 envoy-compat/tls.py 2>&1 | tee "$log" || tls_status=$?
tls_passed=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$log" | tail -1)
tls_failed=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$log" | tail -1)
if [ -z "$tls_passed" ]; then tls_passed=0; tls_failed=1; fi
# HTTP/2 attacks with raw frames: the process survives, memory stays bounded, honest clients
# on other connections are served.
attack_status=0
python3 Tests/h2-attacks/attacks.py 2>&1 | tee "$log" || attack_status=$?
attack_passed=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$log" | tail -1)
attack_failed=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$log" | tail -1)
if [ -z "$attack_passed" ]; then attack_passed=0; attack_failed=1; fi
echo "$((passed + compat_passed + wire_passed + boot_passed + tls_passed + attack_passed)) passed, $((failed + compat_failed + wire_failed + boot_failed + tls_failed + attack_failed)) failed"
[ "$status" -eq 0 ] && [ "$compat_status" -eq 0 ] && [ "$wire_status" -eq 0 ] && [ "$boot_status" -eq 0 ] && [ "$tls_status" -eq 0 ] && [ "$attack_status" -eq 0 ]
