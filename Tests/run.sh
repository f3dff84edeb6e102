#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need, builds
# everything (the `sluice` binary included, which the process tests start), runs all tests.
set -euo pipefail
cd "$(dirname "$0")/.."
Tests/install-deps.sh
swift build --build-tests
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# All tests are XCTest; Swift Testing is disabled so its empty run is not the last word.
swift test --skip-build --disable-swift-testing 2>&1 | tee "$log" || status=$?
passed=$(grep -c "^Test Case .* passed" "$log" || true)
failed=$(grep -c "^Test Case .* failed" "$log" || true)
echo "$passed passed, $failed failed"
exit "$status"
